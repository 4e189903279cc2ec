//! What waits for the next commits: records as received, then numbered (staged) in chunks,
//! the newest cursor per sink, and the PUBACK barriers that wait for their records' commit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::WriteRequest;
use crate::ingest::AckToken;
use crate::record::{Committed, Record, RecordKind};

/// Everything gathered for the next commits: records in arrival order, first as received,
/// then numbered (staged) in chunks of at most `store.batch_max_records`, and the newest
/// cursor per sink.
#[derive(Default)]
pub(super) struct Pending {
    fresh: Vec<Record>,
    staged: VecDeque<Arc<[Committed]>>,
    staged_len: usize,
    cursors: BTreeMap<Arc<str>, u64>,
    oldest: Option<Instant>,
    /// Records added and records taken into slices so far, so each ack token goes with the
    /// slice holding the last record that arrived before it.
    added: u64,
    taken: u64,
    /// Ack tokens and the `added` count when each arrived.
    acks: VecDeque<(u64, AckToken)>,
    /// An alarm transition waits: committed at once (rare, and operators, `get:alarms` and
    /// the upstream alarm lane should not wait out the cadence for it).
    alarm: bool,
}

impl Pending {
    pub(super) fn add(&mut self, request: WriteRequest) {
        match request {
            WriteRequest::Records(b) => {
                self.oldest = Some(self.oldest.map_or(b.received, |o| o.min(b.received)));
                self.added += b.records.len() as u64;
                self.alarm |= b.records.iter().any(|r| r.kind() == RecordKind::Alarm);
                self.fresh.extend(b.records);
                let at = self.added;
                self.acks.extend(b.acks.into_iter().map(|ack| (at, ack)));
            }
            WriteRequest::Cursor { sink, next_seq } => {
                let slot = self.cursors.entry(sink).or_insert(next_seq);
                *slot = (*slot).max(next_seq);
            }
        }
    }

    /// Records not committed yet.
    pub(super) fn len(&self) -> usize {
        self.fresh.len() + self.staged_len
    }

    /// Records numbered and not yet taken into a slice.
    pub(super) fn staged_len(&self) -> usize {
        self.staged_len
    }

    /// Records received and not yet numbered.
    pub(super) fn fresh_len(&self) -> usize {
        self.fresh.len()
    }

    /// When the oldest record not yet committed was received.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0 && self.cursors.is_empty() && self.acks.is_empty()
    }

    pub(super) fn urgent(&self) -> bool {
        self.alarm || self.acks.iter().any(|(_, ack)| ack.is_urgent())
    }

    /// Numbers at most `limit` fresh records from `first_seq` into chunks of at most `max`;
    /// returns the new chunks.
    pub(super) fn stage(
        &mut self,
        first_seq: u64,
        max: usize,
        limit: usize,
    ) -> Vec<Arc<[Committed]>> {
        let mut seq = first_seq;
        let take = limit.min(self.fresh.len());
        let mut fresh = self.fresh.drain(..take).peekable();
        let mut chunks = Vec::new();
        while fresh.peek().is_some() {
            let chunk: Arc<[Committed]> = fresh
                .by_ref()
                .take(max.max(1))
                .map(|record| {
                    seq += 1;
                    Committed {
                        seq: seq - 1,
                        record,
                    }
                })
                .collect();
            self.staged_len += chunk.len();
            self.staged.push_back(chunk.clone());
            chunks.push(chunk);
        }
        chunks
    }

    /// Barriers whose records are all in slices taken so far.
    pub(super) fn settled_acks(&mut self) -> Vec<AckToken> {
        let mut acks = Vec::new();
        while self.acks.front().is_some_and(|(at, _)| *at <= self.taken) {
            acks.extend(self.acks.pop_front().map(|(_, ack)| ack));
        }
        acks
    }

    /// The next commit: staged chunks up to `max` records (at least one chunk, in order, so
    /// per-device order and `seq` stay as received) and every cursor; `None` when nothing
    /// is left to commit.
    pub(super) fn next_slice(&mut self, max: usize) -> Option<Slice> {
        if self.staged.is_empty() && self.cursors.is_empty() {
            return None;
        }
        let mut batches = Vec::new();
        let mut n = 0;
        while let Some(chunk) = self.staged.front() {
            if n > 0 && n + chunk.len() > max {
                break;
            }
            n += chunk.len();
            batches.extend(self.staged.pop_front());
        }
        self.staged_len -= n;
        self.taken += n as u64;
        self.alarm &= !self.fresh.is_empty() || self.staged_len != 0;
        Some(Slice {
            batches,
            cursors: std::mem::take(&mut self.cursors),
            oldest: self.oldest.take(),
            acks: self.settled_acks(),
        })
    }
}

