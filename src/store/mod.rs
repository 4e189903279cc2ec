//! The durable buffer: every record in one redb file, appended by a single writer
//! ([`writer`]) with group commit, read concurrently by history queries and catch-up.
//!
//! Tables:
//! - `log`: `seq → encoded record` (header + reference JSON), the append log in commit order.
//! - `readings_by_device`: `(deviceId, ts_ms, seq) → ()`, so device history is a range scan.
//! - `readings_by_sensor`: `(deviceId, sensorType, ts_ms, seq) → ()`, likewise per sensor.
//! - `log_by_kind`: `(kind, seq) → ()` for status changes and alerts only (they are few), so
//!   the byte budget can evict telemetry first, then status changes, alerts last.
//! - `devices`: `deviceId → latest device:status JSON`, to restore the registry at start
//!   (bounded, most recent first, see `registry.rs`).
//! - `sink_cursors`: `sink name → next seq to send`, each upstream sink's committed position.
//! - `meta`: `next_seq`, `logical_bytes`.
//!
//! This file holds the handle, opening and reopening, and the tables; `codec.rs` the record
//! format, `query.rs` the reads, `registry.rs` the device registry table, `append.rs` the writer's transaction and `retention.rs` what
//! it evicts.

mod append;
mod codec;
mod query;
mod registry;
mod retention;
#[cfg(test)]
mod test_support;
pub mod writer;

pub use append::{CommitOutcome, StoreWriter};
pub use query::{HistoryQuery, RawRecord, StoredRecord};
pub use registry::StoredDevice;
pub use retention::Retention;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};

use crate::record::RecordKind;
use codec::{Decoded, cost, decode_stored, kind_byte};

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

/// How long [`Store::reopen`] waits for reads in flight to drop the old handle.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

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

#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub records: u64,
    pub logical_bytes: u64,
    pub next_seq: u64,
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
        create_tables(&db)?;
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
            let deadline = Instant::now() + REOPEN_WAIT;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(1));
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
        Ok(StoreStats {
            records: txn.open_table(LOG)?.len()?,
            logical_bytes: meta_value(&meta, META_BYTES)?,
            next_seq: meta_value(&meta, META_NEXT_SEQ)?.max(1),
        })
    }

    /// The `seq` the next committed record will get.
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(meta_value(&txn.open_table(META)?, META_NEXT_SEQ)?.max(1))
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

/// Creates the tables a new file lacks, so readers never find one missing.
fn create_tables(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut tables = LogTables::open(&txn)?;
        txn.open_table(DEVICES)?;
        txn.open_table(CURSORS)?;
        txn.open_table(META)?;
        // A store written before the kind index existed: build it once.
        if tables.by_kind.is_empty()? && !tables.log.is_empty()? {
            backfill_kind_index(&mut tables)?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn backfill_kind_index(tables: &mut LogTables<'_>) -> Result<(), StoreError> {
    for entry in tables.log.iter()? {
        let (k, v) = entry?;
        let seq = k.value();
        let kind = kind_byte(v.value()).ok_or(StoreError::Corrupt { seq })?;
        if kind != RecordKind::Reading as u8 {
            tables.by_kind.insert((kind, seq), ())?;
        }
    }
    Ok(())
}

/// A `meta` entry; 0 before the first commit wrote it.
fn meta_value(meta: &ReadOnlyTable<&str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
}

/// The append log and its indexes, opened in one write transaction and kept in step.
struct LogTables<'txn> {
    log: Table<'txn, u64, &'static [u8]>,
    by_device: Table<'txn, (&'static str, i64, u64), ()>,
    by_sensor: Table<'txn, (&'static str, &'static str, i64, u64), ()>,
    by_kind: Table<'txn, (u8, u64), ()>,
}

impl<'txn> LogTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<LogTables<'txn>, StoreError> {
        Ok(LogTables {
            log: txn.open_table(LOG)?,
            by_device: txn.open_table(BY_DEVICE)?,
            by_sensor: txn.open_table(BY_SENSOR)?,
            by_kind: txn.open_table(BY_KIND)?,
        })
    }

    /// Stores the encoded record `raw` (decoded as `d`) at `seq`, with its index entries.
    fn insert(&mut self, seq: u64, raw: &[u8], d: &Decoded<'_>) -> Result<(), StoreError> {
        self.log.insert(seq, raw)?;
        if d.kind == RecordKind::Reading {
            self.by_device.insert((d.device_id, d.ts_ms, seq), ())?;
            self.by_sensor
                .insert((d.device_id, d.sensor_type, d.ts_ms, seq), ())?;
        } else {
            self.by_kind.insert((d.kind as u8, seq), ())?;
        }
        Ok(())
    }

    /// Removes the record at `seq` with its index entries; returns what it cost against the
    /// byte budget.
    fn remove(&mut self, seq: u64) -> Result<u64, StoreError> {
        let raw = self
            .log
            .remove(seq)?
            .map(|v| v.value().to_vec())
            .ok_or(StoreError::Corrupt { seq })?;
        let d = decode_stored(seq, &raw)?;
        if d.kind == RecordKind::Reading {
            self.by_device.remove((d.device_id, d.ts_ms, seq))?;
            self.by_sensor
                .remove((d.device_id, d.sensor_type, d.ts_ms, seq))?;
        } else {
            self.by_kind.remove((d.kind as u8, seq))?;
        }
        Ok(cost(&d, raw.len()))
    }
}
