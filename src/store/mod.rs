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
//! - `alarms`: `alarmId → latest alarm:state JSON` of every alarm not at rest, written with
//!   the transition in the same commit (see `alarms.rs`).
//! - `sink_cursors`: `sink name → next seq to send`, each upstream sink's committed position.
//! - `meta`: `next_seq`, `logical_bytes`, `non_durable` (1 once a writer may have shown
//!   records on the hub before their commit, see [`StoreWriter::allow_staging`]).
//! - `seq_skips`: `from → to` (exclusive): `seq` ranges never stored, skipped at an unclean
//!   open because a crashed run may have shown them (staged records) on the hub. Sinks
//!   do not count them as dropped.
//!
//! This file holds the handle, opening (with the integrity check) and reopening, and the
//! tables; `codec.rs` the record format, `query.rs` the reads, `registry.rs` the device
//! registry table, `append.rs` the writer's transaction, `retention.rs` what it evicts,
//! `limits.rs` the writer's bounds and the disk free-space watermark.

mod alarms;
mod append;
mod codec;
mod limits;
mod query;
mod registry;
mod retention;
#[cfg(test)]
mod test_support;
pub mod writer;

pub use alarms::CurrentAlarms;
pub use append::{CommitOutcome, StoreWriter};
pub use limits::StoreLimits;
use limits::{DiskPressure, keep_reserve, release_reserve};
pub use query::{HistoryQuery, RawRecord, StoredRecord};
pub use registry::StoredDevice;
pub use retention::Retention;

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, UnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};

use tokio::sync::watch;

use crate::record::{Committed, RecordKind};
use codec::{Decoded, cost, decode_stored, kind_byte};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const BY_DEVICE: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("readings_by_device");
const BY_SENSOR: TableDefinition<(&str, &str, i64, u64), ()> =
    TableDefinition::new("readings_by_sensor");
