//! The records the gateway stores and forwards: sensor readings, device status changes,
//! alerts and alarm transitions. [`Record`] is the internal type; [`Record::to_wire`] renders the reference guide's
//! JSON schema (what dashboards and upstream consumers receive), with `gatewayId` and `seq`.

use serde::{Deserialize, Serialize};

use crate::time::format_ms;

/// A reading's state against its thresholds (the reference `status` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Normal,
    Warning,
    Critical,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "normal" => Some(Level::Normal),
            "warning" => Some(Level::Warning),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    Online,
    Offline,
    Maintenance,
}

impl DeviceState {
    pub fn parse(s: &str) -> Option<DeviceState> {
        match s {
            "online" => Some(DeviceState::Online),
            "offline" => Some(DeviceState::Offline),
            "maintenance" => Some(DeviceState::Maintenance),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Online => "online",
            DeviceState::Offline => "offline",
            DeviceState::Maintenance => "maintenance",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: String,
    pub sensor_type: String,
    pub value: f64,
    pub unit: String,
    pub ts_ms: i64,
    pub status: Level,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    pub device_id: String,
    pub status: DeviceState,
    pub ts_ms: i64,
    pub location: String,
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Threshold,
    Connectivity,
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub value: f64,
    pub operator: &'static str,
    pub current: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert_id: String,
    pub device_id: Option<String>,
    pub severity: Level,
    pub kind: AlertKind,
    pub message: String,
    pub ts_ms: i64,
    pub sensor_type: Option<String>,
    pub threshold: Option<Threshold>,
    /// Only for `system` alerts: which parts of the gateway are affected.
    pub affected_services: Vec<String>,
}

/// One transition of an alarm's life cycle (`alarm:state`). States and kinds are the names
/// `alarms::state` gives them (this layer sits below it).
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmEvent {
    /// `{deviceId}/{sensorType}/{rule}`: the same at the edge, in the store and upstream.
    pub alarm_id: String,
    pub device_id: String,
    pub sensor_type: String,
    /// `threshold` (a `[[thresholds]]` rule) or `profile` (a firmware profile's).
    pub rule: &'static str,
    pub transition: &'static str,
    pub previous_state: &'static str,
    pub state: &'static str,
    /// The condition after the transition.
    pub severity: Level,
    pub value: Option<f64>,
    pub limit: Option<f64>,
    pub operator: &'static str,
    pub ts_ms: i64,
    /// Who made an operator action (ack, shelve, unshelve), when known.
    pub user: Option<String>,
    /// An ack's comment or a shelve's reason.
    pub comment: Option<String>,
    pub shelved_until_ms: Option<i64>,
    pub chattering: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Reading(Reading),
    Status(DeviceStatus),
    Alert(Alert),
    Alarm(AlarmEvent),
    /// A record another gateway (or producer) already rendered, taken in by `relay`.
    Relayed(Box<Relayed>),
}

/// A record in the reference format received from elsewhere (relay mode): kept as the JSON
/// it came in (checked against the reference schema), so its origin's `gatewayId` and `seq`
/// reach dashboards and history unchanged; never rendered with ours.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub kind: RecordKind,
    pub device_id: Option<String>,
    pub sensor_type: Option<String>,
    /// The record's own timestamp, clamped like a device's (see `relay`).
    pub ts_ms: i64,
    pub json: Box<serde_json::value::RawValue>,
}

impl PartialEq for Relayed {
    fn eq(&self, other: &Relayed) -> bool {
        (self.kind, &self.device_id, self.ts_ms, self.json.get())
            == (other.kind, &other.device_id, other.ts_ms, other.json.get())
    }
}

/// Stable numeric tags, used as the first byte of a stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Reading = 1,
    Status = 2,
    Alert = 3,
    Alarm = 4,
}

impl RecordKind {
    pub fn from_u8(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::Reading),
            2 => Some(RecordKind::Status),
            3 => Some(RecordKind::Alert),
            4 => Some(RecordKind::Alarm),
            _ => None,
        }
    }
}

