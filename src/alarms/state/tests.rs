//! The alarm state machine: life-cycle walks through each rule option, and property tests
//! that every event sequence keeps its invariants.

use proptest::prelude::*;

use super::*;
use crate::alarms::rule::Operator;

fn rule() -> ThresholdRule {
    ThresholdRule::new("temperature", Operator::Gt, Some(35.0), Some(45.0))
}

/// Applies events one second apart from `t`; returns (kind, to) of every reported transition.
fn run(
    alarm: &mut Alarm,
    rule: &ThresholdRule,
    t: &mut i64,
    events: Vec<Event>,
) -> Vec<(TransitionKind, AlarmState)> {
    let mut seen = Vec::new();
    for e in events {
        *t += 1000;
        let out = alarm.apply(rule, e, *t, 0).expect("allowed");
        seen.extend(out.into_iter().map(|t| (t.kind, t.to)));
    }
    seen
}

fn values(vs: &[f64]) -> Vec<Event> {
    vs.iter().map(|v| Event::Value(*v)).collect()
}

fn ack() -> Event {
    Event::Ack(Actor::default())
}

use AlarmState as S;
use TransitionKind as K;

#[test]
fn raise_escalate_deescalate_clear_and_ack() {
    let (mut a, r, mut t) = (Alarm::new(), rule(), 0);
    let seen = run(&mut a, &r, &mut t, values(&[20.0, 36.0, 37.0, 46.0, 40.0]));
    assert_eq!(
        seen,
        vec![
            (K::Raise, S::ActiveUnacked),
            (K::Escalate, S::ActiveUnacked),
            (K::Deescalate, S::ActiveUnacked),
        ]
    );
    assert_eq!(a.condition(), Level::Warning);
    let mut events = vec![ack()];
    events.extend(values(&[46.0, 20.0]));
    events.push(ack());
    let seen = run(&mut a, &r, &mut t, events);
    assert_eq!(
        seen,
        vec![
            (K::Ack, S::ActiveAcked),
            // An escalation wants a new acknowledgement.
            (K::Escalate, S::ActiveUnacked),
            (K::Clear, S::RtnUnacked),
            (K::Ack, S::Normal),
        ]
    );
    // An acknowledged alarm clears straight to normal.
    let seen = run(
        &mut a,
        &r,
        &mut t,
        vec![Event::Value(40.0), ack(), Event::Value(1.0)],
    );
    assert_eq!(
        seen,
        vec![
            (K::Raise, S::ActiveUnacked),
            (K::Ack, S::ActiveAcked),
            (K::Clear, S::Normal)
        ]
    );
}

#[test]
fn clears_only_past_the_deadband() {
    let mut r = rule();
    r.deadband = 2.0;
    let (mut a, mut t) = (Alarm::new(), 0);
    let seen = run(&mut a, &r, &mut t, values(&[36.0, 34.0, 33.5, 33.0, 32.9]));
    assert_eq!(
        seen,
        vec![(K::Raise, S::ActiveUnacked), (K::Clear, S::RtnUnacked)]
    );
    // Critical is held the same way, down to 43; below, de-escalated to warning.
    let seen = run(&mut a, &r, &mut t, values(&[46.0, 43.5, 42.9]));
    assert_eq!(
        seen,
        vec![
            (K::Raise, S::ActiveUnacked),
            (K::Deescalate, S::ActiveUnacked)
        ]
    );
}

#[test]
fn on_and_off_delays_hold_until_the_value_stayed() {
    let mut r = rule();
    r.on_delay_ms = 2_500;
    r.off_delay_ms = 1_500;
    let (mut a, mut t) = (Alarm::new(), 0);
    // A blip shorter than the on-delay raises nothing.
    assert!(run(&mut a, &r, &mut t, values(&[36.0, 36.0, 20.0, 36.0])).is_empty());
    // Past the limit since the last value: raised once 2.5 s have passed, on a tick too.
    assert!(run(&mut a, &r, &mut t, vec![Event::Tick, Event::Tick]).is_empty());
    let seen = run(&mut a, &r, &mut t, vec![Event::Tick]);
    assert_eq!(seen, vec![(K::Raise, S::ActiveUnacked)]);
    // Back to normal: cleared after the off-delay.
    let seen = run(&mut a, &r, &mut t, values(&[20.0, 20.0]));
    assert!(seen.is_empty());
    let seen = run(&mut a, &r, &mut t, values(&[20.0]));
    assert_eq!(seen, vec![(K::Clear, S::RtnUnacked)]);
}

