//! Hostile devices against the device registry and device clocks (issue #15): anonymous
//! publishes inventing device ids, a mass silence, clocks in year 2100 or 1970.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_gateway::store::HistoryQuery;
use edge_gateway::time::now_ms;
use rumqttc::QoS;

use crate::common::binary::{GatewayProcess, gateway_command};
use crate::common::{
    eventually, free_port, history, http_get, metric, mqtt_client, start, test_config,
};

/// The shipped systemd unit's `MemoryMax`.
const MEMORY_MAX: u64 = 256 * 1024 * 1024;

fn too_many(metrics: &str) -> f64 {
    metric(
        metrics,
        "edge_gateway_readings_rejected_total{reason=\"too_many_devices\"}",
    )
    .unwrap_or(0.0)
}

/// Readings the gateway dealt with: stored, or rejected for an unknown device.
fn processed(addr: SocketAddr) -> f64 {
    let m = http_get(addr, "/metrics").1;
    metric(&m, "edge_gateway_readings_accepted_total").unwrap_or(0.0) + too_many(&m)
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// The crash loop: ~300k invented device ids, then a restart. Before the fix the registry
/// grew with every id and the restart loaded it whole (OOM under `MemoryMax=256M`, for ever).
/// Now the registry holds `devices.max_devices` (the default, 10,000), the rest is rejected,
/// and the restarted binary answers /health with a peak RSS under 256 MiB (measured: see
/// the assertion message; the debug build is the heavier one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_device_ids_are_bounded_and_a_restart_stays_small() {
    const IDS: usize = 300_000;
    const CONNECTIONS: usize = 4;
    const ROUND: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (http, mqtt) = (free_port(), free_port());
    let http_addr = SocketAddr::from(([127, 0, 0, 1], http));
    let mqtt_addr = SocketAddr::from(([127, 0, 0, 1], mqtt));
    let mut gw = GatewayProcess::spawn(
        &mut gateway_command(&data, http, mqtt),
        &dir.path().join("first.log"),
        http,
    );

    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        clients.push(mqtt_client(mqtt_addr, &format!("flood-{c}")).await.0);
    }
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < IDS {
        let round_end = (sent + ROUND).min(IDS);
        let mut tasks = Vec::new();
        for (c, client) in clients.iter().enumerate() {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in (sent + c..round_end).step_by(CONNECTIONS) {
                    let topic = format!("sensors/fake-{i}/temperature");
                    client
                        .publish(topic, QoS::AtMostOnce, false, "21.5")
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        sent = round_end;
        // As fast as the gateway takes them: wait for it to catch up before the next round
        // (QoS 0 may drop some under overload; most arrive).
        let deadline = Instant::now() + Duration::from_secs(10);
        while processed(http_addr) < sent as f64 * 0.9 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let seen = processed(http_addr);
    let flood = started.elapsed();
    assert!(seen >= IDS as f64 * 0.8, "only {seen} of {IDS} arrived");

    let health: serde_json::Value =
        serde_json::from_str(&http_get(http_addr, "/health").1).unwrap();
    assert!(
        health["devices"]["total"].as_u64().unwrap() <= 10_000,
        "{health}"
    );
    let metrics = http_get(http_addr, "/metrics").1;
    assert!(
        too_many(&metrics) >= seen - 10_000.0,
        "new ids past max_devices are counted: {metrics}"
    );
    assert!(gw.stop("TERM", Duration::from_secs(20)), "clean stop");

    let mut gw = GatewayProcess::spawn(
        &mut gateway_command(&data, http, mqtt),
        &dir.path().join("second.log"),
        http,
    );
    let (status, body) = http_get(http_addr, "/health");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["devices"]["total"], 10_000, "{health}");
    // A few seconds of idle service after the restore.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http_get(http_addr, "/health").0, 200);
    let peak = peak_rss(gw.id());
    eprintln!(
        "{seen} ids in {flood:?}; restarted peak RSS {} MiB",
        peak / (1024 * 1024)
    );
    assert!(
        peak <= MEMORY_MAX,
        "restarted gateway peak RSS {} MiB > 256 MiB",
        peak / (1024 * 1024)
    );
    assert!(gw.stop("TERM", Duration::from_secs(20)), "clean stop");
}

/// Past `devices.max_devices`, a new id's readings and status are rejected and counted; the
/// devices already known keep being stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_devices_past_max_devices_are_rejected_known_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.devices.max_devices = 5;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let before = too_many(&http_get(gw.http_addr(), "/metrics").1);
    let (client, mut acks) = mqtt_client(mqtt, "registry-full").await;
    let mut messages: Vec<(String, &str)> = (0..5)
        .map(|i| (format!("sensors/known-{i}/temperature"), "20"))
        .collect();
    messages.extend((0..3).map(|i| (format!("sensors/intruder-{i}/temperature"), "20")));
    messages.push(("devices/intruder-9/status".into(), "online"));
    messages.push(("sensors/known-0/temperature".into(), "21"));
    for (n, (topic, payload)) in messages.into_iter().enumerate() {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        // One at a time, so the known devices are registered before the intruders arrive.
        let want = n as u64 + 1;
        tokio::time::timeout(Duration::from_secs(10), acks.wait_for(|a| *a >= want))
            .await
            .expect("acknowledged")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let store = gw.store().clone();
    eventually(
        "known device's second reading",
        Duration::from_secs(10),
        || (history(&store, "known-0").len() == 2).then_some(()),
    )
    .await;
    for i in 0..3 {
        assert!(history(&store, &format!("intruder-{i}")).is_empty());
    }
    let ids: Vec<String> = store
        .devices()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("known-")), "{ids:?}");
    let metrics = http_get(gw.http_addr(), "/metrics").1;
    assert!(too_many(&metrics) - before >= 4.0, "{metrics}");
    let health = gw.health().clone();
    eventually("5 devices in health", Duration::from_secs(5), || {
        (health
            .devices_total
            .load(std::sync::atomic::Ordering::Relaxed)
            == 5)
            .then_some(())
    })
    .await;
    gw.stop().await.unwrap();
}

