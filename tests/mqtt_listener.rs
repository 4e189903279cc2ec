//! The device MQTT listener against real clients: rumqttc, mosquitto_pub/mosquitto_sub,
//! paho-mqtt (3.1.1 and 5), and a raw socket for exact bytes. PUBACK means committed.

mod common;
mod mqtt_raw;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use edge_gateway::config::{Config, MqttUser};
use mqtt_raw::{DISCONNECT, PINGREQ, Raw, publish, publish_until_killed, subscribe};
use rumqttc::QoS;

fn python() -> String {
    std::env::var("EDGE_GATEWAY_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn metrics(gw: &edge_gateway::Gateway) -> String {
    http_get(gw.http_addr(), "/metrics").1
}

fn counter(body: &str, name_and_labels: &str) -> f64 {
    metric(body, name_and_labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puback_means_the_reading_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    let (client, acks) = mqtt_client(mqtt, "acked").await;
    let n = 2_000u64;
    let publisher = tokio::spawn(async move {
        for i in 0..n {
            client
                .publish(
                    "sensors/acked-1/temperature",
                    QoS::AtLeastOnce,
                    false,
                    i.to_string(),
                )
                .await
                .unwrap();
        }
        client
    });
    // Acks first, then the store: whatever was acknowledged must already be there.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acked = *acks.borrow();
        let stored = history(&store, "acked-1").len() as u64;
        assert!(
            stored >= acked,
            "{acked} PUBACKed but only {stored} committed"
        );
        if acked == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "all PUBACKs in time ({acked}/{n})"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _client = publisher.await.unwrap();
    let values: Vec<f64> = history(&store, "acked-1")
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    let expected: Vec<f64> = (0..n).map(|i| i as f64).collect();
    assert_eq!(values, expected, "every reading once, in order");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_details_for_3_1_1_and_5() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;

    // MQTT 5: CONNACK advertises Receive Maximum, Maximum QoS 1 and Maximum Packet Size.
    let (mut v5, session, code) = Raw::connect(mqtt, 5, "raw-v5", true, None).await;
    assert_eq!((session, code), (0, 0));
    v5.send(&PINGREQ).await;
    assert_eq!(v5.read().await.unwrap().0, 0xD0, "PINGRESP");
    v5.send(&publish(
        5,
        1,
        false,
        11,
        "sensors/raw-5/temperature",
        b"20.5",
    ))
    .await;
    let (byte1, body) = v5.read().await.unwrap();
    assert_eq!((byte1, &body[..2]), (0x40, &[0, 11][..]), "PUBACK 11");
    // A bad topic is acknowledged (a device must not resend it forever), with a reason.
    v5.send(&publish(5, 1, false, 12, "other/raw-5", b"1"))
        .await;
    let (byte1, body) = v5.read().await.unwrap();
    assert_eq!(
        (byte1, &body[..3]),
        (0x40, &[0, 12, 0x90][..]),
        "topic invalid"
    );
    v5.send(&subscribe(5, 3, "sensors/#")).await;
    let (byte1, body) = v5.read().await.unwrap();
    assert_eq!(byte1, 0x90, "SUBACK");
    assert_eq!(&body[..2], &[0, 3]);
    assert_eq!(
        *body.last().unwrap(),
        0x87,
        "not authorized: subscribe elsewhere"
    );
    v5.send(&publish(5, 2, false, 13, "sensors/raw-5/temperature", b"1"))
        .await;
    let (byte1, body) = v5.read().await.unwrap();
    assert_eq!(
        (byte1, body[0]),
        (0xE0, 0x9B),
        "DISCONNECT QoS not supported"
    );
    assert!(v5.closed_within(Duration::from_secs(5)).await);

    // 3.1.1: SUBACK 0x80, QoS 2 closes; a persistent session is always present.
    let (mut v4, session, code) = Raw::connect(mqtt, 4, "raw-v4", false, None).await;
    assert_eq!((session, code), (1, 0));
    v4.send(&subscribe(4, 5, "sensors/#")).await;
    assert_eq!(v4.read().await.unwrap(), (0x90, vec![0, 5, 0x80]));
    v4.send(&publish(4, 2, false, 9, "sensors/raw-4/temperature", b"1"))
        .await;
    assert!(v4.closed_within(Duration::from_secs(5)).await);

    // DUP: a re-sent packet id is stored again and acknowledged after its commit.
    let (mut dup, _, _) = Raw::connect(mqtt, 4, "raw-dup", false, None).await;
    dup.send(&publish(
        4,
        1,
        false,
        77,
        "sensors/raw-dup/temperature",
        b"5",
    ))
    .await;
    dup.send(&publish(
        4,
        1,
        true,
        77,
        "sensors/raw-dup/temperature",
        b"5",
    ))
    .await;
    assert_eq!(dup.read().await.unwrap(), (0x40, vec![0, 77]));
    assert_eq!(dup.read().await.unwrap(), (0x40, vec![0, 77]));
    assert_eq!(history(gw.store(), "raw-dup").len(), 2, "at-least-once");
    dup.send(&DISCONNECT).await;
    assert!(dup.closed_within(Duration::from_secs(5)).await);

    // MQTT 3.1 (level 3) is refused with return code 1.
    let (_, _, code) = Raw::connect(mqtt, 3, "old", true, None).await;
    assert_eq!(code, 1);

    let body = metrics(&gw);
    assert!(
        counter(
            &body,
            "edge_gateway_mqtt_publishes_rejected_total{reason=\"qos2_unsupported\"}"
        ) >= 2.0,
        "{body}"
    );
    assert!(counter(&body, "edge_gateway_mqtt_subscribes_refused_total") >= 2.0);
    assert!(
        counter(
            &body,
            "edge_gateway_mqtt_connections_rejected_total{reason=\"protocol_version\"}"
        ) >= 1.0
    );
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dropped_counted_and_others_keep_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.mqtt.connect_timeout_ms = 500;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (good, mut acks) = mqtt_client(mqtt, "good-neighbour").await;

    let mut garbage = Raw::open(mqtt).await;
    garbage.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        garbage.closed_within(Duration::from_secs(5)).await,
        "garbage closed"
    );

    let mut silent = Raw::open(mqtt).await;
    let opened = Instant::now();
    assert!(
        silent.closed_within(Duration::from_secs(5)).await,
        "no CONNECT: dropped"
    );
    assert!(opened.elapsed() >= Duration::from_millis(400));

    let (mut big, _, _) = Raw::connect(mqtt, 5, "big", true, None).await;
    big.send(&publish(
        5,
        1,
        false,
        1,
        "sensors/big/temperature",
        &vec![b'1'; 200_000],
    ))
    .await;
    let (byte1, body) = big.read().await.unwrap();
    assert_eq!(
        (byte1, body[0]),
        (0xE0, 0x95),
        "DISCONNECT packet too large"
    );
    assert!(big.closed_within(Duration::from_secs(5)).await);

    good.publish("sensors/good-1/temperature", QoS::AtLeastOnce, false, "20")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), acks.wait_for(|n| *n >= 1))
        .await
        .expect("the good client is still served")
        .unwrap();
    assert_eq!(history(gw.store(), "good-1").len(), 1);

    let body = metrics(&gw);
    let rejected = |r: &str| {
        counter(
            &body,
            &format!("edge_gateway_mqtt_connections_rejected_total{{reason=\"{r}\"}}"),
        )
    };
    assert!(rejected("malformed") >= 1.0, "{body}");
    assert!(rejected("connect_timeout") >= 1.0, "{body}");
    assert!(
        counter(
            &body,
            "edge_gateway_mqtt_connections_closed_total{reason=\"oversize\"}"
        ) >= 1.0,
        "{body}"
    );
    gw.stop().await.unwrap();
}

