//! Retention, applied inside each commit. Age: oldest first, whatever the kind. Byte budget:
//! telemetry first, then status changes, alerts and alarm transitions last, each oldest first. Neither ever evicts
//! what the commit itself adds. Age eviction is bounded per commit; the budget may be held
//! whatever it costs (`hold_budget`), because the writer bounds what one commit adds.

use redb::{ReadableTable, Table};

use super::LogTables;
use super::StoreError;
use super::append::LogState;
use super::codec::{decode_stored, kind_byte};
use crate::record::RecordKind;

/// Retention applied inside each commit.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age_ms: i64,
    pub byte_budget: u64,
    /// Upper bound on evictions per commit, so one commit never balloons.
    pub max_evictions_per_commit: usize,
    /// Evict for the byte budget past `max_evictions_per_commit` until the log fits: the
    /// writer sets it on commits that add records (at most `store.batch_max_records`), so the
    /// budget holds after every such commit and the extra work is bounded by what it adds.
    pub hold_budget: bool,
}

/// What one commit evicted, by reason.
#[derive(Debug, Default)]
pub(super) struct Evicted {
    pub age: u64,
    pub budget: u64,
}

/// Evicts records below `protect_from` (the commit's first `seq`) until none is too old and
/// the log fits the byte budget, or the per-commit bound is reached (for the budget, only
/// without `hold_budget`).
pub(super) fn apply(
    tables: &mut LogTables<'_>,
    retention: Retention,
    now_ms: i64,
    protect_from: u64,
    state: &mut LogState,
) -> Result<Evicted, StoreError> {
    let oldest_allowed = now_ms.saturating_sub(retention.max_age_ms);
    let mut evicted = Evicted::default();
    for _ in 0..retention.max_evictions_per_commit {
        let (victim, count) =
            if let Some(seq) = oldest_if_too_old(&tables.log, oldest_allowed, protect_from)? {
                (seq, &mut evicted.age)
            } else if state.logical_bytes > retention.byte_budget {
                match budget_victim(tables, protect_from, &mut state.readings_from)? {
                    Some(seq) => (seq, &mut evicted.budget),
                    None => break,
                }
            } else {
                break;
            };
        let freed = tables.remove(victim)?;
        state.logical_bytes = state.logical_bytes.saturating_sub(freed);
        *count += 1;
    }
    if retention.hold_budget {
        while state.logical_bytes > retention.byte_budget {
            let Some(victim) = budget_victim(tables, protect_from, &mut state.readings_from)?
            else {
                break;
            };
            let freed = tables.remove(victim)?;
            state.logical_bytes = state.logical_bytes.saturating_sub(freed);
            evicted.budget += 1;
        }
    }
    Ok(evicted)
}

/// The oldest record, if it is older than `oldest_allowed` and not one this commit adds.
fn oldest_if_too_old(
    log: &Table<'_, u64, &'static [u8]>,
    oldest_allowed: i64,
    protect_from: u64,
) -> Result<Option<u64>, StoreError> {
    match log.first()? {
        Some((k, v)) if k.value() < protect_from => {
            let seq = k.value();
            let d = decode_stored(seq, v.value())?;
            Ok((d.ts_ms < oldest_allowed).then_some(seq))
        }
        _ => Ok(None),
    }
}

/// What the byte budget evicts next: the oldest reading, else the oldest status change, else
/// the oldest alert or alarm transition (one tier: the older of the two goes first). Moves `readings_from` up to the reading found (or past all of them).
fn budget_victim(
    tables: &LogTables<'_>,
    protect_from: u64,
    readings_from: &mut u64,
) -> Result<Option<u64>, StoreError> {
    if let Some(seq) = oldest_reading(&tables.log, *readings_from, protect_from)? {
        *readings_from = seq;
        return Ok(Some(seq));
    }
    *readings_from = protect_from;
    let oldest = |kind: RecordKind| -> Result<Option<u64>, StoreError> {
        let k = kind as u8;
        match tables.by_kind.range((k, 0)..(k, protect_from))?.next() {
            Some(entry) => Ok(Some(entry?.0.value().1)),
            None => Ok(None),
        }
    };
    if let Some(seq) = oldest(RecordKind::Status)? {
        return Ok(Some(seq));
    }
    Ok(
        match (oldest(RecordKind::Alert)?, oldest(RecordKind::Alarm)?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    )
}

/// The first reading in `from..below`: a scan of the log, since readings are not in the kind
/// index; the status changes and alerts it steps over are few.
fn oldest_reading(
    log: &Table<'_, u64, &'static [u8]>,
    from: u64,
    below: u64,
) -> Result<Option<u64>, StoreError> {
    for entry in log.range(from..below)? {
        let (k, v) = entry?;
        if kind_byte(v.value()) == Some(RecordKind::Reading as u8) {
            return Ok(Some(k.value()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DeviceState, DeviceStatus, Level, Record};
    use crate::store::test_support::{KEEP, q, reading};
    use crate::store::{Store, StoreWriter};

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
}
