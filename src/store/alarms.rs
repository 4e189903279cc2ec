//! The alarm table (`alarms`: alarmId → its latest `alarm:state` JSON): the current state of
//! every alarm not at rest, written by the writer in the same commit as the transition that
//! put it there, so after a restart or a kill -9 the table and the log agree. An alarm back
//! to normal (and not chattering) loses its row.

use redb::ReadableTable;

use super::codec::decode_stored;
use super::{ALARMS, BY_KIND, LOG, META, META_NEXT_SEQ, RawRecord, Store, StoreError, meta_value};
use crate::record::RecordKind;

/// Current alarms, read in one transaction with the position they are current at.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentAlarms {
    /// The latest `alarm:state` of each alarm not at rest, in alarmId order.
    pub alarms: Vec<serde_json::Value>,
    /// The `seq` of the last committed record: every transition up to it is reflected.
    pub seq: u64,
}

impl Store {
    /// Every current alarm's latest `alarm:state` JSON, for the pipeline to restore at start.
    pub fn restore_alarms(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        Ok(self.current_alarms(|_| true, usize::MAX)?.alarms)
    }

    /// Up to `max` alarm transitions with `seq >= from_seq`, in order, as stored bytes: the
    /// sinks' alarm lane, which sends them ahead of a telemetry backlog (from the kind index,
    /// without scanning the readings between them). Durable records only, like every sink read:
    /// a non-durable one may vanish in a crash and its seq be reused.
    pub fn read_alarms_raw(&self, from_seq: u64, max: usize) -> Result<Vec<RawRecord>, StoreError> {
        let durable = self.durable_next_seq();
        self.read(|txn| {
            let (log, index) = (txn.open_table(LOG)?, txn.open_table(BY_KIND)?);
            let kind = RecordKind::Alarm as u8;
            let mut out = Vec::new();
            let range = (kind, from_seq)..(kind, durable.max(from_seq));
            for entry in index.range(range)?.take(max) {
                let seq = entry?.0.value().1;
                let Some(raw) = log.get(seq)? else { continue };
                let d = decode_stored(seq, raw.value())?;
                out.push(RawRecord {
                    seq,
                    kind: d.kind,
                    ts_ms: d.ts_ms,
                    device_id: d.device_id.to_string(),
                    json: d.json.to_vec(),
                });
            }
            Ok(out)
        })
    }

    /// Up to `limit` current alarms that `keep` accepts, and the `seq` they are current at.
    pub fn current_alarms(
        &self,
        keep: impl Fn(&serde_json::Value) -> bool,
        limit: usize,
    ) -> Result<CurrentAlarms, StoreError> {
        self.read(|txn| {
            let seq = meta_value(&txn.open_table(META)?, META_NEXT_SEQ)?.saturating_sub(1);
            let mut alarms = Vec::new();
            for entry in txn.open_table(ALARMS)?.iter()? {
                if alarms.len() >= limit {
                    break;
                }
                let (_, v) = entry?;
                match serde_json::from_slice::<serde_json::Value>(v.value()) {
                    Ok(json) if keep(&json) => alarms.push(json),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable alarm row"),
                }
            }
            Ok(CurrentAlarms { alarms, seq })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{KEEP, alarm, reading};
    use super::super::{Retention, StoreWriter};
    use crate::record::RecordKind;

    #[test]
    fn the_table_follows_the_committed_transitions_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        w.append(
            &[reading("d", "t", 1.0, 1), alarm("active_unacked", 1)],
            &[],
            1,
            KEEP,
        )
        .unwrap();
        let now = store.current_alarms(|_| true, 10).unwrap();
        assert_eq!(now.seq, 2);
        assert_eq!(now.alarms.len(), 1);
        assert_eq!(now.alarms[0]["state"], "active_unacked");
        assert_eq!(now.alarms[0]["seq"], 2);
        drop((w, store));
        let store = super::Store::open(dir.path()).unwrap();
        assert_eq!(store.restore_alarms().unwrap().len(), 1);
        assert!(
            store
                .current_alarms(|a| a["deviceId"] == "other", 10)
                .unwrap()
                .alarms
                .is_empty()
        );
        // Back to normal: the row goes, the transition stays in the log.
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        w.append(&[alarm("normal", 2)], &[], 2, KEEP).unwrap();
        assert!(store.restore_alarms().unwrap().is_empty());
        let kinds: Vec<_> = store
            .read_from(1, 10)
            .unwrap()
            .iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            [RecordKind::Reading, RecordKind::Alarm, RecordKind::Alarm]
        );
    }

    #[test]
    fn the_budget_evicts_alarm_transitions_last_with_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        w.append(
            &[alarm("active_unacked", 1), reading("d", "t", 1.0, 1)],
            &[],
            1,
            KEEP,
        )
        .unwrap();
        let tight = Retention {
            byte_budget: w.logical_bytes() - 1,
            max_evictions_per_commit: 1,
            ..KEEP
        };
        w.append(&[], &[], 2, tight).unwrap();
        let kinds: Vec<_> = store
            .read_from(1, 10)
            .unwrap()
            .iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            [RecordKind::Alarm],
            "the older alarm transition outlives a reading"
        );
    }

    fn relayed(alarm_id: &str, state: &str, seq: u64) -> crate::record::Record {
        let json = format!(
            r#"{{"alarmId":"{alarm_id}","deviceId":"d","sensorType":"t","state":"{state}","chattering":false,"gatewayId":"gw-a","seq":{seq}}}"#
        );
        crate::record::Record::Relayed(Box::new(crate::record::Relayed {
            kind: RecordKind::Alarm,
            device_id: Some("d".into()),
            sensor_type: Some("t".into()),
            ts_ms: 1,
            json: serde_json::value::RawValue::from_string(json).unwrap(),
        }))
    }

    #[test]
    fn relayed_transitions_keep_the_replicas_table_with_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "relay".into()).unwrap();
        let batch = [
            relayed("a/t/hi", "active_unacked", 7),
            relayed("b/t/hi", "active_unacked", 8),
        ];
        w.append(&batch, &[], 1, KEEP).unwrap();
        w.append(&[relayed("a/t/hi", "active_acked", 9)], &[], 2, KEEP)
            .unwrap();
        let now = store.current_alarms(|_| true, 10).unwrap();
        assert_eq!(now.seq, 3);
        assert_eq!(now.alarms.len(), 2);
        assert_eq!(now.alarms[0]["state"], "active_acked");
        assert_eq!(
            (&now.alarms[0]["gatewayId"], &now.alarms[0]["seq"]),
            (&"gw-a".into(), &9.into())
        );
        w.append(&[relayed("b/t/hi", "normal", 10)], &[], 3, KEEP)
            .unwrap();
        let left = store.restore_alarms().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["alarmId"], "a/t/hi");
    }
}
