//! `get:history` parameters: `{deviceId, sensorType?, from?, to?, limit?}`, validated into a
//! [`HistoryQuery`] or a message naming the problem.

use serde_json::Value;

use crate::config::SocketIoConfig;
use crate::ids::{IdError, MAX_ID_BYTES, check_id};
use crate::store::HistoryQuery;
use crate::time::parse_rfc3339_ms;

pub fn parse(params: Option<&Value>, config: &SocketIoConfig) -> Result<HistoryQuery, String> {
    let Some(Value::Object(p)) = params else {
        return Err("params must be an object {deviceId, sensorType?, from?, to?, limit?}".into());
    };
    let device_id = match p.get("deviceId") {
        Some(Value::String(s)) => match check_id(s) {
            Ok(()) => s.clone(),
            Err(IdError::Empty | IdError::TooLong) => {
                return Err(format!("deviceId must be 1 to {MAX_ID_BYTES} characters"));
            }
            Err(e) => return Err(format!("deviceId {e}")),
        },
        None | Some(Value::Null) => return Err("deviceId is required".into()),
        Some(_) => return Err("deviceId must be a string".into()),
    };
    let sensor_type = match p.get("sensorType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match check_id(s) {
            Ok(()) => Some(s.clone()),
            Err(IdError::Empty | IdError::TooLong) => {
                return Err("sensorType must be a non-empty string".into());
            }
            Err(e) => return Err(format!("sensorType {e}")),
        },
        Some(_) => return Err("sensorType must be a non-empty string".into()),
    };
    let from_ms = time_param(p.get("from"), "from")?;
    let to_ms = time_param(p.get("to"), "to")?;
    if let (Some(f), Some(t)) = (from_ms, to_ms)
        && f > t
    {
        return Err("from must not be after to".into());
    }
    let max = config.history_max_limit;
    let limit = match p.get("limit") {
        None | Some(Value::Null) => config.history_default_limit,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(l) if (1..=max as u64).contains(&l) => l as usize,
            _ => return Err(format!("limit must be an integer from 1 to {max}")),
        },
        Some(_) => return Err(format!("limit must be an integer from 1 to {max}")),
    };
    Ok(HistoryQuery {
        device_id,
        sensor_type,
        from_ms,
        to_ms,
        limit,
    })
}

/// An ISO 8601 / RFC 3339 string, or Unix milliseconds.
fn time_param(v: Option<&Value>, name: &str) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_rfc3339_ms(s).map(Some).ok_or_else(|| {
            format!("{name} must be an ISO 8601 timestamp like 2025-06-13T10:00:00Z")
        }),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(_) => Err(format!(
            "{name} must be an ISO 8601 timestamp like 2025-06-13T10:00:00Z"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<HistoryQuery, String> {
        parse(Some(&v), &SocketIoConfig::default())
    }

    #[test]
    fn valid_params() {
        let q = p(
            json!({"deviceId": "d", "sensorType": "t", "from": "2025-06-13T10:00:00Z",
                         "to": "2025-06-13T11:00:00Z", "limit": 5}),
        )
        .unwrap();
        assert_eq!(q.device_id, "d");
        assert_eq!(q.sensor_type.as_deref(), Some("t"));
        assert_eq!(q.from_ms, Some(1_749_808_800_000));
        assert_eq!(q.limit, 5);
        assert_eq!(p(json!({"deviceId": "d"})).unwrap().limit, 1000);
    }

    #[test]
    fn invalid_params_name_the_problem() {
        let err = |v| p(v).unwrap_err();
        assert!(
            parse(None, &SocketIoConfig::default())
                .unwrap_err()
                .contains("object")
        );
        assert!(err(json!("device-1")).contains("object"));
        assert!(err(json!({})).contains("deviceId is required"));
        assert!(err(json!({"deviceId": 5})).contains("deviceId must be a string"));
        assert!(err(json!({"deviceId": "d", "from": "yesterday"})).contains("from"));
        assert!(err(json!({"deviceId": "d", "to": true})).contains("to must"));
        assert!(err(json!({"deviceId": "d", "from": "2025-06-13T11:00:00Z", "to": "2025-06-13T10:00:00Z"}))
            .contains("after"));
        for bad in [json!(0), json!(-1), json!(10001), json!(2.5), json!("10")] {
            assert!(err(json!({"deviceId": "d", "limit": bad})).contains("limit"));
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Any JSON value, nested a few levels.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|v| json!(v)),
            any::<u64>().prop_map(|v| json!(v)),
            any::<f64>().prop_map(|v| json!(v)),
            "\\PC{0,40}".prop_map(Value::String),
            "[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})"
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_params_never_panic(params in any_json()) {
            let _ = parse(Some(&params), &SocketIoConfig::default());
        }

        #[test]
        fn history_shaped_params_are_bounded(device in prop_oneof!["[a-z0-9-]{1,8}".prop_map(Value::String), any_json()],
                                             sensor in any_json(), from in any_json(), to in any_json(),
                                             limit in any_json()) {
            let config = SocketIoConfig::default();
            let params = json!({"deviceId": device, "sensorType": sensor, "from": from, "to": to, "limit": limit});
            if let Ok(q) = parse(Some(&params), &config) {
                prop_assert!(q.limit >= 1 && q.limit <= config.history_max_limit);
                if let (Some(f), Some(t)) = (q.from_ms, q.to_ms) {
                    prop_assert!(f <= t);
                }
            }
        }
    }
}
