//! Reads, concurrent with the writer: history range scans, catch-up from a `seq`, sink
//! cursors. The device registry's reads are in `registry.rs`.

use redb::{ReadTransaction, ReadableTable};

use super::codec::{Decoded, decode_stored, encode};
use super::{BY_DEVICE, BY_SENSOR, CURSORS, LOG, SKIPS, Store, StoreError};
use crate::record::RecordKind;

/// A history request, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub device_id: String,
    pub sensor_type: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// The newest `limit` readings of the range are returned, oldest first.
    pub limit: usize,
}

/// A stored record as its bytes: what the upstream sinks forward without re-encoding.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub seq: u64,
    pub kind: RecordKind,
    pub ts_ms: i64,
    /// Empty for records that belong to no device.
    pub device_id: String,
    /// The reference JSON, with `gatewayId` and `seq`.
    pub json: Vec<u8>,
}

/// A stored record as read back: its sequence number, kind, and reference JSON.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: u64,
    pub kind: RecordKind,
    pub device_id: Option<String>,
    pub json: serde_json::Value,
}

impl Store {
    /// Readings of one device (and sensor type) in a time range: a range scan on an index.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<serde_json::Value>, StoreError> {
        self.read(|txn| {
            let log = txn.open_table(LOG)?;
            let seqs = history_seqs(txn, q)?;
            let mut out = Vec::with_capacity(seqs.len());
            for seq in seqs {
                let Some(raw) = log.get(seq)? else { continue };
                out.push(decode_stored(seq, raw.value())?.json_value(seq)?);
            }
            Ok(out)
        })
    }

    /// Up to `max` records with `seq >= from_seq`, in order: how a lagging consumer catches up.
    pub fn read_from(&self, from_seq: u64, max: usize) -> Result<Vec<StoredRecord>, StoreError> {
        self.scan_log(from_seq, max, |seq, d| {
            Ok(StoredRecord {
                seq,
                kind: d.kind,
                device_id: (!d.device_id.is_empty()).then(|| d.device_id.to_string()),
                json: d.json_value(seq)?,
            })
        })
    }

    /// Up to `max` records with `seq >= from_seq` as stored bytes, in order. Evicted records
    /// show up as gaps in `seq`.
    pub fn read_raw(&self, from_seq: u64, max: usize) -> Result<Vec<RawRecord>, StoreError> {
        self.scan_log(from_seq, max, |seq, d| {
            Ok(RawRecord {
                seq,
                kind: d.kind,
                ts_ms: d.ts_ms,
                device_id: d.device_id.to_string(),
                json: d.json.to_vec(),
            })
        })
    }

    /// [`Store::read_raw`] up to the durable end only: what the sinks forward. A record of a
    /// non-durable commit may vanish in a crash (and its `seq` go to another record), so it
    /// must not leave the gateway yet.
    pub fn read_raw_durable(
        &self,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<RawRecord>, StoreError> {
        let durable = self.durable_next_seq();
        let max = max.min(usize::try_from(durable.saturating_sub(from_seq)).unwrap_or(max));
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut batch = self.read_raw(from_seq, max)?;
        batch.retain(|r| r.seq < durable);
        Ok(batch)
    }

    /// How many `seq`s in `from..to` were skipped after an unclean stop (never stored, so not
    /// a loss): see the `seq_skips` table.
    pub fn skipped_between(&self, from: u64, to: u64) -> Result<u64, StoreError> {
        self.read(|txn| {
            let mut skipped = 0;
            for entry in txn.open_table(SKIPS)?.iter()? {
                let (a, b) = entry?;
                let (a, b) = (a.value().max(from), b.value().min(to));
                skipped += b.saturating_sub(a);
            }
            Ok(skipped)
        })
    }

    /// The timestamp of the oldest record with `seq >= from_seq`, if any: how far behind a
    /// consumer at `from_seq` is, in time.
    pub fn oldest_ts_from(&self, from_seq: u64) -> Result<Option<i64>, StoreError> {
        Ok(self.scan_log(from_seq, 1, |_, d| Ok(d.ts_ms))?.pop())
    }

    /// The one scan behind the catch-up reads: up to `max` records with `seq >= from_seq`, in
    /// order, each turned into what the caller needs by `view`. The log is followed by the
    /// writer's staged records (shown on the hub, not yet committed), so a consumer catching
    /// up to the live view finds no hole. The staged ones are taken first: a batch committed
    /// meanwhile is then in the log, and each `seq` is read once.
    fn scan_log<T>(
        &self,
        from_seq: u64,
        max: usize,
        mut view: impl FnMut(u64, Decoded<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let (gateway_id, staged) = self.staged_from(from_seq);
        let mut next = from_seq;
        let mut out = self.read(|txn| {
            let log = txn.open_table(LOG)?;
            let mut out = Vec::with_capacity(max.min(8192));
            for entry in log.range(from_seq..)?.take(max) {
                let (k, v) = entry?;
                let seq = k.value();
                out.push(view(seq, decode_stored(seq, v.value())?)?);
                next = seq + 1;
            }
            Ok(out)
        })?;
        let staged = staged
            .iter()
            .flat_map(|b| b.iter())
            .filter(|c| c.seq >= next);
        for c in staged.take(max - out.len()) {
            let raw = encode(&c.record, &gateway_id, c.seq);
            out.push(view(c.seq, decode_stored(c.seq, &raw)?)?);
        }
        Ok(out)
    }

    /// A sink's committed cursor: the next `seq` it has to send. `None` for a new sink.
    pub fn cursor(&self, sink: &str) -> Result<Option<u64>, StoreError> {
        self.read(|txn| Ok(txn.open_table(CURSORS)?.get(sink)?.map(|v| v.value())))
    }

    /// Every committed cursor whose name starts with `prefix` (relay mode keeps its stream
    /// positions and dedup floors there), the prefix taken off.
    pub fn cursors_with_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(CURSORS)?;
            let mut out = Vec::new();
            for entry in table.range(prefix..)? {
                let (k, v) = entry?;
                let Some(rest) = k.value().strip_prefix(prefix) else {
                    break;
                };
                out.push((rest.to_string(), v.value()));
            }
            Ok(out)
        })
    }
}

