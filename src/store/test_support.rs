//! Builders shared by the store's unit tests.

use super::{HistoryQuery, Retention};
use crate::record::{AlarmEvent, Level, Reading, Record};

pub fn reading(dev: &str, st: &str, value: f64, ts_ms: i64) -> Record {
    Record::Reading(Reading {
        device_id: dev.into(),
        sensor_type: st.into(),
        value,
        unit: "u".into(),
        ts_ms,
        status: Level::Normal,
        location: "L".into(),
    })
}

/// Retention that never evicts.
pub const KEEP: Retention = Retention {
    max_age_ms: i64::MAX,
    byte_budget: u64::MAX,
    max_evictions_per_commit: 10_000,
    hold_budget: false,
};

pub fn q(
    dev: &str,
    st: Option<&str>,
    from: Option<i64>,
    to: Option<i64>,
    limit: usize,
) -> HistoryQuery {
    HistoryQuery {
        device_id: dev.into(),
        sensor_type: st.map(Into::into),
        from_ms: from,
        to_ms: to,
        limit,
    }
}

/// An alarm transition of `d/t/threshold` into `state`.
pub fn alarm(state: &'static str, ts_ms: i64) -> Record {
    Record::Alarm(AlarmEvent {
        alarm_id: "d/t/threshold".into(),
        device_id: "d".into(),
        sensor_type: "t".into(),
        rule: "threshold",
        transition: "raise",
        previous_state: "normal",
        state,
        severity: Level::Warning,
        value: Some(1.0),
        limit: Some(0.5),
        operator: ">",
        ts_ms,
        user: None,
        comment: None,
        shelved_until_ms: None,
        chattering: false,
    })
}
