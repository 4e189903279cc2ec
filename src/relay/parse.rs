//! Checks a message from the central feed against the reference schema of its kind and keeps
//! it as it came (its origin's `gatewayId` and `seq` included). Unknown fields, a missing
//! field, a bad id or timestamp: the message is refused with a reason, counted by the caller.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ids::valid_id;
use crate::record::{RecordKind, Relayed};
use crate::time::parse_rfc3339_ms;

/// A checked message: the record to store and where it came from, if it says.
#[derive(Debug)]
pub struct Parsed {
    pub record: Relayed,
    pub origin: Option<(String, u64)>,
}

/// Why a message was refused (the `reason` label of the rejected counter).
pub type Refusal = &'static str;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // fields are checked for presence and type, then the JSON is kept whole
struct Reading {
    device_id: String,
    sensor_type: String,
    value: f64,
    unit: String,
    timestamp: String,
    status: crate::record::Level,
    location: String,
    gateway_id: Option<String>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Status {
    device_id: String,
    status: crate::record::DeviceState,
    timestamp: String,
    location: String,
    last_seen: Option<String>,
    gateway_id: Option<String>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Threshold {
    value: f64,
    operator: String,
    current: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Alert {
    alert_id: String,
    device_id: Option<String>,
    severity: crate::record::Level,
    #[serde(rename = "type")]
    kind: crate::record::AlertKind,
    message: String,
    timestamp: String,
    sensor_type: Option<String>,
    threshold: Option<Threshold>,
    affected_services: Option<Vec<String>>,
    gateway_id: Option<String>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Alarm {
    alarm_id: String,
    device_id: String,
    sensor_type: String,
    rule: String,
    transition: String,
    previous_state: String,
    state: String,
    severity: crate::record::Level,
    value: Option<f64>,
    threshold: Option<Threshold>,
    timestamp: String,
    user: Option<String>,
    comment: Option<String>,
    shelved_until: Option<String>,
    chattering: bool,
    gateway_id: Option<String>,
    seq: Option<u64>,
}

/// The fields every kind shares, once checked.
struct Common {
    device_id: Option<String>,
    sensor_type: Option<String>,
    timestamp: String,
    gateway_id: Option<String>,
    seq: Option<u64>,
}

fn common(kind: RecordKind, json: &str) -> Result<Common, Refusal> {
    let common = match kind {
        RecordKind::Reading => {
            let r: Reading = serde_json::from_str(json).map_err(|_| "schema")?;
            Common {
                device_id: Some(r.device_id),
                sensor_type: Some(r.sensor_type),
                timestamp: r.timestamp,
                gateway_id: r.gateway_id,
                seq: r.seq,
            }
        }
        RecordKind::Status => {
            let s: Status = serde_json::from_str(json).map_err(|_| "schema")?;
            Common {
                device_id: Some(s.device_id),
                sensor_type: None,
                timestamp: s.timestamp,
                gateway_id: s.gateway_id,
                seq: s.seq,
            }
        }
        RecordKind::Alert => {
            let a: Alert = serde_json::from_str(json).map_err(|_| "schema")?;
            Common {
                device_id: a.device_id,
                sensor_type: a.sensor_type,
                timestamp: a.timestamp,
                gateway_id: a.gateway_id,
                seq: a.seq,
            }
        }
        RecordKind::Alarm => {
            let a: Alarm = serde_json::from_str(json).map_err(|_| "schema")?;
            Common {
                device_id: Some(a.device_id),
                sensor_type: Some(a.sensor_type),
                timestamp: a.timestamp,
                gateway_id: a.gateway_id,
                seq: a.seq,
            }
        }
    };
    Ok(common)
}

/// `body` as a record of `kind`. Its timestamp is kept for history within
/// [`now` − `max_age_ms`, `now` + `max_skew_ms`], else the receive time is (as for a device).
/// A stream entry's `fields` origin must agree with the JSON's.
pub fn parse(
    kind: RecordKind,
    body: &[u8],
    fields: Option<(String, u64)>,
    now_ms: i64,
    window: (i64, i64),
) -> Result<Parsed, Refusal> {
    let text = std::str::from_utf8(body).map_err(|_| "not_json")?;
    let json: Box<RawValue> = serde_json::from_str(text).map_err(|_| "not_json")?;
    let c = common(kind, json.get())?;
    let ids = c.device_id.iter().chain(&c.sensor_type);
    if !ids.clone().all(|id| valid_id(id)) {
        return Err("bad_id");
    }
    let ts = parse_rfc3339_ms(&c.timestamp).ok_or("bad_timestamp")?;
    let ts_ms = if ts < now_ms - window.0 || ts > now_ms + window.1 {
        now_ms
    } else {
        ts
    };
    let origin = c.gateway_id.zip(c.seq);
    if fields.is_some() && origin.is_some() && fields != origin {
        return Err("origin_mismatch");
    }
    Ok(Parsed {
        record: Relayed {
            kind,
            device_id: c.device_id,
            sensor_type: c.sensor_type,
            ts_ms,
            json,
        },
        origin: origin.or(fields),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const WINDOW: (i64, i64) = (86_400_000, 300_000);

    fn reading(extra: &str) -> String {
        format!(
            r#"{{"deviceId":"press-1","sensorType":"temperature","value":21.5,"unit":"C","timestamp":"2023-11-14T22:13:20.000Z","status":"normal","location":"hall"{extra}}}"#
        )
    }

    #[test]
    fn a_reference_reading_keeps_its_origin_and_bytes() {
        let body = reading(r#","gatewayId":"gw-a","seq":42"#);
        let p = parse(RecordKind::Reading, body.as_bytes(), None, NOW, WINDOW).unwrap();
        assert_eq!(p.origin, Some(("gw-a".into(), 42)));
        assert_eq!(p.record.json.get(), body);
        assert_eq!(p.record.ts_ms, NOW);
        assert_eq!(p.record.device_id.as_deref(), Some("press-1"));
    }

    #[test]
    fn other_producers_pass_without_origin_and_stream_fields_fill_in() {
        let body = reading("");
        let p = parse(RecordKind::Reading, body.as_bytes(), None, NOW, WINDOW).unwrap();
        assert_eq!(p.origin, None);
        let f = Some(("gw-b".to_string(), 7));
        let p = parse(RecordKind::Reading, body.as_bytes(), f.clone(), NOW, WINDOW).unwrap();
        assert_eq!(p.origin, f);
    }

    #[test]
    fn bad_input_is_refused_with_its_reason() {
        let cases = [
            (RecordKind::Reading, "{not json".to_string(), "not_json"),
            (RecordKind::Reading, reading(r#","extra":1"#), "schema"),
            (RecordKind::Status, reading(""), "schema"),
            (
                RecordKind::Reading,
                reading("").replace("press-1", "a/b"),
                "bad_id",
            ),
            (
                RecordKind::Reading,
                reading("").replace("2023-11-14T22:13:20.000Z", "yesterday"),
                "bad_timestamp",
            ),
        ];
        for (kind, body, reason) in cases {
            assert_eq!(
                parse(kind, body.as_bytes(), None, NOW, WINDOW).unwrap_err(),
                reason,
                "{body}"
            );
        }
        let body = reading(r#","gatewayId":"gw-a","seq":42"#);
        let f = Some(("gw-a".to_string(), 43));
        assert_eq!(
            parse(RecordKind::Reading, body.as_bytes(), f, NOW, WINDOW).unwrap_err(),
            "origin_mismatch"
        );
    }
}
