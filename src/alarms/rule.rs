//! A threshold rule: which side of a limit is bad, and where warning and critical begin.
//! Shared by `[[thresholds]]` in the config and by firmware profiles' per-point thresholds, so
//! it lives here, below both.

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
}

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
}

/// A threshold rule is usable: it has a level, and its levels are in order for its operator.
pub fn check_rule(rule: &ThresholdRule) -> Result<(), String> {
    if rule.sensor_type.is_empty() {
        return Err("sensor_type must not be empty".into());
    }
    if let (Some(w), Some(cr)) = (rule.warning, rule.critical) {
        let ordered = match rule.operator {
            Operator::Gt | Operator::Ge => w <= cr,
            Operator::Lt | Operator::Le => w >= cr,
        };
        if !ordered {
            return Err(format!(
                "warning {w} and critical {cr} are out of order for operator `{}`",
                rule.operator.as_str()
            ));
        }
    }
    if rule.warning.is_none() && rule.critical.is_none() {
        return Err("needs `warning`, `critical` or both".into());
    }
    Ok(())
}
