//! The stager: its own thread that receives what the pipeline and the sinks hand to the
//! writer, numbers records and shows them live (hub, catch-up reads) at once, while the
//! committer's thread may be inside a commit's fsync. The two share one [`Queue`].

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use super::WriteRequest;
use super::pending::Pending;
use crate::hub::{Hub, HubEvent};
use crate::store::Store;
use crate::store::append::MAX_STAGED;

/// What the stager and the committer share.
pub(super) struct Queue {
    state: Mutex<Staging>,
    changed: Condvar,
}

pub(super) struct Staging {
    pub(super) pending: Pending,
    /// The `seq` the next staged record gets; never behind a number once shown (records
    /// given up at shutdown keep theirs).
    pub(super) next_free: u64,
    /// Every sender is gone and everything they sent is in `pending`.
    pub(super) closed: bool,
}

impl Queue {
    /// `next_free`: the writer's next `seq` when staging begins.
    pub(super) fn new(next_free: u64) -> Queue {
        Queue {
            state: Mutex::new(Staging {
                pending: Pending::default(),
                next_free,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Staging> {
        self.state.lock().expect("writer queue poisoned")
    }

    /// Wakes the other side: records staged, or room made by a commit.
    pub(super) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits for [`Queue::notify`], at most `timeout` when given.
    pub(super) fn wait<'a>(
        &self,
        state: MutexGuard<'a, Staging>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, Staging> {
        match timeout {
            Some(t) => {
                self.changed
                    .wait_timeout(state, t)
                    .expect("writer queue poisoned")
                    .0
            }
            None => self.changed.wait(state).expect("writer queue poisoned"),
        }
    }
}

/// The stager thread's state.
pub(super) struct Stager {
    pub(super) queue: Arc<Queue>,
    pub(super) store: Store,
    pub(super) hub: Hub,
    pub(super) gateway_id: Arc<str>,
    /// Records are shown when staged (else the committer shows them once committed).
    pub(super) publish: bool,
    /// Records per staged chunk (`store.batch_max_records`).
    pub(super) chunk: usize,
}

/// Most records staged and not yet committed: four commits' worth, so the stager can run a
/// commit or two ahead of a slow fsync, and at most [`MAX_STAGED`] (what an unclean open
/// skips).
fn staged_cap(chunk: usize) -> usize {
    chunk.saturating_mul(4).min(MAX_STAGED as usize)
}

impl Stager {
    /// Receives until every sender is gone, then closes the queue.
    pub(super) fn run(self, mut rx: mpsc::Receiver<WriteRequest>) {
        while let Some(first) = rx.blocking_recv() {
            let mut requests = vec![first];
            let mut records = requests[0].records();
            // Whatever else is already queued goes in the same round (one lock, fewer chunks).
            while records < self.chunk {
                let Ok(next) = rx.try_recv() else { break };
                records += next.records();
                requests.push(next);
            }
            let mut state = self.queue.lock();
            requests.into_iter().for_each(|r| state.pending.add(r));
            self.stage_all(state);
        }
        self.queue.lock().closed = true;
        self.queue.notify();
    }

    /// Stages the received records, at most [`staged_cap`] uncommitted at a time: beyond
    /// that it waits for the committer (and so stops receiving: the sources slow down).
    fn stage_all(&self, mut state: MutexGuard<'_, Staging>) {
        let cap = staged_cap(self.chunk);
        loop {
            let room = cap.saturating_sub(state.pending.staged_len());
            if room > 0 {
                self.stage(&mut state, room);
            }
            self.queue.notify();
            if state.pending.fresh_len() == 0 {
                return;
            }
            state = self.queue.wait(state, None);
        }
    }

    /// Numbers up to `room` records and shows them, under the queue's lock so the
    /// committer cannot commit (and unstage) a chunk before it is staged.
    fn stage(&self, state: &mut Staging, room: usize) {
        let first = state.next_free;
        let chunks = state.pending.stage(first, self.chunk, room);
        state.next_free = first + chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        if self.publish {
            for chunk in chunks {
                self.store.stage(&self.gateway_id, chunk.clone());
                self.hub.publish(HubEvent::Committed(chunk));
            }
        }
    }
}

impl WriteRequest {
    fn records(&self) -> usize {
        match self {
            WriteRequest::Records(b) => b.records.len(),
            WriteRequest::Cursor { .. } => 0,
        }
    }
}
