//! The single writer's transaction: assigns `seq`, appends records with their index entries,
//! moves sink cursors and applies [`retention`](super::retention), all in one commit.

use redb::WriteTransaction;

use super::codec::{cost, decode, encode};
use super::retention::{self, Retention};
use super::{
    ALARMS, CURSORS, DEVICES, LogTables, META, META_BYTES, META_NEXT_SEQ, META_NON_DURABLE, SKIPS,
    Store, StoreError,
};
use crate::record::{Record, RecordKind};

/// Most records the writer holds staged (numbered and shown on the hub, not yet committed);
/// it commits before it stages more. After an unclean stop `next_seq` jumps this far ahead
/// (see [`StoreWriter::new`]), so no `seq` a dashboard may have seen goes to another record.
pub const MAX_STAGED: u64 = 65_536;

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
    /// The writer of `store`. After an unclean stop of a run that may have shown staged
    /// records on the hub, `next_seq` skips [`MAX_STAGED`] numbers (recorded durably in
    /// `seq_skips` first, so a second crash cannot reuse them either).
    pub fn new(store: Store, gateway_id: String) -> Result<StoreWriter, StoreError> {
        let stats = store.stats()?;
        let mut writer = StoreWriter {
            store,
            gateway_id,
            state: LogState {
                next_seq: stats.next_seq,
                logical_bytes: stats.logical_bytes,
                readings_from: 0,
            },
        };
        if writer.store.checked_at_open() && writer.meta(META_NON_DURABLE)? != 0 {
            writer.skip_unflushed()?;
        }
        writer.store.set_durable_next_seq(writer.state.next_seq);
        Ok(writer)
    }

    fn meta(&self, key: &str) -> Result<u64, StoreError> {
        self.store
            .read(|txn| super::meta_value(&txn.open_table(META)?, key))
    }

    fn skip_unflushed(&mut self) -> Result<(), StoreError> {
        let from = self.state.next_seq;
        let to = from + MAX_STAGED;
        let db = self.store.db()?;
        let txn = db.begin_write()?;
        {
            txn.open_table(SKIPS)?.insert(from, to)?;
            txn.open_table(META)?.insert(META_NEXT_SEQ, to)?;
        }
        txn.commit()?;
        self.state.next_seq = to;
        tracing::warn!(
            from,
            to,
            "store was not closed cleanly: seq numbers of commits that were not yet durable are skipped"
        );
        Ok(())
    }

    /// Notes durably that this store's writer may now show records on the hub before their
    /// commit, before the first one: an unclean stop from here on makes the next open skip
    /// `seq`s. (The key keeps its old name, `non_durable`, so existing files stay valid.)
    pub fn allow_staging(&mut self) -> Result<(), StoreError> {
        if self.meta(META_NON_DURABLE)? != 0 {
            return Ok(());
        }
        let db = self.store.db()?;
        let txn = db.begin_write()?;
        txn.open_table(META)?.insert(META_NON_DURABLE, 1)?;
        txn.commit()?;
        Ok(())
    }

    /// Appends `records`, moves sink `cursors` and applies retention in one durable
    /// transaction (fsynced before it returns). Sequence numbers are assigned here, so they
    /// are gap-free and in commit order. On error nothing changed.
    pub fn append(
        &mut self,
        records: &[Record],
        cursors: &[(&str, u64)],
        now_ms: i64,
        retention: Retention,
    ) -> Result<CommitOutcome, StoreError> {
        let first_seq = self.state.next_seq;
        self.append_at(first_seq, records.iter(), cursors, now_ms, retention)
    }

    /// The `seq` the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    /// [`Self::append`] numbering the records from `first_seq`, which the writer may have
    /// shown on the hub already; a `first_seq` past [`Self::next_seq`] leaves the numbers
    /// between unused (records given up at shutdown: a loss the sinks count).
    pub fn append_at<'a>(
        &mut self,
        first_seq: u64,
        records: impl IntoIterator<Item = &'a Record>,
        cursors: &[(&str, u64)],
        now_ms: i64,
        retention: Retention,
    ) -> Result<CommitOutcome, StoreError> {
        let db = self.store.db()?;
        let txn = db.begin_write()?;
        let mut state = self.state;
        state.next_seq = state.next_seq.max(first_seq);
        let first_seq = state.next_seq;
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
        self.store.set_durable_next_seq(state.next_seq);
        Ok(CommitOutcome {
            first_seq,
            evicted_age: evicted.age,
            evicted_budget: evicted.budget,
            logical_bytes: state.logical_bytes,
        })
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
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
fn insert_records<'a>(
    txn: &WriteTransaction,
    tables: &mut LogTables<'_>,
    records: impl IntoIterator<Item = &'a Record>,
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
            Record::Relayed(r) if r.kind == RecordKind::Alarm => {
                relayed_alarm(&mut alarms, r.json.get(), d.json)?;
            }
            _ => {}
        }
        state.next_seq += 1;
    }
    Ok(())
}

/// A relayed `alarm:state` (its schema checked by the relay) moves the replica's
/// current-alarm row as the gateway's own transition moved the gateway's.
fn relayed_alarm(
    alarms: &mut redb::Table<'_, &str, &[u8]>,
    json: &str,
    stored: &[u8],
) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct Transition<'a> {
        #[serde(rename = "alarmId", borrow)]
        alarm_id: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        state: std::borrow::Cow<'a, str>,
        chattering: bool,
    }
    let Ok(t) = serde_json::from_str::<Transition<'_>>(json) else {
        return Ok(());
    };
    if t.state == "normal" && !t.chattering {
        alarms.remove(&*t.alarm_id)?;
    } else {
        alarms.insert(&*t.alarm_id, stored)?;
    }
    Ok(())
}

fn write_meta(txn: &WriteTransaction, state: &LogState) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    meta.insert(META_NEXT_SEQ, state.next_seq)?;
    meta.insert(META_BYTES, state.logical_bytes)?;
    Ok(())
}
