//! One alarm's ISA-18.2 / IEC 62682 life cycle, as a pure state machine: no clock, no I/O.
//! Events go in with the time they happen at; the transitions they cause come out.
//!
//! The state an alarm shows is derived, so there is always exactly one: out of service (its
//! rule is disabled) over suppressed (its device is offline or in maintenance) over shelved
//! (by an operator, for a bounded time) over the base state (normal, active unacknowledged,
//! active acknowledged, returned to normal unacknowledged). While one of those three holds,
//! the condition is still followed but nothing is annunciated; when the last one ends, the
//! alarm returns to active unacknowledged if its condition is active, else to normal.
//!
//! The condition is the reading graded against the rule with its deadband (a level is left
//! only past the limit on the good side) and its delays (a level is entered only after
//! `on_delay_ms` past its limit, left only after `off_delay_ms` back). Delays elapse on the
//! next reading or tick.
//!
//! Chattering: more than `chatter_per_minute` condition transitions within a minute flags the
//! alarm; while flagged its condition transitions are withheld (the state still moves) and
//! the latest one is reported at most once per [`CHATTER_REPORT_MS`]. The flag drops once the
//! minute holds at most half as many.

use std::collections::VecDeque;

use super::rule::ThresholdRule;
use crate::record::Level;

/// The window chattering is counted over.
const CHATTER_WINDOW_MS: i64 = 60_000;
/// While an alarm chatters, its state is reported at most this often (a dashboard and the
/// store see one transition per 10 s per alarm, not one per reading).
pub const CHATTER_REPORT_MS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmState {
    Normal,
    ActiveUnacked,
    ActiveAcked,
    RtnUnacked,
    Shelved,
    Suppressed,
    OutOfService,
}

