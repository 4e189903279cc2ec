//! The alarm life cycle end to end: readings published with mosquitto_pub into the real
//! listener, transitions read back from the store; state across a clean restart and kill -9
//! of the binary.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::binary::{GatewayProcess, gateway_command};
use common::{eventually, free_port, start, test_config};
use edge_gateway::alarms::{Operator, ThresholdRule};
use edge_gateway::record::RecordKind;
use edge_gateway::store::Store;

/// `mosquitto_pub -q 1`: returns once the gateway acknowledged, i.e. after the commit.
fn publish(mqtt_port: u16, device: &str, sensor: &str, value: f64) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtt_port.to_string(), "-q", "1"])
        .args(["-t", &format!("sensors/{device}/{sensor}")])
        .args(["-m", &value.to_string()])
        .output()
        .expect("mosquitto_pub (mosquitto-clients) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every stored transition of `alarm_id` as "transition:state:severity", in `seq` order.
fn transitions(store: &Store, alarm_id: &str) -> Vec<String> {
    store
        .read_from(1, 1_000_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == RecordKind::Alarm && r.json["alarmId"] == alarm_id)
        .map(|r| {
            let j = &r.json;
            format!(
                "{}:{}:{}",
                j["transition"].as_str().unwrap(),
                j["state"].as_str().unwrap(),
                j["severity"].as_str().unwrap()
            )
        })
        .collect()
}

fn alerts(store: &Store, device: &str) -> usize {
    store
        .read_from(1, 1_000_000)
        .unwrap()
        .iter()
        .filter(|r| r.kind == RecordKind::Alert && r.json["deviceId"] == device)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_readings_raise_escalate_deescalate_and_clear_past_the_deadband() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.thresholds = vec![ThresholdRule {
        deadband: 2.0,
        ..ThresholdRule::new("temperature", Operator::Gt, Some(35.0), Some(45.0))
    }];
    let port = config.mqtt.listen.port();
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    let id = "oven-1/temperature/threshold";
    for v in [20.0, 36.0, 46.0, 44.0, 42.9, 34.0, 33.5, 32.9] {
        tokio::task::spawn_blocking(move || publish(port, "oven-1", "temperature", v))
            .await
            .unwrap();
    }
    assert_eq!(
        transitions(&store, id),
        [
            "raise:active_unacked:warning",
            "escalate:active_unacked:critical",
            // 44 is within the deadband of 45: still critical; 42.9 is past it.
            "deescalate:active_unacked:warning",
            // 34 and 33.5 are within the deadband of 35; 32.9 is past it.
            "clear:rtn_unacked:normal",
        ]
    );
    assert_eq!(
        alerts(&store, "oven-1"),
        2,
        "alerts on raise and escalation only"
    );
    let current = store.current_alarms(|_| true, 10).unwrap();
    assert_eq!(current.alarms.len(), 1);
    assert_eq!(current.alarms[0]["state"], "rtn_unacked");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_and_off_delays_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.devices.check_interval_ms = 100;
    config.thresholds = vec![ThresholdRule {
        // Generous, so a slow publish on a loaded machine does not end a delay early.
        on_delay_ms: 3_000,
        off_delay_ms: 3_000,
        ..ThresholdRule::new("humidity", Operator::Gt, Some(70.0), None)
    }];
    let port = config.mqtt.listen.port();
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    let id = "room-1/humidity/threshold";
    let pub_ = |v: f64| tokio::task::spawn_blocking(move || publish(port, "room-1", "humidity", v));
    // A blip: back below the limit before the on-delay is over.
    pub_(80.0).await.unwrap();
    pub_(50.0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(transitions(&store, id).is_empty(), "a blip raises nothing");
    // Held past the limit: raised by the tick once the on-delay is over, not before.
    pub_(80.0).await.unwrap();
    assert!(
        transitions(&store, id).is_empty(),
        "not before the on-delay"
    );
    eventually("raised after the on-delay", Duration::from_secs(20), || {
        (transitions(&store, id) == ["raise:active_unacked:warning"]).then_some(())
    })
    .await;
    pub_(50.0).await.unwrap();
    assert_eq!(
        transitions(&store, id).len(),
        1,
        "not cleared before the off-delay"
    );
    eventually(
        "cleared after the off-delay",
        Duration::from_secs(20),
        || (transitions(&store, id).len() == 2).then_some(()),
    )
    .await;
    assert_eq!(transitions(&store, id)[1], "clear:rtn_unacked:normal");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chattering_alarm_is_flagged_and_does_not_flood_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.alarms.chatter_transitions_per_minute = 4;
    let port = config.mqtt.listen.port();
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    // 30 readings across the limit: 30 raise/clear transitions in well under a minute.
    tokio::task::spawn_blocking(move || {
        for i in 0..30 {
            let v = if i % 2 == 0 { 40.0 } else { 20.0 };
            publish(port, "flap-1", "temperature", v);
        }
    })
    .await
    .unwrap();
    let stored = transitions(&store, "flap-1/temperature/threshold");
    assert_eq!(
        stored[..6],
        [
            "raise:active_unacked:warning",
            "clear:rtn_unacked:normal",
            "raise:active_unacked:warning",
            "clear:rtn_unacked:normal",
            "raise:active_unacked:warning",
            "chatter_start:active_unacked:warning",
        ]
    );
    // The rest is withheld: at most one report per 10 s while it chatters.
    assert!(
        stored.len() < 15,
        "30 transitions, not withheld: {stored:?}"
    );
    let current = store.current_alarms(|_| true, 10).unwrap();
    assert_eq!(current.alarms[0]["chattering"], true);
    gw.stop().await.unwrap();
}

/// Starts the binary on `data` and the given ports.
fn spawn_binary(data: &Path, log: &Path, http: u16, mqtt: u16) -> common::peer::PeerProcess {
    let mut cmd = gateway_command(data, http, mqtt);
    GatewayProcess::spawn(&mut cmd, log, http)
}

#[test]
fn active_unacked_alarm_survives_a_clean_restart_and_kill_9_and_is_not_raised_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (http, mqtt) = (free_port(), free_port());
    let id = "press-1/temperature/threshold";
    let log = |n: u32| dir.path().join(format!("gateway-{n}.log"));

    let mut gw = spawn_binary(&data, &log(1), http, mqtt);
    publish(mqtt, "press-1", "temperature", 40.0);
    gw.kill();
    {
        let store = Store::open(&data).unwrap();
        assert_eq!(transitions(&store, id), ["raise:active_unacked:warning"]);
        assert_eq!(
            store.restore_alarms().unwrap()[0]["state"],
            "active_unacked"
        );
    }

    // After kill -9: still active and unacknowledged, and a reading still above the limit
    // raises nothing new.
    let mut gw = spawn_binary(&data, &log(2), http, mqtt);
    publish(mqtt, "press-1", "temperature", 41.0);
    assert!(gw.stop("TERM", Duration::from_secs(20)), "clean stop");
    {
        let store = Store::open(&data).unwrap();
        assert_eq!(transitions(&store, id), ["raise:active_unacked:warning"]);
        assert_eq!(alerts(&store, "press-1"), 1);
        assert_eq!(
            store.restore_alarms().unwrap()[0]["state"],
            "active_unacked"
        );
    }

    // After a clean stop the same; an escalation is a new transition from the restored state.
    let mut gw = spawn_binary(&data, &log(3), http, mqtt);
    publish(mqtt, "press-1", "temperature", 41.5);
    publish(mqtt, "press-1", "temperature", 50.0);
    gw.kill();
    let store = Store::open(&data).unwrap();
    assert_eq!(
        transitions(&store, id),
        [
            "raise:active_unacked:warning",
            "escalate:active_unacked:critical"
        ]
    );
}
