//! What a source hands to the pipeline: one parsed and validated message, not yet stored.
//! Sources produce it, the pipeline consumes it; it lives below both.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::alarms::ThresholdRule;
use crate::record::{DeviceState, Level};

/// What a source hands over: already parsed and validated, not yet stored.
#[derive(Debug)]
pub enum Ingest {
    Reading {
        device_id: String,
        sensor_type: String,
        value: f64,
        unit: Option<String>,
        ts_ms: Option<i64>,
        status: Option<Level>,
        location: Option<String>,
        received: Instant,
        /// A rule of the device's own (a firmware profile's threshold) that replaces the
        /// `[[thresholds]]` rule of this sensor type.
        threshold: Option<Arc<ThresholdRule>>,
    },
    Status {
        device_id: String,
        status: DeviceState,
        location: Option<String>,
        received: Instant,
    },
    /// A barrier: completed by the store writer once the commit holding every message this
    /// source handed over before it returned and is durable. One barrier covers a run of messages (e.g. all
    /// publishes of one socket read), so acknowledging costs one channel slot per run, not per
    /// message; FIFO channels and the single writer keep it behind the messages it covers.
    Ack(AckToken),
}

/// A source's commit position, advanced by completed [`AckToken`]s, in commit order.
#[derive(Debug, Default)]
pub struct AckCursor {
    committed: AtomicU64,
    notify: Notify,
}

impl AckCursor {
    /// A token that, once completed, says messages up to number `upto` (the source's own
    /// numbering, increasing) are durably committed. `hold` is released with it (e.g. bytes
    /// counted against a global in-flight budget). `urgent`: the source cannot read on until
    /// it completes (at its in-flight cap, or the shared budget is nearly spent), so the
    /// writer makes its commit durable at once instead of at its durable cadence.
    pub fn token(
        self: &Arc<Self>,
        upto: u64,
        hold: Option<OwnedSemaphorePermit>,
        urgent: bool,
    ) -> AckToken {
        AckToken {
            cursor: self.clone(),
            upto,
            urgent,
            _hold: hold,
        }
    }

    /// The highest `upto` completed so far.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Resolves after a token completes (at once if one completed since the last wait).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// See [`Ingest::Ack`]. Dropped without [`AckToken::complete`] (the store gave up at
/// shutdown), it acknowledges nothing.
pub struct AckToken {
    cursor: Arc<AckCursor>,
    upto: u64,
    urgent: bool,
    _hold: Option<OwnedSemaphorePermit>,
}

impl AckToken {
    /// See [`AckCursor::token`].
    pub fn is_urgent(&self) -> bool {
        self.urgent
    }

    /// Called by the store writer after the commit returned.
    pub fn complete(self) {
        let before = self.cursor.committed.fetch_max(self.upto, Ordering::AcqRel);
        // One source's messages travel FIFO through one pipeline and one writer, so its
        // barriers complete in the order it sent them.
        debug_assert!(before <= self.upto, "acks completed out of commit order");
        self.cursor.notify.notify_one();
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckToken")
            .field("upto", &self.upto)
            .field("urgent", &self.urgent)
            .finish()
    }
}