/// The `seq`s of the newest `q.limit` readings in range, oldest first, from the device or
/// the sensor index.
fn history_seqs(txn: &ReadTransaction, q: &HistoryQuery) -> Result<Vec<u64>, StoreError> {
    let from = q.from_ms.unwrap_or(i64::MIN);
    let to = q.to_ms.unwrap_or(i64::MAX);
    let device = q.device_id.as_str();
    let mut seqs = Vec::with_capacity(q.limit.min(4096));
    match &q.sensor_type {
        Some(st) => {
            let idx = txn.open_table(BY_SENSOR)?;
            let range = (device, st.as_str(), from, 0u64)..=(device, st.as_str(), to, u64::MAX);
            for entry in idx.range(range)?.rev().take(q.limit) {
                seqs.push(entry?.0.value().3);
            }
        }
        None => {
            let idx = txn.open_table(BY_DEVICE)?;
            let range = (device, from, 0u64)..=(device, to, u64::MAX);
            for entry in idx.range(range)?.rev().take(q.limit) {
                seqs.push(entry?.0.value().2);
            }
        }
    }
    seqs.reverse();
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use crate::store::test_support::{KEEP, q, reading};
    use crate::store::{Store, StoreWriter};

    #[test]
    fn seq_is_gap_free_across_reopen_and_history_filters() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = StoreWriter::new(Store::open(dir.path()).unwrap(), "gw".into()).unwrap();
            let out = w
                .append(
                    &[
                        reading("a", "t", 1.0, 1000),
                        reading("b", "t", 2.0, 1000),
                        reading("a", "h", 3.0, 2000),
                    ],
                    &[],
                    0,
                    KEEP,
                )
                .unwrap();
            assert_eq!(out.first_seq, 1);
        }
        let store = Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        let out = w
            .append(&[reading("a", "t", 4.0, 3000)], &[], 0, KEEP)
            .unwrap();
        assert_eq!(out.first_seq, 4);

        let values = |h: Vec<serde_json::Value>| {
            h.iter()
                .map(|v| v["value"].as_f64().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            values(store.history(&q("a", None, None, None, 10)).unwrap()),
            vec![1.0, 3.0, 4.0]
        );
        assert_eq!(
            values(store.history(&q("a", Some("t"), None, None, 10)).unwrap()),
            vec![1.0, 4.0]
        );
        assert_eq!(
            values(
                store
                    .history(&q("a", None, Some(1500), Some(2500), 10))
                    .unwrap()
            ),
            vec![3.0]
        );
        // The newest `limit`, oldest first.
        assert_eq!(
            values(store.history(&q("a", None, None, None, 2)).unwrap()),
            vec![3.0, 4.0]
        );
        assert!(
            store
                .history(&q("zzz", None, None, None, 10))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .read_from(2, 2)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn sink_cursors_commit_with_records_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
            assert_eq!(store.cursor("redis").unwrap(), None);
            w.append(&[reading("a", "t", 1.0, 1)], &[("redis", 1)], 0, KEEP)
                .unwrap();
            // A cursor-only commit, as when a sink drains with no new readings.
            w.append(&[], &[("redis", 2), ("kafka", 1)], 0, KEEP)
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cursor("redis").unwrap(), Some(2));
        assert_eq!(store.cursor("kafka").unwrap(), Some(1));
        assert_eq!(store.next_seq().unwrap(), 2);
        let raw = store.read_raw(1, 10).unwrap();
        assert_eq!(raw.len(), 1);
        let json: serde_json::Value = serde_json::from_slice(&raw[0].json).unwrap();
        assert_eq!(
            (json["gatewayId"].as_str(), json["seq"].as_u64()),
            (Some("gw"), Some(1))
        );
        assert_eq!(raw[0].device_id, "a");
    }
}

