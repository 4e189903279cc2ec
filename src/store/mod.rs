//! The durable buffer: every record in one redb file, appended by a single writer
//! ([`writer`]) with group commit, read concurrently by history queries and catch-up.
//!
//! Tables:
//! - `log`: `seq → encoded record` (header + reference JSON), the append log in commit order.
//! - `readings_by_device`: `(deviceId, ts_ms, seq) → ()`, so device history is a range scan.
//! - `readings_by_sensor`: `(deviceId, sensorType, ts_ms, seq) → ()`, likewise per sensor.
//! - `log_by_kind`: `(kind, seq) → ()` for status changes and alerts only (they are few), so
//!   the byte budget can evict telemetry first, then status changes, alerts last.
//! - `devices`: `deviceId → latest device:status JSON`, to restore the registry at start.
//! - `sink_cursors`: `sink name → next seq to send`, each upstream sink's committed position.
//! - `meta`: `next_seq`, `logical_bytes`.

pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::record::{Record, RecordKind};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const BY_DEVICE: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("readings_by_device");
const BY_SENSOR: TableDefinition<(&str, &str, i64, u64), ()> =
    TableDefinition::new("readings_by_sensor");
const BY_KIND: TableDefinition<(u8, u64), ()> = TableDefinition::new("log_by_kind");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("sink_cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_NEXT_SEQ: &str = "next_seq";
const META_BYTES: &str = "logical_bytes";

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "edge-gateway.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open store {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("store transaction failed: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("store table error: {0}")]
    Table(#[from] redb::TableError),
    #[error("store I/O error: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("store commit failed: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("stored record {seq} is corrupt")]
    Corrupt { seq: u64 },
    #[error("store is being reopened after an I/O error")]
    Reopening,
}

impl StoreError {
    /// An I/O failure (disk full, device error) after which redb refuses further writes on
    /// this handle: the database has to be reopened once the cause is gone.
    pub fn needs_reopen(&self) -> bool {
        let storage = match self {
            StoreError::Storage(e)
            | StoreError::Transaction(redb::TransactionError::Storage(e))
            | StoreError::Commit(redb::CommitError::Storage(e))
            | StoreError::Table(redb::TableError::Storage(e)) => e,
            StoreError::Reopening => return true,
            _ => return false,
        };
        matches!(
            storage,
            redb::StorageError::Io(_) | redb::StorageError::PreviousIo
        )
    }
}

/// A read handle on the store; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only while [`Store::reopen`] replaces the database.
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
}

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

#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub records: u64,
    pub logical_bytes: u64,
    pub next_seq: u64,
    pub file_bytes: u64,
}

