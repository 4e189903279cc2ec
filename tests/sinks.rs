//! Upstream store-and-forward against real servers: redis-server (Debian) and a Kafka-protocol
//! broker (tansu), started on free loopback ports by `common::upstream`. Outages are real: the
//! Redis server is stopped and started again, the broker is frozen (SIGSTOP) and thawed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::binary::{GatewayProcess, gateway_command};
use common::peer::PeerProcess;
use common::upstream::{KafkaBroker, RedisServer};
use common::*;
use edge_gateway::config::{Config, DeliveryConfig, KafkaCompression, RedisMode};
use edge_gateway::health::SinkHealth;
use edge_gateway::record::RecordKind;
use edge_gateway::store::Store;
use rumqttc::QoS;
use serde_json::Value;

const READING_KEYS: [&str; 9] = [
    "deviceId",
    "gatewayId",
    "location",
    "sensorType",
    "seq",
    "status",
    "timestamp",
    "unit",
    "value",
];

fn quick_delivery(batch: usize) -> DeliveryConfig {
    DeliveryConfig {
        batch_max_records: batch,
        linger_ms: 2,
        request_timeout_ms: 2_000,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
        max_records_per_sec: 0,
    }
}

fn with_redis(mut c: Config, redis: &RedisServer, mode: RedisMode) -> Config {
    c.sinks.redis.host = "127.0.0.1".into();
    c.sinks.redis.port = redis.port();
    c.sinks.redis.password = redis.password().unwrap_or_default().into();
    c.sinks.redis.mode = mode;
    c.sinks.redis.delivery = quick_delivery(500);
    c
}

fn with_kafka(mut c: Config, kafka: &KafkaBroker) -> Config {
    c.sinks.kafka.brokers = vec![kafka.addr()];
    c.sinks.kafka.delivery = quick_delivery(500);
    c
}

async fn reference_topics(kafka: &KafkaBroker) {
    kafka.create_topic("sensors-data", 3).await;
    kafka.create_topic("device-status", 2).await;
    kafka.create_topic("alerts", 1).await;
    kafka.create_topic("alarm-events", 1).await;
}

fn sink<'a>(gw: &'a edge_gateway::Gateway, name: &str) -> &'a Arc<SinkHealth> {
    gw.health()
        .sinks
        .iter()
        .find(|s| s.name == name)
        .expect("sink configured")
}

/// Waits until the sink is connected and has sent everything the store holds.
async fn drained(gw: &edge_gateway::Gateway, name: &str, timeout: Duration) {
    let store = gw.store().clone();
    let s = sink(gw, name).clone();
    eventually(&format!("{name} sink drained"), timeout, || {
        let next = store.next_seq().unwrap();
        (s.connected() && s.cursor.load(Ordering::Relaxed) >= next).then_some(())
    })
    .await;
}

/// Every stored record of `kind` as (seq, deviceId).
fn stored(store: &Store, kind: RecordKind) -> Vec<(u64, String)> {
    store
        .read_raw(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == kind)
        .map(|r| (r.seq, r.device_id))
        .collect()
}

/// Checks an upstream's (seq, deviceId) sequence against what the store holds: every record
/// present, order per device kept (duplicates aside), at most `max_dups` duplicates.
fn check_delivery(what: &str, got: &[(u64, String)], want: &[(u64, String)], max_dups: usize) {
    let want_seqs: BTreeSet<u64> = want.iter().map(|(s, _)| *s).collect();
    let got_seqs: BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
    let missing: Vec<_> = want_seqs.difference(&got_seqs).take(10).collect();
    assert!(
        missing.is_empty(),
        "{what}: missing seqs {missing:?} (of {})",
        want.len()
    );
    let extra: Vec<_> = got_seqs.difference(&want_seqs).take(10).collect();
    assert!(extra.is_empty(), "{what}: unknown seqs {extra:?}");
    let dups = got.len() - got_seqs.len();
    assert!(
        dups <= max_dups,
        "{what}: {dups} duplicates (allowed {max_dups})"
    );
    // Per device, first occurrences come in seq order; a duplicate is a re-send of an
    // in-flight batch, which never brings an older record after a newer *new* one.
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (seq, dev) in got {
        if !seen.insert(*seq) {
            continue;
        }
        if let Some(prev) = last.insert(dev.as_str(), *seq) {
            assert!(
                prev < *seq,
                "{what}: device {dev} got seq {seq} after {prev}"
            );
        }
    }
}