#[test]
fn a_latched_alarm_stays_active_until_acknowledged() {
    let mut r = rule();
    r.latch = true;
    let (mut a, mut t) = (Alarm::new(), 0);
    let seen = run(&mut a, &r, &mut t, values(&[36.0, 20.0]));
    assert_eq!(
        seen,
        vec![(K::Raise, S::ActiveUnacked), (K::Clear, S::ActiveUnacked)]
    );
    let seen = run(&mut a, &r, &mut t, vec![ack()]);
    assert_eq!(seen, vec![(K::Ack, S::Normal)]);
}

#[test]
fn shelving_is_bounded_and_returns_to_the_state_the_condition_calls_for() {
    let (mut a, r, mut t) = (Alarm::new(), rule(), 0);
    run(&mut a, &r, &mut t, values(&[36.0]));
    let shelve = |minutes| Event::Shelve {
        minutes,
        actor: Actor::default(),
    };
    assert_eq!(
        a.apply(&r, shelve(481), t, 0),
        Err(Refused::ShelveMinutes { max: 480 })
    );
    assert_eq!(
        run(&mut a, &r, &mut t, vec![shelve(1)]),
        vec![(K::Shelve, S::Shelved)]
    );
    // The condition clears and comes back while shelved: nothing is annunciated.
    assert!(run(&mut a, &r, &mut t, values(&[20.0, 46.0])).is_empty());
    assert_eq!(
        a.apply(&r, ack(), t, 0),
        Err(Refused::NotUnacked(S::Shelved))
    );
    t += 60_000;
    assert_eq!(
        run(&mut a, &r, &mut t, vec![Event::Tick]),
        vec![(K::ShelveExpired, S::ActiveUnacked)]
    );
    // Shelved while active, unshelved after it cleared: normal.
    run(&mut a, &r, &mut t, vec![shelve(5), Event::Value(1.0)]);
    assert_eq!(
        run(&mut a, &r, &mut t, vec![Event::Unshelve(Actor::default())]),
        vec![(K::Unshelve, S::Normal)]
    );
    assert_eq!(
        a.apply(&r, Event::Unshelve(Actor::default()), t, 0),
        Err(Refused::NotShelved(S::Normal))
    );
}

#[test]
fn suppression_and_out_of_service_hide_the_alarm_and_return_it() {
    let (mut a, r, mut t) = (Alarm::new(), rule(), 0);
    run(&mut a, &r, &mut t, values(&[36.0]));
    let seen = run(
        &mut a,
        &r,
        &mut t,
        vec![
            Event::Available(false),
            Event::Value(50.0),
            Event::InService(false),
            Event::Available(true),
            Event::InService(true),
        ],
    );
    assert_eq!(
        seen,
        vec![
            (K::Suppress, S::Suppressed),
            (K::OutOfService, S::OutOfService),
            (K::ReturnToService, S::ActiveUnacked),
        ]
    );
    assert_eq!(a.condition(), Level::Critical);
}

#[test]
fn a_chattering_alarm_is_flagged_and_its_transitions_rate_limited() {
    let (mut a, r, mut t) = (Alarm::new(), rule(), 0);
    let mut reported = Vec::new();
    // 40 raise/clear pairs, 100 ms apart: 80 transitions within 8 s; the limit is 4 a minute.
    for i in 0..80 {
        t += 100;
        let v = if i % 2 == 0 { 40.0 } else { 20.0 };
        reported.extend(a.apply(&r, Event::Value(v), t, 4).unwrap());
    }
    assert!(a.chattering());
    let kinds: Vec<_> = reported.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds[..5],
        [K::Raise, K::Clear, K::Raise, K::Clear, K::Raise]
    );
    assert_eq!(kinds[5], K::ChatterStart);
    assert_eq!(kinds.len(), 6, "the rest is withheld: {kinds:?}");
    // The latest state is reported on a tick at most every 10 s, and the flag drops once
    // the minute is quiet.
    t += CHATTER_REPORT_MS;
    let out = a.apply(&r, Event::Tick, t, 4).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, a.state());
    t += 60_000;
    let out = a.apply(&r, Event::Tick, t, 4).unwrap();
    assert_eq!(
        out.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [K::ChatterEnd]
    );
    assert!(!a.chattering());
}