impl Store {
    /// Opens (or creates) the store in `data_dir`. redb recovers a file left by a crash here.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.into(),
            source,
        })?;
        let path = data_dir.join(STORE_FILE);
        let db = open_database(&path)?;
        let txn = db.begin_write()?;
        {
            let log = txn.open_table(LOG)?;
            txn.open_table(BY_DEVICE)?;
            txn.open_table(BY_SENSOR)?;
            let mut by_kind = txn.open_table(BY_KIND)?;
            txn.open_table(DEVICES)?;
            txn.open_table(CURSORS)?;
            txn.open_table(META)?;
            // A store written before the kind index existed: build it once.
            if by_kind.is_empty()? && !log.is_empty()? {
                for entry in log.iter()? {
                    let (k, v) = entry?;
                    let seq = k.value();
                    let kind = v
                        .value()
                        .first()
                        .copied()
                        .ok_or(StoreError::Corrupt { seq })?;
                    if kind != RecordKind::Reading as u8 {
                        by_kind.insert((kind, seq), ())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(Store {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(Arc::new(db))),
                path,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.inner
            .db
            .read()
            .expect("store lock poisoned")
            .clone()
            .ok_or(StoreError::Reopening)
    }

    /// Closes and reopens the database file: after an I/O error (disk full) redb refuses
    /// further writes on the old handle. Waits briefly for reads in flight to finish; on
    /// failure the store stays closed and the next call tries again.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.inner.db.write().expect("store lock poisoned");
        if let Some(mut old) = slot.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if std::time::Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Err(StoreError::Reopening);
                    }
                }
            }
        }
        *slot = Some(Arc::new(open_database(&self.inner.path)?));
        Ok(())
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get =
            |k| -> Result<u64, StoreError> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
        Ok(StoreStats {
            records: txn.open_table(LOG)?.len()?,
            logical_bytes: get(META_BYTES)?,
            next_seq: get(META_NEXT_SEQ)?.max(1),
            file_bytes: std::fs::metadata(self.path()).map(|m| m.len()).unwrap_or(0),
        })
    }

    /// The `seq` the next committed record will get.
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta
            .get(META_NEXT_SEQ)?
            .map(|v| v.value())
            .unwrap_or(0)
            .max(1))
    }

    /// Readings of one device (and sensor type) in a time range: a range scan on an index.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<serde_json::Value>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let from = q.from_ms.unwrap_or(i64::MIN);
        let to = q.to_ms.unwrap_or(i64::MAX);
        let mut seqs = Vec::with_capacity(q.limit.min(4096));
        match &q.sensor_type {
            Some(st) => {
                let idx = txn.open_table(BY_SENSOR)?;
                let range = (q.device_id.as_str(), st.as_str(), from, 0u64)
                    ..=(q.device_id.as_str(), st.as_str(), to, u64::MAX);
                for entry in idx.range(range)?.rev().take(q.limit) {
                    seqs.push(entry?.0.value().3);
                }
            }
            None => {
                let idx = txn.open_table(BY_DEVICE)?;
                let range =
                    (q.device_id.as_str(), from, 0u64)..=(q.device_id.as_str(), to, u64::MAX);
                for entry in idx.range(range)?.rev().take(q.limit) {
                    seqs.push(entry?.0.value().2);
                }
            }
        }
        seqs.reverse();
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let Some(raw) = log.get(seq)? else { continue };
            let decoded = decode(raw.value()).ok_or(StoreError::Corrupt { seq })?;
            out.push(
                serde_json::from_slice(decoded.json).map_err(|_| StoreError::Corrupt { seq })?,
            );
        }
        Ok(out)
    }

    /// Up to `max` records with `seq >= from_seq`, in order: how a lagging consumer catches up.
    pub fn read_from(&self, from_seq: u64, max: usize) -> Result<Vec<StoredRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for entry in log.range(from_seq..)?.take(max) {
            let (k, v) = entry?;
            let seq = k.value();
            let d = decode(v.value()).ok_or(StoreError::Corrupt { seq })?;
            out.push(StoredRecord {
                seq,
                kind: d.kind,
                device_id: (!d.device_id.is_empty()).then(|| d.device_id.to_string()),
                json: serde_json::from_slice(d.json).map_err(|_| StoreError::Corrupt { seq })?,
            });
        }
        Ok(out)
    }

    /// Up to `max` records with `seq >= from_seq` as stored bytes, in order. Evicted records
    /// show up as gaps in `seq`.
    pub fn read_raw(&self, from_seq: u64, max: usize) -> Result<Vec<RawRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let mut out = Vec::with_capacity(max.min(8192));
        for entry in log.range(from_seq..)?.take(max) {
            let (k, v) = entry?;
            let seq = k.value();
            let d = decode(v.value()).ok_or(StoreError::Corrupt { seq })?;
            out.push(RawRecord {
                seq,
                kind: d.kind,
                ts_ms: d.ts_ms,
                device_id: d.device_id.to_string(),
                json: d.json.to_vec(),
            });
        }
        Ok(out)
    }

    /// The timestamp of the oldest record with `seq >= from_seq`, if any: how far behind a
    /// consumer at `from_seq` is, in time.
    pub fn oldest_ts_from(&self, from_seq: u64) -> Result<Option<i64>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let Some(entry) = log.range(from_seq..)?.next() else {
            return Ok(None);
        };
        let (k, v) = entry?;
        let seq = k.value();
        Ok(Some(
            decode(v.value()).ok_or(StoreError::Corrupt { seq })?.ts_ms,
        ))
    }

    /// A sink's committed cursor: the next `seq` it has to send. `None` for a new sink.
    pub fn cursor(&self, sink: &str) -> Result<Option<u64>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(CURSORS)?;
        Ok(table.get(sink)?.map(|v| v.value()))
    }

    /// The latest `device:status` JSON of every device ever seen.
    pub fn devices(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            if let Ok(json) = serde_json::from_slice(v.value()) {
                out.push(json);
            } else {
                tracing::warn!(
                    device = k.value(),
                    "ignoring unreadable stored device status"
                );
            }
        }
        Ok(out)
    }
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(16 * 1024 * 1024)
        .create(path)
        .map_err(|source| StoreError::Open {
            path: path.into(),
            source,
        })
}

