//! The pipeline's unit tests: messages and silence in, records out.

use super::*;
use crate::config::Config;

fn reading(dev: &str, value: f64) -> Ingest {
    Ingest::Reading {
        device_id: dev.into(),
        sensor_type: "temperature".into(),
        value,
        unit: None,
        ts_ms: None,
        status: None,
        location: Some("Line 1".into()),
        received: Instant::now(),
        threshold: None,
    }
}

fn pipeline(offline_after_ms: u64) -> Pipeline {
    let mut c = Config::default();
    c.devices.offline_after_ms = offline_after_ms;
    Pipeline::new(
        &c.devices,
        Duration::from_secs(c.store.retention_max_age_secs),
        &c.thresholds,
        &c.alarms,
        Arc::new(Health::new(true, &[])),
    )
}

fn kinds(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r {
            Record::Reading(r) => format!("reading:{}:{}", r.value, r.status.as_str()),
            Record::Status(s) => format!("status:{}", s.status.as_str()),
            Record::Alert(a) => format!("alert:{:?}:{}", a.kind, a.severity.as_str()),
            Record::Alarm(a) => format!("alarm:{}:{}", a.transition, a.state),
            Record::Relayed(r) => format!("relayed:{}", r.json.get()),
        })
        .collect()
}

#[test]
fn first_reading_brings_device_online_and_thresholds_alert() {
    let mut p = pipeline(60_000);
    let mut out = vec![];
    p.process(reading("d1", 20.0), &mut out);
    p.process(reading("d1", 50.0), &mut out);
    assert_eq!(
        kinds(&out),
        vec![
            "status:online",
            "reading:20:normal",
            "reading:50:critical",
            "alert:Threshold:critical",
            "alarm:raise:active_unacked"
        ]
    );
    let Record::Reading(r) = &out[1] else {
        panic!()
    };
    assert_eq!(r.unit, "°C");
    assert_eq!(r.location, "Line 1");
}

#[test]
fn silence_marks_offline_once_and_data_brings_back() {
    let mut p = pipeline(0);
    let mut out = vec![];
    p.process(reading("d1", 20.0), &mut out);
    out.clear();
    p.check_silence(&mut out);
    assert_eq!(
        kinds(&out),
        vec!["status:offline", "alert:Connectivity:warning"]
    );
    out.clear();
    p.check_silence(&mut out);
    assert!(out.is_empty());
    assert_eq!(p.health.active_alerts.load(Ordering::Relaxed), 1);
    p.process(reading("d1", 21.0), &mut out);
    assert_eq!(kinds(&out), vec!["status:online", "reading:21:normal"]);
}

#[test]
fn status_topic_sets_state_and_offline_alerts() {
    let mut p = pipeline(60_000);
    let mut out = vec![];
    let status = |s| Ingest::Status {
        device_id: "d1".into(),
        status: s,
        location: None,
        received: Instant::now(),
    };
    p.process(status(DeviceState::Maintenance), &mut out);
    p.process(status(DeviceState::Maintenance), &mut out);
    p.process(status(DeviceState::Offline), &mut out);
    assert_eq!(
        kinds(&out),
        vec![
            "status:maintenance",
            "status:offline",
            "alert:Connectivity:warning"
        ]
    );
}

#[test]
fn new_devices_beyond_max_devices_are_rejected_known_ones_kept() {
    let mut c = Config::default();
    c.devices.max_devices = 2;
    let mut p = Pipeline::new(
        &c.devices,
        Duration::from_secs(3600),
        &c.thresholds,
        &c.alarms,
        Arc::new(Health::new(true, &[])),
    );
    let mut out = vec![];
    for d in ["a", "b", "c"] {
        p.process(reading(d, 20.0), &mut out);
    }
    p.process(reading("a", 21.0), &mut out);
    let devices: Vec<_> = out.iter().filter_map(|r| r.device_id()).collect();
    assert_eq!(devices, vec!["a", "a", "b", "b", "a"]);
    assert_eq!(p.registry.devices.len(), 2);
}

#[test]
fn device_clocks_far_off_are_replaced_by_receive_time() {
    let mut p = pipeline(60_000);
    let mut out = vec![];
    let now = now_ms();
    let at = |ts: i64| {
        let mut msg = reading("d1", 20.0);
        if let Ingest::Reading { ts_ms, .. } = &mut msg {
            *ts_ms = Some(ts);
        }
        msg
    };
    let year_2100 = 4_102_444_800_000;
    for ts in [year_2100, 0, now - 1000] {
        p.process(at(ts), &mut out);
    }
    let stamps: Vec<i64> = out
        .iter()
        .filter_map(|r| match r {
            Record::Reading(r) => Some(r.ts_ms),
            _ => None,
        })
        .collect();
    assert!(stamps[0] >= now && stamps[0] < now + 60_000, "{stamps:?}");
    assert!(stamps[1] >= now && stamps[1] < now + 60_000, "{stamps:?}");
    assert_eq!(stamps[2], now - 1000);
}

#[test]
fn mass_silence_goes_offline_in_slices() {
    let mut p = pipeline(0);
    let mut out = vec![];
    for i in 0..2500 {
        p.process(reading(&format!("d{i}"), 20.0), &mut out);
    }
    let mut slices = vec![];
    for _ in 0..4 {
        out.clear();
        p.check_silence(&mut out);
        slices.push(out.len() / 2);
    }
    assert_eq!(slices, vec![1000, 1000, 500, 0]);
}

#[test]
fn silent_devices_are_forgotten_with_their_alarm_state() {
    let mut c = Config::default();
    c.devices.offline_after_ms = 0;
    c.devices.forget_after_ms = 0;
    // Retention of zero: everything is past it at once.
    let mut p = Pipeline::new(
        &c.devices,
        Duration::ZERO,
        &c.thresholds,
        &c.alarms,
        Arc::new(Health::new(true, &[])),
    );
    let mut out = vec![];
    p.process(reading("d1", 50.0), &mut out);
    std::thread::sleep(Duration::from_millis(2));
    let gone = p.forget_due();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].0, "d1");
    assert!(p.registry.devices.is_empty());
    assert_eq!(p.alarms.counts().active, 0);
    out.clear();
    p.process(reading("d1", 50.0), &mut out);
    assert_eq!(
        kinds(&out),
        vec![
            "status:online",
            "reading:50:critical",
            "alert:Threshold:critical",
            "alarm:raise:active_unacked"
        ]
    );
}

#[test]
fn alarms_are_restored_only_for_devices_the_registry_knows() {
    let stored = |dev: &str| {
        serde_json::json!({"alarmId": format!("{dev}/temperature/threshold"), "deviceId": dev,
                           "state": "active_unacked", "severity": "critical", "chattering": false})
    };
    let mut q = pipeline(60_000);
    q.process(reading("d1", 20.0), &mut vec![]);
    q.restore_alarms(&[stored("d1"), stored("forgotten")]);
    assert_eq!(q.alarms.counts().active, 1);
    assert_eq!(q.health.alarms_unacked.load(Ordering::Relaxed), 1);
}
