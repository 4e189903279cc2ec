//! The device registry table (`devices`: deviceId → latest `device:status` JSON): restored at
//! start without loading it whole, and pruned of devices the pipeline forgot.
//!
//! The writer upserts a device's row with each status change it commits; the only other
//! writes to this table are the deletions here, which never touch `seq` or the log and never
//! delete a row newer than the caller's cut-off, so they cannot undo a status the writer
//! committed meanwhile.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::ops::Bound;

use redb::ReadableTable;
use serde::Deserialize;

use super::{ALARMS, DEVICES, Store, StoreError};
use crate::record::DeviceState;
use crate::time::parse_rfc3339_ms;

/// Rows deleted per write transaction, so pruning never makes one big commit.
const DELETE_SLICE: usize = 10_000;

/// A device as the registry restores it: its latest stored `device:status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDevice {
    pub device_id: String,
    pub status: DeviceState,
    pub location: String,
    pub last_seen_ms: Option<i64>,
    /// When that status was recorded.
    pub ts_ms: i64,
}

impl StoredDevice {
    /// When the device was last heard of, as far as the store knows.
    pub fn last_known_ms(&self) -> i64 {
        self.last_seen_ms.unwrap_or(self.ts_ms).max(self.ts_ms)
    }
}

/// The fields of a stored status the registry needs; the rest of the JSON is skipped.
#[derive(Deserialize)]
struct StatusRow<'a> {
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    location: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: std::borrow::Cow<'a, str>,
    #[serde(borrow, default, rename = "lastSeen")]
    last_seen: Option<std::borrow::Cow<'a, str>>,
}

fn parse_row(device_id: &str, raw: &[u8]) -> Option<StoredDevice> {
    let row: StatusRow<'_> = serde_json::from_slice(raw).ok()?;
    Some(StoredDevice {
        device_id: device_id.to_string(),
        status: DeviceState::parse(&row.status)?,
        location: row.location.map(|l| l.into_owned()).unwrap_or_default(),
        last_seen_ms: row.last_seen.as_deref().and_then(parse_rfc3339_ms),
        ts_ms: parse_rfc3339_ms(&row.timestamp)?,
    })
}

/// Orders restored devices by how recently they were heard of (then by id).
struct ByRecency(StoredDevice);

impl ByRecency {
    fn key(&self) -> (i64, &str) {
        (self.0.last_known_ms(), &self.0.device_id)
    }
}

impl PartialEq for ByRecency {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for ByRecency {}
impl PartialOrd for ByRecency {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByRecency {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl Store {
    /// The latest `device:status` JSON of every device in the registry table, whole: for
    /// tests and tools. The gateway restores through [`Store::restore_devices`].
    pub fn devices(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        self.read(|txn| {
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
        })
    }

    /// The at most `max` most recently heard-of devices not heard of since before
    /// `forget_before_ms`, most recent first. The table is streamed, holding no more than
    /// `max` devices at a time; the rows not kept (too many, too old, unreadable) are then
    /// deleted in slices, if the store can write. Meant for start-up, before any status is
    /// written.
    pub fn restore_devices(
        &self,
        max: usize,
        forget_before_ms: i64,
    ) -> Result<Vec<StoredDevice>, StoreError> {
        let mut heap: BinaryHeap<Reverse<ByRecency>> = BinaryHeap::with_capacity(max.min(65_536));
        let mut rows = 0usize;
        self.read(|txn| {
            let table = txn.open_table(DEVICES)?;
            for entry in table.iter()? {
                let (k, v) = entry?;
                rows += 1;
                let Some(device) = parse_row(k.value(), v.value()) else {
                    continue;
                };
                if device.last_known_ms() < forget_before_ms || max == 0 {
                    continue;
                }
                heap.push(Reverse(ByRecency(device)));
                if heap.len() > max {
                    heap.pop();
                }
            }
            Ok(())
        })?;
        let kept: Vec<StoredDevice> = heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(d)| d.0)
            .collect();
        if rows > kept.len() {
            let keep: HashSet<&str> = kept.iter().map(|d| d.device_id.as_str()).collect();
            // Best effort: a store that cannot write now (disk full) must not stop the start;
            // the rows left are pruned at the next one.
            match self.delete_devices_except(&keep) {
                Ok(removed) => tracing::info!(
                    kept = kept.len(),
                    removed,
                    "device registry pruned at start (devices.max_devices, devices.forget_after_ms)"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot prune the device registry at start; it is retried at the next start"
                ),
            }
        }
        Ok(kept)
    }

    /// Deletes every registry row whose device is not in `keep`, in slices.
    fn delete_devices_except(&self, keep: &HashSet<&str>) -> Result<usize, StoreError> {
        let db = self.db()?;
        let mut after: Option<String> = None;
        let mut removed = 0;
        loop {
            let mut doomed = Vec::new();
            let mut last = None;
            self.read(|txn| {
                let table = txn.open_table(DEVICES)?;
                let start = match &after {
                    Some(k) => Bound::Excluded(k.as_str()),
                    None => Bound::Unbounded,
                };
                for entry in table.range::<&str>((start, Bound::Unbounded))? {
                    let (k, _) = entry?;
                    let id = k.value();
                    last = Some(id.to_string());
                    if !keep.contains(id) {
                        doomed.push(id.to_string());
                        if doomed.len() >= DELETE_SLICE {
                            break;
                        }
                    }
                }
                Ok(())
            })?;
            if !doomed.is_empty() {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(DEVICES)?;
                    let mut alarms = txn.open_table(ALARMS)?;
                    for id in &doomed {
                        table.remove(id.as_str())?;
                        remove_alarms(&mut alarms, id)?;
                    }
                }
                txn.commit()?;
                removed += doomed.len();
            }
            match last {
                Some(k) if doomed.len() >= DELETE_SLICE => after = Some(k),
                _ => return Ok(removed),
            }
        }
    }