/// The parts of an encoded record.
struct Decoded<'a> {
    kind: RecordKind,
    ts_ms: i64,
    device_id: &'a str,
    sensor_type: &'a str,
    json: &'a [u8],
}

/// `[kind u8][ts_ms i64 LE][len u8][deviceId][len u8][sensorType][reference JSON]`.
/// The header lets eviction remove index entries without parsing JSON.
fn encode(record: &Record, gateway_id: &str, seq: u64) -> Vec<u8> {
    let device = truncate(record.device_id().unwrap_or(""));
    let sensor = match record {
        Record::Reading(r) => truncate(&r.sensor_type),
        _ => "",
    };
    let mut out = Vec::with_capacity(160);
    out.push(record.kind() as u8);
    out.extend_from_slice(&record.ts_ms().to_le_bytes());
    out.push(device.len() as u8);
    out.extend_from_slice(device.as_bytes());
    out.push(sensor.len() as u8);
    out.extend_from_slice(sensor.as_bytes());
    serde_json::to_writer(&mut out, &record.to_wire(gateway_id, Some(seq)))
        .expect("serializing to a Vec cannot fail");
    out
}

/// Ids are limited to 255 bytes at ingest; this only guards the header format.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn decode(raw: &[u8]) -> Option<Decoded<'_>> {
    let kind = RecordKind::from_u8(*raw.first()?)?;
    let ts_ms = i64::from_le_bytes(raw.get(1..9)?.try_into().ok()?);
    let dlen = usize::from(*raw.get(9)?);
    let device_id = std::str::from_utf8(raw.get(10..10 + dlen)?).ok()?;
    let spos = 10 + dlen;
    let slen = usize::from(*raw.get(spos)?);
    let sensor_type = std::str::from_utf8(raw.get(spos + 1..spos + 1 + slen)?).ok()?;
    let json = raw.get(spos + 1 + slen..)?;
    Some(Decoded {
        kind,
        ts_ms,
        device_id,
        sensor_type,
        json,
    })
}

/// What one stored record costs against the byte budget: its value plus its index keys.
fn cost(d: &Decoded<'_>, raw_len: usize) -> u64 {
    let index = if d.kind == RecordKind::Reading {
        2 * d.device_id.len() + d.sensor_type.len() + 2 * 16
    } else {
        0
    };
    let kind_index = if d.kind == RecordKind::Reading { 0 } else { 9 };
    // + the log key.
    (raw_len + 8 + kind_index + index) as u64
}

/// Outcome of one group commit.
#[derive(Debug, Default, Clone)]
pub struct CommitOutcome {
    /// Sequence number of the first appended record; the rest follow without gaps.
    pub first_seq: u64,
    pub evicted_age: u64,
    pub evicted_budget: u64,
    pub logical_bytes: u64,
}

/// Retention applied inside each commit.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age_ms: i64,
    pub byte_budget: u64,
    /// Upper bound on evictions per commit, so one commit never balloons.
    pub max_evictions_per_commit: usize,
}

/// The single writer's view: owns the sequence counter.
pub struct StoreWriter {
    store: Store,
    gateway_id: String,
    next_seq: u64,
    logical_bytes: u64,
    /// No reading is stored below this `seq`: where the budget's search for the oldest
    /// reading starts (status changes and alerts it skips are few).
    readings_from: u64,
}

impl StoreWriter {
    pub fn new(store: Store, gateway_id: String) -> Result<StoreWriter, StoreError> {
        let stats = store.stats()?;
        Ok(StoreWriter {
            store,
            gateway_id,
            next_seq: stats.next_seq,
            logical_bytes: stats.logical_bytes,
            readings_from: 0,
        })
    }

