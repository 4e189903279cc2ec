//! What `system:status` and `/health` count on a relay, from the relayed records: devices
//! heard of (online by their last `device:status`, or by a reading from one not heard of
//! before), alarms active and not shelved (by their last `alarm:state`), readings in the
//! last minute. Bounded like the edge's registry: past `devices.max_devices` (or
//! [`MAX_ALARM_OWNERS`](super::MAX_ALARM_OWNERS) alarms) new ones are not counted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde::Deserialize;

use crate::alarms::state::AlarmState;
use crate::health::Health;
use crate::record::{Record, RecordKind};

pub(super) struct View {
    /// deviceId → online.
    devices: HashMap<String, bool>,
    max_devices: usize,
    /// alarmId → active and not shelved.
    alarms: HashMap<String, bool>,
    max_alarms: usize,
    /// Readings per second of the last minute, a ring indexed by the second.
    per_second: [u64; 60],
    second: i64,
    /// When the counts were last published (the device map is walked then).
    published_ms: i64,
}

/// How often the counts are published at most.
const PUBLISH_EVERY_MS: i64 = 250;

#[derive(Deserialize)]
struct Status<'a> {
    #[serde(rename = "deviceId", borrow)]
    device_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Alarm<'a> {
    #[serde(rename = "alarmId", borrow)]
    alarm_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    state: std::borrow::Cow<'a, str>,
    chattering: bool,
}

impl View {
    pub fn new(max_devices: usize, max_alarms: usize) -> View {
        View {
            devices: HashMap::new(),
            max_devices,
            alarms: HashMap::new(),
            max_alarms,
            per_second: [0; 60],
            second: 0,
            published_ms: i64::MIN,
        }
    }

    /// Counts a record about to be stored, received at `now_ms`.
    pub fn note(&mut self, record: &Record, now_ms: i64) {
        let Record::Relayed(r) = record else { return };
        let json = r.json.get();
        match r.kind {
            RecordKind::Reading => {
                self.roll(now_ms);
                self.per_second[(self.second % 60) as usize] += 1;
                if let Some(device) = &r.device_id
                    && !self.devices.contains_key(device)
                    && self.devices.len() < self.max_devices
                {
                    self.devices.insert(device.clone(), true);
                }
            }
            RecordKind::Status => {
                if let Ok(s) = serde_json::from_str::<Status<'_>>(json) {
                    let online = s.status == "online";
                    bounded_set(&mut self.devices, self.max_devices, &s.device_id, online);
                }
            }
            RecordKind::Alarm => self.note_alarm(json),
            RecordKind::Alert => {}
        }
    }

    /// Counts an alarm's latest `alarm:state` (relayed, or as kept in the store).
    pub fn note_alarm(&mut self, json: &str) {
        let Ok(a) = serde_json::from_str::<Alarm<'_>>(json) else {
            return;
        };
        if a.state == "normal" && !a.chattering {
            self.alarms.remove(&*a.alarm_id);
            return;
        }
        let active = AlarmState::parse(&a.state).is_some_and(AlarmState::is_active);
        bounded_set(&mut self.alarms, self.max_alarms, &a.alarm_id, active);
    }

    /// Moves the ring to the second of `now_ms`, clearing the seconds passed.
    fn roll(&mut self, now_ms: i64) {
        let now_s = now_ms.div_euclid(1000);
        if now_s - self.second >= 60 {
            self.per_second = [0; 60];
        } else {
            for s in self.second + 1..=now_s {
                self.per_second[(s.rem_euclid(60)) as usize] = 0;
            }
        }
        self.second = self.second.max(now_s);
    }

    /// Devices online and heard of, and alarms active: where the edge's pipeline puts them.
    /// At most every [`PUBLISH_EVERY_MS`].
    pub fn publish(&mut self, health: &Health, now_ms: i64) {
        if now_ms.saturating_sub(self.published_ms) < PUBLISH_EVERY_MS {
            return;
        }
        self.published_ms = now_ms;
        self.roll(now_ms);
        let online = self.devices.values().filter(|&&on| on).count();
        let active = self.alarms.values().filter(|&&on| on).count();
        health
            .devices_total
            .store(self.devices.len(), Ordering::Relaxed);
        health.devices_online.store(online, Ordering::Relaxed);
        health.active_alerts.store(active, Ordering::Relaxed);
        health
            .readings_last_minute
            .store(self.per_second.iter().sum(), Ordering::Relaxed);
    }
}

/// Sets `key` unless it is new and the map is full.
fn bounded_set(map: &mut HashMap<String, bool>, max: usize, key: &str, value: bool) {
    if let Some(v) = map.get_mut(key) {
        *v = value;
    } else if map.len() < max {
        map.insert(key.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Relayed;

    fn relayed(kind: RecordKind, device: &str, json: String) -> Record {
        Record::Relayed(Box::new(Relayed {
            kind,
            device_id: Some(device.into()),
            sensor_type: None,
            ts_ms: 0,
            json: serde_json::value::RawValue::from_string(json).unwrap(),
        }))
    }

    fn status(device: &str, state: &str) -> Record {
        let json = format!(r#"{{"deviceId":"{device}","status":"{state}"}}"#);
        relayed(RecordKind::Status, device, json)
    }

    fn alarm(id: &str, state: &str) -> Record {
        let json = format!(r#"{{"alarmId":"{id}","state":"{state}","chattering":false}}"#);
        relayed(RecordKind::Alarm, "d", json)
    }

    fn figures(view: &mut View, now: i64) -> (usize, usize, usize, u64) {
        let h = Health::new(false, &[]);
        view.publish(&h, now);
        (
            h.devices_total.load(Ordering::Relaxed),
            h.devices_online.load(Ordering::Relaxed),
            h.active_alerts.load(Ordering::Relaxed),
            h.readings_last_minute.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn devices_alarms_and_readings_are_counted_within_bounds() {
        let mut v = View::new(2, 2);
        let now = 1_700_000_000_000;
        v.note(&status("a", "offline"), now);
        v.note(&relayed(RecordKind::Reading, "b", "{}".into()), now);
        v.note(&relayed(RecordKind::Reading, "a", "{}".into()), now);
        // A third device does not fit; "a" stays offline until its status says otherwise.
        v.note(&status("c", "online"), now);
        assert_eq!(figures(&mut v, now), (2, 1, 0, 2));
        v.note(&status("a", "online"), now);
        v.note(&alarm("x", "active_unacked"), now);
        v.note(&alarm("y", "shelved"), now);
        v.note(&alarm("z", "active_acked"), now);
        assert_eq!(figures(&mut v, now + 1_000), (2, 2, 1, 2));
        v.note(&alarm("x", "normal"), now);
        v.note(&alarm("z", "active_acked"), now);
        // A minute later the readings have rolled out.
        assert_eq!(figures(&mut v, now + 61_000), (2, 2, 1, 0));
    }
}
