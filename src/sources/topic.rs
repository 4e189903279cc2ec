//! The MQTT topic contract, shared by the embedded broker's ingest and the site broker client:
//!
//! - `sensors/{deviceId}/{sensorType}`: `{"value": 25.5, "unit", "timestamp", "status",
//!   "location"}` with only `value` required, or a bare number;
//! - `devices/{deviceId}/status`: `{"status": "online|offline|maintenance", "location"}` or
//!   the bare word (so a last will can mark a device offline).
//!
//! Anything else is rejected with a reason, counted by the caller, and logged at most once per
//! reason per [`crate::telemetry::LOG_EVERY`].

use std::collections::HashMap;
use std::time::Instant;

use crate::ids::valid_id;
use crate::ingest::Ingest;
use crate::record::{DeviceState, Level};
use crate::telemetry::Throttle;
use crate::time::parse_rfc3339_ms;

/// Why a message was rejected; the `reason` label in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    BadTopic,
    Oversize,
    BadUtf8,
    BadJson,
    BadValue,
    BadField,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::BadTopic => "bad_topic",
            Reject::Oversize => "oversize",
            Reject::BadUtf8 => "bad_utf8",
            Reject::BadJson => "bad_json",
            Reject::BadValue => "bad_value",
            Reject::BadField => "bad_field",
        }
    }
}

/// One log line per reason per interval, with how many were suppressed meanwhile.
#[derive(Default)]
pub struct LogThrottle {
    last: HashMap<Reject, Throttle>,
}

impl LogThrottle {
    pub fn warn(&mut self, reason: Reject, topic: &[u8]) {
        if let Some(suppressed) = self.last.entry(reason).or_default().ready() {
            tracing::warn!(
                reason = reason.as_str(),
                // Debug-escaped: a topic may carry bidi overrides or control characters.
                topic = ?String::from_utf8_lossy(&topic[..topic.len().min(200)]),
                suppressed,
                "rejected MQTT message"
            );
        }
    }
}

/// Parses one publish against the topic contract.
pub fn parse(
    topic: &[u8],
    payload: &[u8],
    max_payload: usize,
    received: Instant,
) -> Result<Ingest, Reject> {
    let topic = std::str::from_utf8(topic).map_err(|_| Reject::BadTopic)?;
    let parts: Vec<&str> = topic.split('/').collect();
    if payload.len() > max_payload {
        return Err(Reject::Oversize);
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| Reject::BadUtf8)?
        .trim();
    match parts.as_slice() {
        ["sensors", device, sensor] if valid_id(device) && valid_id(sensor) => {
            parse_reading(device, sensor, text, received)
        }
        ["devices", device, "status"] if valid_id(device) => parse_status(device, text, received),
        _ => Err(Reject::BadTopic),
    }
}

fn parse_reading(
    device: &str,
    sensor: &str,
    text: &str,
    received: Instant,
) -> Result<Ingest, Reject> {
    let mut reading = Ingest::Reading {
        device_id: device.to_string(),
        sensor_type: sensor.to_string(),
        value: 0.0,
        unit: None,
        ts_ms: None,
        status: None,
        location: None,
        received,
        threshold: None,
    };
    let Ingest::Reading {
        value,
        unit,
        ts_ms,
        status,
        location,
        ..
    } = &mut reading
    else {
        unreachable!("constructed as a reading above")
    };
    if !text.starts_with('{') {
        // A bare number; JSON-looking junk is a JSON error, anything else a bad value.
        *value = text.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or(
            if text.starts_with('[') || text.starts_with('"') {
                Reject::BadJson
            } else {
                Reject::BadValue
            },
        )?;
        return Ok(reading);
    }
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| Reject::BadJson)?;
    *value = obj
        .get("value")
        .and_then(|v| v.as_f64())
        .filter(|v| v.is_finite())
        .ok_or(Reject::BadValue)?;
    *unit = optional_str(&obj, "unit")?;
    *location = optional_str(&obj, "location")?;
    if let Some(ts) = optional_str(&obj, "timestamp")? {
        *ts_ms = Some(parse_rfc3339_ms(&ts).ok_or(Reject::BadField)?);
    }
    if let Some(s) = optional_str(&obj, "status")? {
        *status = Some(Level::parse(&s).ok_or(Reject::BadField)?);
    }
    Ok(reading)
}

fn parse_status(device: &str, text: &str, received: Instant) -> Result<Ingest, Reject> {
    let (word, location) = if text.starts_with('{') {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|_| Reject::BadJson)?;
        let word = optional_str(&obj, "status")?.ok_or(Reject::BadField)?;
        (word, optional_str(&obj, "location")?)
    } else if text.starts_with('"') {
        (
            serde_json::from_str::<String>(text).map_err(|_| Reject::BadJson)?,
            None,
        )
    } else {
        (text.to_string(), None)
    };
    let status = DeviceState::parse(word.trim()).ok_or(Reject::BadValue)?;
    Ok(Ingest::Status {
        device_id: device.to_string(),
        status,
        location,
        received,
    })
}

