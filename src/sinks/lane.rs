//! The alarm lane: each sink sends alarm transitions from a cursor of their own
//! (`<sink>:alarms`), ahead of whatever telemetry backlog its main cursor still has, so after
//! an outage the central side learns of every alarm before the readings catch up. The lane is
//! in `seq` order, so each alarm's transitions arrive in order; the main lane skips alarm
//! records (the lane owns them).
//!
//! A failure of the lane alone (the Kafka alarm topic does not exist) does not hold telemetry
//! back: the lane reports it in `/health` (`alarmLaneError`), retries on a backoff of its own
//! and lets the main lane run meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    SinkContext, SinkError, Upstream, count_sent, fail, move_cursor, wait_for_retry, with_timeout,
};
use crate::backoff::Backoff;
use crate::store::{RawRecord, Store};

/// Alarm transitions per request: they are few; this bounds one send after a flood.
const LANE_BATCH: usize = 500;

/// What one step of the lane did.
pub(super) enum Step {
    /// Nothing to send: on to telemetry.
    Idle,
    /// Sent some: look again before telemetry.
    Sent,
    /// The upstream failed (reported, backed off): reconnect.
    Failed,
}

pub(super) struct AlarmLane {
    name: Arc<str>,
    cursor: u64,
    /// After a failure of the lane alone: no new attempt before then.
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl AlarmLane {
    /// The lane from its committed cursor; a sink without one starts where its main cursor is
    /// (what lies before it was sent by the main lane). `None` (logged) if the store cannot say.
    pub(super) fn start(store: &Store, sink: &str, main_cursor: u64) -> Option<AlarmLane> {
        let name: Arc<str> = format!("{sink}:alarms").into();
        match store.cursor(&name) {
            Ok(cursor) => Some(AlarmLane {
                name,
                cursor: cursor.unwrap_or(main_cursor),
                retry_at: None,
                backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            }),
            Err(e) => {
                tracing::error!(sink, error = %e, "cannot read the alarm lane cursor; sink not started");
                None
            }
        }
    }

    /// Sends the next alarm transitions, if any; a failure is reported and backed off here.
    pub(super) async fn step<U: Upstream>(
        &mut self,
        upstream: &mut U,
        ctx: &SinkContext,
        timeout: Duration,
        backoff: &mut Backoff,
    ) -> Step {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Step::Idle;
        }
        match self.send_next(upstream, ctx, timeout).await {
            Ok(true) => {
                if self.retry_at.take().is_some() {
                    self.backoff.reset();
                    ctx.health.set_alarm_lane_error(None);
                    tracing::info!(sink = ctx.health.name, "alarm lane sending again");
                }
                Step::Sent
            }
            Ok(false) => Step::Idle,
            Err(e @ SinkError::MissingTopic { .. }) => {
                if self.retry_at.is_none() {
                    tracing::error!(sink = ctx.health.name, error = %e,
                        "alarm transitions wait in the store; telemetry keeps flowing");
                }
                ctx.health.set_alarm_lane_error(Some(e.to_string()));
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                Step::Idle
            }
            Err(e) => {
                fail(ctx, &e);
                wait_for_retry(upstream, backoff.next_delay(), &ctx.stop).await;
                Step::Failed
            }
        }
    }

    /// Sends the next alarm transitions, if any; `Ok(true)` when it sent some.
    async fn send_next<U: Upstream>(
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
