//! Threshold alerts: each reading is graded against its sensor type's rule, and an alert is
//! raised when a (device, sensor) pair moves up a level (normal → warning → critical). Staying
//! at a level raises nothing; falling back re-arms the rule. The alarm lifecycle (ack, clear
//! events, hysteresis) plugs in here later: this module owns all alarm state.

mod rule;
pub mod state;

use std::collections::HashMap;

pub use self::rule::{Operator, ThresholdRule, check_rule};
use crate::record::{Alert, AlertKind, Level, Reading, Threshold};

pub struct Alarms {
    rules: HashMap<String, ThresholdRule>,
    /// Current level per (deviceId, sensorType); absent means normal.
    levels: HashMap<(String, String), Level>,
    next_id: u64,
}

impl Alarms {
    pub fn new(rules: &[ThresholdRule]) -> Alarms {
        Alarms {
            rules: rules
                .iter()
                .map(|r| (r.sensor_type.clone(), r.clone()))
                .collect(),
            levels: HashMap::new(),
            next_id: 0,
        }
    }

    /// Drops the alarm state of devices the registry forgot.
    pub fn forget_devices(&mut self, gone: &std::collections::HashSet<String>) {
        self.levels.retain(|(device, _), _| !gone.contains(device));
    }

    /// The unit configured for a sensor type, for readings that carry none.
    pub fn default_unit(&self, sensor_type: &str) -> Option<&str> {
        self.rules
            .get(sensor_type)
            .map(|r| r.unit.as_str())
            .filter(|u| !u.is_empty())
    }

    fn grade(rule: &ThresholdRule, value: f64) -> (Level, Option<f64>) {
        if let Some(c) = rule.critical
            && rule.operator.breached(value, c)
        {
            return (Level::Critical, Some(c));
        }
        if let Some(w) = rule.warning
            && rule.operator.breached(value, w)
        {
            return (Level::Warning, Some(w));
        }
        (Level::Normal, None)
    }

    /// Grades `reading` (raising its `status` to the computed level if higher) and returns the
    /// alert to raise, if its level went up. `own` is a device's own rule (from its firmware
    /// profile), used instead of the sensor type's.
    pub fn evaluate(
        &mut self,
        reading: &mut Reading,
        own: Option<&ThresholdRule>,
    ) -> Option<Alert> {
        let rule = match own {
            Some(rule) => rule,
            None => self.rules.get(&reading.sensor_type)?,
        };
        let (level, limit) = Self::grade(rule, reading.value);
        reading.status = reading.status.max(level);
        let key = (reading.device_id.clone(), reading.sensor_type.clone());
        let previous = self.levels.get(&key).copied().unwrap_or(Level::Normal);
        if level == Level::Normal {
            self.levels.remove(&key);
        } else {
            self.levels.insert(key, level);
        }
        if level <= previous {
            return None;
        }
        let limit = limit.expect("a non-normal level has a limit");
        self.next_id += 1;
        let op = rule.operator.as_str();
        let name = capitalize(&reading.sensor_type);
        Some(Alert {
            alert_id: format!("alert-{}-{}", reading.ts_ms, self.next_id),
            device_id: Some(reading.device_id.clone()),
            severity: level,
            kind: AlertKind::Threshold,
            message: format!(
                "{name} threshold exceeded: {}{} {op} {limit}{} ({})",
                reading.value,
                reading.unit,
                reading.unit,
                level.as_str()
            ),
            ts_ms: reading.ts_ms,
            sensor_type: Some(reading.sensor_type.clone()),
            threshold: Some(Threshold {
                value: limit,
                operator: op,
                current: reading.value,
            }),
            affected_services: vec![],
        })
    }

    /// Pairs currently above normal.
    pub fn active(&self) -> usize {
        self.levels.len()
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(value: f64) -> Reading {
        Reading {
            device_id: "d".into(),
            sensor_type: "temperature".into(),
            value,
            unit: "°C".into(),
            ts_ms: 0,
            status: Level::Normal,
            location: String::new(),
        }
    }

    fn alarms() -> Alarms {
        Alarms::new(&[ThresholdRule {
            unit: "°C".into(),
            ..ThresholdRule::new("temperature", Operator::Gt, Some(35.0), Some(45.0))
        }])
    }

    #[test]
    fn raises_once_per_level_increase_and_rearms() {
        let mut a = alarms();
        let mut levels = vec![];
        for v in [20.0, 36.0, 37.0, 46.0, 47.0, 40.0, 20.0, 50.0] {
            let mut r = reading(v);
            let alert = a.evaluate(&mut r, None);
            levels.push((
                r.status,
                alert.map(|x| (x.severity, x.threshold.unwrap().value)),
            ));
        }
        use Level::*;
        assert_eq!(
            levels,
            vec![
                (Normal, None),
                (Warning, Some((Warning, 35.0))),
                (Warning, None),
                (Critical, Some((Critical, 45.0))),
                (Critical, None),
                (Warning, None),
                (Normal, None),
                (Critical, Some((Critical, 45.0))),
            ]
        );
        assert_eq!(a.active(), 1);
    }

    #[test]
    fn unknown_sensor_types_pass_untouched() {
        let mut a = alarms();
        let mut r = reading(1e9);
        r.sensor_type = "flow".into();
        r.status = Level::Warning;
        assert!(a.evaluate(&mut r, None).is_none());
        assert_eq!(r.status, Level::Warning);
    }
}