    /// Deletes the registry rows of forgotten devices, each only if its stored status is not
    /// newer than the given cut-off (a device that came back meanwhile keeps its new row).
    /// One write transaction: callers pass a bounded slice. Returns how many were deleted.
    pub fn forget_devices(&self, devices: &[(String, i64)]) -> Result<usize, StoreError> {
        if devices.is_empty() {
            return Ok(0);
        }
        let db = self.db()?;
        let txn = db.begin_write()?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(DEVICES)?;
            let mut alarms = txn.open_table(ALARMS)?;
            for (id, cutoff_ms) in devices {
                let stale = match table.get(id.as_str())? {
                    Some(v) => parse_row(id, v.value()).is_none_or(|d| d.ts_ms <= *cutoff_ms),
                    None => false,
                };
                if stale {
                    table.remove(id.as_str())?;
                    remove_alarms(&mut alarms, id)?;
                    removed += 1;
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

/// Deletes the current-alarm rows of a forgotten device (`<deviceId>/<sensor>/<rule>`): its
/// alarms went with it from the pipeline, so `get:alarms` and a restart no longer show them.
/// Their transitions stay in the log and upstream.
fn remove_alarms(
    alarms: &mut redb::Table<'_, &'static str, &'static [u8]>,
    device_id: &str,
) -> Result<(), StoreError> {
    // Every id from "<device>/" up to "<device>0" ('0' follows '/').
    let (from, to) = (format!("{device_id}/"), format!("{device_id}0"));
    let ids: Vec<String> = alarms
        .range::<&str>(from.as_str()..to.as_str())?
        .map(|e| e.map(|(k, _)| k.value().to_string()))
        .collect::<Result<_, _>>()?;
    for id in ids {
        alarms.remove(id.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DeviceStatus, Record};
    use crate::store::StoreWriter;
    use crate::store::test_support::KEEP;

    fn status(id: &str, ts_ms: i64) -> Record {
        Record::Status(DeviceStatus {
            device_id: id.into(),
            status: DeviceState::Online,
            ts_ms,
            location: "L".into(),
            last_seen_ms: Some(ts_ms),
        })
    }

    /// An alarm of `device` (sensor `t`) in `state`.
    fn alarm_of(device: &str, state: &'static str) -> Record {
        let mut r = crate::store::test_support::alarm(state, 1);
        if let Record::Alarm(a) = &mut r {
            a.device_id = device.into();
            a.alarm_id = format!("{device}/t/threshold");
        }
        r
    }

    #[test]
    fn forgetting_a_device_drops_its_current_alarms_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        let records = [
            status("d1", 1_000),
            status("d10", 1_000),
            status("d2", 1_000),
            alarm_of("d1", "active_unacked"),
            alarm_of("d10", "active_unacked"),
            alarm_of("d2", "shelved"),
        ];
        w.append(&records, &[], 0, KEEP).unwrap();
        let ids = |store: &Store| -> Vec<String> {
            let now = store.current_alarms(|_| true, 10).unwrap();
            now.alarms
                .iter()
                .map(|a| a["alarmId"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&store).len(), 3);
        assert_eq!(store.forget_devices(&[("d1".into(), 2_000)]).unwrap(), 1);
        assert_eq!(ids(&store), ["d10/t/threshold", "d2/t/threshold"]);
        // Pruned at start (not among the most recent): the same.
        store.restore_devices(1, 0).unwrap();
        assert_eq!(ids(&store).len(), 1);
    }

    #[test]
    fn restore_keeps_the_most_recent_and_prunes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        let records: Vec<Record> = (0..50)
            .map(|i| status(&format!("d{i:02}"), 1_000_000 + i * 1000))
            .collect();
        w.append(&records, &[], 0, KEEP).unwrap();
        let kept = store.restore_devices(10, 1_000_000 + 5_000).unwrap();
        let ids: Vec<&str> = kept.iter().map(|d| d.device_id.as_str()).collect();
        assert_eq!(
            ids,
            (40..50).rev().map(|i| format!("d{i}")).collect::<Vec<_>>()
        );
        assert_eq!(kept[0].location, "L");
        assert_eq!(store.devices().unwrap().len(), 10);
        // Too old: everything goes.
        assert!(store.restore_devices(10, i64::MAX).unwrap().is_empty());
        assert!(store.devices().unwrap().is_empty());
    }

    #[test]
    fn forget_spares_a_row_newer_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = StoreWriter::new(store.clone(), "gw".into()).unwrap();
        w.append(&[status("old", 1_000), status("back", 9_000)], &[], 0, KEEP)
            .unwrap();
        let n = store
            .forget_devices(&[
                ("old".into(), 5_000),
                ("back".into(), 5_000),
                ("never".into(), 5_000),
            ])
            .unwrap();
        assert_eq!(n, 1);
        let left = store.devices().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["deviceId"], "back");
    }
}
