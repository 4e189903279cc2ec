//! A threshold rule: which side of a limit is bad, where warning and critical begin, and how
//! the alarm it drives behaves (deadband, delays, latch, how long it may be shelved). Shared by
//! `[[thresholds]]` in the config and by firmware profiles' per-point thresholds, so it lives
//! here, below both.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Operator {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
        }
    }

    pub fn breached(self, current: f64, limit: f64) -> bool {
        match self {
            Operator::Gt => current > limit,
            Operator::Ge => current >= limit,
            Operator::Lt => current < limit,
            Operator::Le => current <= limit,
        }
    }

    /// A level already reached is left only once the value is `deadband` past the limit on
    /// the good side (below `limit − deadband` for `>`): noise around the limit does not
    /// raise and clear the alarm over and over.
    pub fn still_breached(self, current: f64, limit: f64, deadband: f64) -> bool {
        match self {
            Operator::Gt | Operator::Ge => self.breached(current, limit - deadband),
            Operator::Lt | Operator::Le => self.breached(current, limit + deadband),
        }
    }
}

/// The longest a rule may let an operator shelve its alarm by default: one 8-hour shift.
pub const DEFAULT_MAX_SHELVE_MINUTES: u64 = 480;
/// Upper bound for `max_shelve_minutes`: a shelved alarm must come back (30 days).
const MAX_SHELVE_MINUTES_LIMIT: u64 = 30 * 24 * 60;
/// Upper bound for the on- and off-delays (one day): longer is a configuration mistake.
const MAX_DELAY_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    pub sensor_type: String,
    pub operator: Operator,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// Unit used when a reading carries none.
    #[serde(default)]
    pub unit: String,
    /// Hysteresis: a level clears only below `limit − deadband` (above `limit + deadband`
    /// for `<`, `<=`).
    #[serde(default)]
    pub deadband: f64,
    /// A level is entered (raise, escalation) only once the value stayed past its limit this
    /// long.
    #[serde(default)]
    pub on_delay_ms: u64,
    /// A level is left (clear, de-escalation) only once the value stayed back this long.
    #[serde(default)]
    pub off_delay_ms: u64,
    /// The alarm stays active until acknowledged, even after the value returned to normal.
    #[serde(default)]
    pub latch: bool,
    /// The longest an operator may shelve this alarm.
    #[serde(default = "default_max_shelve")]
    pub max_shelve_minutes: u64,
    /// `false` takes the rule out of service: nothing is graded, its alarms are out of service.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn default_max_shelve() -> u64 {
    DEFAULT_MAX_SHELVE_MINUTES
}

fn enabled() -> bool {
    true
}

impl ThresholdRule {
    /// A rule with the given limits and every alarm option at its default.
    pub fn new(
        sensor_type: &str,
        operator: Operator,
        warning: Option<f64>,
        critical: Option<f64>,
    ) -> ThresholdRule {
        ThresholdRule {
            sensor_type: sensor_type.into(),
            operator,
            warning,
            critical,
            unit: String::new(),
            deadband: 0.0,
            on_delay_ms: 0,
            off_delay_ms: 0,
            latch: false,
            max_shelve_minutes: DEFAULT_MAX_SHELVE_MINUTES,
            enabled: true,
        }
    }

    /// The limit where `level` begins, if the rule has that level.
    pub fn limit(&self, level: crate::record::Level) -> Option<f64> {
        match level {
            crate::record::Level::Normal => None,
            crate::record::Level::Warning => self.warning,
            crate::record::Level::Critical => self.critical,
        }
    }
}

/// What is wrong with a rule: the key inside the rule (empty for the rule as a whole) and why.
pub type RuleProblem = (&'static str, String);

/// A threshold rule is usable: it has a level, its levels are in order for its operator, and
/// its alarm options are in range.
pub fn check_rule(rule: &ThresholdRule) -> Result<(), RuleProblem> {
    if rule.sensor_type.is_empty() {
        return Err(("sensor_type", "must not be empty".into()));
    }
    if let (Some(w), Some(cr)) = (rule.warning, rule.critical) {
        let ordered = match rule.operator {
            Operator::Gt | Operator::Ge => w <= cr,
            Operator::Lt | Operator::Le => w >= cr,
        };
        if !ordered {
            return Err((
                "",
                format!(
                    "warning {w} and critical {cr} are out of order for operator `{}`",
                    rule.operator.as_str()
                ),
            ));
        }
    }
    if rule.warning.is_none() && rule.critical.is_none() {
        return Err(("", "needs `warning`, `critical` or both".into()));
    }
    check_alarm_options(rule)
}

fn check_alarm_options(rule: &ThresholdRule) -> Result<(), RuleProblem> {
    if !rule.deadband.is_finite() || rule.deadband < 0.0 {
        return Err(("deadband", "must be a finite number, 0 or more".into()));
    }
    for (key, ms) in [
        ("on_delay_ms", rule.on_delay_ms),
        ("off_delay_ms", rule.off_delay_ms),
    ] {
        if ms > MAX_DELAY_MS {
            return Err((key, format!("must be at most {MAX_DELAY_MS} (one day)")));
        }
    }
    if rule.max_shelve_minutes == 0 || rule.max_shelve_minutes > MAX_SHELVE_MINUTES_LIMIT {
        return Err((
            "max_shelve_minutes",
            format!("must be 1 to {MAX_SHELVE_MINUTES_LIMIT} (30 days)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadband_holds_a_level_until_past_the_limit_on_the_good_side() {
        assert!(Operator::Gt.still_breached(34.0, 35.0, 2.0));
        assert!(!Operator::Gt.still_breached(32.9, 35.0, 2.0));
        assert!(Operator::Lt.still_breached(11.0, 10.0, 2.0));
        assert!(!Operator::Lt.still_breached(12.1, 10.0, 2.0));
        // No deadband: the same as the limit itself.
        assert!(!Operator::Gt.still_breached(35.0, 35.0, 0.0));
    }

    #[test]
    fn alarm_options_are_checked_with_their_key() {
        let mut r = ThresholdRule::new("t", Operator::Gt, Some(1.0), None);
        assert!(check_rule(&r).is_ok());
        r.deadband = -1.0;
        assert_eq!(check_rule(&r).unwrap_err().0, "deadband");
        r.deadband = 0.5;
        r.off_delay_ms = MAX_DELAY_MS + 1;
        assert_eq!(check_rule(&r).unwrap_err().0, "off_delay_ms");
        r.off_delay_ms = 0;
        r.max_shelve_minutes = 0;
        assert_eq!(check_rule(&r).unwrap_err().0, "max_shelve_minutes");
    }
}
