//! Devices as the pipeline sees them: offline detection, threshold rules, simulated devices.

use serde::Deserialize;

use super::{Check, ConfigError};
use crate::alarms::{Operator, ThresholdRule, check_rule};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Silence after which a device is marked offline and a connectivity alert raised.
    pub offline_after_ms: u64,
    pub check_interval_ms: u64,
    /// Most devices the registry holds. A reading or status of a new device beyond it is
    /// rejected (reason `too_many_devices`): anonymous publishes must not grow memory, or the
    /// registry restored at start, without bound.
    pub max_devices: usize,
    /// A device silent this long is forgotten (from memory and the store's registry); 0 =
    /// only when its data has aged out of the store (`store.retention_max_age_secs`).
    pub forget_after_ms: u64,
    /// A reading stamped further than this in the future is stamped with its receive time
    /// instead (as are readings older than `store.retention_max_age_secs`).
    pub max_future_skew_ms: u64,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            offline_after_ms: 60_000,
            check_interval_ms: 1_000,
            max_devices: 10_000,
            forget_after_ms: 7 * 24 * 3600 * 1000,
            max_future_skew_ms: 5 * 60 * 1000,
        }
    }
}

impl DevicesConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        check.positive("devices.check_interval_ms", self.check_interval_ms)?;
        if self.offline_after_ms < self.check_interval_ms {
            return Err(check.fail(
                "devices.offline_after_ms",
                "must be at least devices.check_interval_ms",
            ));
        }
        check.positive("devices.max_devices", self.max_devices as u64)?;
        if self.forget_after_ms != 0 && self.forget_after_ms < self.offline_after_ms {
            return Err(check.fail(
                "devices.forget_after_ms",
                "must be 0 (never) or at least devices.offline_after_ms",
            ));
        }
        Ok(())
    }
}

/// The `[[thresholds]]` a file that lists none gets.
pub(super) fn default_thresholds() -> Vec<ThresholdRule> {
    let rule = |sensor_type: &str, warning: f64, critical: f64, unit: &str| ThresholdRule {
        unit: unit.into(),
        ..ThresholdRule::new(sensor_type, Operator::Gt, Some(warning), Some(critical))
    };
    vec![
        rule("temperature", 35.0, 45.0, "°C"),
        rule("humidity", 70.0, 85.0, "%"),
        rule("pressure", 1050.0, 1080.0, "hPa"),
        rule("vibration", 7.0, 11.0, "mm/s"),
    ]
}

pub(super) fn validate_thresholds(
    rules: &[ThresholdRule],
    check: &Check,
) -> Result<(), ConfigError> {
    for (i, rule) in rules.iter().enumerate() {
        check_rule(rule).map_err(|(key, message)| {
            let key = match key {
                "" => format!("thresholds[{i}]"),
                key => format!("thresholds[{i}].{key}"),
            };
            check.fail(&key, message)
        })?;
    }
    Ok(())
}

/// The alarm life cycle's gateway-wide settings (each rule's own are in `[[thresholds]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlarmsConfig {
    /// An alarm with more condition transitions (raise, clear, escalate, de-escalate) than
    /// this within a minute is flagged as chattering and its transitions are rate-limited;
    /// 0 turns the detection off.
    pub chatter_transitions_per_minute: u32,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            chatter_transitions_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Simulated devices; `--simulate N` overrides.
    pub devices: usize,
    pub interval_ms: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            devices: 0,
            interval_ms: 1_000,
        }
    }
}

impl SimulatorConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        check.positive("simulator.interval_ms", self.interval_ms)
    }
}