/// A device clock in 2100 or 1970: the reading is stored at its receive time and counted, so
/// `get:history` without `to` still ends with current data and age retention is not stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_clocks_in_2100_and_1970_are_clamped_to_receive_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let clamped = |m: &str, reason: &str| {
        metric(
            m,
            &format!("edge_gateway_timestamps_clamped_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let m0 = http_get(gw.http_addr(), "/metrics").1;
    let (client, mut acks) = mqtt_client(mqtt, "bad-clock").await;
    let before = now_ms();
    for (value, stamp) in [
        (1.0, "2100-01-01T00:00:00Z"),
        (2.0, "1970-01-01T00:00:00Z"),
        (3.0, ""),
    ] {
        let payload = if stamp.is_empty() {
            format!("{{\"value\": {value}}}")
        } else {
            format!("{{\"value\": {value}, \"timestamp\": \"{stamp}\"}}")
        };
        client
            .publish(
                "sensors/clocky/temperature",
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
        // One at a time, so receive order is store order.
        let want = value as u64;
        tokio::time::timeout(Duration::from_secs(10), acks.wait_for(|n| *n >= want))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = gw.store().clone();
    let all = eventually("three readings", Duration::from_secs(10), || {
        let h = history(&store, "clocky");
        (h.len() == 3).then_some(h)
    })
    .await;
    let after = now_ms();
    let stamps: BTreeMap<u64, i64> = all
        .iter()
        .map(|r| {
            let ts = edge_gateway::time::parse_rfc3339_ms(r["timestamp"].as_str().unwrap());
            (r["value"].as_f64().unwrap() as u64, ts.unwrap())
        })
        .collect();
    for (value, ts) in &stamps {
        assert!(
            (before..=after).contains(ts),
            "reading {value} stored at {ts}, outside receive window {before}..{after}"
        );
    }
    // History without `to`: the newest reading is the current one, not the 2100 one.
    let newest = store
        .history(&HistoryQuery {
            device_id: "clocky".into(),
            sensor_type: None,
            from_ms: None,
            to_ms: None,
            limit: 1,
        })
        .unwrap();
    assert_eq!(newest[0]["value"], 3.0, "{newest:?}");
    let m1 = http_get(gw.http_addr(), "/metrics").1;
    assert!(
        clamped(&m1, "future") - clamped(&m0, "future") >= 1.0,
        "{m1}"
    );
    assert!(clamped(&m1, "past") - clamped(&m0, "past") >= 1.0, "{m1}");
    gw.stop().await.unwrap();
}

/// 2,500 devices falling silent together (restored online at a restart, so their silence
/// windows start at the same instant): the sweep marks them offline in slices of at most
/// 1,000 per check interval, not one commit of 5,000 status and alert records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_silence_goes_offline_in_bounded_slices() {
    const DEVICES: usize = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (client, mut acks) = mqtt_client(mqtt, "soon-silent").await;
    for i in 0..DEVICES {
        client
            .publish(
                format!("sensors/quiet-{i}/temperature"),
                QoS::AtLeastOnce,
                false,
                "20",
            )
            .await
            .unwrap();
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        acks.wait_for(|n| *n >= DEVICES as u64),
    )
    .await
    .unwrap()
    .unwrap();
    let store = gw.store().clone();
    eventually(
        "every device stored online",
        Duration::from_secs(30),
        || (store.devices().unwrap().len() == DEVICES).then_some(()),
    )
    .await;
    client.disconnect().await.unwrap();
    drop(store);
    gw.stop().await.unwrap();

    let mut config = test_config();
    config.devices.offline_after_ms = 1_000;
    config.devices.check_interval_ms = 200;
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    let from = store.next_seq().unwrap();
    eventually("every device offline", Duration::from_secs(30), || {
        let offline = store
            .devices()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == "offline")
            .count();
        (offline == DEVICES).then_some(())
    })
    .await;
    // Offline status changes grouped by the sweep tick that made them (its timestamp).
    let mut per_tick: BTreeMap<String, usize> = BTreeMap::new();
    for r in store.read_from(from, 100_000).unwrap() {
        if r.json["status"] == "offline" {
            *per_tick
                .entry(r.json["timestamp"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(per_tick.values().sum::<usize>(), DEVICES);
    assert!(
        per_tick.len() >= 3 && per_tick.values().all(|n| *n <= 1_000),
        "offline changes per sweep tick: {per_tick:?}"
    );
    gw.stop().await.unwrap();
}