#[cfg(test)]
mod tier_tests {
    use crate::record::Committed;
    use crate::store::append::MAX_STAGED;
    use crate::store::test_support::{KEEP, reading};
    use crate::store::{Store, StoreWriter};

    #[test]
    fn staged_records_are_read_but_not_forwarded_and_an_unclean_open_skips_their_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let before_crash = {
            let store = Store::open(dir.path()).unwrap();
            let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
            w.allow_staging().unwrap();
            w.append(&[reading("d", "t", 1.0, 1)], &[], 1, KEEP)
                .unwrap();
            let seq = w.next_seq();
            let staged = Committed {
                seq,
                record: reading("d", "t", 2.0, 2),
            };
            store.stage(&"gw".into(), vec![staged].into());
            let all = store.read_raw(0, 10).unwrap();
            assert_eq!(all.len(), 2, "staged records are read at once");
            assert_eq!((all[1].seq, all[1].ts_ms), (seq, 2));
            assert_eq!(store.read_from(seq, 10).unwrap().len(), 1);
            let durable = store.read_raw_durable(0, 10).unwrap();
            assert_eq!(durable.len(), 1, "sinks see only the committed record");
            assert_eq!(store.durable_next_seq(), durable[0].seq + 1);
            seq + 1
            // Dropped without a clean close, as after kill -9.
        };
        let store = Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        let next = store.next_seq().unwrap();
        assert!(
            next >= before_crash + MAX_STAGED - 1,
            "no seq a dashboard saw is reused: {next}"
        );
        let first = w
            .append(&[reading("d", "t", 3.0, 3)], &[], 3, KEEP)
            .unwrap()
            .first_seq;
        assert_eq!(first, next);
        let all = store.read_raw(0, 10).unwrap();
        let gaps: u64 = all.windows(2).map(|p| p[1].seq - p[0].seq - 1).sum();
        assert!(gaps >= MAX_STAGED - 1);
        assert_eq!(
            store.skipped_between(all[0].seq, first).unwrap(),
            gaps,
            "every gap is a recorded skip, not a loss"
        );
    }

    #[test]
    fn a_store_that_never_staged_skips_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let store = Store::open(dir.path()).unwrap();
            let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
            w.append(&[reading("d", "t", 1.0, 1)], &[], 1, KEEP)
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_seq().unwrap(), 3);
        assert_eq!(store.skipped_between(0, u64::MAX).unwrap(), 0);
    }
}
