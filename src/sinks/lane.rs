//! The alarm lane: each sink sends alarm transitions from a cursor of their own
//! (`<sink>:alarms`), ahead of whatever telemetry backlog its main cursor still has, so after
//! an outage the central side learns of every alarm before the readings catch up. The lane is
//! in `seq` order, so each alarm's transitions arrive in order; the main lane skips alarm
//! records (the lane owns them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{SinkContext, SinkError, Upstream, count_sent, move_cursor, with_timeout};
use crate::store::{RawRecord, Store, StoreError};

/// Alarm transitions per request: they are few; this bounds one send after a flood.
const LANE_BATCH: usize = 500;

pub(super) struct AlarmLane {
    name: Arc<str>,
    cursor: u64,
}

impl AlarmLane {
    /// The lane's committed cursor; a sink without one starts where its main cursor is (what
    /// lies before it was sent by the main lane).
    pub(super) fn start(
        store: &Store,
        sink: &str,
        main_cursor: u64,
    ) -> Result<AlarmLane, StoreError> {
        let name: Arc<str> = format!("{sink}:alarms").into();
        let cursor = store.cursor(&name)?.unwrap_or(main_cursor);
        Ok(AlarmLane { name, cursor })
    }

    /// Sends the next alarm transitions, if any; `Ok(true)` when it sent some (look again
    /// before telemetry).
    pub(super) async fn send_next<U: Upstream>(
        &mut self,
        upstream: &mut U,
        ctx: &SinkContext,
        timeout: Duration,
    ) -> Result<bool, SinkError> {
        let batch = read(&ctx.store, self.cursor).await?;
        let Some(last) = batch.last() else {
            return Ok(false);
        };
        let next = last.seq + 1;
        let started = Instant::now();
        with_timeout("send", timeout, upstream.send(&batch)).await?;
        self.cursor = next;
        count_sent(ctx, batch.len() as u64, None, started.elapsed());
        // A stopping writer keeps the cursor where the store has it; resent after a restart.
        move_cursor(ctx, &self.name, next).await;
        Ok(true)
    }
}

async fn read(store: &Store, from: u64) -> Result<Vec<RawRecord>, SinkError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.read_alarms_raw(from, LANE_BATCH))
        .await
        .expect("store read task panicked")
        .map_err(SinkError::from)
}