const BY_KIND: TableDefinition<(u8, u64), ()> = TableDefinition::new("log_by_kind");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const ALARMS: TableDefinition<&str, &[u8]> = TableDefinition::new("alarms");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("sink_cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SKIPS: TableDefinition<u64, u64> = TableDefinition::new("seq_skips");

const META_NEXT_SEQ: &str = "next_seq";
const META_BYTES: &str = "logical_bytes";
const META_NON_DURABLE: &str = "non_durable";

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
    #[error("store file is damaged: {0}")]
    Damaged(String),
    #[error("cannot move the damaged store {path} aside: {source}")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
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

    /// The file system is full: making room (evicting) is the way out, not only waiting.
    pub fn is_disk_full(&self) -> bool {
        let storage = match self {
            StoreError::Storage(e)
            | StoreError::Transaction(redb::TransactionError::Storage(e))
            | StoreError::Commit(redb::CommitError::Storage(e))
            | StoreError::Table(redb::TableError::Storage(e)) => e,
            _ => return false,
        };
        matches!(storage, redb::StorageError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull)
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
    /// Where a damaged file found at open was moved; a fresh store replaced it.
    recovered_from: Option<PathBuf>,
    /// Whether this open read every page (no valid clean-close mark).
    checked_at_open: bool,
    /// Records below this `seq` are durable (their commit was fsynced); set by the writer.
    /// Sinks forward nothing above it. A watch, so sinks wake on a commit.
    durable_next_seq: watch::Sender<u64>,
    /// The writer's staged records: numbered and shown on the hub, not yet committed.
    staged: RwLock<Staged>,
}

/// Batches the writer staged, oldest first, and the gateway id their rendering needs.
#[derive(Default)]
struct Staged {
    gateway_id: Arc<str>,
    batches: VecDeque<Arc<[Committed]>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub records: u64,
    pub logical_bytes: u64,
    pub next_seq: u64,
}

impl Store {
    /// Opens (or creates) the store in `data_dir`. redb recovers a file left by a crash here.
    /// The whole file is then checked: a damaged one (checksums, or redb panicking on it) is
    /// moved aside as `<name>.corrupt-<unix ms>` and a fresh store takes its place, so a bad
    /// file costs its history, never the process (see [`Store::recovered_from`]).
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.into(),
            source,
        })?;
        let path = data_dir.join(STORE_FILE);
        let check = !take_clean_mark(&path);
        let checked_at_open = check;
        let (db, recovered_from) = match open_checked(&path, check) {
            Ok(db) => (db, None),
            Err(StoreError::Damaged(why)) => {
                let aside = move_aside(&path)?;
                tracing::error!(file = %aside.display(), error = %why, "store file is damaged; moved it aside and started a fresh store");
                (open_checked(&path, false)?, Some(aside))
            }
            Err(e) => return Err(e),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(Arc::new(db))),
                path,
                recovered_from,
                checked_at_open,
                durable_next_seq: watch::Sender::new(0),
                staged: RwLock::default(),
            }),
        })
    }

    /// Whether the open read every page of the file (it was not closed cleanly last time).
    pub fn checked_at_open(&self) -> bool {
        self.inner.checked_at_open
    }

    /// Called by the writer when it ended with everything committed (a clean stop): closes
    /// the database (redb marks the file cleanly closed as it drops) and notes the file's
    /// size and mtime, so the next open may skip the full check. Reads after this fail; it
    /// is the end of the process. Gives up, leaving no mark, if reads do not finish in time.
    pub(crate) fn close_cleanly(&self) {
        let mut slot = self.inner.db.write().expect("store lock poisoned");
        if let Some(db) = slot.take() {
            match wait_exclusive(db) {
                Ok(db) => drop(db),
                Err(still_shared) => {
                    *slot = Some(still_shared);
                    return;
                }
            }
        }
        write_clean_mark(&self.inner.path);
        // File times come from the kernel's coarse clock (a tick of up to 10 ms): a write in
        // the same tick would leave size and mtime as noted. Returning only after the tick
        // means anything that writes to the file after this stop changes its mtime.
        std::thread::sleep(MTIME_TICK);
    }

    /// Records with a lower `seq` are durable; 0 until the writer started.
    pub fn durable_next_seq(&self) -> u64 {
        *self.inner.durable_next_seq.borrow()
    }

    /// Changes with every commit: what sinks wait on.
    pub fn durable_changes(&self) -> watch::Receiver<u64> {
        self.inner.durable_next_seq.subscribe()
    }

    pub(crate) fn set_durable_next_seq(&self, next: u64) {
        self.inner.durable_next_seq.send_if_modified(|now| {
            let moved = next > *now;
            *now = (*now).max(next);
            moved
        });
    }

    /// Makes `batch` (numbered by the writer, not yet committed) readable by the catch-up
    /// reads ([`Store::read_from`], [`Store::read_raw`]) until [`Store::unstage`].
    pub(crate) fn stage(&self, gateway_id: &Arc<str>, batch: Arc<[Committed]>) {
        let mut staged = self.inner.staged.write().expect("staged lock poisoned");
        if staged.gateway_id.is_empty() {
            staged.gateway_id = gateway_id.clone();
        }
        staged.batches.push_back(batch);
    }

    /// Forgets staged batches below `next_seq`: committed (or given up).
    pub(crate) fn unstage(&self, next_seq: u64) {
        let mut staged = self.inner.staged.write().expect("staged lock poisoned");
        while staged
            .batches
            .front()
            .is_some_and(|b| b.last().is_none_or(|c| c.seq < next_seq))
        {
            staged.batches.pop_front();
        }
    }

    /// The staged batches holding records at or after `from_seq`, with the gateway id.
    fn staged_from(&self, from_seq: u64) -> (Arc<str>, Vec<Arc<[Committed]>>) {
        let staged = self.inner.staged.read().expect("staged lock poisoned");
        let batches = staged
            .batches
            .iter()
            .filter(|b| b.last().is_some_and(|c| c.seq >= from_seq))
            .cloned()
            .collect();
        (staged.gateway_id.clone(), batches)
    }

    /// Where the damaged file found at open now lies, if there was one.
    pub fn recovered_from(&self) -> Option<&Path> {
        self.inner.recovered_from.as_deref()
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
        if let Some(old) = slot.take() {
            match wait_exclusive(old) {
                Ok(db) => drop(db),
                Err(still_shared) => {
                    *slot = Some(still_shared);
                    return Err(StoreError::Reopening);
                }
            }
        }
        *slot = Some(Arc::new(open_database(&self.inner.path)?));
        Ok(())
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(META)?;
            Ok(StoreStats {
                records: txn.open_table(LOG)?.len()?,
                logical_bytes: meta_value(&meta, META_BYTES)?,
                next_seq: meta_value(&meta, META_NEXT_SEQ)?.max(1),
            })
        })
    }

    /// The `seq` the next committed record will get.
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        self.read(|txn| Ok(meta_value(&txn.open_table(META)?, META_NEXT_SEQ)?.max(1)))
    }

    /// The `seq` after the newest record shown live: staged records included, so a client
    /// resuming from what it saw is not taken for one with a cursor from another store.
    pub fn live_next_seq(&self) -> Result<u64, StoreError> {
        // Staged first: a commit in between only moves the committed end past it.
        let staged = {
            let staged = self.inner.staged.read().expect("staged lock poisoned");
            staged
                .batches
                .back()
                .and_then(|b| b.last())
                .map_or(0, |c| c.seq + 1)
        };
        Ok(self.next_seq()?.max(staged))
    }

    /// Runs `f` in a read transaction. redb answers some damage it meets mid-read with a
    /// panic (`unreachable!`, a failed assertion) rather than an error; caught here, it fails
    /// this one read with [`StoreError::Damaged`] and everything else keeps serving. The read
    /// shares nothing mutable with other threads (the transaction is dropped with the panic),
    /// so unwinding out of it is safe. Only effective where panics unwind (not `panic = "abort"`).
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        contained(AssertUnwindSafe(|| f(&db.begin_read()?))).unwrap_or_else(|panic| {
            let why = panic_message(&*panic);
            tracing::error!(error = %why, "store read hit a damaged file");
            Err(StoreError::Damaged(why))
        })
    }
}