fn with_users(mut config: Config) -> Config {
    config.mqtt.allow_anonymous = false;
    config.mqtt.users = vec![MqttUser {
        username: "line1".into(),
        password_hash: edge_gateway::sources::mqtt::hash_password("pw-line1")
            .unwrap()
            .into(),
        devices: vec!["line1-*".into()],
    }];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_acl_and_the_wrong_password_brake() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_users(test_config());
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (_, body) = http_get(gw.http_addr(), "/health");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["components"]["mqtt"]["anonymous"], false);

    let login = Some(("line1", "pw-line1"));
    let (mut v5, _, code) = Raw::connect(mqtt, 5, "acl-5", true, login).await;
    assert_eq!(code, 0);
    v5.send(&publish(
        5,
        1,
        false,
        1,
        "sensors/line1-a/temperature",
        b"20",
    ))
    .await;
    assert_eq!(v5.read().await.unwrap().1[..2], [0, 1]);
    v5.send(&publish(
        5,
        1,
        false,
        2,
        "sensors/line2-a/temperature",
        b"20",
    ))
    .await;
    let (byte1, body) = v5.read().await.unwrap();
    assert_eq!(
        (byte1, &body[..3]),
        (0x40, &[0, 2, 0x87][..]),
        "not authorized"
    );
    assert!(history(gw.store(), "line2-a").is_empty());

    let (mut v4, _, code) = Raw::connect(mqtt, 4, "acl-4", true, login).await;
    assert_eq!(code, 0);
    v4.send(&publish(
        4,
        1,
        false,
        1,
        "devices/line2-b/status",
        b"online",
    ))
    .await;
    assert!(
        v4.closed_within(Duration::from_secs(5)).await,
        "3.1.1: closed"
    );

    let (_, _, code) = Raw::connect(mqtt, 4, "anon", true, None).await;
    assert_eq!(code, 5, "anonymous not allowed");
    let (_, _, code) = Raw::connect(mqtt, 5, "wrong-5", true, Some(("line1", "nope"))).await;
    assert_eq!(code, 0x86, "bad user name or password");
    for i in 0..4 {
        let (_, _, code) = Raw::connect(
            mqtt,
            4,
            &format!("wrong-{i}"),
            true,
            Some(("line1", "nope")),
        )
        .await;
        assert_eq!(code, 4);
    }
    // Five failures from this address within a minute: even the right password is refused.
    let (_, _, code) = Raw::connect(mqtt, 5, "late", true, login).await;
    assert_eq!(code, 0x9F, "connection rate exceeded");
    // A connection made before keeps publishing.
    v5.send(&publish(
        5,
        1,
        false,
        3,
        "sensors/line1-a/temperature",
        b"21",
    ))
    .await;
    assert_eq!(v5.read().await.unwrap().1[..2], [0, 3]);
    assert_eq!(history(gw.store(), "line1-a").len(), 2);

    let body = metrics(&gw);
    let rejected = |r: &str| {
        counter(
            &body,
            &format!("edge_gateway_mqtt_connections_rejected_total{{reason=\"{r}\"}}"),
        )
    };
    assert!(rejected("bad_credentials") >= 5.0, "{body}");
    assert!(rejected("not_authorized") >= 1.0);
    assert!(rejected("rate_limited") >= 1.0);
    assert!(
        counter(
            &body,
            "edge_gateway_mqtt_publishes_rejected_total{reason=\"not_authorized\"}"
        ) >= 2.0
    );
    gw.stop().await.unwrap();
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("the client runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_publish_and_subscribe_on_the_subscriber_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    let sub_port = free_port();
    config.mqtt.subscriber_listen = Some(SocketAddr::from(([127, 0, 0, 1], sub_port)));
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &sub_port.to_string(),
            "-t",
            "sensors/#",
            "-C",
            "4",
            "-W",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (mosquitto-clients) is installed");
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (i, (version, qos)) in [
        ("mqttv311", "0"),
        ("mqttv311", "1"),
        ("mqttv5", "0"),
        ("mqttv5", "1"),
    ]
    .iter()
    .enumerate()
    {
        run(Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt.port().to_string(),
            "-V",
            version,
            "-q",
            qos,
            "-t",
            "sensors/mosq-1/temperature",
            "-m",
            &format!("{}", 20 + i),
        ]));
    }
    let store = gw.store().clone();
    eventually("4 readings stored", Duration::from_secs(10), || {
        (history(&store, "mosq-1").len() == 4).then_some(())
    })
    .await;
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON from the subscriber port"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|l| l["deviceId"] == "mosq-1"));
    let values: Vec<f64> = lines.iter().map(|l| l["value"].as_f64().unwrap()).collect();
    assert_eq!(values, vec![20.0, 21.0, 22.0, 23.0]);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_last_will_and_persistent_session_resend() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let port = config.mqtt.listen.port().to_string();
    let gw = start(config, dir.path()).await;
    let peer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mqtt_paho.py");
    for version in ["3", "5"] {
        let device = format!("paho-lwt-{version}");
        let p = port.clone();
        let d = device.clone();
        tokio::task::spawn_blocking(move || {
            run(Command::new(python()).args([peer, "lwt", &p, version, &d]))
        })
        .await
        .unwrap();
        let store = gw.store().clone();
        eventually(
            "the will marks the device offline",
            Duration::from_secs(10),
            || {
                store
                    .devices()
                    .unwrap()
                    .iter()
                    .any(|s| s["deviceId"] == device.as_str() && s["status"] == "offline")
                    .then_some(())
            },
        )
        .await;

        let device = format!("paho-persist-{version}");
        let p = port.clone();
        let d = device.clone();
        let out = tokio::task::spawn_blocking(move || {
            run(Command::new(python()).args([peer, "persist", &p, version, &d]))
        })
        .await
        .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("acked 50"));
        let mut values: Vec<i64> = history(gw.store(), &device)
            .iter()
            .map(|r| r["value"].as_f64().unwrap() as i64)
            .collect();
        values.sort();
        values.dedup();
        assert_eq!(
            values,
            (0..50).collect::<Vec<_>>(),
            "every acknowledged reading stored"
        );
    }
    let body = metrics(&gw);
    assert!(
        counter(&body, "edge_gateway_mqtt_wills_published_total") >= 2.0,
        "{body}"
    );
    gw.stop().await.unwrap();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_flood_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (clients, per_client) = (16usize, 12_500u64);
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let (client, mut acks) = mqtt_client(mqtt, &format!("flood-{c}")).await;
            for n in 0..per_client {
                client
                    .publish(
                        format!("sensors/flood-{c}/temperature"),
                        QoS::AtLeastOnce,
                        false,
                        n.to_string(),
                    )
                    .await
                    .unwrap();
            }
            tokio::time::timeout(
                Duration::from_secs(300),
                acks.wait_for(|n| *n >= per_client),
            )
            .await
            .expect("every publish acknowledged")
            .unwrap();
            client
        }));
    }
    let mut peak = 0;
    let mut keep = Vec::new();
    for t in tasks {
        while !t.is_finished() {
            peak = peak.max(rss_kib());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        keep.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let total = clients as u64 * per_client;
    for c in 0..clients {
        let values: Vec<u64> = history(gw.store(), &format!("flood-{c}"))
            .iter()
            .map(|r| r["value"].as_f64().unwrap() as u64)
            .collect();
        assert_eq!(
            values,
            (0..per_client).collect::<Vec<_>>(),
            "flood-{c}: all, once, in order"
        );
    }
    let committed: u64 = (0..clients)
        .map(|c| history(gw.store(), &format!("flood-{c}")).len() as u64)
        .sum();
    assert_eq!(committed, total, "committed == acked");
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "flood: {total} QoS 1 readings from {clients} connections in {:.1} s ({:.0}/s), RSS growth {growth_mib} MiB",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    assert!(growth_mib < 256, "RSS bounded: grew {growth_mib} MiB");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_reading() {
    let dir = tempfile::tempdir().unwrap();
    let rounds = 3;
    for round in 0..rounds {
        let (http, mqtt) = (free_port(), free_port());
        let addr = SocketAddr::from(([127, 0, 0, 1], mqtt));
        // EDGE_GATEWAY_BIN as in the python and node harnesses.
        let bin = std::env::var("EDGE_GATEWAY_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_edge-gateway").into());
        let mut child = Command::new(bin)
            .args(["run", "--data-dir"])
            .arg(dir.path())
            .env("HOST", "127.0.0.1")
            .env("PORT", http.to_string())
            .env("EDGE_GATEWAY_MQTT__LISTEN", addr.to_string())
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn edge-gateway");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "listener up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let device = format!("kill-{round}");
        let publisher = tokio::spawn({
            let device = device.clone();
            async move { publish_until_killed(addr, &device).await }
        });
        // A different moment each round: mid-flood, not at a quiet point.
        let wait = 300 + (crate_rand(round) % 700);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill().expect("kill -9");
        child.wait().unwrap();
        let acked = publisher.await.unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: some PUBACKs before the kill"
        );
        let store = edge_gateway::store::Store::open(dir.path()).expect("store reopens");
        let stored: std::collections::HashSet<u64> = history(&store, &device)
            .iter()
            .map(|r| r["value"].as_f64().unwrap() as u64)
            .collect();
        let lost: Vec<u64> = acked
            .iter()
            .copied()
            .filter(|v| !stored.contains(v))
            .collect();
        eprintln!(
            "kill round {round} after {wait} ms: {} PUBACKed, {} stored, {} lost",
            acked.len(),
            stored.len(),
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "round {round}: PUBACKed but lost: {:?}",
            &lost[..lost.len().min(10)]
        );
        drop(store);
    }
}

