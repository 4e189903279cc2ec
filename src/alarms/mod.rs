//! Threshold alarms: each reading is graded against its sensor type's rule (or its device's
//! firmware-profile rule), and one alarm per (deviceId, sensorType, rule) follows the
//! ISA-18.2 life cycle of [`state`]. Every transition becomes an `alarm:state` record; raises
//! and escalations also the reference `alert`. This module owns all alarm state; the pipeline
//! feeds it readings, device availability, ticks and operator actions.
//!
//! Memory holds only alarms that are not at rest (not normal, a delay running, transitions
//! in the last minute), so it is bounded by what is abnormal, not by what devices send.

mod records;
mod rule;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub use self::records::{AlarmKey, RULE_PROFILE, RULE_THRESHOLD};
pub use self::rule::{Operator, RuleProblem, ThresholdRule, check_rule};
use self::state::{Actor, Alarm, AlarmState, Event, Refused, Transition, TransitionKind, grade};
use crate::record::{Level, Reading, Record};
use crate::telemetry as t;

/// An operator action on one alarm, from a dashboard or the central side.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub alarm_id: String,
    pub action: Action,
    /// Who acts: the token's `sub` or `name`, or the central operator.
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Ack {
        comment: Option<String>,
    },
    Shelve {
        minutes: u64,
        reason: Option<String>,
    },
    Unshelve,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    #[error("unknown alarm `{0}`")]
    Unknown(String),
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Alarms by state, for `/health`, `/metrics` and `system:status`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AlarmCounts {
    pub by_state: [usize; 7],
    /// Active and not shelved (shelved is a state of its own): `activeAlerts`.
    pub active: usize,
    pub unacked: usize,
}

struct Entry {
    alarm: Alarm,
    /// The firmware-profile rule last seen with a reading; `None` for `[[thresholds]]` rules.
    own: Option<Arc<ThresholdRule>>,
    /// The unit of the last reading, for alert messages.
    unit: String,
}

pub struct Alarms {
    rules: HashMap<String, Arc<ThresholdRule>>,
    alarms: BTreeMap<AlarmKey, Entry>,
    /// More condition transitions than this within a minute flag an alarm as chattering.
    chatter_per_minute: u32,
    next_alert: u64,
}

impl Alarms {
    pub fn new(rules: &[ThresholdRule], chatter_per_minute: u32) -> Alarms {
        Alarms {
            rules: rules
                .iter()
                .map(|r| (r.sensor_type.clone(), Arc::new(r.clone())))
                .collect(),
            alarms: BTreeMap::new(),
            chatter_per_minute,
            next_alert: 0,
        }
    }

    /// Restores alarms from their stored `alarm:state` rows: an active alarm stays active and
    /// is not raised again. Rows that do not parse are skipped and counted.
    pub fn restore(&mut self, rows: &[serde_json::Value]) {
        for row in rows {
            let Some((key, snapshot)) = records::parse_stored(row) else {
                metrics::counter!(t::ALARM_ROWS_SKIPPED).increment(1);
                tracing::warn!(row = %row, "skipping a stored alarm that does not parse");
                continue;
            };
            let entry = Entry {
                alarm: Alarm::restore(&snapshot),
                own: None,
                unit: String::new(),
            };
            self.alarms.insert(key, entry);
        }
    }

    /// Drops the alarm state of devices the registry forgot.
    pub fn forget_devices(&mut self, gone: &HashSet<String>) {
        self.alarms.retain(|k, _| !gone.contains(&k.device_id));
    }

    /// The unit configured for a sensor type, for readings that carry none.
    pub fn default_unit(&self, sensor_type: &str) -> Option<&str> {
        self.rules
            .get(sensor_type)
            .map(|r| r.unit.as_str())
            .filter(|u| !u.is_empty())
    }

    /// Grades `reading` (raising its `status` to its level if higher) and feeds its alarm;
    /// returns the records its transitions make. `own` is a device's own rule (from its
    /// firmware profile), used instead of the sensor type's.
    pub fn evaluate(
        &mut self,
        reading: &mut Reading,
        own: Option<&Arc<ThresholdRule>>,
        now_ms: i64,
    ) -> Vec<Record> {
        let (rule, label) = match own {
            Some(rule) => (rule.clone(), RULE_PROFILE),
            None => match self.rules.get(&reading.sensor_type) {
                Some(rule) => (rule.clone(), RULE_THRESHOLD),
                None => return Vec::new(),
            },
        };
        let key = AlarmKey {
            device_id: reading.device_id.clone(),
            sensor_type: reading.sensor_type.clone(),
            rule: label,
        };
        if !rule.enabled {
            return self.apply_known(&key, Event::InService(false), now_ms);
        }
        let level = grade(&rule, reading.value, Level::Normal);
        reading.status = reading.status.max(level);
        if level == Level::Normal && !self.alarms.contains_key(&key) {
            return Vec::new();
        }
        let entry = self.alarms.entry(key.clone()).or_insert_with(|| Entry {
            alarm: Alarm::new(),
            own: None,
            unit: String::new(),
        });
        entry.own = own.cloned();
        entry.unit.clone_from(&reading.unit);
        let mut out = self.apply_known(&key, Event::InService(true), now_ms);
        out.extend(self.apply_known(&key, Event::Value(reading.value), now_ms));
        out
    }

