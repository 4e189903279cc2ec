//! The whole gateway in-process: real MQTT clients (rumqttc, QoS 0 and 1) against the embedded
//! broker, the redb store on a temp dir, /health and /metrics over HTTP.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_readings_are_stored_in_order_with_status_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (client, mut acks) = mqtt_client(mqtt, "pub-1").await;

    for i in 0..50 {
        let qos = if i % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let payload = format!(r#"{{"value": {i}, "unit": "°C", "location": "Line 7"}}"#);
        client
            .publish("sensors/dev-a/temperature", qos, false, payload)
            .await
            .unwrap();
    }
    client
        .publish("sensors/dev-a/temperature", QoS::AtLeastOnce, false, "50.5")
        .await
        .unwrap();
    acks.wait_for(|n| *n >= 26).await.unwrap();

    let store = gw.store().clone();
    let h = eventually("51 readings in history", Duration::from_secs(10), || {
        let h = history(&store, "dev-a");
        (h.len() == 51).then_some(h)
    })
    .await;
    let values: Vec<f64> = h.iter().map(|r| r["value"].as_f64().unwrap()).collect();
    let mut expected: Vec<f64> = (0..50).map(f64::from).collect();
    expected.push(50.5);
    assert_eq!(values, expected, "per-device order is publish order");
    assert_eq!(h[0]["location"], "Line 7");
    assert_eq!(h[0]["gatewayId"], "test-gw");
    assert_eq!(h[0]["status"], "normal");
    assert_eq!(h[40]["status"], "warning");
    assert_eq!(h[50]["status"], "critical");
    let seqs: Vec<u64> = h.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    // The device came online once and two threshold alerts (warning, critical) were stored.
    let all = store.read_from(1, 10_000).unwrap();
    let statuses: Vec<_> = all
        .iter()
        .filter(|r| r.json.get("lastSeen").is_some())
        .collect();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].json["status"], "online");
    let alerts: Vec<_> = all
        .iter()
        .filter(|r| r.json.get("alertId").is_some())
        .collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0].json["severity"], "warning");
    assert_eq!(alerts[1].json["severity"], "critical");
    assert_eq!(alerts[1].json["threshold"]["value"], 45.0);
    assert_eq!(alerts[1].json["threshold"]["current"], 46.0);
    assert_eq!(alerts[0].json["threshold"]["current"], 36.0);

    // Status topic: a last will style bare word.
    client
        .publish("devices/dev-a/status", QoS::AtLeastOnce, false, "offline")
        .await
        .unwrap();
    eventually("offline status stored", Duration::from_secs(10), || {
        store
            .devices()
            .unwrap()
            .iter()
            .any(|d| d["status"] == "offline")
            .then_some(())
    })
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mqtt_input_is_counted_and_the_gateway_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (client, mut acks) = mqtt_client(mqtt, "pub-bad").await;
    let bad: &[(&str, Vec<u8>)] = &[
        ("sensors/dev-b/temperature", b"{not json".to_vec()),
        ("sensors/dev-b/temperature", br#"{"value":"hot"}"#.to_vec()),
        ("sensors/dev-b", b"1".to_vec()),
        ("random/topic/here/too", b"1".to_vec()),
        ("sensors/dev-b/temperature", vec![b'7'; 20_000]),
        (
            "sensors/dev-b/temperature",
            br#"{"value":1,"timestamp":"noon"}"#.to_vec(),
        ),
    ];
    for (topic, payload) in bad {
        client
            .publish(*topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    client
        .publish("sensors/dev-b/temperature", QoS::AtLeastOnce, false, "21.0")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), acks.wait_for(|n| *n >= 7))
        .await
        .expect("7 PUBACKs")
        .unwrap();
    let store = gw.store().clone();
    let h = eventually("the good reading", Duration::from_secs(10), || {
        let h = history(&store, "dev-b");
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["value"], 21.0);

    let (code, body) = http_get(gw.http_addr(), "/metrics");
    assert_eq!(code, 200);
    let rejected = |reason: &str| {
        metric(
            &body,
            &format!("edge_gateway_readings_rejected_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(rejected("bad_json") >= 1.0, "{body}");
    assert!(rejected("bad_value") >= 1.0);
    assert!(rejected("bad_topic") >= 2.0);
    assert!(rejected("oversize") >= 1.0);
    assert!(rejected("bad_field") >= 1.0);

    let (code, body) = http_get(gw.http_addr(), "/health");
    assert_eq!(code, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["components"]["store"]["status"], "healthy");
    assert_eq!(health["components"]["mqtt"]["status"], "healthy");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_sequence_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config.clone(), dir.path()).await;
    let (client, mut acks) = mqtt_client(mqtt, "pub-r1").await;
    for i in 0..20 {
        client
            .publish(
                "sensors/dev-c/pressure",
                QoS::AtLeastOnce,
                false,
                format!("{}", 1000 + i),
            )
            .await
            .unwrap();
    }
    acks.wait_for(|n| *n >= 20).await.unwrap();
    let store = gw.store().clone();
    eventually("20 readings", Duration::from_secs(10), || {
        (history(&store, "dev-c").len() == 20).then_some(())
    })
    .await;
    client.disconnect().await.unwrap();
    gw.stop().await.unwrap();
    drop(store);

    let mut config = config;
    config.mqtt.listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    assert_eq!(
        history(&store, "dev-c").len(),
        20,
        "history answers from the store after restart"
    );
    let (client, mut acks) = mqtt_client(mqtt, "pub-r2").await;
    client
        .publish("sensors/dev-c/pressure", QoS::AtLeastOnce, false, "999")
        .await
        .unwrap();
    acks.wait_for(|n| *n >= 1).await.unwrap();
    let h = eventually("21 readings", Duration::from_secs(10), || {
        let h = history(&store, "dev-c");
        (h.len() == 21).then_some(h)
    })
    .await;
    let seqs: Vec<u64> = h.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq continues after restart: {seqs:?}"
    );
    // The device registry was restored: no second `online` status for dev-c.
    let statuses = store
        .read_from(1, 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.json["deviceId"] == "dev-c" && r.json.get("lastSeen").is_some())
        .count();
    assert_eq!(statuses, 1);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_devices_go_offline_with_a_connectivity_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.devices.offline_after_ms = 300;
    config.devices.check_interval_ms = 50;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (client, mut acks) = mqtt_client(mqtt, "pub-s").await;
    client
        .publish("sensors/dev-d/humidity", QoS::AtLeastOnce, false, "40")
        .await
        .unwrap();
    acks.wait_for(|n| *n >= 1).await.unwrap();
    let store = gw.store().clone();
    let records = eventually(
        "offline + connectivity alert",
        Duration::from_secs(10),
        || {
            let all = store.read_from(1, 100).unwrap();
            all.iter()
                .any(|r| r.json["type"] == "connectivity")
                .then_some(all)
        },
    )
    .await;
    let kinds: Vec<String> = records
        .iter()
        .map(|r| {
            r.json["type"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| r.json["status"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    assert_eq!(kinds, vec!["online", "normal", "offline", "connectivity"]);
    assert_eq!(
        gw.health()
            .devices_online
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    gw.stop().await.unwrap();
}
