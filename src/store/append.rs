//! The single writer's transaction: assigns `seq`, appends records with their index entries,
//! moves sink cursors and applies [`retention`](super::retention), all in one commit.

use redb::WriteTransaction;

use super::codec::{cost, decode, encode};
use super::retention::{self, Retention};
use super::{
    ALARMS, CURSORS, DEVICES, LogTables, META, META_BYTES, META_NEXT_SEQ, Store, StoreError,
};
use crate::record::Record;

/// Outcome of one group commit.
#[derive(Debug, Default, Clone)]
pub struct CommitOutcome {
    /// Sequence number of the first appended record; the rest follow without gaps.
    pub first_seq: u64,
    pub evicted_age: u64,
    pub evicted_budget: u64,
    pub logical_bytes: u64,
}

/// The single writer's view: owns the sequence counter.
pub struct StoreWriter {
    store: Store,
    gateway_id: String,
    /// As of the last commit; a commit works on a copy and adopts it only once it returned.
    state: LogState,
}

/// Where the log stands, as the writer tracks it between commits.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogState {
    pub next_seq: u64,
    pub logical_bytes: u64,
    /// No reading is stored below this `seq`: where the budget's search for the oldest
    /// reading starts (status changes and alerts it skips are few).
    pub readings_from: u64,
}

impl StoreWriter {
    pub fn new(store: Store, gateway_id: String) -> Result<StoreWriter, StoreError> {
        let stats = store.stats()?;
        Ok(StoreWriter {
            store,
            gateway_id,
            state: LogState {
                next_seq: stats.next_seq,
                logical_bytes: stats.logical_bytes,
                readings_from: 0,
            },
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
        let first_seq = self.state.next_seq;
        let mut state = self.state;
        let evicted = {
            let mut tables = LogTables::open(&txn)?;
            write_cursors(&txn, cursors)?;
            insert_records(&txn, &mut tables, records, &self.gateway_id, &mut state)?;
            let evicted = retention::apply(&mut tables, retention, now_ms, first_seq, &mut state)?;
            write_meta(&txn, &state)?;
            evicted
        };
        txn.commit()?;
        self.state = state;
        Ok(CommitOutcome {
            first_seq,
            evicted_age: evicted.age,
            evicted_budget: evicted.budget,
            logical_bytes: state.logical_bytes,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Logical bytes as of the last commit.
    pub fn logical_bytes(&self) -> u64 {
        self.state.logical_bytes
    }
}

fn write_cursors(txn: &WriteTransaction, cursors: &[(&str, u64)]) -> Result<(), StoreError> {
    let mut table = txn.open_table(CURSORS)?;
    for &(sink, next) in cursors {
        table.insert(sink, next)?;
    }
    Ok(())
}

/// Encodes each record at the next `seq` and stores it with its index entries; a status
/// change also becomes its device's latest status, an alarm transition its alarm's current
/// state (removed once the alarm is at rest).
fn insert_records(
    txn: &WriteTransaction,
    tables: &mut LogTables<'_>,
    records: &[Record],
    gateway_id: &str,
    state: &mut LogState,
) -> Result<(), StoreError> {
    let mut devices = txn.open_table(DEVICES)?;
    let mut alarms = txn.open_table(ALARMS)?;
    for record in records {
        let seq = state.next_seq;
        let raw = encode(record, gateway_id, seq);
        let d = decode(&raw).expect("just encoded");
        state.logical_bytes += cost(&d, raw.len());
        tables.insert(seq, &raw, &d)?;
        match record {
            Record::Status(_) => {
                devices.insert(d.device_id, d.json)?;
            }
            Record::Alarm(a) if a.state == "normal" && !a.chattering => {
                alarms.remove(a.alarm_id.as_str())?;
            }
            Record::Alarm(a) => {
                alarms.insert(a.alarm_id.as_str(), d.json)?;
            }
            _ => {}
        }
        state.next_seq += 1;
    }
    Ok(())
}

fn write_meta(txn: &WriteTransaction, state: &LogState) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    meta.insert(META_NEXT_SEQ, state.next_seq)?;
    meta.insert(META_BYTES, state.logical_bytes)?;
    Ok(())
}