thread_local! {
    /// Set while this thread runs redb code whose panic [`contained`] catches.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Runs redb code whose panics (its answer to some kinds of damage) are caught and turned
/// into [`StoreError::Damaged`] by the caller.
fn contained<T>(f: impl FnOnce() -> T + UnwindSafe) -> std::thread::Result<T> {
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = catch_unwind(f);
    CONTAINED.with(|c| c.set(outer));
    result
}

/// Whether a panic on this thread happens inside redb code the store contains. The binary's
/// panic hook aborts on every other panic, as `panic = "abort"` would: only a damaged store
/// file is survived.
pub fn panic_is_contained() -> bool {
    CONTAINED.with(Cell::get)
}

/// Longer than one tick of the clock file times are taken from (`HZ` = 100 at the coarsest).
const MTIME_TICK: Duration = Duration::from_millis(20);

/// The database once no read holds it any more, or back after [`REOPEN_WAIT`].
fn wait_exclusive(mut db: Arc<Database>) -> Result<Database, Arc<Database>> {
    let deadline = Instant::now() + REOPEN_WAIT;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return Ok(db),
            Err(still_shared) if Instant::now() < deadline => {
                db = still_shared;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(still_shared) => return Err(still_shared),
        }
    }
}

/// The clean-close mark: the store file's size and modification time when the last clean
/// stop closed it. A file that still matches was not touched since, so the full check (which
/// reads every page: seconds for a large store on an SD card) can be skipped; after a crash,
/// a power cut or anything else writing to the file, the mark is missing or stale.
fn clean_mark_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".clean");
    path.with_file_name(name)
}

fn file_fingerprint(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{} {}", meta.len(), mtime.as_nanos()))
}

fn write_clean_mark(path: &Path) {
    if let Some(print) = file_fingerprint(path)
        && let Err(e) = std::fs::write(clean_mark_path(path), print)
    {
        tracing::debug!(error = %e, "cannot write the store's clean-close mark");
    }
}

/// True when the file is exactly as the last clean stop left it. The mark is removed either
/// way, before anything writes, so a crash in this run leaves none behind.
fn take_clean_mark(path: &Path) -> bool {
    let mark = clean_mark_path(path);
    let noted = std::fs::read_to_string(&mark).ok();
    let _ = std::fs::remove_file(&mark);
    noted.is_some_and(|n| Some(n) == file_fingerprint(path))
}

