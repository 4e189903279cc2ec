//! Between the state machine and the store: an alarm's id, its transitions as records (plus
//! the reference `alert` for raises and escalations), and a stored `alarm:state` read back
//! into a snapshot at start.

use super::rule::ThresholdRule;
use super::state::{AlarmState, Snapshot, Transition};
use crate::record::{AlarmEvent, Alert, AlertKind, Level, Record, Threshold};
use crate::time::parse_rfc3339_ms;

/// Which rule an alarm belongs to: the sensor type's `[[thresholds]]` rule or the device's
/// firmware profile's. Part of the alarm's identity.
pub const RULE_THRESHOLD: &str = "threshold";
pub const RULE_PROFILE: &str = "profile";

/// One alarm per (deviceId, sensorType, rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmKey {
    pub device_id: String,
    pub sensor_type: String,
    pub rule: &'static str,
}

impl AlarmKey {
    /// `{deviceId}/{sensorType}/{rule}`: deterministic, so the edge and the centre agree.
    /// `/` cannot occur in ids (the id rule reserves it), so the id parses back.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.device_id, self.sensor_type, self.rule)
    }

    pub fn parse(id: &str) -> Option<AlarmKey> {
        let mut parts = id.split('/');
        let (device, sensor, rule) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || device.is_empty() || sensor.is_empty() {
            return None;
        }
        let rule = [RULE_THRESHOLD, RULE_PROFILE]
            .into_iter()
            .find(|r| *r == rule)?;
        Some(AlarmKey {
            device_id: device.to_string(),
            sensor_type: sensor.to_string(),
            rule,
        })
    }
}

/// The records one transition becomes: the reference alert for a raise or escalation, then
/// the transition itself.
pub fn transition_records(
    key: &AlarmKey,
    t: &Transition,
    rule: &ThresholdRule,
    unit: &str,
    alert_seq: &mut u64,
    out: &mut Vec<Record>,
) {
    if t.kind.is_alert() {
        *alert_seq += 1;
        out.push(Record::Alert(alert(key, t, rule, unit, *alert_seq)));
    }
    let actor = t.actor.clone().unwrap_or_default();
    out.push(Record::Alarm(AlarmEvent {
        alarm_id: key.id(),
        device_id: key.device_id.clone(),
        sensor_type: key.sensor_type.clone(),
        rule: key.rule,
        transition: t.kind.as_str(),
        previous_state: t.from.as_str(),
        state: t.to.as_str(),
        severity: t.severity,
        value: t.value,
        limit: t.limit,
        operator: rule.operator.as_str(),
        ts_ms: t.ts_ms,
        user: actor.user,
        comment: actor.comment,
        shelved_until_ms: t.shelved_until_ms,
        chattering: t.chattering,
    }));
}

/// The reference `alert` payload, as before the alarm life cycle.
fn alert(key: &AlarmKey, t: &Transition, rule: &ThresholdRule, unit: &str, n: u64) -> Alert {
    let (value, limit) = (t.value.unwrap_or_default(), t.limit.unwrap_or_default());
    let op = rule.operator.as_str();
    Alert {
        alert_id: format!("alert-{}-{n}", t.ts_ms),
        device_id: Some(key.device_id.clone()),
        severity: t.severity,
        kind: AlertKind::Threshold,
        message: format!(
            "{} threshold exceeded: {value}{unit} {op} {limit}{unit} ({})",
            capitalize(&key.sensor_type),
            t.severity.as_str()
        ),
        ts_ms: t.ts_ms,
        sensor_type: Some(key.sensor_type.clone()),
        threshold: Some(Threshold {
            value: limit,
            operator: op,
            current: value,
        }),
        affected_services: vec![],
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A stored `alarm:state` as the alarm to restore; `None` if it does not parse.
pub fn parse_stored(json: &serde_json::Value) -> Option<(AlarmKey, Snapshot)> {
    let key = AlarmKey::parse(json.get("alarmId")?.as_str()?)?;
    let snapshot = Snapshot {
        state: AlarmState::parse(json.get("state")?.as_str()?)?,
        severity: Level::parse(json.get("severity")?.as_str()?)?,
        shelved_until_ms: json
            .get("shelvedUntil")
            .and_then(serde_json::Value::as_str)
            .and_then(parse_rfc3339_ms),
        chattering: json
            .get("chattering")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    };
    Some((key, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_ids_round_trip_and_refuse_what_is_not_one() {
        let key = AlarmKey {
            device_id: "press-7".into(),
            sensor_type: "temperature".into(),
            rule: RULE_PROFILE,
        };
        assert_eq!(key.id(), "press-7/temperature/profile");
        assert_eq!(AlarmKey::parse(&key.id()), Some(key));
        for bad in ["", "a/b", "a/b/c", "a/b/threshold/x", "/b/threshold"] {
            assert_eq!(AlarmKey::parse(bad), None, "{bad}");
        }
    }
}