/// A spread of kill moments without a dependency.
fn crate_rand(round: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (t ^ round.wrapping_mul(0x9E37_79B9)).wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40
}

/// A 3.1.1 client cannot be told the Receive Maximum: with far more publishes in flight than
/// `mqtt.receive_maximum` it sends them all and waits for PUBACKs, while the gateway holds
/// frames it has read but not yet handled. Those must be handled once commits free room,
/// without waiting for the socket (which stays silent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_more_in_flight_than_the_cap_is_not_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.mqtt.receive_maximum = 8;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let mut opts = rumqttc::MqttOptions::new("eager", mqtt.ip().to_string(), mqtt.port());
    opts.set_inflight(500);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10_000);
    let (tx, mut acks) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
                n += 1;
                let _ = tx.send(n);
            }
        }
    });
    let total = 5_000u64;
    for n in 0..total {
        client
            .publish(
                "sensors/eager-1/temperature",
                QoS::AtLeastOnce,
                false,
                n.to_string(),
            )
            .await
            .unwrap();
    }
    let done = tokio::time::timeout(Duration::from_secs(60), acks.wait_for(|n| *n >= total))
        .await
        .is_ok();
    assert!(done, "stalled at {} of {total} PUBACKs", *acks.borrow());
    assert_eq!(history(gw.store(), "eager-1").len() as u64, total);
    gw.stop().await.unwrap();
}