    /// Time passes for every alarm: delays, shelve expiry, chatter windows; rules disabled or
    /// enabled since the alarm was stored take effect. Alarms at rest are dropped from memory.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Record> {
        let keys: Vec<AlarmKey> = self.alarms.keys().cloned().collect();
        let mut out = Vec::new();
        for key in keys {
            let enabled = self.rule_of(&key).is_none_or(|r| r.enabled);
            out.extend(self.apply_known(&key, Event::InService(enabled), now_ms));
            out.extend(self.apply_known(&key, Event::Tick, now_ms));
        }
        self.alarms.retain(|_, e| !e.alarm.is_idle());
        out
    }

    /// A device went offline or into maintenance (`false`) or came back (`true`): its alarms
    /// are suppressed or return.
    pub fn set_available(&mut self, device_id: &str, available: bool, now_ms: i64) -> Vec<Record> {
        let keys: Vec<AlarmKey> = self
            .alarms
            .range(device_range(device_id))
            .map(|(k, _)| k.clone())
            .take_while(|k| k.device_id == device_id)
            .collect();
        let mut out = Vec::new();
        for key in keys {
            out.extend(self.apply_known(&key, Event::Available(available), now_ms));
        }
        out
    }

    /// An operator's ack, shelve or unshelve: the records it makes, or why it was refused.
    pub fn act(&mut self, cmd: Command, now_ms: i64) -> Result<Vec<Record>, ActionError> {
        let unknown = || ActionError::Unknown(cmd.alarm_id.clone());
        let key = AlarmKey::parse(&cmd.alarm_id).ok_or_else(unknown)?;
        if !self.alarms.contains_key(&key) {
            return Err(unknown());
        }
        let event = match cmd.action {
            Action::Ack { comment } => Event::Ack(Actor {
                user: cmd.user,
                comment,
            }),
            Action::Shelve { minutes, reason } => Event::Shelve {
                minutes,
                actor: Actor {
                    user: cmd.user,
                    comment: reason,
                },
            },
            Action::Unshelve => Event::Unshelve(Actor {
                user: cmd.user,
                comment: None,
            }),
        };
        Ok(self.apply(&key, event, now_ms)?)
    }

    /// Alarms by state.
    pub fn counts(&self) -> AlarmCounts {
        let mut c = AlarmCounts::default();
        for e in self.alarms.values() {
            let s = e.alarm.state();
            c.by_state[s as usize] += 1;
            c.active += usize::from(s.is_active());
            c.unacked += usize::from(s.is_unacked());
        }
        c
    }

    fn rule_of(&self, key: &AlarmKey) -> Option<Arc<ThresholdRule>> {
        let entry = self.alarms.get(key)?;
        entry
            .own
            .clone()
            .or_else(|| self.rules.get(&key.sensor_type).cloned())
    }

    /// [`Alarms::apply`] for events no state refuses.
    fn apply_known(&mut self, key: &AlarmKey, event: Event, now_ms: i64) -> Vec<Record> {
        self.apply(key, event, now_ms)
            .expect("only operator actions are refused")
    }

    fn apply(&mut self, key: &AlarmKey, event: Event, now_ms: i64) -> Result<Vec<Record>, Refused> {
        // A restored profile alarm before its first reading: limits unknown, so no condition
        // changes (it has no last value), but shelving and acks work.
        let rule = self.rule_of(key).unwrap_or_else(|| {
            Arc::new(ThresholdRule::new(
                &key.sensor_type,
                Operator::Gt,
                None,
                None,
            ))
        });
        let Some(entry) = self.alarms.get_mut(key) else {
            return Ok(Vec::new());
        };
        let transitions = entry
            .alarm
            .apply(&rule, event, now_ms, self.chatter_per_minute)?;
        let mut out = Vec::new();
        for tr in &transitions {
            count(key, tr);
            records::transition_records(
                key,
                tr,
                &rule,
                &entry.unit,
                &mut self.next_alert,
                &mut out,
            );
        }
        Ok(out)
    }
}

fn count(key: &AlarmKey, tr: &Transition) {
    metrics::counter!(t::ALARM_TRANSITIONS, "kind" => tr.kind.as_str()).increment(1);
    if tr.kind.is_alert() {
        metrics::counter!(t::ALERTS_RAISED, "type" => "threshold").increment(1);
    }
    if tr.kind == TransitionKind::ChatterStart {
        tracing::info!(
            alarm = %key.id(),
            state = tr.to.as_str(),
            "alarm chatters; its transitions are rate-limited"
        );
    }
}

/// Every key of one device in a `BTreeMap` ordered by (deviceId, …).
fn device_range(device_id: &str) -> std::ops::RangeFrom<AlarmKey> {
    AlarmKey {
        device_id: device_id.to_string(),
        sensor_type: String::new(),
        rule: "",
    }..
}

/// The names of [`AlarmState`]s in `AlarmCounts::by_state` order.
pub fn state_names() -> [&'static str; 7] {
    AlarmState::ALL.map(AlarmState::as_str)
}

#[cfg(test)]
mod tests;