fn seq_and_device(json: &Value) -> (u64, String) {
    (
        json["seq"].as_u64().expect("seq"),
        json["deviceId"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_reference_json_to_redis_channels_and_kafka_topics() {
    let redis = RedisServer::start(Some("s3cret"));
    let kafka = KafkaBroker::start().await;
    reference_topics(&kafka).await;
    let sub = redis.subscribe(&["sensor-readings", "device-status", "alerts"]);

    let dir = tempfile::tempdir().unwrap();
    let config = with_kafka(
        with_redis(test_config(), &redis, RedisMode::Publish),
        &kafka,
    );
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (client, mut acks) = mqtt_client(mqtt, "fwd").await;
    let devices = ["fwd-a", "fwd-b", "fwd-c", "fwd-d"];
    for i in 0..20 {
        for d in devices {
            let payload = format!(r#"{{"value": {i}, "location": "Line 3"}}"#);
            client
                .publish(
                    format!("sensors/{d}/temperature"),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .unwrap();
        }
    }
    // Over the critical threshold: a stored alert.
    client
        .publish("sensors/fwd-a/temperature", QoS::AtLeastOnce, false, "50.5")
        .await
        .unwrap();
    acks.wait_for(|n| *n >= 81).await.unwrap();
    eventually("81 readings stored", Duration::from_secs(10), || {
        (stored(gw.store(), RecordKind::Reading).len() == 81).then_some(())
    })
    .await;
    drained(&gw, "redis", Duration::from_secs(20)).await;
    drained(&gw, "kafka", Duration::from_secs(30)).await;

    // Redis: the reference JSON on the reference channels.
    let msgs = eventually("redis messages", Duration::from_secs(10), || {
        let m = sub.messages();
        (m.iter().filter(|(c, _)| c == "sensor-readings").count() >= 81).then_some(m)
    })
    .await;
    let on = |channel: &str| -> Vec<Value> {
        msgs.iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, p)| serde_json::from_str(p).expect("JSON payload"))
            .collect()
    };
    let readings = on("sensor-readings");
    for r in &readings {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, READING_KEYS);
        assert_eq!(r["gatewayId"], "test-gw");
        assert_eq!(r["location"], "Line 3");
    }
    let want = stored(gw.store(), RecordKind::Reading);
    let got: Vec<_> = readings.iter().map(seq_and_device).collect();
    check_delivery("redis sensor-readings", &got, &want, 0);
    let statuses = on("device-status");
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert!(statuses.iter().all(|s| s["status"] == "online"));
    let alerts = on("alerts");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["threshold"]["current"], 50.5);

    // Kafka: key = deviceId, headers gateway-id / seq, one partition per device.
    let records = kafka.read_all("sensors-data").await;
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut got = Vec::new();
    let mut by_partition: BTreeMap<i32, Vec<&common::upstream::KafkaRecord>> = BTreeMap::new();
    for r in &records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for part in by_partition.values_mut() {
        part.sort_by_key(|r| r.offset);
        for r in part.iter() {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            let dev = v["deviceId"].as_str().unwrap().to_string();
            assert_eq!(r.key.as_deref(), Some(dev.as_bytes()));
            assert_eq!(r.headers["gateway-id"], b"test-gw");
            assert_eq!(
                r.headers["seq"],
                v["seq"].as_u64().unwrap().to_string().as_bytes()
            );
            let p = *partition_of.entry(dev.clone()).or_insert(r.partition);
            assert_eq!(p, r.partition, "device {dev} spread over partitions");
            got.push(seq_and_device(&v));
        }
    }
    check_delivery("kafka sensors-data", &got, &want, 0);
    assert_eq!(kafka.read_all("device-status").await.len(), 4);
    assert_eq!(kafka.read_all("alerts").await.len(), 1);

    let (code, body) = http_get(gw.http_addr(), "/health");
    assert_eq!(code, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    for name in ["redis", "kafka"] {
        let s = &health["components"]["sinks"][name];
        assert_eq!(s["status"], "healthy", "{body}");
        assert_eq!(s["lagRecords"], 0, "{body}");
        assert_eq!(s["droppedUnsent"], 0, "{body}");
        assert!(s["sent"].as_u64().unwrap() >= 86, "{body}");
    }
    assert_eq!(health["status"], "healthy");
    gw.stop().await.unwrap();
}

/// Publishes readings for `devices` round-robin at about `per_sec` until `stop` is set.
fn steady_ingest(
    client: rumqttc::AsyncClient,
    devices: Vec<String>,
    per_sec: u64,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_sec));
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let d = &devices[(i as usize) % devices.len()];
            let payload = format!(r#"{{"value": {}}}"#, i % 30);
            client
                .publish(
                    format!("sensors/{d}/vibration"),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .unwrap();
            i += 1;
            published.store(i, Ordering::Relaxed);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_recovery_lose_nothing_and_keep_device_order() {
    let mut redis = RedisServer::start(None);
    let mut kafka = KafkaBroker::start().await;
    reference_topics(&kafka).await;
    let dir = tempfile::tempdir().unwrap();
    let config = with_kafka(with_redis(test_config(), &redis, RedisMode::Stream), &kafka);
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let dashboard = SocketIoEvents::connect(gw.http_addr()).await;
    let (client, mut acks) = mqtt_client(mqtt, "steady").await;
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let devices: Vec<String> = (0..6).map(|i| format!("out-{i}")).collect();
    let ingest = steady_ingest(client, devices, 300, stop.clone(), published.clone());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.stop();
    kafka.pause();
    eventually("both sinks down", Duration::from_secs(15), || {
        (!sink(&gw, "redis").connected() && !sink(&gw, "kafka").connected()).then_some(())
    })
    .await;
    let (_, body) = http_get(gw.http_addr(), "/health");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded", "{body}");
    assert_eq!(health["components"]["sinks"]["redis"]["connected"], false);
    assert!(health["components"]["sinks"]["redis"]["error"].is_string());
    // Records keep being accepted and wait in the store.
    let during = stored(gw.store(), RecordKind::Reading).len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(stored(gw.store(), RecordKind::Reading).len() > during + 300);
    assert!(sink(&gw, "redis").lag_records.load(Ordering::Relaxed) > 300);

    redis.start_again();
    kafka.resume();
    eventually("both sinks back", Duration::from_secs(20), || {
        (sink(&gw, "redis").connected() && sink(&gw, "kafka").connected()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    ingest.await.unwrap();
    let n = published.load(Ordering::Relaxed);
    acks.wait_for(|a| *a >= n).await.unwrap();
    eventually("every reading stored", Duration::from_secs(10), || {
        (stored(gw.store(), RecordKind::Reading).len() as u64 == n).then_some(())
    })
    .await;
    drained(&gw, "redis", Duration::from_secs(30)).await;
    drained(&gw, "kafka", Duration::from_secs(30)).await;

    let want = stored(gw.store(), RecordKind::Reading);
    // In flight when the link broke: at most one batch per sink and outage.
    let max_dups = 2 * 500;
    let stream: Vec<(u64, String)> = redis
        .xrange_all("sensor-readings")
        .into_iter()
        .map(|fields| {
            let f: BTreeMap<String, String> = fields.into_iter().collect();
            assert_eq!(f["gatewayId"], "test-gw");
            let data: Value = serde_json::from_str(&f["data"]).unwrap();
            assert_eq!(data["seq"].to_string(), f["seq"]);
            (f["seq"].parse().unwrap(), f["deviceId"].clone())
        })
        .collect();
    check_delivery("redis stream", &stream, &want, max_dups);

    let mut records = kafka.read_all("sensors-data").await;
    records.sort_by_key(|r| (r.partition, r.offset));
    let got: Vec<(u64, String)> = records
        .iter()
        .map(|r| seq_and_device(&serde_json::from_slice(&r.value).unwrap()))
        .collect();
    check_delivery("kafka sensors-data", &got, &want, max_dups);

    // Dashboards were told: down, then recovered, for each sink.
    let alerts = dashboard.of("alert:system");
    for service in ["redis-sink", "kafka-sink"] {
        let of: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["affectedServices"][0] == service)
            .collect();
        assert!(
            of.iter().any(|a| a["severity"] == "critical"),
            "{service}: {alerts:?}"
        );
        assert!(
            of.iter().any(|a| a["severity"] == "warning"),
            "{service}: {alerts:?}"
        );
        assert!(of.iter().all(|a| a["type"] == "system"));
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_sinks_at_start_block_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.sinks.redis.host = "127.0.0.1".into();
    config.sinks.redis.port = free_port();
    config.sinks.redis.delivery = quick_delivery(100);
    config.sinks.kafka.brokers = vec![format!("localhost:{}", free_port())];
    config.sinks.kafka.delivery = quick_delivery(100);
    let mqtt = config.mqtt.listen;
    let started = std::time::Instant::now();
    let gw = start(config, dir.path()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (client, mut acks) = mqtt_client(mqtt, "offline").await;
    client
        .publish("sensors/off-1/temperature", QoS::AtLeastOnce, false, "21.5")
        .await
        .unwrap();
    acks.wait_for(|n| *n >= 1).await.unwrap();
    eventually("reading stored", Duration::from_secs(10), || {
        (stored(gw.store(), RecordKind::Reading).len() == 1).then_some(())
    })
    .await;
    let body = eventually("sink errors in /health", Duration::from_secs(10), || {
        let (code, body) = http_get(gw.http_addr(), "/health");
        let v: Value = serde_json::from_str(&body).ok()?;
        let sinks = &v["components"]["sinks"];
        // The lag is refreshed by each attempt: one that began before the reading says 0.
        let failed = |n: &str| {
            sinks[n]["errors"].as_u64().unwrap_or(0) > 0
                && sinks[n]["lagRecords"].as_u64().unwrap_or(0) >= 1
        };
        (code == 200 && failed("redis") && failed("kafka")).then_some(v)
    })
    .await;
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["components"]["store"]["status"], "healthy");
    for name in ["redis", "kafka"] {
        let s = &body["components"]["sinks"][name];
        assert_eq!(s["connected"], false);
        assert!(s["lagRecords"].as_u64().unwrap() >= 1, "{s}");
        assert!(!s["error"].as_str().unwrap().is_empty());
    }
    // Shutdown does not wait for unreachable sinks.
    let stopping = std::time::Instant::now();
    gw.stop().await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_kafka_topic_is_named_and_retried_until_created() {
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("sensors-data", 1).await;
    kafka.create_topic("device-status", 1).await;
    kafka.create_topic("alarm-events", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_kafka(test_config(), &kafka);
    // Compressed record batches are read back like plain ones.
    config.sinks.kafka.compression = KafkaCompression::Gzip;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (client, mut acks) = mqtt_client(mqtt, "topics").await;
    client
        .publish("sensors/top-1/humidity", QoS::AtLeastOnce, false, "40")
        .await
        .unwrap();
    acks.wait_for(|n| *n >= 1).await.unwrap();
    let error = eventually("missing topic reported", Duration::from_secs(20), || {
        sink(&gw, "kafka")
            .last_error()
            .filter(|e| e.contains("alerts"))
    })
    .await;
    assert!(error.contains("does not exist"), "{error}");
    assert!(error.contains("sinks.kafka.topics.alerts"), "{error}");
    kafka.create_topic("alerts", 1).await;
    drained(&gw, "kafka", Duration::from_secs(30)).await;
    let records = kafka.read_all("sensors-data").await;
    assert_eq!(records.len(), 1);
    let v: Value = serde_json::from_slice(&records[0].value).unwrap();
    assert_eq!(
        (v["deviceId"].as_str(), v["value"].as_f64()),
        (Some("top-1"), Some(40.0))
    );
    gw.stop().await.unwrap();
}

/// The records of `topic` once there are at least `n` (60 s at most).
async fn kafka_eventually(
    kafka: &KafkaBroker,
    topic: &str,
    n: usize,
) -> Vec<common::upstream::KafkaRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = kafka.read_all(topic).await;
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} records on {topic}: {}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_alarm_topic_holds_back_alarms_only_and_is_reported() {
    let kafka = KafkaBroker::start().await;
    kafka.create_topic("sensors-data", 1).await;
    kafka.create_topic("device-status", 1).await;
    kafka.create_topic("alerts", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = with_kafka(test_config(), &kafka);
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let http = gw.http_addr();
    let (client, mut acks) = mqtt_client(mqtt, "no-alarm-topic").await;
    for v in ["40", "20"] {
        client
            .publish("sensors/nat-1/temperature", QoS::AtLeastOnce, false, v)
            .await
            .unwrap();
    }
    acks.wait_for(|n| *n >= 2).await.unwrap();
    // Telemetry (and the raise on `alerts`) flows; the lane names the topic and its key.
    let readings = kafka_eventually(&kafka, "sensors-data", 2).await;
    assert_eq!(readings.len(), 2);
    let health = eventually(
        "alarm lane error in /health",
        Duration::from_secs(20),
        || {
            let (_, body) = http_get(http, "/health");
            let v: Value = serde_json::from_str(&body).ok()?;
            let kafka = v["components"]["sinks"]["kafka"].clone();
            kafka["alarmLaneError"].is_string().then_some(kafka)
        },
    )
    .await;
    let error = health["alarmLaneError"].as_str().unwrap();
    assert!(error.contains("`alarm-events` does not exist"), "{error}");
    assert!(error.contains("sinks.kafka.topics.alarm_events"), "{error}");
    assert_eq!(health["connected"], true);
    assert_eq!(health["status"], "degraded");
    assert_eq!(kafka.read_all("alerts").await.len(), 1, "the raise");

    kafka.create_topic("alarm-events", 1).await;
    let kinds: Vec<Value> = kafka_eventually(&kafka, "alarm-events", 2)
        .await
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.value).unwrap()["transition"].clone())
        .collect();
    assert_eq!(kinds, ["raise", "clear"]);
    eventually("lane error cleared", Duration::from_secs(10), || {
        sink(&gw, "kafka")
            .state()
            .eq(&edge_gateway::health::ComponentState::Healthy)
            .then_some(())
    })
    .await;
    gw.stop().await.unwrap();
}

/// The gateway binary with a Redis stream sink and a Kafka sink, both paced to 2000
/// records/s so a backlog takes a few seconds to drain: time to kill -9 it half way. Returns
/// once /health answers.
fn spawn_binary(
    data: &std::path::Path,
    http: u16,
    mqtt: u16,
    redis_port: u16,
    kafka: &str,
) -> PeerProcess {
    let mut cmd = gateway_command(data, http, mqtt);
    cmd.env("EDGE_GATEWAY_GATEWAY_ID", "kill-gw")
        .env(
            "EDGE_GATEWAY_STORE__DURABLE_COMMIT_INTERVAL_MS",
            KILL_CADENCE_MS.to_string(),
        )
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis_port.to_string())
        .env("EDGE_GATEWAY_SINKS__REDIS__MODE", "stream")
        .env("KAFKA_BROKERS", kafka);
    for sink in ["REDIS", "KAFKA"] {
        for (key, value) in [
            ("BATCH_MAX_RECORDS", KILL_BATCH.to_string()),
            ("MAX_RECORDS_PER_SEC", KILL_RATE.to_string()),
            ("BACKOFF_MAX_MS", "500".into()),
            ("REQUEST_TIMEOUT_MS", "2000".into()),
        ] {
            cmd.env(
                format!("EDGE_GATEWAY_SINKS__{sink}__DELIVERY__{key}"),
                value,
            );
        }
    }
    let log = data.with_file_name("gateway.log");
    GatewayProcess::spawn(&mut cmd, &log, http)
}

fn sinks_health(http: u16) -> Option<Value> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    std::net::TcpStream::connect(addr).ok()?;
    let (_, body) = http_get(addr, "/health");
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(v["components"]["sinks"].clone())
}

/// True when `f` holds for both sinks in /health.
fn both(http: u16, f: impl Fn(&Value) -> Option<bool>) -> Option<()> {
    let s = sinks_health(http)?;
    (f(&s["redis"])? && f(&s["kafka"])?).then_some(())
}

/// The kill -9 test's sinks: records per batch and per second, and the store's durable cadence.
const KILL_BATCH: usize = 200;
const KILL_RATE: usize = 2000;
const KILL_CADENCE_MS: usize = 400;
/// Sent but not yet recorded as sent when killed: a sink's cursor rides the next durable
/// commit, so it lags the acknowledgement by up to one cadence of the drain, plus the batches
/// in flight.
const KILL_MAX_DUPS: usize = KILL_RATE * KILL_CADENCE_MS / 1000 + 3 * KILL_BATCH;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_backlog_resumes_from_the_cursor() {
    let mut redis = RedisServer::start(None);
    redis.stop();
    let mut kafka = KafkaBroker::start().await;
    reference_topics(&kafka).await;
    kafka.pause();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let (http, mqtt) = (free_port(), free_port());
    let mut child = spawn_binary(&data, http, mqtt, redis.port(), &kafka.addr());

    // A backlog while both upstreams are down.
    let mqtt_addr = std::net::SocketAddr::from(([127, 0, 0, 1], mqtt));
    let (client, mut acks) = mqtt_client(mqtt_addr, "backlog").await;
    let total = 6000u64;
    for i in 0..total {
        client
            .publish(
                format!("sensors/k9-{}/pressure", i % 5),
                QoS::AtLeastOnce,
                false,
                format!("{}", 1000 + i % 40),
            )
            .await
            .unwrap();
    }
    acks.wait_for(|n| *n >= total).await.unwrap();
    eventually("backlog stored", Duration::from_secs(30), || {
        both(http, |s| Some(s["lagRecords"].as_u64()? >= total))
    })
    .await;

    // Upstreams back: the drain runs at ~2000 records/s; kill -9 part way.
    redis.start_again();
    kafka.resume();
    eventually("drain under way", Duration::from_secs(30), || {
        both(http, |s| Some(s["sent"].as_u64()? >= 2000))
    })
    .await;
    child.kill();
    assert!(
        redis.xrange_all("sensor-readings").len() < total as usize,
        "killed before the Redis drain finished"
    );
    assert!(
        kafka.read_all("sensors-data").await.len() < total as usize,
        "killed before the Kafka drain finished"
    );

    let mut child = spawn_binary(&data, http, mqtt, redis.port(), &kafka.addr());
    // The unclean stop made the store skip the seqs its non-durable commits may have used:
    // readings after the restart come after a gap the sinks must not count as dropped.
    let (client, mut acks) = mqtt_client(mqtt_addr, "after-restart").await;
    let more = 100u64;
    for i in 0..more {
        client
            .publish(
                "sensors/k9-after/pressure",
                QoS::AtLeastOnce,
                false,
                i.to_string(),
            )
            .await
            .unwrap();
    }
    acks.wait_for(|n| *n >= more).await.unwrap();
    let total = total + more;
    eventually("drained after restart", Duration::from_secs(60), || {
        both(http, |s| {
            Some(s["connected"].as_bool()? && s["lagRecords"].as_u64()? == 0)
        })
    })
    .await;
    let dropped = both(http, |s| Some(s["droppedUnsent"].as_u64()? == 0));
    assert!(
        dropped.is_some(),
        "the skipped seqs are not counted as dropped: {:?}",
        sinks_health(http)
    );
    child.kill();

    let store = Store::open(&data).unwrap();
    let seqs: Vec<u64> = stored(&store, RecordKind::Reading)
        .iter()
        .map(|r| r.0)
        .collect();
    assert!(
        seqs.windows(2).any(|p| p[1] - p[0] > 60_000),
        "the restart after kill -9 skipped seqs"
    );
    let want = stored(&store, RecordKind::Reading);
    assert_eq!(want.len() as u64, total);
    let got: Vec<(u64, String)> = redis
        .xrange_all("sensor-readings")
        .into_iter()
        .map(|fields| {
            let f: BTreeMap<String, String> = fields.into_iter().collect();
            assert_eq!(f["gatewayId"], "kill-gw");
            (f["seq"].parse().unwrap(), f["deviceId"].clone())
        })
        .collect();
    check_delivery("redis stream after kill -9", &got, &want, KILL_MAX_DUPS);
    let records = kafka.read_all("sensors-data").await;
    for r in &records {
        assert_eq!(r.headers["gateway-id"], b"kill-gw");
    }
    let got: Vec<(u64, String)> = records
        .iter()
        .map(|r| seq_and_device(&serde_json::from_slice(&r.value).unwrap()))
        .collect();
    check_delivery("kafka after kill -9", &got, &want, KILL_MAX_DUPS);
}

/// XLEN of a Redis stream (0 when it does not exist).
fn xlen(redis: &RedisServer, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query(&mut redis.connection())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_transitions_overtake_a_telemetry_backlog() {
    const BACKLOG: u64 = 20_000;
    let mut redis = RedisServer::start(None);
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_redis(test_config(), &redis, RedisMode::Stream);
    // The catch-up is paced (10 s for the backlog), so "ahead of the backlog" is a question
    // of order, not of how fast this machine is.
    config.sinks.redis.delivery.max_records_per_sec = 2_000;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    eventually("redis sink up", Duration::from_secs(15), || {
        sink(&gw, "redis").connected().then_some(())
    })
    .await;
    redis.stop();
    let (client, mut acks) = mqtt_client(mqtt, "backlog").await;
    for i in 0..BACKLOG {
        let topic = format!("sensors/bl-{}/flow", i % 10);
        client
            .publish(topic, QoS::AtLeastOnce, false, "1")
            .await
            .unwrap();
    }
    // Then an alarm raised, escalated and cleared: stored after the whole backlog.
    for v in ["40", "50", "20"] {
        let topic = "sensors/alarm-dev/temperature";
        client
            .publish(topic, QoS::AtLeastOnce, false, v)
            .await
            .unwrap();
    }
    acks.wait_for(|a| *a >= BACKLOG + 3).await.unwrap();

    redis.start_again();
    let back = std::time::Instant::now();
    eventually(
        "alarm transitions upstream",
        Duration::from_secs(30),
        || (xlen(&redis, "alarm-events") >= 3).then_some(()),
    )
    .await;
    let took = back.elapsed();
    let readings_sent = xlen(&redis, "sensor-readings");
    eprintln!(
        "alarm lane: 3 transitions upstream {:.0} ms after the link came back, {readings_sent} of {BACKLOG} backlog readings sent by then",
        took.as_secs_f64() * 1000.0
    );
    assert!(
        readings_sent < BACKLOG,
        "the alarm transitions waited for the backlog ({readings_sent} readings sent first)"
    );
    let transitions: Vec<(u64, String)> = redis
        .xrange_all("alarm-events")
        .into_iter()
        .map(|fields| {
            let f: BTreeMap<String, String> = fields.into_iter().collect();
            let data: Value = serde_json::from_str(&f["data"]).unwrap();
            assert_eq!(data["alarmId"], "alarm-dev/temperature/threshold");
            (
                f["seq"].parse().unwrap(),
                data["transition"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let kinds: Vec<&str> = transitions.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds, ["raise", "escalate", "clear"], "in order, once each");
    assert!(transitions.windows(2).all(|w| w[0].0 < w[1].0));
    // The raise still goes to `alerts` as before, and the backlog follows in full (counted
    // by distinct `seq`: a batch that timed out on a loaded machine is sent again whole).
    drained(&gw, "redis", Duration::from_secs(60)).await;
    let distinct = |stream: &str| {
        let seqs: BTreeSet<String> = redis
            .xrange_all(stream)
            .into_iter()
            .filter_map(|f| f.into_iter().find(|(k, _)| k == "seq").map(|(_, v)| v))
            .collect();
        seqs.len() as u64
    };
    assert_eq!(distinct("sensor-readings"), BACKLOG + 3);
    assert_eq!(distinct("alerts"), 2, "raise and escalation");
    assert_eq!(distinct("alarm-events"), 3);
    gw.stop().await.unwrap();
}

/// PUBLISH `message` on `channel` until a subscriber got it (the gateway subscribes at start).
async fn publish_command(redis: &RedisServer, channel: &str, message: &str) {
    eventually(
        "the gateway subscribed to its command channel",
        Duration::from_secs(20),
        || {
            let receivers: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query(&mut redis.connection())
                .unwrap();
            (receivers > 0).then_some(())
        },
    )
    .await;
}

/// Waits until the alarm's raise and an ack by `ops-centre` (the central operator) are
/// upstream, and that they are all there is.
async fn acked_centrally_upstream(redis: &RedisServer, id: &str, within: Duration) {
    eventually("the central ack back upstream", within, || {
        (upstream_transitions(redis, id).len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        upstream_transitions(redis, id),
        [
            ("raise".into(), "active_unacked".into(), Value::Null),
            (
                "ack".into(),
                "active_acked".into(),
                Value::from("ops-centre")
            ),
        ]
    );
}

/// A device's reading over its threshold, PUBACKed, and the raise seen upstream: the MQTT
/// client (kept connected while the caller needs it) and the alarm's id.
async fn raise_upstream(
    mqtt: std::net::SocketAddr,
    device: &str,
    redis: &RedisServer,
) -> (rumqttc::AsyncClient, String) {
    let client = published_acked(mqtt, &format!("{device}-client"), device, "40").await;
    let id = format!("{device}/temperature/threshold");
    eventually("raise upstream", Duration::from_secs(20), || {
        (!upstream_transitions(redis, &id).is_empty()).then_some(())
    })
    .await;
    (client, id)
}

/// Every transition of `alarm_id` in the `alarm-events` stream as (transition, state, user).
fn upstream_transitions(redis: &RedisServer, alarm_id: &str) -> Vec<(String, String, Value)> {
    redis
        .xrange_all("alarm-events")
        .into_iter()
        .filter_map(|fields| {
            let f: BTreeMap<String, String> = fields.into_iter().collect();
            let d: Value = serde_json::from_str(&f["data"]).unwrap();
            (d["alarmId"] == alarm_id).then(|| {
                let s = |k: &str| d[k].as_str().unwrap().to_string();
                (s("transition"), s("state"), d["user"].clone())
            })
        })
        .collect()
}

/// The central-command tests count in the process-wide metrics recorder: one at a time.
static CENTRAL_COUNTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_ack_through_redis_is_applied_at_the_edge_and_comes_back_upstream() {
    let _counting = CENTRAL_COUNTERS.lock().await;
    let redis = RedisServer::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = with_redis(test_config(), &redis, RedisMode::Stream);
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let before: Vec<f64> = ["ok", "malformed", "unknown"]
        .iter()
        .map(|r| central(&gw, r))
        .collect();
    let (_client, id) = raise_upstream(mqtt, "cen-1", &redis).await;
    let id = id.as_str();

    let channel = "gateway-commands:test-gw";
    // Junk and an unknown alarm are counted and never applied.
    publish_command(&redis, channel, "not json").await;
    publish_command(
        &redis,
        channel,
        r#"{"command":"ack","alarmId":"nope/temperature/threshold"}"#,
    )
    .await;
    publish_command(
        &redis,
        channel,
        r#"{"command":"ack","alarmId":"cen-1/temperature/threshold","user":"ops-centre","comment":"seen centrally"}"#,
    )
    .await;
    acked_centrally_upstream(&redis, id, Duration::from_secs(20)).await;
    let current = gw.store().current_alarms(|_| true, 10).unwrap();
    assert_eq!(current.alarms[0]["state"], "active_acked");
    assert_eq!(current.alarms[0]["comment"], "seen centrally");
    for (result, before) in ["ok", "malformed", "unknown"].into_iter().zip(before) {
        assert_eq!(central(&gw, result), before + 1.0, "{result}");
    }
    gw.stop().await.unwrap();
}

/// XADD one entry of `fields` to `stream`; its id.
fn xadd(redis: &RedisServer, stream: &str, fields: &[(&str, &str)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    cmd.query(&mut redis.connection()).unwrap()
}

/// The central-command counter `result` in /metrics (0 when absent).
fn central(gw: &edge_gateway::Gateway, result: &str) -> f64 {
    let (_, metrics) = http_get(gw.http_addr(), "/metrics");
    let name = format!(r#"edge_gateway_alarm_actions_total{{origin="central",result="{result}"}}"#);
    metric(&metrics, &name).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_ack_added_to_the_stream_while_stopped_is_applied_once_after_start() {
    let _counting = CENTRAL_COUNTERS.lock().await;
    let redis = RedisServer::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = with_redis(test_config(), &redis, RedisMode::Stream);
    let mqtt = config.mqtt.listen;
    // Older than this gateway's store: never read.
    let stream = "gateway-commands:test-gw";
    let old = r#"{"command":"ack","alarmId":"str-1/temperature/threshold","user":"old-centre"}"#;
    let old_id = xadd(&redis, stream, &[("data", old)]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let gw = start(config.clone(), dir.path()).await;
    // The store remembers that it reads on after the stream's entries from before its start
    // (`<ms> << 20 | <n>`, see sinks/redis/commands.rs).
    let from = eventually(
        "the command position committed",
        Duration::from_secs(10),
        || gw.store().cursor("central-commands").unwrap(),
    )
    .await;
    let (ms, n) = old_id.split_once('-').unwrap();
    let old_at = (ms.parse::<u64>().unwrap() << 20) | n.parse::<u64>().unwrap();
    assert!(
        from > old_at,
        "reads from {from}, not after the old entry {old_at}"
    );
    // The metrics recorder is the test process's: counts go on across restarts here.
    let base: Vec<f64> = ["ok", "malformed"]
        .iter()
        .map(|r| central(&gw, r))
        .collect();
    let (client, id) = raise_upstream(mqtt, "str-1", &redis).await;
    let id = id.as_str();
    drop(client);
    gw.stop().await.unwrap();

    // Cut off: the centre acks, and a broken entry lands in the stream too.
    xadd(
        &redis,
        stream,
        &[(
            "data",
            r#"{"command":"ack","alarmId":"str-1/temperature/threshold","user":"ops-centre","comment":"while you were out"}"#,
        )],
    );
    xadd(&redis, stream, &[("payload", "no data field")]);
    let gw = start(config.clone(), dir.path()).await;
    acked_centrally_upstream(&redis, id, Duration::from_secs(30)).await;
    eventually("the broken entry counted", Duration::from_secs(10), || {
        (central(&gw, "malformed") == base[1] + 1.0).then_some(())
    })
    .await;
    assert_eq!(central(&gw, "ok"), base[0] + 1.0, "the ack");
    gw.stop().await.unwrap();

    // After another restart nothing old is read again; a shelve sent both ways (stream and
    // channel, one commandId) is applied once.
    let gw = start(config, dir.path()).await;
    let before: Vec<f64> = ["ok", "refused", "malformed", "duplicate"]
        .iter()
        .map(|r| central(&gw, r))
        .collect();
    let shelve = r#"{"command":"shelve","alarmId":"str-1/temperature/threshold","minutes":5,"reason":"pm","commandId":"c-42"}"#;
    xadd(&redis, stream, &[("data", shelve)]);
    publish_command(&redis, stream, shelve).await;
    eventually("the shelve upstream", Duration::from_secs(30), || {
        (upstream_transitions(&redis, id).len() == 3).then_some(())
    })
    .await;
    eventually("the second copy dropped", Duration::from_secs(10), || {
        (central(&gw, "duplicate") == before[3] + 1.0).then_some(())
    })
    .await;
    assert_eq!(upstream_transitions(&redis, id)[2].0, "shelve");
    assert_eq!(central(&gw, "ok"), before[0] + 1.0, "the shelve, once");
    let replayed = central(&gw, "refused") + central(&gw, "malformed") - before[1] - before[2];
    assert_eq!(replayed, 0.0, "nothing read again after the restart");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_transitions_overtake_a_telemetry_backlog_on_kafka() {
    const BACKLOG: u64 = 20_000;
    let mut kafka = KafkaBroker::start().await;
    reference_topics(&kafka).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_kafka(test_config(), &kafka);
    // Paced catch-up (10 s for the backlog): "ahead" is a question of order, not speed.
    config.sinks.kafka.delivery.max_records_per_sec = 2_000;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    eventually("kafka sink up", Duration::from_secs(20), || {
        sink(&gw, "kafka").connected().then_some(())
    })
    .await;
    kafka.pause();
    let (client, mut acks) = mqtt_client(mqtt, "kbacklog").await;
    for i in 0..BACKLOG {
        let topic = format!("sensors/kb-{}/flow", i % 10);
        client
            .publish(topic, QoS::AtLeastOnce, false, "1")
            .await
            .unwrap();
    }
    for v in ["40", "50", "20"] {
        let topic = "sensors/kalarm/temperature";
        client
            .publish(topic, QoS::AtLeastOnce, false, v)
            .await
            .unwrap();
    }
    acks.wait_for(|a| *a >= BACKLOG + 3).await.unwrap();
    let sent_before = sink(&gw, "kafka").sent.load(Ordering::Relaxed);

    kafka.resume();
    let back = std::time::Instant::now();
    let transitions = loop {
        let got = kafka.read_all("alarm-events").await;
        if got.len() >= 3 {
            break got;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "alarm transitions not upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sent = sink(&gw, "kafka").sent.load(Ordering::Relaxed) - sent_before;
    eprintln!(
        "alarm lane (kafka): 3 transitions upstream {:.0} ms after the broker was back, {sent} records sent by then",
        back.elapsed().as_secs_f64() * 1000.0
    );
    assert!(
        sent < BACKLOG,
        "the alarm transitions waited for the backlog ({sent} sent first)"
    );
    let kinds: Vec<String> = transitions
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(v["alarmId"], "kalarm/temperature/threshold");
            v["transition"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(kinds, ["raise", "escalate", "clear"]);
    gw.stop().await.unwrap();
}