impl Alert {
    /// A gateway-level alert (`type: system`) about one of its own services; not stored, sent
    /// to every dashboard as `alert:system`.
    pub fn system(service: &str, severity: Level, message: String) -> Alert {
        let ts = crate::time::now_ms();
        Alert {
            alert_id: format!("system-alert-{service}-{ts}"),
            device_id: None,
            severity,
            kind: AlertKind::System,
            message,
            ts_ms: ts,
            sensor_type: None,
            threshold: None,
            affected_services: vec![service.to_string()],
        }
    }
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Reading(_) => RecordKind::Reading,
            Record::Status(_) => RecordKind::Status,
            Record::Alert(_) => RecordKind::Alert,
            Record::Alarm(_) => RecordKind::Alarm,
            Record::Relayed(r) => r.kind,
        }
    }

    pub fn device_id(&self) -> Option<&str> {
        match self {
            Record::Reading(r) => Some(&r.device_id),
            Record::Status(s) => Some(&s.device_id),
            Record::Alert(a) => a.device_id.as_deref(),
            Record::Alarm(a) => Some(&a.device_id),
            Record::Relayed(r) => r.device_id.as_deref(),
        }
    }

    pub fn ts_ms(&self) -> i64 {
        match self {
            Record::Reading(r) => r.ts_ms,
            Record::Status(s) => s.ts_ms,
            Record::Alert(a) => a.ts_ms,
            Record::Alarm(a) => a.ts_ms,
            Record::Relayed(r) => r.ts_ms,
        }
    }

    /// The reference schema for this record, stamped with the gateway id and sequence number
    /// (a relayed record keeps its origin's).
    pub fn to_wire<'a>(&'a self, gateway_id: &'a str, seq: Option<u64>) -> Wire<'a> {
        match self {
            Record::Reading(r) => Wire::Reading(WireReading {
                device_id: &r.device_id,
                sensor_type: &r.sensor_type,
                value: r.value,
                unit: &r.unit,
                timestamp: format_ms(r.ts_ms),
                status: r.status,
                location: &r.location,
                gateway_id,
                seq,
            }),
            Record::Status(s) => Wire::Status(WireStatus {
                device_id: &s.device_id,
                status: s.status,
                timestamp: format_ms(s.ts_ms),
                location: &s.location,
                last_seen: s.last_seen_ms.map(format_ms),
                gateway_id,
                seq,
            }),
            Record::Alert(a) => Wire::Alert(WireAlert {
                alert_id: &a.alert_id,
                device_id: a.device_id.as_deref(),
                severity: a.severity,
                kind: a.kind,
                message: &a.message,
                timestamp: format_ms(a.ts_ms),
                sensor_type: a.sensor_type.as_deref(),
                threshold: a.threshold.as_ref(),
                affected_services: (!a.affected_services.is_empty())
                    .then_some(a.affected_services.as_slice()),
                gateway_id,
                seq,
            }),
            Record::Alarm(a) => Wire::Alarm(wire_alarm(a, gateway_id, seq)),
            Record::Relayed(r) => Wire::Relayed(&r.json),
        }
    }
}

fn wire_alarm<'a>(a: &'a AlarmEvent, gateway_id: &'a str, seq: Option<u64>) -> WireAlarm<'a> {
    WireAlarm {
        alarm_id: &a.alarm_id,
        device_id: &a.device_id,
        sensor_type: &a.sensor_type,
        rule: a.rule,
        transition: a.transition,
        previous_state: a.previous_state,
        state: a.state,
        severity: a.severity,
        value: a.value,
        threshold: a.limit.map(|value| WireLimit {
            value,
            operator: a.operator,
        }),
        timestamp: format_ms(a.ts_ms),
        user: a.user.as_deref(),
        comment: a.comment.as_deref(),
        shelved_until: a.shelved_until_ms.map(format_ms),
        chattering: a.chattering,
        gateway_id,
        seq,
    }
}