/// Opens the file, checks every page of it when `check` (see [`take_clean_mark`]) and
/// creates missing tables; damage, reported or panicked on by redb, comes back as
/// [`StoreError::Damaged`].
fn open_checked(path: &Path, check: bool) -> Result<Database, StoreError> {
    let opened = contained(|| -> Result<Database, StoreError> {
        let mut db = open_database(path)?;
        if !check {
            create_tables(&db)?;
            return Ok(db);
        }
        // Slow on a big file (every page is read), but the only way to find damage before a
        // query runs into it. Ok(false) means redb repaired what it found.
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => tracing::warn!(path = %path.display(), "store file repaired at open"),
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(why))) => {
                return Err(StoreError::Damaged(why));
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: path.into(),
                    source,
                });
            }
        }
        create_tables(&db)?;
        read_every_table(&db).map_err(|e| StoreError::Damaged(e.to_string()))?;
        Ok(db)
    });
    match opened {
        Ok(Err(StoreError::Open {
            source: redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)),
            ..
        })) => Err(StoreError::Damaged(why)),
        Ok(Err(StoreError::Corrupt { seq })) => Err(StoreError::Damaged(format!(
            "stored record {seq} is corrupt"
        ))),
        Ok(result) => result,
        Err(panic) => Err(StoreError::Damaged(panic_message(&*panic))),
    }
}

/// Walks every entry of every table. redb's check verifies checksums from the roots down, but
/// some damage (a page a repair fell back around, an index page) only shows when a tree is
/// walked, as a panic or an error: met here, the file is moved aside at open instead of
/// failing reads later. Runs only with the full check (after an unclean stop).
fn read_every_table(db: &Database) -> Result<(), StoreError> {
    fn walk<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &ReadTransaction,
        table: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        for entry in txn.open_table(table)?.iter()? {
            entry?;
        }
        Ok(())
    }
    let txn = db.begin_read()?;
    walk(&txn, LOG)?;
    walk(&txn, BY_DEVICE)?;
    walk(&txn, BY_SENSOR)?;
    walk(&txn, BY_KIND)?;
    walk(&txn, DEVICES)?;
    walk(&txn, ALARMS)?;
    walk(&txn, CURSORS)?;
    walk(&txn, SKIPS)?;
    walk(&txn, META)
}

/// Renames a damaged store file to `<name>.corrupt-<unix ms>` next to it.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{}", crate::time::now_ms()));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside).map_err(|source| StoreError::MoveAside {
        path: path.into(),
        source,
    })?;
    Ok(aside)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "redb panicked".into())
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
        txn.open_table(ALARMS)?;
        txn.open_table(CURSORS)?;
        txn.open_table(META)?;
        txn.open_table(SKIPS)?;
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

#[cfg(test)]
mod tests {
    use super::test_support::{KEEP, reading};
    use super::*;

    #[test]
    fn contained_panics_are_caught_and_only_they_are_marked() {
        assert!(!panic_is_contained());
        let caught = contained(|| {
            assert!(panic_is_contained());
            panic!("redb: unreachable");
        });
        assert!(caught.is_err());
        assert!(
            !panic_is_contained(),
            "the mark ends with the contained call"
        );
    }

    #[test]
    fn the_full_check_is_skipped_only_after_a_clean_close_of_an_untouched_file() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path()).unwrap();
        let write_and_close = |clean: bool| {
            let store = open();
            let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
            w.append(&[reading("d", "t", 1.0, 1)], &[], 1, KEEP)
                .unwrap();
            if clean {
                store.close_cleanly();
            }
        };
        write_and_close(true);
        assert!(!open().checked_at_open(), "clean close, untouched file");
        // That open took the mark; closing without a clean writer stop leaves none.
        assert!(open().checked_at_open());
        write_and_close(false);
        assert!(open().checked_at_open(), "no clean stop: checked");
        write_and_close(true);
        // Something else wrote to the file after the clean close.
        let path = dir.path().join(STORE_FILE);
        std::thread::sleep(Duration::from_millis(20));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"x").unwrap();
        drop(f);
        assert!(
            open().checked_at_open(),
            "file changed since the clean close"
        );
    }
}
