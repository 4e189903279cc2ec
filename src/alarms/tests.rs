//! The alarm set: grading, records per transition, restore, suppression, operator actions.

use super::*;
use crate::record::AlarmEvent;

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
    Alarms::new(
        &[ThresholdRule {
            unit: "°C".into(),
            ..ThresholdRule::new("temperature", Operator::Gt, Some(35.0), Some(45.0))
        }],
        10,
    )
}

fn events(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r {
            Record::Alert(a) => format!("alert:{}", a.severity.as_str()),
            Record::Alarm(a) => format!("{}:{}", a.transition, a.state),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn alarm_event(records: &[Record]) -> &AlarmEvent {
    records
        .iter()
        .find_map(|r| match r {
            Record::Alarm(a) => Some(a),
            _ => None,
        })
        .expect("an alarm transition")
}

#[test]
fn alerts_fire_on_raise_and_escalation_only() {
    let mut a = alarms();
    let mut seen = vec![];
    for (i, v) in [20.0, 36.0, 37.0, 46.0, 40.0, 20.0].into_iter().enumerate() {
        let mut r = reading(v);
        let out = a.evaluate(&mut r, None, i as i64 * 1000);
        seen.push((r.status, events(&out)));
    }
    use Level::*;
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            (Normal, s(&[])),
            (Warning, s(&["alert:warning", "raise:active_unacked"])),
            (Warning, s(&[])),
            (Critical, s(&["alert:critical", "escalate:active_unacked"])),
            (Warning, s(&["deescalate:active_unacked"])),
            (Normal, s(&["clear:rtn_unacked"])),
        ]
    );
    assert_eq!(a.counts().unacked, 1);
    assert_eq!(a.counts().active, 0);
}

#[test]
fn restored_active_alarm_is_not_raised_again_and_takes_an_ack() {
    let mut a = alarms();
    let out = a.evaluate(&mut reading(46.0), None, 0);
    let stored = serde_json::to_value(out.last().unwrap().to_wire("gw", Some(1))).unwrap();
    let id = stored["alarmId"].as_str().unwrap().to_string();
    assert_eq!(id, "d/temperature/threshold");
    let mut b = alarms();
    b.restore(&[stored, serde_json::json!({"alarmId": "junk"})]);
    assert_eq!(b.counts().active, 1);
    assert!(b.evaluate(&mut reading(47.0), None, 1000).is_empty());
    let ack = |user: &str| Command {
        alarm_id: id.clone(),
        action: Action::Ack {
            comment: Some("seen".into()),
        },
        user: Some(user.into()),
    };
    let out = b.act(ack("alice"), 2000).unwrap();
    let e = alarm_event(&out);
    assert_eq!(
        (
            e.transition,
            e.state,
            e.user.as_deref(),
            e.comment.as_deref()
        ),
        ("ack", "active_acked", Some("alice"), Some("seen"))
    );
    assert!(matches!(
        b.act(ack("bob"), 3000),
        Err(ActionError::Refused(Refused::NotUnacked(_)))
    ));
    let unknown = Command {
        alarm_id: "d/flow/threshold".into(),
        ..ack("bob")
    };
    assert!(matches!(b.act(unknown, 3000), Err(ActionError::Unknown(_))));
}

#[test]
fn an_offline_device_suppresses_its_alarms() {
    let mut a = alarms();
    a.evaluate(&mut reading(40.0), None, 0);
    assert_eq!(
        events(&a.set_available("d", false, 1000)),
        ["suppress:suppressed"]
    );
    assert!(a.set_available("other", false, 1000).is_empty());
    assert_eq!(
        events(&a.set_available("d", true, 2000)),
        ["unsuppress:active_unacked"]
    );
}

#[test]
fn normal_readings_keep_nothing_in_memory() {
    let mut a = alarms();
    for i in 0..100 {
        let mut r = reading(20.0);
        r.device_id = format!("d{i}");
        assert!(a.evaluate(&mut r, None, 0).is_empty());
    }
    a.evaluate(&mut reading(40.0), None, 0);
    a.evaluate(&mut reading(20.0), None, 1000);
    a.act(
        Command {
            alarm_id: "d/temperature/threshold".into(),
            action: Action::Ack { comment: None },
            user: None,
        },
        2000,
    )
    .unwrap();
    assert_eq!(a.alarms.len(), 1, "recent transitions are remembered");
    a.tick(200_000);
    assert_eq!(a.alarms.len(), 0);
}

#[test]
fn unknown_sensor_types_pass_untouched() {
    let mut a = alarms();
    let mut r = reading(1e9);
    r.sensor_type = "flow".into();
    r.status = Level::Warning;
    assert!(a.evaluate(&mut r, None, 0).is_empty());
    assert_eq!(r.status, Level::Warning);
}