/// A record once its commit returned: `seq` is its gateway-wide position.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub seq: u64,
    pub record: Record,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Wire<'a> {
    Reading(WireReading<'a>),
    Status(WireStatus<'a>),
    Alert(WireAlert<'a>),
    Alarm(WireAlarm<'a>),
    Relayed(&'a serde_json::value::RawValue),
}

/// `sensor:reading` / `sensor:all`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireReading<'a> {
    pub device_id: &'a str,
    pub sensor_type: &'a str,
    pub value: f64,
    pub unit: &'a str,
    pub timestamp: String,
    pub status: Level,
    pub location: &'a str,
    pub gateway_id: &'a str,
    /// Absent only on system alerts that were never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `device:status` / `device:all`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireStatus<'a> {
    pub device_id: &'a str,
    pub status: DeviceState,
    pub timestamp: String,
    pub location: &'a str,
    pub last_seen: Option<String>,
    pub gateway_id: &'a str,
    /// Absent only on system alerts that were never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `alert` / `alert:device` / `alert:system`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireAlert<'a> {
    pub alert_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<&'a str>,
    pub severity: Level,
    #[serde(rename = "type")]
    pub kind: AlertKind,
    pub message: &'a str,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<&'a Threshold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_services: Option<&'a [String]>,
    pub gateway_id: &'a str,
    /// Absent only on system alerts that were never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `alarm:state`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireAlarm<'a> {
    pub alarm_id: &'a str,
    pub device_id: &'a str,
    pub sensor_type: &'a str,
    pub rule: &'a str,
    pub transition: &'a str,
    pub previous_state: &'a str,
    pub state: &'a str,
    pub severity: Level,
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<WireLimit<'a>>,
    pub timestamp: String,
    pub user: Option<&'a str>,
    pub comment: Option<&'a str>,
    pub shelved_until: Option<String>,
    pub chattering: bool,
    pub gateway_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct WireLimit<'a> {
    pub value: f64,
    pub operator: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reading_matches_reference_schema() {
        let r = Record::Reading(Reading {
            device_id: "device-001".into(),
            sensor_type: "temperature".into(),
            value: 25.5,
            unit: "°C".into(),
            ts_ms: 1_749_808_800_000,
            status: Level::Normal,
            location: "Assembly Line 1".into(),
        });
        let v = serde_json::to_value(r.to_wire("gw-1", Some(7))).unwrap();
        assert_eq!(
            v,
            json!({"deviceId": "device-001", "sensorType": "temperature", "value": 25.5,
                   "unit": "°C", "timestamp": "2025-06-13T10:00:00.000Z", "status": "normal",
                   "location": "Assembly Line 1", "gatewayId": "gw-1", "seq": 7})
        );
    }

    #[test]
    fn alert_matches_reference_schema() {
        let a = Record::Alert(Alert {
            alert_id: "alert-1".into(),
            device_id: Some("device-001".into()),
            severity: Level::Critical,
            kind: AlertKind::Threshold,
            message: "temperature 87.2 > 85".into(),
            ts_ms: 0,
            sensor_type: Some("temperature".into()),
            threshold: Some(Threshold {
                value: 85.0,
                operator: ">",
                current: 87.2,
            }),
            affected_services: vec![],
        });
        let v = serde_json::to_value(a.to_wire("gw", Some(1))).unwrap();
        assert_eq!(v["type"], "threshold");
        assert_eq!(v["severity"], "critical");
        assert_eq!(
            v["threshold"],
            json!({"value": 85.0, "operator": ">", "current": 87.2})
        );
        assert!(v.get("affectedServices").is_none());
    }

    #[test]
    fn alarm_transition_renders_every_field() {
        let a = Record::Alarm(AlarmEvent {
            alarm_id: "d1/temperature/threshold".into(),
            device_id: "d1".into(),
            sensor_type: "temperature".into(),
            rule: "threshold",
            transition: "ack",
            previous_state: "active_unacked",
            state: "active_acked",
            severity: Level::Warning,
            value: Some(36.5),
            limit: Some(35.0),
            operator: ">",
            ts_ms: 0,
            user: Some("alice".into()),
            comment: Some("on it".into()),
            shelved_until_ms: None,
            chattering: false,
        });
        let v = serde_json::to_value(a.to_wire("gw", Some(9))).unwrap();
        assert_eq!(
            v,
            json!({"alarmId": "d1/temperature/threshold", "deviceId": "d1",
                   "sensorType": "temperature", "rule": "threshold", "transition": "ack",
                   "previousState": "active_unacked", "state": "active_acked",
                   "severity": "warning", "value": 36.5,
                   "threshold": {"value": 35.0, "operator": ">"},
                   "timestamp": "1970-01-01T00:00:00.000Z", "user": "alice", "comment": "on it",
                   "shelvedUntil": null, "chattering": false, "gatewayId": "gw", "seq": 9})
        );
    }
}