fn optional_str(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<String>, Reject> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.len() <= 256 => Ok(Some(s.clone())),
        Some(_) => Err(Reject::BadField),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str, payload: &str) -> Result<Ingest, Reject> {
        parse(topic.as_bytes(), payload.as_bytes(), 1024, Instant::now())
    }

    #[test]
    fn readings_full_and_bare() {
        let Ok(Ingest::Reading {
            device_id,
            sensor_type,
            value,
            unit,
            ts_ms,
            status,
            location,
            ..
        }) = p(
            "sensors/device-001/temperature",
            r#"{"value": 25.5, "unit": "°C", "timestamp": "2025-06-13T10:00:00Z", "status": "warning", "location": "L1"}"#,
        )
        else {
            panic!("expected a reading")
        };
        assert_eq!(
            (device_id.as_str(), sensor_type.as_str(), value),
            ("device-001", "temperature", 25.5)
        );
        assert_eq!(unit.as_deref(), Some("°C"));
        assert_eq!(ts_ms, Some(1_749_808_800_000));
        assert_eq!(status, Some(Level::Warning));
        assert_eq!(location.as_deref(), Some("L1"));
        assert!(matches!(
            p("sensors/d/t", " 21.5\n"),
            Ok(Ingest::Reading { value: 21.5, .. })
        ));
        assert!(matches!(
            p("sensors/d/t", r#"{"value": -3}"#),
            Ok(Ingest::Reading { value: -3.0, .. })
        ));
    }

    #[test]
    fn status_json_and_bare_word() {
        assert!(matches!(
            p(
                "devices/d/status",
                r#"{"status":"maintenance","location":"x"}"#
            ),
            Ok(Ingest::Status {
                status: DeviceState::Maintenance,
                ..
            })
        ));
        assert!(matches!(
            p("devices/d/status", "offline"),
            Ok(Ingest::Status {
                status: DeviceState::Offline,
                ..
            })
        ));
        assert!(matches!(
            p("devices/d/status", "\"online\""),
            Ok(Ingest::Status {
                status: DeviceState::Online,
                ..
            })
        ));
    }

    #[test]
    fn rejections_have_reasons() {
        let reason = |t: &str, pl: &str| p(t, pl).err();
        assert_eq!(reason("sensors/d", "1"), Some(Reject::BadTopic));
        assert_eq!(reason("sensors/d/t/x", "1"), Some(Reject::BadTopic));
        assert_eq!(reason("sensors//t", "1"), Some(Reject::BadTopic));
        assert_eq!(reason("other/d/t", "1"), Some(Reject::BadTopic));
        assert_eq!(reason("sensors/d/t", "{not json"), Some(Reject::BadJson));
        assert_eq!(
            reason("sensors/d/t", r#"{"value": "hot"}"#),
            Some(Reject::BadValue)
        );
        assert_eq!(
            reason("sensors/d/t", r#"{"unit": "C"}"#),
            Some(Reject::BadValue)
        );
        assert_eq!(reason("sensors/d/t", "NaN"), Some(Reject::BadValue));
        assert_eq!(reason("sensors/d/t", "hot"), Some(Reject::BadValue));
        assert_eq!(
            reason("sensors/d/t", r#"{"value": 1, "timestamp": "soon"}"#),
            Some(Reject::BadField)
        );
        assert_eq!(
            reason("sensors/d/t", r#"{"value": 1, "status": "fine"}"#),
            Some(Reject::BadField)
        );
        assert_eq!(
            reason("sensors/d/t", &"1".repeat(2000)),
            Some(Reject::Oversize)
        );
        assert_eq!(
            reason("devices/d/status", "sleeping"),
            Some(Reject::BadValue)
        );
        assert_eq!(
            parse(b"sensors/d/t", b"\xff\xfe", 1024, Instant::now()).err(),
            Some(Reject::BadUtf8)
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Ids near the rule's edges: valid ones, empty, long, slashes, wildcards, control chars.
    fn id() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9_-]{1,12}", "\\PC{0,80}", "[+#/\\x00-\\x1f ]{0,4}"]
    }

    /// A payload that gets past the JSON parser: fields of every type and wrong types.
    fn json_payload() -> impl Strategy<Value = String> {
        let any_json = prop_oneof![
            any::<f64>().prop_map(|v| serde_json::json!(v)),
            any::<i64>().prop_map(|v| serde_json::json!(v)),
            "\\PC{0,40}".prop_map(|s| serde_json::json!(s)),
            "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}T[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})"
                .prop_map(|s| serde_json::json!(s)),
            Just(serde_json::Value::Null),
            Just(serde_json::json!([1, {"a": 2}])),
        ];
        let key = prop_oneof![
            Just("value".to_string()),
            Just("unit".to_string()),
            Just("timestamp".to_string()),
            Just("status".to_string()),
            Just("location".to_string()),
            "\\PC{0,10}",
        ];
        prop::collection::btree_map(key, any_json, 0..6)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()).to_string())
    }

    fn check(topic: &[u8], payload: &[u8]) {
        if let Ok(Ingest::Reading { value, .. }) = parse(topic, payload, 1024, Instant::now()) {
            assert!(value.is_finite());
        }
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(topic in prop::collection::vec(any::<u8>(), 0..64),
                                 payload in prop::collection::vec(any::<u8>(), 0..2048)) {
            check(&topic, &payload);
        }

        #[test]
        fn contract_shaped_input_never_panics(device in id(), sensor in id(), status in any::<bool>(),
                                              payload in prop_oneof![json_payload(), "\\PC{0,64}"]) {
            let topic = if status {
                format!("devices/{device}/status")
            } else {
                format!("sensors/{device}/{sensor}")
            };
            check(topic.as_bytes(), payload.as_bytes());
        }
    }
}