    /// Appends `records`, moves sink `cursors` and applies retention in one durable
    /// transaction. Sequence numbers are assigned here, so they are gap-free and in commit
    /// order. On error nothing changed.
    pub fn append(
        &mut self,
        records: &[Record],
        cursors: &[(&str, u64)],
        now_ms: i64,
        retention: Retention,
    ) -> Result<CommitOutcome, StoreError> {
        let db = self.store.db()?;
        let txn = db.begin_write()?;
        let mut seq = self.next_seq;
        let mut bytes = self.logical_bytes;
        let mut readings_from = self.readings_from;
        let mut outcome = CommitOutcome::default();
        {
            let mut log = txn.open_table(LOG)?;
            let mut by_device = txn.open_table(BY_DEVICE)?;
            let mut by_sensor = txn.open_table(BY_SENSOR)?;
            let mut by_kind = txn.open_table(BY_KIND)?;
            let mut devices = txn.open_table(DEVICES)?;
            let mut cursor_table = txn.open_table(CURSORS)?;
            for &(sink, next) in cursors {
                cursor_table.insert(sink, next)?;
            }
            for record in records {
                let raw = encode(record, &self.gateway_id, seq);
                let d = decode(&raw).expect("just encoded");
                bytes += cost(&d, raw.len());
                if let Record::Reading(_) = record {
                    by_device.insert((d.device_id, d.ts_ms, seq), ())?;
                    by_sensor.insert((d.device_id, d.sensor_type, d.ts_ms, seq), ())?;
                }
                if let Record::Status(_) = record {
                    devices.insert(d.device_id, d.json)?;
                }
                log.insert(seq, raw.as_slice())?;
                if d.kind != RecordKind::Reading {
                    by_kind.insert((d.kind as u8, seq), ())?;
                }
                seq += 1;
            }

            // Age: oldest first, whatever the kind. Budget: telemetry first, then status
            // changes, alerts last, each oldest first. Never what this very commit adds.
            let oldest_allowed = now_ms.saturating_sub(retention.max_age_ms);
            let mut evictions = 0;
            while evictions < retention.max_evictions_per_commit {
                let victim = match log.first()? {
                    Some((k, v)) if k.value() < self.next_seq => {
                        let seq = k.value();
                        let d = decode(v.value()).ok_or(StoreError::Corrupt { seq })?;
                        (d.ts_ms < oldest_allowed).then_some((seq, false))
                    }
                    _ => None,
                };
                let victim = match victim {
                    Some(v) => Some(v),
                    None if bytes > retention.byte_budget => {
                        let mut found = None;
                        for entry in log.range(readings_from..self.next_seq)? {
                            let (k, v) = entry?;
                            if v.value().first() == Some(&(RecordKind::Reading as u8)) {
                                found = Some((k.value(), true));
                                break;
                            }
                        }
                        readings_from = found.map_or(self.next_seq, |(s, _)| s);
                        if found.is_none() {
                            for kind in [RecordKind::Status, RecordKind::Alert] {
                                let k = kind as u8;
                                if let Some(entry) =
                                    by_kind.range((k, 0)..(k, self.next_seq))?.next()
                                {
                                    found = Some((entry?.0.value().1, true));
                                    break;
                                }
                            }
                        }
                        found
                    }
                    None => None,
                };
                let Some((victim, budget)) = victim else {
                    break;
                };
                let raw = log
                    .remove(victim)?
                    .map(|v| v.value().to_vec())
                    .ok_or(StoreError::Corrupt { seq: victim })?;
                let d = decode(&raw).ok_or(StoreError::Corrupt { seq: victim })?;
                if d.kind != RecordKind::Reading {
                    by_kind.remove((d.kind as u8, victim))?;
                }
                if d.kind == RecordKind::Reading {
                    by_device.remove((d.device_id, d.ts_ms, victim))?;
                    by_sensor.remove((d.device_id, d.sensor_type, d.ts_ms, victim))?;
                }
                bytes = bytes.saturating_sub(cost(&d, raw.len()));
                if budget {
                    outcome.evicted_budget += 1;
                } else {
                    outcome.evicted_age += 1;
                }
                evictions += 1;
            }

            let mut meta = txn.open_table(META)?;
            meta.insert(META_NEXT_SEQ, seq)?;
            meta.insert(META_BYTES, bytes)?;
        }
        txn.commit()?;

        let first = self.next_seq;
        self.next_seq = seq;
        self.logical_bytes = bytes;
        self.readings_from = readings_from;
        outcome.logical_bytes = bytes;
        outcome.first_seq = first;
        Ok(outcome)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DeviceState, DeviceStatus, Level, Reading};

    fn reading(dev: &str, st: &str, value: f64, ts_ms: i64) -> Record {
        Record::Reading(Reading {
            device_id: dev.into(),
            sensor_type: st.into(),
            value,
            unit: "u".into(),
            ts_ms,
            status: Level::Normal,
            location: "L".into(),
        })
    }

    const KEEP: Retention = Retention {
        max_age_ms: i64::MAX,
        byte_budget: u64::MAX,
        max_evictions_per_commit: 10_000,
    };