impl AlarmState {
    pub const ALL: [AlarmState; 7] = [
        AlarmState::Normal,
        AlarmState::ActiveUnacked,
        AlarmState::ActiveAcked,
        AlarmState::RtnUnacked,
        AlarmState::Shelved,
        AlarmState::Suppressed,
        AlarmState::OutOfService,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::ActiveUnacked => "active_unacked",
            AlarmState::ActiveAcked => "active_acked",
            AlarmState::RtnUnacked => "rtn_unacked",
            AlarmState::Shelved => "shelved",
            AlarmState::Suppressed => "suppressed",
            AlarmState::OutOfService => "out_of_service",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmState> {
        AlarmState::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Active and annunciated: what `activeAlerts` counts.
    pub fn is_active(self) -> bool {
        matches!(self, AlarmState::ActiveUnacked | AlarmState::ActiveAcked)
    }

    /// Waiting for an operator's acknowledgement.
    pub fn is_unacked(self) -> bool {
        matches!(self, AlarmState::ActiveUnacked | AlarmState::RtnUnacked)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionKind {
    /// The condition became active: an `alert`.
    Raise,
    /// The condition moved up a level while active: an `alert`, and a new acknowledgement due.
    Escalate,
    /// The condition moved down a level, still active.
    Deescalate,
    /// The condition returned to normal.
    Clear,
    Ack,
    Shelve,
    Unshelve,
    ShelveExpired,
    Suppress,
    Unsuppress,
    OutOfService,
    ReturnToService,
    ChatterStart,
    ChatterEnd,
}

impl TransitionKind {
    pub const ALL: [TransitionKind; 14] = [
        TransitionKind::Raise,
        TransitionKind::Escalate,
        TransitionKind::Deescalate,
        TransitionKind::Clear,
        TransitionKind::Ack,
        TransitionKind::Shelve,
        TransitionKind::Unshelve,
        TransitionKind::ShelveExpired,
        TransitionKind::Suppress,
        TransitionKind::Unsuppress,
        TransitionKind::OutOfService,
        TransitionKind::ReturnToService,
        TransitionKind::ChatterStart,
        TransitionKind::ChatterEnd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Raise => "raise",
            TransitionKind::Escalate => "escalate",
            TransitionKind::Deescalate => "deescalate",
            TransitionKind::Clear => "clear",
            TransitionKind::Ack => "ack",
            TransitionKind::Shelve => "shelve",
            TransitionKind::Unshelve => "unshelve",
            TransitionKind::ShelveExpired => "shelve_expired",
            TransitionKind::Suppress => "suppress",
            TransitionKind::Unsuppress => "unsuppress",
            TransitionKind::OutOfService => "out_of_service",
            TransitionKind::ReturnToService => "return_to_service",
            TransitionKind::ChatterStart => "chatter_start",
            TransitionKind::ChatterEnd => "chatter_end",
        }
    }

    pub fn parse(s: &str) -> Option<TransitionKind> {
        TransitionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Raises and escalations are what the reference `alert` events announce.
    pub fn is_alert(self) -> bool {
        matches!(self, TransitionKind::Raise | TransitionKind::Escalate)
    }

    fn is_condition(self) -> bool {
        matches!(
            self,
            TransitionKind::Raise
                | TransitionKind::Escalate
                | TransitionKind::Deescalate
                | TransitionKind::Clear
        )
    }
}

/// Who did an operator action, and what they said (an ack's comment, a shelve's reason).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actor {
    pub user: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A reading of the alarm's sensor.
    Value(f64),
    /// Time passes: delays elapse, a shelve expires, the chatter window moves.
    Tick,
    Ack(Actor),
    Shelve {
        minutes: u64,
        actor: Actor,
    },
    Unshelve(Actor),
    /// The device is online (`true`) or offline / in maintenance (`false`).
    Available(bool),
    /// The rule is enabled (`true`) or disabled (`false`).
    InService(bool),
}

/// An operator action the alarm's state does not allow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("alarm is {}, not waiting for an acknowledgement", .0.as_str())]
    NotUnacked(AlarmState),
    #[error("alarm is {}, it cannot be shelved", .0.as_str())]
    NotShelvable(AlarmState),
    #[error("alarm is {}, not shelved", .0.as_str())]
    NotShelved(AlarmState),
    #[error("minutes must be 1 to {max} for this alarm's rule")]
    ShelveMinutes { max: u64 },
}

/// One change of an alarm, as it is stored and announced.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub kind: TransitionKind,
    /// The state last reported (what the store and dashboards saw before this).
    pub from: AlarmState,
    pub to: AlarmState,
    /// The condition after the transition.
    pub severity: Level,
    pub value: Option<f64>,
    /// The limit of the level concerned (entered, or left on a clear).
    pub limit: Option<f64>,
    pub ts_ms: i64,
    pub actor: Option<Actor>,
    pub shelved_until_ms: Option<i64>,
    pub chattering: bool,
}

/// The state of one alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// Normal, ActiveUnacked, ActiveAcked or RtnUnacked; stale while an overlay holds.
    base: AlarmState,
    /// The graded condition, after deadband and delays.
    condition: Level,
    last_value: Option<f64>,
    /// The raw grade differs from `condition` since then (rising or not): a delay runs.
    pending: Option<(bool, i64)>,
    shelved_until_ms: Option<i64>,
    suppressed: bool,
    out_of_service: bool,
    chattering: bool,
    /// Times of the recent condition transitions, at most `chatter_per_minute + 1`.
    recent: VecDeque<i64>,
    /// The state the last reported transition left, and when it was reported.
    reported: AlarmState,
    reported_ms: i64,
    /// The kind of the latest transition withheld while chattering.
    withheld: Option<TransitionKind>,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm {
            base: AlarmState::Normal,
            condition: Level::Normal,
            last_value: None,
            pending: None,
            shelved_until_ms: None,
            suppressed: false,
            out_of_service: false,
            chattering: false,
            recent: VecDeque::new(),
            reported: AlarmState::Normal,
            reported_ms: 0,
            withheld: None,
        }
    }
}

/// What an alarm needs to come back after a restart: its last reported transition. The last
/// value is not restored: the condition holds until the next reading grades it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub state: AlarmState,
    pub severity: Level,
    pub shelved_until_ms: Option<i64>,
    pub chattering: bool,
}

