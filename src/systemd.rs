//! systemd integration through sd_notify: `READY=1` once listeners are up, `WATCHDOG=1` while
//! the store writer makes progress, `STOPPING=1` on shutdown. Everything is a no-op when the
//! gateway does not run under systemd (no `NOTIFY_SOCKET`).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

fn send(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready() {
    send(NotifyState::Ready);
}

pub fn stopping() {
    send(NotifyState::Stopping);
}

/// Pings the watchdog at half its period while the writer is not stuck inside one commit for
/// longer than that. A wedged writer stops the pings, so systemd restarts the service; a store
/// that fails fast (e.g. disk full) keeps being retried and reported instead.
pub async fn watchdog(health: Arc<Health>, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let half = (period / 2).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(half);
    let mut wedged_logged = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if health.writer_wedged(half) {
            if !wedged_logged {
                tracing::error!(
                    limit_ms = half.as_millis() as u64,
                    "store writer is stuck in a commit; withholding the watchdog ping"
                );
                wedged_logged = true;
            }
            continue;
        }
        wedged_logged = false;
        send(NotifyState::Watchdog);
    }
}