    fn q(
        dev: &str,
        st: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> HistoryQuery {
        HistoryQuery {
            device_id: dev.into(),
            sensor_type: st.map(Into::into),
            from_ms: from,
            to_ms: to,
            limit,
        }
    }

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
    fn byte_budget_evicts_oldest_first_with_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        let budget = Retention {
            byte_budget: 20_000,
            ..KEEP
        };
        let mut evicted = 0;
        for i in 0..400 {
            let out = w
                .append(
                    &[reading("a", "t", f64::from(i), i64::from(i))],
                    &[],
                    0,
                    budget,
                )
                .unwrap();
            evicted += out.evicted_budget;
            assert!(out.logical_bytes <= 20_000 + 300, "{}", out.logical_bytes);
        }
        let stats = store.stats().unwrap();
        assert_eq!(stats.records + evicted, 400);
        assert!(evicted > 200, "{evicted}");
        let h = store
            .history(&q("a", Some("t"), None, None, 10_000))
            .unwrap();
        assert_eq!(h.len() as u64, stats.records);
        assert_eq!(h.last().unwrap()["value"], 399.0);
        assert_eq!(h.first().unwrap()["seq"].as_u64().unwrap(), evicted + 1);
    }

    #[test]
    fn age_retention_and_device_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        let status = Record::Status(DeviceStatus {
            device_id: "a".into(),
            status: DeviceState::Online,
            ts_ms: 10_000,
            location: "L".into(),
            last_seen_ms: Some(10_000),
        });
        w.append(&[reading("a", "t", 1.0, 1_000), status], &[], 0, KEEP)
            .unwrap();
        let out = w
            .append(
                &[reading("a", "t", 2.0, 20_000)],
                &[],
                20_000,
                Retention {
                    max_age_ms: 15_000,
                    ..KEEP
                },
            )
            .unwrap();
        assert_eq!(out.evicted_age, 1);
        assert_eq!(
            store.history(&q("a", None, None, None, 10)).unwrap().len(),
            1
        );
        let devices = store.devices().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0]["status"], "online");
    }

    #[test]
    fn budget_evicts_telemetry_before_status_before_alerts() {
        use crate::record::{Alert, AlertKind};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        let status = |i: i64| {
            Record::Status(DeviceStatus {
                device_id: format!("d{i}"),
                status: DeviceState::Online,
                ts_ms: i,
                location: "L".into(),
                last_seen_ms: Some(i),
            })
        };
        let alert = |i: i64| {
            Record::Alert(Alert {
                alert_id: format!("a{i}"),
                device_id: Some("d".into()),
                severity: Level::Warning,
                kind: AlertKind::Threshold,
                message: "m".into(),
                ts_ms: i,
                sensor_type: None,
                threshold: None,
                affected_services: vec![],
            })
        };
        // Oldest first: an alert, a status, then readings.
        w.append(&[alert(0), status(1)], &[], 0, KEEP).unwrap();
        for i in 0..50 {
            w.append(
                &[reading("a", "t", f64::from(i), 10 + i64::from(i))],
                &[],
                0,
                KEEP,
            )
            .unwrap();
        }
        let full = store.stats().unwrap().logical_bytes;
        // A budget that forces evicting a few records: readings go, although older
        // status and alert records exist.
        let tight = Retention {
            byte_budget: full - 1500,
            ..KEEP
        };
        let out = w
            .append(&[reading("a", "t", 99.0, 100)], &[], 0, tight)
            .unwrap();
        assert!(out.evicted_budget > 0);
        let kinds: Vec<RecordKind> = store
            .read_raw(0, 1000)
            .unwrap()
            .iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(&kinds[..2], &[RecordKind::Alert, RecordKind::Status]);
        assert!(kinds[2..].iter().all(|k| *k == RecordKind::Reading));
        // Far over budget, with room for all but one eviction: every reading goes, then the
        // status; the alert is what is left.
        let starve = Retention {
            byte_budget: 1,
            max_evictions_per_commit: kinds.len() - 1,
            ..KEEP
        };
        w.append(&[reading("b", "t", 1.0, 200)], &[], 0, starve)
            .unwrap();
        let left: Vec<RecordKind> = store
            .read_raw(0, 1000)
            .unwrap()
            .iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            left,
            vec![RecordKind::Alert, RecordKind::Reading],
            "alert kept longest; the new record is never evicted"
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