impl Alarm {
    pub fn new() -> Alarm {
        Alarm::default()
    }

    /// The alarm as its last reported transition left it.
    pub fn restore(s: &Snapshot) -> Alarm {
        let base = match s.state {
            AlarmState::Normal
            | AlarmState::ActiveUnacked
            | AlarmState::ActiveAcked
            | AlarmState::RtnUnacked => s.state,
            _ if s.severity != Level::Normal => AlarmState::ActiveUnacked,
            _ => AlarmState::Normal,
        };
        Alarm {
            base,
            condition: s.severity,
            shelved_until_ms: s.shelved_until_ms,
            suppressed: s.state == AlarmState::Suppressed,
            out_of_service: s.state == AlarmState::OutOfService,
            chattering: s.chattering,
            reported: s.state,
            ..Alarm::default()
        }
    }

    /// The one state the alarm is in.
    pub fn state(&self) -> AlarmState {
        if self.out_of_service {
            AlarmState::OutOfService
        } else if self.suppressed {
            AlarmState::Suppressed
        } else if self.shelved_until_ms.is_some() {
            AlarmState::Shelved
        } else {
            self.base
        }
    }

    pub fn condition(&self) -> Level {
        self.condition
    }

    pub fn chattering(&self) -> bool {
        self.chattering
    }

    pub fn shelved_until_ms(&self) -> Option<i64> {
        self.shelved_until_ms
    }

    /// The state the last reported transition left.
    pub fn reported(&self) -> AlarmState {
        self.reported
    }

    /// Nothing to remember: normal, no delay running, no recent transitions, no flags.
    pub fn is_idle(&self) -> bool {
        self.state() == AlarmState::Normal
            && self.reported == AlarmState::Normal
            && self.pending.is_none()
            && self.recent.is_empty()
            && !self.chattering
    }

    /// Applies `event` at `now_ms` under `rule`; returns the transitions to report, in order.
    /// `chatter_per_minute` 0 turns chatter detection off.
    pub fn apply(
        &mut self,
        rule: &ThresholdRule,
        event: Event,
        now_ms: i64,
        chatter_per_minute: u32,
    ) -> Result<Vec<Transition>, Refused> {
        let mut step = Step {
            rule,
            now: now_ms,
            chatter: chatter_per_minute as usize,
            out: Vec::new(),
        };
        match event {
            Event::Value(v) => {
                self.last_value = Some(v);
                self.settle(&mut step);
            }
            Event::Tick => self.tick(&mut step),
            Event::Ack(actor) => self.ack(actor, &mut step)?,
            Event::Shelve { minutes, actor } => self.shelve(minutes, actor, &mut step)?,
            Event::Unshelve(actor) => self.unshelve(actor, &mut step)?,
            Event::Available(yes) => self.set_overlay(Overlay::Suppressed, !yes, &mut step),
            Event::InService(yes) => self.set_overlay(Overlay::OutOfService, !yes, &mut step),
        }
        Ok(step.out)
    }

    fn tick(&mut self, step: &mut Step<'_>) {
        if let Some(until) = self.shelved_until_ms
            && until <= step.now
        {
            let shown = self.state() == AlarmState::Shelved;
            self.shelved_until_ms = None;
            if shown {
                self.rebase();
                self.report(TransitionKind::ShelveExpired, None, step);
            }
        }
        self.settle(step);
        self.chatter_tick(step);
    }

    /// Moves the condition to the reading's grade once its delay has elapsed.
    fn settle(&mut self, step: &mut Step<'_>) {
        let Some(value) = self.last_value else {
            return;
        };
        let raw = grade(step.rule, value, self.condition);
        if raw == self.condition {
            self.pending = None;
            return;
        }
        let rising = raw > self.condition;
        let since = match self.pending {
            Some((r, since)) if r == rising => since,
            _ => step.now,
        };
        self.pending = Some((rising, since));
        let delay = if rising {
            step.rule.on_delay_ms
        } else {
            step.rule.off_delay_ms
        };
        if step.now.saturating_sub(since) < i64::try_from(delay).unwrap_or(i64::MAX) {
            return;
        }
        self.pending = None;
        self.change_condition(raw, step);
    }

