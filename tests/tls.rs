//! TLS against real peers with certificates made by `openssl` (common::certs): redis-server
//! with a TLS port (mTLS required), tansu behind socat's TLS terminator, mosquitto with a TLS
//! listener as the site broker. Certificate problems (expired, unknown CA, wrong name, a
//! client certificate the server does not accept) must show in /health in plain words; bad
//! TLS files must stop the start with the key and where it was set.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::certs::{Certs, Pair};
use common::tls_peers::{TlsMosquitto, TlsRedis, TlsTerminator};
use common::upstream::KafkaBroker;
use common::*;
use edge_gateway::config::{Config, DeliveryConfig, RedisMode};
use edge_gateway::health::SinkHealth;
use edge_gateway::tls::ClientTls;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rumqttc::QoS;
use serde_json::Value;

fn quick_delivery() -> DeliveryConfig {
    DeliveryConfig {
        batch_max_records: 100,
        linger_ms: 2,
        request_timeout_ms: 3_000,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
        max_records_per_sec: 0,
    }
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// A gateway whose Redis sink (streams) speaks TLS to `port`, trusting `certs.ca()`, with
/// `client` as its certificate when given.
fn redis_config(certs: &Certs, port: u16, client: Option<Pair>) -> Config {
    let mut c = test_config();
    let r = &mut c.sinks.redis;
    r.host = "127.0.0.1".into();
    r.port = port;
    r.mode = RedisMode::Stream;
    r.delivery = quick_delivery();
    r.tls = true;
    r.ca_file = path(&certs.ca());
    if let Some(pair) = client {
        r.client_cert_file = path(&pair.cert);
        r.client_key_file = path(&pair.key);
    }
    c
}

fn sink(gw: &edge_gateway::Gateway, name: &str) -> Arc<SinkHealth> {
    gw.health()
        .sinks
        .iter()
        .find(|s| s.name == name)
        .expect("sink configured")
        .clone()
}

/// Publishes `n` readings for `device` and waits for their PUBACKs (stored).
async fn publish_readings(
    gw: &edge_gateway::Gateway,
    mqtt: std::net::SocketAddr,
    device: &str,
    n: u64,
) {
    let (client, mut acks) = mqtt_client(mqtt, &format!("pub-{device}")).await;
    for i in 0..n {
        let payload = format!(r#"{{"value": {i}}}"#);
        let topic = format!("sensors/{device}/temperature");
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    acks.wait_for(|a| *a >= n).await.unwrap();
    let _ = gw;
}

/// Waits until the sink is connected and has sent everything stored.
async fn drained(gw: &edge_gateway::Gateway, name: &str) {
    let store = gw.store().clone();
    let s = sink(gw, name);
    eventually(
        &format!("{name} sink drained"),
        Duration::from_secs(30),
        || {
            let next = store.next_seq().unwrap();
            (s.connected() && s.cursor.load(Ordering::Relaxed) >= next).then_some(())
        },
    )
    .await;
}

/// The sink's entry in /health once it has failed at least twice (retried with backoff) and
/// its error names `naming`; the last entry seen after 40 s otherwise. On a loaded machine an
/// attempt can time out before the handshake, and then its error says only that.
async fn failed_sink(gw: &edge_gateway::Gateway, name: &str, naming: &str) -> Value {
    let s = sink(gw, name);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if s.errors.load(Ordering::Relaxed) >= 2 {
            let (_, body) = http_get(gw.http_addr(), "/health");
            let health: Value = serde_json::from_str(&body).unwrap();
            last = health["components"]["sinks"][name].clone();
            if last["error"].as_str().unwrap_or_default().contains(naming) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_mtls_delivers_and_refuses_a_foreign_client_certificate() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs.pair("server"), &certs.ca(), true);

    let dir = tempfile::tempdir().unwrap();
    let config = redis_config(&certs, redis.tls_port, Some(certs.pair("client")));
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    publish_readings(&gw, mqtt, "tls-a", 10).await;
    drained(&gw, "redis").await;
    assert_eq!(redis.stream_len("sensor-readings"), 10);
    gw.stop().await.unwrap();

    // A client certificate from a CA the server does not trust: refused, nothing delivered,
    // retried with backoff, named in /health.
    let dir = tempfile::tempdir().unwrap();
    let config = redis_config(&certs, redis.tls_port, Some(certs.pair("rogue-client")));
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    publish_readings(&gw, mqtt, "tls-rogue", 3).await;
    let entry = failed_sink(&gw, "redis", "refused our client certificate").await;
    assert_eq!(entry["connected"], false, "{entry}");
    assert_eq!(entry["status"], "down", "{entry}");
    let error = entry["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("refused our client certificate"), "{entry}");
    assert_eq!(sink(&gw, "redis").sent.load(Ordering::Relaxed), 0);
    assert_eq!(
        redis.stream_len("sensor-readings"),
        10,
        "rogue client delivered"
    );
    gw.stop().await.unwrap();
}

/// The `transition` of each entry in the `alarm-events` stream, read on the plain port.
fn alarm_transitions(redis: &TlsRedis) -> Vec<String> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("alarm-events")
        .arg("-")
        .arg("+")
        .query(&mut redis.plain())
        .unwrap();
    entries
        .ids
        .iter()
        .map(|e| {
            let data: String = e.get("data").unwrap();
            let v: Value = serde_json::from_str(&data).unwrap();
            v["transition"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_commands_come_over_the_sinks_mtls_link() {
    let certs = Certs::make();
    // The TLS port wants our client certificate: a plain-text command link gets nothing.
    let redis = TlsRedis::start(&certs.pair("server"), &certs.ca(), true);
    let dir = tempfile::tempdir().unwrap();
    let config = redis_config(&certs, redis.tls_port, Some(certs.pair("client")));
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let _client = published_acked(mqtt, "tls-alarm", "tls-alarm", "40").await;
    eventually("the raise upstream", Duration::from_secs(30), || {
        (alarm_transitions(&redis) == ["raise"]).then_some(())
    })
    .await;

    // The centre writes on the plain port; the gateway reads the stream over mTLS ...
    let ack = r#"{"command":"ack","alarmId":"tls-alarm/temperature/threshold","user":"ops"}"#;
    let _: String = redis::cmd("XADD")
        .arg("gateway-commands:test-gw")
        .arg("*")
        .arg("data")
        .arg(ack)
        .query(&mut redis.plain())
        .unwrap();
    eventually("the ack upstream", Duration::from_secs(30), || {
        (alarm_transitions(&redis) == ["raise", "ack"]).then_some(())
    })
    .await;
    // ... and is subscribed to the channel over mTLS.
    let shelve = r#"{"command":"shelve","alarmId":"tls-alarm/temperature/threshold","minutes":5,"reason":"pm"}"#;
    eventually("the channel subscribed", Duration::from_secs(30), || {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("gateway-commands:test-gw")
            .arg(shelve)
            .query(&mut redis.plain())
            .unwrap();
        (receivers > 0).then_some(())
    })
    .await;
    eventually("the shelve upstream", Duration::from_secs(30), || {
        (alarm_transitions(&redis) == ["raise", "ack", "shelve"]).then_some(())
    })
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_problems_are_named_in_health() {
    let certs = Certs::make();
    let cases = [
        ("expired-server", "has expired"),
        ("unknown-ca-server", "unknown CA"),
        (
            "wrong-name-server",
            "but for elsewhere.example (set server_name",
        ),
    ];
    for (pair, words) in cases {
        let redis = TlsRedis::start(&certs.pair(pair), &certs.ca(), false);
        let dir = tempfile::tempdir().unwrap();
        let gw = start(redis_config(&certs, redis.tls_port, None), dir.path()).await;
        let entry = failed_sink(&gw, "redis", words).await;
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{pair}: {entry}");
        assert!(
            error.starts_with("TLS: the server's certificate"),
            "{pair}: {entry}"
        );
        assert_eq!(entry["status"], "down", "{pair}: {entry}");
        gw.stop().await.unwrap();
    }

    // The wrong-name certificate is accepted once server_name names what it carries.
    let redis = TlsRedis::start(&certs.pair("wrong-name-server"), &certs.ca(), false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = redis_config(&certs, redis.tls_port, None);
    config.sinks.redis.server_name = "elsewhere.example".into();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    publish_readings(&gw, mqtt, "tls-named", 4).await;
    drained(&gw, "redis").await;
    assert_eq!(redis.stream_len("sensor-readings"), 4);
    gw.stop().await.unwrap();
}

/// An rskafka client through the TLS terminator on `port`, trusting `certs.ca()`.
async fn tls_kafka_client(certs: &Certs, port: u16) -> Client {
    let tls = ClientTls {
        ca_file: Some(certs.ca()),
        ..ClientTls::default()
    };
    let setup = edge_gateway::tls::client_config(&tls).unwrap();
    let build = ClientBuilder::new(vec![format!("127.0.0.1:{port}")])
        .backoff_config(upstream::kafka_backoff(Duration::from_secs(10)))
        .tls_config(setup.config)
        .build();
    tokio::time::timeout(Duration::from_secs(20), build)
        .await
        .expect("TLS kafka client within 20 s")
        .expect("TLS kafka client")
}

/// Records in `topic`, fetched from every partition.
async fn kafka_count(client: &Client, topic: &str, partitions: i32) -> usize {
    let mut n = 0;
    for p in 0..partitions {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let high = pc.get_offset(OffsetAt::Latest).await.unwrap();
        let mut offset = pc.get_offset(OffsetAt::Earliest).await.unwrap();
        while offset < high {
            let (records, _) = pc
                .fetch_records(offset, 1..10_000_000, 1_000)
                .await
                .unwrap();
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            n += records.len();
            offset = last + 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_through_a_tls_terminator() {
    let certs = Certs::make();
    let tls_port = free_port();
    let kafka = KafkaBroker::start_advertising(tls_port).await;
    let _terminator = TlsTerminator::start_on(tls_port, &certs.pair("server"), kafka.port());
    let client = tls_kafka_client(&certs, tls_port).await;
    let controller = client.controller_client().unwrap();
    for (topic, partitions) in [
        ("sensors-data", 2),
        ("device-status", 1),
        ("alerts", 1),
        ("alarm-events", 1),
    ] {
        controller
            .create_topic(topic, partitions, 1, 5_000)
            .await
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    let k = &mut config.sinks.kafka;
    k.brokers = vec![format!("127.0.0.1:{tls_port}")];
    k.delivery = quick_delivery();
    k.tls = true;
    k.ca_file = path(&certs.ca());
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    publish_readings(&gw, mqtt, "tls-k", 12).await;
    drained(&gw, "kafka").await;
    assert_eq!(kafka_count(&client, "sensors-data", 2).await, 12);
    gw.stop().await.unwrap();

    // The same broker behind a certificate from a CA we do not trust: rskafka flattens the
    // handshake error into text; the verifier's note still names it.
    let untrusted = TlsTerminator::start(&certs.pair("unknown-ca-server"), kafka.port());
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    let k = &mut config.sinks.kafka;
    k.brokers = vec![format!("127.0.0.1:{}", untrusted.port)];
    k.delivery = quick_delivery();
    k.tls = true;
    k.ca_file = path(&certs.ca());
    let gw = start(config, dir.path()).await;
    let entry = failed_sink(&gw, "kafka", "unknown CA").await;
    assert!(
        entry["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown CA"),
        "{entry}"
    );
    gw.stop().await.unwrap();
}

/// Publishes on the broker's plain listener until the gateway stored a reading of `device`.
async fn site_reading_arrives(gw: &edge_gateway::Gateway, broker_port: u16, device: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker_port.to_string()])
            .args([
                "-t",
                &format!("sensors/{device}/temperature"),
                "-m",
                "21.5",
                "-q",
                "1",
            ])
            .status()
            .expect("mosquitto_pub (apt install mosquitto-clients)");
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !history(gw.store(), device).is_empty() {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_broker_over_mtls() {
    let certs = Certs::make();
    let broker = TlsMosquitto::start(&certs.pair("server"), &certs.ca(), true);
    let site = |client: &str| {
        let mut c = test_config();
        let s = &mut c.site_mqtt;
        s.endpoint = format!("localhost:{}", broker.tls_port);
        s.backoff_initial_ms = 100;
        s.backoff_max_ms = 500;
        s.tls = true;
        s.ca_file = path(&certs.ca());
        s.client_cert_file = path(&certs.pair(client).cert);
        s.client_key_file = path(&certs.pair(client).key);
        c
    };
    let dir = tempfile::tempdir().unwrap();
    let gw = start(site("client"), dir.path()).await;
    assert!(
        site_reading_arrives(&gw, broker.plain_port, "site-tls").await,
        "no reading over the TLS site link; mosquitto log:\n{}",
        broker.log()
    );
    let (_, body) = http_get(gw.http_addr(), "/health");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        health["components"]["siteMqtt"]["status"], "healthy",
        "{body}"
    );
    gw.stop().await.unwrap();

    // A client certificate the broker does not trust: nothing arrives.
    let dir = tempfile::tempdir().unwrap();
    let gw = start(site("rogue-client"), dir.path()).await;
    for _ in 0..5 {
        let _ = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.plain_port.to_string()])
            .args(["-t", "sensors/site-rogue/temperature", "-m", "1", "-q", "1"])
            .status();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(history(gw.store(), "site-rogue").is_empty());
    let link = site_mqtt_health(&gw).await;
    assert_eq!(link["status"], "down", "{link}");
    let error = link["error"].as_str().unwrap_or_default();
    assert!(error.contains("refused our client certificate"), "{link}");
    gw.stop().await.unwrap();

    // A broker certificate from a CA we do not trust: named in /health.
    let untrusted = TlsMosquitto::start(&certs.pair("unknown-ca-server"), &certs.ca(), false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = site("client");
    config.site_mqtt.endpoint = format!("localhost:{}", untrusted.tls_port);
    let gw = start(config, dir.path()).await;
    let site = site_mqtt_health(&gw).await;
    assert!(
        site["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown CA"),
        "{site}"
    );
    gw.stop().await.unwrap();
}

/// `components.siteMqtt` of /health once the link failed with something other than "not
/// connected yet".
async fn site_mqtt_health(gw: &edge_gateway::Gateway) -> Value {
    let http = gw.http_addr();
    eventually(
        "a site MQTT failure in /health",
        Duration::from_secs(30),
        || {
            let (_, body) = http_get(http, "/health");
            let health: Value = serde_json::from_str(&body).ok()?;
            let site = health["components"]["siteMqtt"].clone();
            let error = site["error"].as_str()?;
            (error != "not connected yet").then_some(site)
        },
    )
    .await
}

#[test]
fn bad_tls_files_stop_the_start_naming_key_and_line() {
    let certs = Certs::make();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let ca = path(&certs.ca());
    let client = certs.pair("client");
    let cases = [
        (
            format!(
                "[sinks.redis]\nhost = \"h\"\ntls = true\nca_file = \"{}/missing.pem\"\n",
                path(dir.path())
            ),
            "sinks.redis.ca_file",
            "missing.pem",
        ),
        (
            format!(
                "[sinks.kafka]\nbrokers = [\"h:9093\"]\ntls = true\nca_file = \"{}\"\n",
                path(&junk)
            ),
            "sinks.kafka.ca_file",
            "holds no PEM certificate",
        ),
        (
            format!(
                "[site_mqtt]\nendpoint = \"h:8883\"\ntls = true\nclient_cert_file = \"{}\"\n",
                path(&client.cert)
            ),
            "site_mqtt.client_cert_file",
            "without client_key_file",
        ),
        (
            format!("[site_mqtt]\nendpoint = \"h:8883\"\nca_file = \"{ca}\"\n"),
            "site_mqtt.ca_file",
            "tls = false",
        ),
        (
            format!(
                "[sinks.redis]\nhost = \"h\"\ntls = true\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                path(&client.cert),
                path(&certs.pair("server").key)
            ),
            "sinks.redis.client_key_file",
            "does not belong to the certificate",
        ),
        (
            format!("[server]\ntls_cert_file = \"{}\"\n", path(&client.cert)),
            "server.tls_cert_file",
            "without tls_key_file",
        ),
        (
            "[mqtt]\ntls_listen = \"127.0.0.1:8883\"\n".to_string(),
            "mqtt.tls_listen",
            "needs mqtt.tls_cert_file",
        ),
        (
            format!(
                "[mqtt]\ntls_listen = \"127.0.0.1:8883\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                path(&junk),
                path(&client.key)
            ),
            "mqtt.tls_cert_file",
            "holds no PEM certificate",
        ),
    ];
    for (toml, key, words) in cases {
        let file = dir.path().join("gw.toml");
        std::fs::write(&file, &toml).unwrap();
        let err = edge_gateway::config::load(Some(&file), Vec::<(String, String)>::new())
            .expect_err(&toml)
            .to_string();
        assert!(err.contains(&format!("`{key}`")), "{toml}\n→ {err}");
        assert!(err.contains("gw.toml:"), "no file:line in {err}");
        assert!(err.contains(words), "{toml}\n→ {err}");
    }
}

/// A TLS connection to `addr` trusting `certs.ca()`, checking the certificate for
/// `server_name` (default: the address).
async fn tls_connect(
    addr: std::net::SocketAddr,
    certs: &Certs,
    server_name: Option<&str>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tls = ClientTls {
        ca_file: Some(certs.ca()),
        server_name: server_name.map(str::to_string),
        ..ClientTls::default()
    };
    let setup = edge_gateway::tls::client_config(&tls).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let connect = tokio_rustls::TlsConnector::from(setup.config).connect(name, tcp);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(setup
            .problems
            .take()
            .map_or(e.to_string(), |p| p.to_string())),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

/// GET `path` over HTTPS: (status, body), or why the TLS connection failed.
async fn https_get(
    addr: std::net::SocketAddr,
    certs: &Certs,
    server_name: Option<&str>,
    path: &str,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tls_connect(addr, certs, server_name).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(raw.clone())?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A Socket.IO v4 client over WSS, connected and subscribed to every device.
async fn wss_socketio(addr: std::net::SocketAddr, certs: &Certs) -> Wss {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tls = tls_connect(addr, certs, None)
        .await
        .expect("TLS to the dashboard port");
    let url = format!("wss://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket over TLS");
    let open = ws.next().await.expect("engine.io open").expect("websocket");
    assert!(open.to_text().unwrap_or("").starts_with('0'), "{open:?}");
    ws.send(Message::text("40")).await.unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if m.to_text().unwrap_or("").starts_with("40") {
            break;
        }
    }
    ws.send(Message::text("42[\"subscribe-all-devices\"]"))
        .await
        .unwrap();
    ws
}

/// Waits for an event frame that mentions `needle`, answering pings.
async fn wss_sees(ws: &mut Wss, needle: &str) -> bool {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await
        else {
            continue;
        };
        let text = msg.to_text().unwrap_or("");
        if text == "2" {
            let _ = ws.send(Message::text("3")).await;
        } else if text.starts_with("42") && text.contains(needle) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_over_https_and_wss_with_a_certificate_reloaded_from_disk() {
    let certs = Certs::make();
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    let install = |pair: Pair| {
        std::fs::copy(&pair.cert, &cert).unwrap();
        std::fs::copy(&pair.key, &key).unwrap();
    };
    install(certs.pair("server"));
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.server.tls_cert_file = path(&cert);
    config.server.tls_key_file = path(&key);
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let http = gw.http_addr();

    let (code, body) = https_get(http, &certs, None, "/health")
        .await
        .expect("HTTPS");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"components\""), "{body}");
    assert_eq!(
        try_http_get(http, "/health"),
        None,
        "plain HTTP answered on the TLS port"
    );

    let mut ws = wss_socketio(http, &certs).await;
    publish_readings(&gw, mqtt, "wss-a", 1).await;
    assert!(wss_sees(&mut ws, "wss-a").await, "no reading over WSS");

    // A new certificate on disk is used for new connections within the poll; the open
    // websocket keeps working.
    install(certs.pair("wrong-name-server"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match https_get(http, &certs, None, "/health").await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => panic!("the new certificate was not loaded within 20 s"),
        }
    };
    assert!(refused.contains("set server_name"), "{refused}");
    let named = https_get(http, &certs, Some("elsewhere.example"), "/health").await;
    assert_eq!(named.map(|(code, _)| code), Ok(200));
    publish_readings(&gw, mqtt, "wss-b", 1).await;
    assert!(
        wss_sees(&mut ws, "wss-b").await,
        "the open websocket stopped after the reload"
    );
    gw.stop().await.unwrap();
}

/// mosquitto_pub over TLS to `port` trusting `ca`; true when it exited 0 (QoS 1: PUBACKed,
/// so stored).
fn mosquitto_pub_tls(port: u16, ca: &std::path::Path, topic: &str, version: &str) -> bool {
    std::process::Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port.to_string(), "-V", version])
        .arg("--cafile")
        .arg(ca)
        .args(["-t", topic, "-m", "21.5", "-q", "1"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("mosquitto_pub (apt install mosquitto-clients)")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_publish_over_mqtt_tls() {
    let certs = Certs::make();
    let server = certs.pair("server");
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    let tls_port = free_port();
    config.mqtt.tls_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], tls_port)));
    config.mqtt.tls_cert_file = path(&server.cert);
    config.mqtt.tls_key_file = path(&server.key);
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;

    let ca = certs.ca();
    let pub_tls = move |topic: &'static str, version: &'static str| {
        let ca = ca.clone();
        tokio::task::spawn_blocking(move || mosquitto_pub_tls(tls_port, &ca, topic, version))
    };
    assert!(
        pub_tls("sensors/tls-dev/temperature", "mqttv311")
            .await
            .unwrap()
    );
    assert!(
        pub_tls("sensors/tls-dev5/temperature", "mqttv5")
            .await
            .unwrap()
    );
    assert_eq!(history(gw.store(), "tls-dev").len(), 1);
    assert_eq!(history(gw.store(), "tls-dev5").len(), 1);
    // The plain listener is unchanged.
    publish_readings(&gw, mqtt, "plain-dev", 1).await;

    // A device that trusts another CA does not get through.
    let other = certs.other_ca();
    let refused = tokio::task::spawn_blocking(move || {
        mosquitto_pub_tls(
            tls_port,
            &other,
            "sensors/tls-other/temperature",
            "mqttv311",
        )
    })
    .await
    .unwrap();
    assert!(
        !refused,
        "a publish over TLS to an untrusted certificate succeeded"
    );
    assert!(history(gw.store(), "tls-other").is_empty());
    gw.stop().await.unwrap();
}

#[test]
fn sighup_reloads_the_listener_certificate_and_the_binary_keeps_running() {
    let certs = Certs::make();
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("mqtt.pem"), files.path().join("mqtt.key"));
    let install = |pair: Pair| {
        std::fs::copy(&pair.cert, &cert).unwrap();
        std::fs::copy(&pair.key, &key).unwrap();
    };
    install(certs.pair("server"));
    let tls_port = free_port();
    let listen = format!("127.0.0.1:{tls_port}");
    let mut gw = common::binary::GatewayProcess::start(&[
        ("LOG_LEVEL", "info"),
        ("EDGE_GATEWAY_MQTT__TLS_LISTEN", &listen),
        ("EDGE_GATEWAY_MQTT__TLS_CERT_FILE", &path(&cert)),
        ("EDGE_GATEWAY_MQTT__TLS_KEY_FILE", &path(&key)),
    ]);
    let ca = certs.ca();
    assert!(mosquitto_pub_tls(
        tls_port,
        &ca,
        "sensors/hup-a/temperature",
        "mqttv311"
    ));

    // Files unchanged: only SIGHUP reloads (the poll would not), and the process lives on.
    let reloads = || gw.peer.log().matches("TLS certificate reloaded").count();
    assert_eq!(reloads(), 0);
    gw.peer.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reloads() == 0 {
        assert!(
            Instant::now() < deadline,
            "no reload after SIGHUP: {}",
            gw.peer.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gw.peer.exited().is_none(), "SIGHUP ended the gateway");
    assert!(mosquitto_pub_tls(
        tls_port,
        &ca,
        "sensors/hup-b/temperature",
        "mqttv5"
    ));

    // A pair that does not load (the key of another certificate) is refused; the old one stays.
    std::fs::copy(certs.pair("client").key, &key).unwrap();
    gw.peer.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.peer.log().contains("TLS certificate not reloaded") {
        assert!(
            Instant::now() < deadline,
            "bad pair not reported: {}",
            gw.peer.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(mosquitto_pub_tls(
        tls_port,
        &ca,
        "sensors/hup-c/temperature",
        "mqttv311"
    ));
}
