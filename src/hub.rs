//! Fans committed records out to live consumers (the Socket.IO API, later the sinks' wake-up).
//! It carries only what the store already committed, plus ephemeral system alerts that cannot
//! wait for the store (e.g. "store is failing"). A consumer that lags behind the channel
//! catches up from the store by sequence number instead of slowing the writer.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::record::{Alert, Committed};

#[derive(Debug, Clone)]
pub enum HubEvent {
    /// One group commit, in sequence order.
    Committed(Arc<[Committed]>),
    /// A system alert that is not (or could not be) stored.
    System(Arc<Alert>),
}

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<HubEvent>,
}

impl Hub {
    /// `capacity` is in commits (batches), not records.
    pub fn new(capacity: usize) -> Hub {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Hub { tx }
    }

    pub fn publish(&self, event: HubEvent) {
        // No receiver is fine: nobody is listening yet, and the store has the record.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.tx.subscribe()
    }
}