    fn change_condition(&mut self, new: Level, step: &mut Step<'_>) {
        let old = std::mem::replace(&mut self.condition, new);
        if self.overlaid() {
            // Shelved, suppressed or out of service: followed, not annunciated.
            return;
        }
        let kind = if old == Level::Normal {
            self.base = AlarmState::ActiveUnacked;
            TransitionKind::Raise
        } else if new == Level::Normal {
            self.base = match self.base {
                AlarmState::ActiveUnacked if step.rule.latch => AlarmState::ActiveUnacked,
                AlarmState::ActiveUnacked => AlarmState::RtnUnacked,
                _ => AlarmState::Normal,
            };
            TransitionKind::Clear
        } else if new > old {
            self.base = AlarmState::ActiveUnacked;
            TransitionKind::Escalate
        } else {
            TransitionKind::Deescalate
        };
        let limit = step
            .rule
            .limit(if new == Level::Normal { old } else { new });
        self.report(kind, limit, step);
    }

    fn ack(&mut self, actor: Actor, step: &mut Step<'_>) -> Result<(), Refused> {
        self.base = match self.state() {
            AlarmState::ActiveUnacked if self.condition != Level::Normal => AlarmState::ActiveAcked,
            AlarmState::ActiveUnacked | AlarmState::RtnUnacked => AlarmState::Normal,
            other => return Err(Refused::NotUnacked(other)),
        };
        self.report_by(TransitionKind::Ack, actor, step);
        Ok(())
    }

    fn shelve(&mut self, minutes: u64, actor: Actor, step: &mut Step<'_>) -> Result<(), Refused> {
        let max = step.rule.max_shelve_minutes;
        match self.state() {
            s @ (AlarmState::Shelved | AlarmState::Suppressed | AlarmState::OutOfService) => {
                return Err(Refused::NotShelvable(s));
            }
            _ if minutes == 0 || minutes > max => return Err(Refused::ShelveMinutes { max }),
            _ => {}
        }
        let ms = i64::try_from(minutes * 60_000).unwrap_or(i64::MAX);
        self.shelved_until_ms = Some(step.now.saturating_add(ms));
        self.report_by(TransitionKind::Shelve, actor, step);
        Ok(())
    }

    fn unshelve(&mut self, actor: Actor, step: &mut Step<'_>) -> Result<(), Refused> {
        match self.state() {
            AlarmState::Shelved => {}
            other => return Err(Refused::NotShelved(other)),
        }
        self.shelved_until_ms = None;
        self.rebase();
        self.report_by(TransitionKind::Unshelve, actor, step);
        Ok(())
    }

    fn set_overlay(&mut self, which: Overlay, on: bool, step: &mut Step<'_>) {
        let flag = match which {
            Overlay::Suppressed => &mut self.suppressed,
            Overlay::OutOfService => &mut self.out_of_service,
        };
        if *flag == on {
            return;
        }
        *flag = on;
        if !on && !self.overlaid() {
            self.rebase();
        }
        let kind = match (which, on) {
            (Overlay::Suppressed, true) => TransitionKind::Suppress,
            (Overlay::Suppressed, false) => TransitionKind::Unsuppress,
            (Overlay::OutOfService, true) => TransitionKind::OutOfService,
            (Overlay::OutOfService, false) => TransitionKind::ReturnToService,
        };
        if self.state() != self.reported {
            self.report(kind, None, step);
        }
    }

    /// Out of service, suppressed or shelved: the base state is not shown.
    fn overlaid(&self) -> bool {
        self.out_of_service || self.suppressed || self.shelved_until_ms.is_some()
    }

    /// Leaving the last overlay: active unacknowledged if the condition is active, else normal.
    fn rebase(&mut self) {
        self.base = if self.condition == Level::Normal {
            AlarmState::Normal
        } else {
            AlarmState::ActiveUnacked
        };
    }