/// Staging: a reading is live (dashboards, the catch-up reads) as soon as the writer staged
/// it, but its PUBACK waits for the durable commit of the cadence. A device publishing at its
/// own pace (here every 20 ms, never waiting) with a 5 s cadence sees readings live long
/// before they are acknowledged, and never an acknowledgement before the store has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puback_waits_for_the_durable_commit_while_the_reading_is_already_live() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.store.durable_commit_interval_ms = 5_000;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (raw, _, code) = Raw::connect(mqtt, 4, "paced", true, None).await;
    assert_eq!(code, 0);
    let (mut rd, mut wr) = raw.stream.into_split();
    let acked = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn({
        let acked = acked.clone();
        async move {
            let mut buf = [0u8; 4];
            while rd.read_exact(&mut buf).await.is_ok() {
                assert_eq!(&buf[..2], &[0x40, 2], "only PUBACKs come back");
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let total = 100u16;
    let mut most_live_unacked = 0u64;
    for n in 1..=total {
        let frame = publish(
            4,
            1,
            false,
            n,
            "sensors/paced-1/temperature",
            n.to_string().as_bytes(),
        );
        wr.write_all(&frame).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let acks = acked.load(Ordering::SeqCst);
        let live = gw.store().read_from(0, 10_000).unwrap();
        let live = live
            .iter()
            .filter(|r| r.device_id.as_deref() == Some("paced-1"));
        let live = live.count() as u64;
        let stored = history(gw.store(), "paced-1").len() as u64;
        assert!(stored >= acks, "{acks} PUBACKed but only {stored} stored");
        most_live_unacked = most_live_unacked.max(live - acks);
    }
    assert!(
        most_live_unacked >= 10,
        "readings were live before their PUBACK (at most {most_live_unacked} at once)"
    );
    eventually(
        "every PUBACK after the durable commit",
        Duration::from_secs(30),
        || (acked.load(Ordering::SeqCst) == u64::from(total)).then_some(()),
    )
    .await;
    let body = metrics(&gw);
    assert!(
        counter(&body, "edge_gateway_store_durable_commits_total") >= 1.0,
        "{body}"
    );
    // The metrics recorder is shared by every in-process gateway of this test binary, so only
    // a lower bound holds here while other tests run.
    assert!(
        counter(&body, "edge_gateway_readings_accepted_total") >= f64::from(total),
        "accepted once durable"
    );
    drop(wr);
    reader.abort();
    gw.stop().await.unwrap();
}