#[test]
fn restore_brings_back_the_reported_state() {
    let (mut a, r, mut t) = (Alarm::new(), rule(), 0);
    run(&mut a, &r, &mut t, values(&[46.0]));
    let snap = Snapshot {
        state: a.state(),
        severity: a.condition(),
        shelved_until_ms: None,
        chattering: false,
    };
    let mut b = Alarm::restore(&snap);
    assert_eq!(b.state(), S::ActiveUnacked);
    // Still active after the restart: nothing is raised again.
    assert!(run(&mut b, &r, &mut t, values(&[47.0])).is_empty());
    assert_eq!(
        run(&mut b, &r, &mut t, vec![ack()]),
        vec![(K::Ack, S::ActiveAcked)]
    );
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (0.0f64..60.0).prop_map(Event::Value),
        2 => Just(Event::Tick),
        2 => Just(Event::Ack(Actor::default())),
        1 => (0u64..10).prop_map(|minutes| Event::Shelve { minutes, actor: Actor::default() }),
        1 => Just(Event::Unshelve(Actor::default())),
        1 => any::<bool>().prop_map(Event::Available),
        1 => any::<bool>().prop_map(Event::InService),
    ]
}

fn arb_rule() -> impl Strategy<Value = ThresholdRule> {
    (0.0f64..5.0, 0u64..3000, 0u64..3000, any::<bool>()).prop_map(|(db, on, off, latch)| {
        let mut r = rule();
        r.deadband = db;
        r.on_delay_ms = on;
        r.off_delay_ms = off;
        r.latch = latch;
        r.max_shelve_minutes = 5;
        r
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_event_sequence_keeps_the_invariants(
        rule in arb_rule(),
        chatter in 0u32..6,
        events in prop::collection::vec((arb_event(), 0i64..120_000), 1..80),
    ) {
        let mut a = Alarm::new();
        let mut now = 1_000_000;
        for (event, gap) in events {
            now += gap;
            let before = a.state();
            let shelved_base = (a.shelved_until_ms(), a.condition());
            let reported_before = a.reported();
            let result = a.apply(&rule, event.clone(), now, chatter);
            let after = a.state();
            match (&event, &result) {
                // Ack only from an unacknowledged state, and it leaves one acknowledged.
                (Event::Ack(_), Ok(_)) => {
                    prop_assert!(before.is_unacked(), "ack from {before:?}");
                    prop_assert!(matches!(after, S::ActiveAcked | S::Normal));
                }
                (Event::Ack(_), Err(_)) => prop_assert!(!before.is_unacked()),
                (Event::Shelve { .. }, Ok(_)) => prop_assert_eq!(after, S::Shelved),
                (Event::Shelve { .. }, Err(_)) => prop_assert_eq!(after, before),
                (Event::Unshelve(_), Ok(_)) => prop_assert_eq!(before, S::Shelved),
                (Event::Unshelve(_), Err(_)) => prop_assert_ne!(before, S::Shelved),
                _ => prop_assert!(result.is_ok(), "{event:?} refused: {result:?}"),
            }
            // A shelve that expires returns to what the condition calls for.
            if before == S::Shelved && shelved_base.0.is_some_and(|u| u <= now)
                && matches!(event, Event::Tick)
            {
                let expected = if shelved_base.1 == Level::Normal && a.condition() == Level::Normal {
                    S::Normal
                } else { after };
                prop_assert_ne!(after, S::Shelved);
                prop_assert_eq!(after, expected);
                prop_assert!(matches!(after, S::Normal | S::ActiveUnacked | S::RtnUnacked | S::ActiveAcked));
            }
            check_consistent(&a, &rule)?;
            // Reported transitions chain from the last reported state, and a quiet alarm has
            // reported where it is.
            let out = result.unwrap_or_default();
            let mut last = reported_before;
            for t in &out {
                prop_assert_eq!(t.from, last);
                last = t.to;
            }
            prop_assert_eq!(last, a.reported());
            if !a.chattering() {
                prop_assert_eq!(a.reported(), after);
            }
        }
    }
}

/// The base state agrees with the condition whenever it is shown.
fn check_consistent(a: &Alarm, rule: &ThresholdRule) -> Result<(), TestCaseError> {
    let state = a.state();
    match state {
        S::ActiveAcked => prop_assert_ne!(a.condition(), Level::Normal),
        S::RtnUnacked | S::Normal => prop_assert_eq!(a.condition(), Level::Normal),
        S::ActiveUnacked => prop_assert!(a.condition() != Level::Normal || rule.latch),
        S::Shelved => prop_assert!(a.shelved_until_ms().is_some()),
        S::Suppressed | S::OutOfService => {}
    }
    Ok(())
}