    fn report_by(&mut self, kind: TransitionKind, actor: Actor, step: &mut Step<'_>) {
        self.report(kind, None, step);
        if let Some(t) = step.out.last_mut() {
            t.actor = Some(actor);
        }
    }

    /// Reports a transition to the current state, unless it is a condition transition of a
    /// chattering alarm (withheld, the state still moves).
    fn report(&mut self, kind: TransitionKind, limit: Option<f64>, step: &mut Step<'_>) {
        if !kind.is_condition() {
            self.emit(kind, limit, step);
            return;
        }
        match self.count_transition(step) {
            Counted::Withhold => self.withheld = Some(kind),
            Counted::Report => self.emit(kind, limit, step),
            Counted::StartsChatter => {
                self.emit(kind, limit, step);
                self.emit(TransitionKind::ChatterStart, None, step);
            }
        }
    }

    fn emit(&mut self, kind: TransitionKind, limit: Option<f64>, step: &mut Step<'_>) {
        let to = self.state();
        step.out.push(Transition {
            kind,
            from: std::mem::replace(&mut self.reported, to),
            to,
            severity: self.condition,
            value: self.last_value,
            limit: limit.or_else(|| step.rule.limit(self.condition)),
            ts_ms: step.now,
            actor: None,
            shelved_until_ms: self.shelved_until_ms,
            chattering: self.chattering,
        });
        self.reported_ms = step.now;
        self.withheld = None;
    }

    /// Counts a condition transition against the chatter limit.
    fn count_transition(&mut self, step: &Step<'_>) -> Counted {
        if step.chatter == 0 {
            return Counted::Report;
        }
        self.prune_recent(step.now, step.chatter);
        self.recent.push_back(step.now);
        if self.chattering {
            Counted::Withhold
        } else if self.recent.len() > step.chatter {
            self.chattering = true;
            Counted::StartsChatter
        } else {
            Counted::Report
        }
    }

    fn prune_recent(&mut self, now: i64, chatter: usize) {
        while self
            .recent
            .front()
            .is_some_and(|t| *t <= now - CHATTER_WINDOW_MS)
            || self.recent.len() > chatter
        {
            self.recent.pop_front();
        }
    }

    fn chatter_tick(&mut self, step: &mut Step<'_>) {
        if step.chatter == 0 {
            self.recent.clear();
            if self.chattering {
                self.chattering = false;
                self.emit(TransitionKind::ChatterEnd, None, step);
            }
            return;
        }
        self.prune_recent(step.now, step.chatter);
        if !self.chattering {
            return;
        }
        if self.recent.len() <= step.chatter / 2 {
            self.chattering = false;
            self.emit(TransitionKind::ChatterEnd, None, step);
        } else if let Some(kind) = self.withheld
            && self.state() != self.reported
            && step.now - self.reported_ms >= CHATTER_REPORT_MS
        {
            self.emit(kind, None, step);
        }
    }
}

enum Counted {
    Report,
    Withhold,
    StartsChatter,
}

#[derive(Debug, Clone, Copy)]
enum Overlay {
    Suppressed,
    OutOfService,
}

/// One event's context and output.
struct Step<'a> {
    rule: &'a ThresholdRule,
    now: i64,
    chatter: usize,
    out: Vec<Transition>,
}

/// The level `value` is at under `rule`, for an alarm whose condition is `current`: a level
/// is entered past its limit and kept until past the limit minus the deadband.
pub fn grade(rule: &ThresholdRule, value: f64, current: Level) -> Level {
    let op = rule.operator;
    let at = |level: Level| {
        rule.limit(level).is_some_and(|limit| {
            op.breached(value, limit)
                || (current >= level && op.still_breached(value, limit, rule.deadband))
        })
    };
    if at(Level::Critical) {
        Level::Critical
    } else if at(Level::Warning) {
        Level::Warning
    } else {
        Level::Normal
    }
}

#[cfg(test)]
mod tests;