/// What one commit holds.
pub(super) struct Slice {
    /// Staged records, numbered in order from the first one's `seq`.
    pub(super) batches: Vec<Arc<[Committed]>>,
    pub(super) cursors: BTreeMap<Arc<str>, u64>,
    pub(super) oldest: Option<Instant>,
    /// PUBACK barriers completed once this commit returned (see [`AckToken`]).
    pub(super) acks: Vec<AckToken>,
}

impl Slice {
    pub(super) fn empty() -> Slice {
        Slice {
            batches: Vec::new(),
            cursors: BTreeMap::new(),
            oldest: None,
            acks: Vec::new(),
        }
    }

    pub(super) fn first_seq(&self) -> Option<u64> {
        self.batches.iter().find_map(|b| b.first()).map(|c| c.seq)
    }

    pub(super) fn records(&self) -> impl Iterator<Item = &Record> {
        self.batches
            .iter()
            .flat_map(|b| b.iter().map(|c| &c.record))
    }

    pub(super) fn len(&self) -> usize {
        self.batches.iter().map(|b| b.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::AckCursor;
    use crate::store::test_support::reading;
    use crate::store::writer::WriteBatch;

    fn batch(n: usize, acks: Vec<AckToken>) -> WriteRequest {
        WriteRequest::Records(WriteBatch {
            records: (0..n).map(|i| reading("d", "t", i as f64, 1)).collect(),
            received: Instant::now(),
            acks,
        })
    }

    #[test]
    fn an_alarm_transition_is_committed_at_once_then_the_cadence_resumes() {
        let mut pending = Pending::default();
        pending.add(batch(3, vec![]));
        assert!(!pending.urgent(), "readings wait for the cadence");
        pending.add(WriteRequest::Records(WriteBatch {
            records: vec![crate::store::test_support::alarm("active_unacked", 1)],
            received: Instant::now(),
            acks: vec![],
        }));
        assert!(pending.urgent());
        pending.stage(1, 100, usize::MAX);
        while pending.next_slice(100).is_some() {}
        pending.add(batch(1, vec![]));
        assert!(!pending.urgent(), "committed: readings wait again");
    }

    #[test]
    fn staged_records_keep_their_numbers_and_barriers_wait_for_their_slice() {
        let cursor = Arc::new(AckCursor::default());
        let mut pending = Pending::default();
        pending.add(batch(5, vec![cursor.token(1, None, false)]));
        let chunks = pending.stage(100, 2, usize::MAX);
        let seqs: Vec<Vec<u64>> = chunks
            .iter()
            .map(|c| c.iter().map(|r| r.seq).collect())
            .collect();
        assert_eq!(seqs, [vec![100, 101], vec![102, 103], vec![104]]);
        pending.add(batch(1, vec![cursor.token(2, None, true)]));
        assert!(pending.urgent());
        assert!(pending.settled_acks().is_empty(), "nothing committed yet");
        pending.stage(105, 2, usize::MAX);
        let first = pending.next_slice(4).unwrap();
        assert_eq!(first.first_seq(), Some(100));
        assert_eq!(first.len(), 4);
        assert!(
            first.acks.is_empty(),
            "the first barrier covers record 104 too"
        );
        let second = pending.next_slice(4).unwrap();
        assert_eq!((second.first_seq(), second.len()), (Some(104), 2));
        assert_eq!(second.acks.len(), 2);
        assert!(pending.next_slice(4).is_none());
        assert!(pending.is_empty());
    }

    #[test]
    fn staging_stops_at_the_limit_and_the_rest_keeps_its_place() {
        let cursor = Arc::new(AckCursor::default());
        let mut pending = Pending::default();
        pending.add(batch(5, vec![cursor.token(1, None, false)]));
        let seqs = |chunks: Vec<Arc<[Committed]>>| -> Vec<u64> {
            chunks
                .iter()
                .flat_map(|c| c.iter().map(|r| r.seq))
                .collect()
        };
        assert_eq!(seqs(pending.stage(10, 2, 3)), [10, 11, 12]);
        assert_eq!((pending.staged_len(), pending.fresh_len()), (3, 2));
        let slice = pending.next_slice(100).unwrap();
        assert_eq!(slice.len(), 3);
        assert!(
            slice.acks.is_empty(),
            "the barrier covers the unstaged records too"
        );
        assert_eq!(seqs(pending.stage(13, 2, 3)), [13, 14]);
        let rest = pending.next_slice(100).unwrap();
        assert_eq!((rest.first_seq(), rest.acks.len()), (Some(13), 1));
        assert!(pending.is_empty());
    }
}
