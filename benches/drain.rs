//! Upstream catch-up: how fast a sink drains a backlog built while its upstream was down,
//! while live ingest continues and a dashboard measures live Socket.IO latency; and how soon
//! after the link is back the alarm transitions of the outage (stored after the whole backlog)
//! are upstream, on their own lane.
//!
//! `cargo bench --bench drain -- [redis] [kafka] [--backlog N]` (both sinks by default,
//! N = 1,000,000). The gateway is the release binary as a child process; redis-server and a
//! tansu broker run on loopback (tests/common/upstream.rs). Figures are printed, not asserted.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::binary::GatewayProcess as Gw;
use common::socketio;
use common::upstream::{KafkaBroker, RedisServer};
use edge_gateway::time::{format_ms, now_ms};
use rumqttc::QoS;
use serde_json::Value;
use support::{http_ok, latency_ms, percentile, publisher};

fn sink_health(http: SocketAddr, name: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(&http_ok(http, "/health")?).ok()?;
    Some(v["components"]["sinks"][name].clone())
}

/// A dashboard on `all-devices` that records live latency (receive − reading timestamp) of
/// readings from devices named `live-*`.
async fn dashboard(http: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<i64>> {
    let mut ws = socketio::connect(http, &["subscribe-all-devices"]).await;
    tokio::spawn(async move {
        let mut lat = Vec::new();
        socketio::read_events(
            &mut ws,
            || stop.load(Ordering::Relaxed),
            |frame| {
                if frame.starts_with("42[\"sensor:all\"") && frame.contains("\"live-") {
                    lat.extend(latency_ms(frame));
                }
                true
            },
        )
        .await;
        lat
    })
}

async fn drain(sink: &str, backlog: u64) {
    // The upstream is down while the backlog builds: a port nothing listens on yet.
    let mut redis = None;
    let mut kafka = None;
    let mut alarm_sub = None;
    let env: Vec<(&str, String)> = match sink {
        "redis" => {
            let mut r = RedisServer::start(None);
            // Resubscribes by itself every 50 ms once the server is back.
            alarm_sub = Some(r.subscribe(&["alarm-events"]));
            r.stop();
            let port = r.port();
            redis = Some(r);
            vec![
                ("REDIS_HOST", "127.0.0.1".into()),
                ("REDIS_PORT", port.to_string()),
            ]
        }
        _ => {
            let mut k = KafkaBroker::start().await;
            k.create_topic("sensors-data", 3).await;
            k.create_topic("device-status", 1).await;
            k.create_topic("alerts", 1).await;
            k.create_topic("alarm-events", 1).await;
            k.pause();
            let addr = k.addr();
            kafka = Some(k);
            vec![("KAFKA_BROKERS", addr)]
        }
    };
    let budget = (2u64 << 30).to_string();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("EDGE_GATEWAY_STORE__BYTE_BUDGET_BYTES", &budget));
    let gw = Gw::start(&env);

    let started = Instant::now();
    let publishers = 4u64;
    let per = backlog / publishers;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let client = publisher(gw.mqtt, &format!("backlog-{p}")).await;
        tasks.push(tokio::spawn(async move {
            // Paced (25k/s per publisher): an unpaced flood outruns the broker link and
            // rumqttd drops the oldest of its bounded in-memory log (see ARCHITECTURE.md).
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for i in 0..per {
                if i % 250 == 0 {
                    tick.tick().await;
                }
                let topic = format!("sensors/bl-{p}-{:02}/temperature", i % 50);
                let payload = format!("{{\"value\":{}.5}}", i % 30);
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            client
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // An alarm raised, escalated and cleared during the outage, after the whole backlog.
    let alarm_client = publisher(gw.mqtt, "alarm").await;
    for v in ["40", "50", "20"] {
        let topic = "sensors/alarm-bench/temperature";
        alarm_client
            .publish(topic, QoS::AtLeastOnce, false, v)
            .await
            .unwrap();
    }
    let total = per * publishers;
    let mut last = (0, Instant::now());
    loop {
        let lag = sink_health(gw.http, sink)
            .and_then(|s| s["lagRecords"].as_u64())
            .unwrap_or(0);
        if lag >= total {
            break;
        }
        if lag > last.0 {
            last = (lag, Instant::now());
        }
        if last.1.elapsed() > Duration::from_secs(30) {
            let metrics = http_ok(gw.http, "/metrics").unwrap_or_default();
            let accepted: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("edge_gateway_readings_"))
                .collect();
            panic!(
                "backlog stopped growing at {lag} of {total} records after {:.0}s: {accepted:?}",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "drain {sink}: backlog of {total} readings built in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Live load during the drain: 1000 readings/s and a dashboard measuring latency.
    let stop = Arc::new(AtomicBool::new(false));
    let live_sent = Arc::new(AtomicU64::new(0));
    let watcher = dashboard(gw.http, stop.clone()).await;
    let live = {
        let client = publisher(gw.mqtt, "live").await;
        let stop = stop.clone();
        let live_sent = live_sent.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for d in 0..10 {
                    let payload =
                        format!(r#"{{"value":1.0,"timestamp":"{}"}}"#, format_ms(now_ms()));
                    client
                        .publish(
                            format!("sensors/live-{d}/vibration"),
                            QoS::AtMostOnce,
                            false,
                            payload,
                        )
                        .await
                        .unwrap();
                    live_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = sink_health(gw.http, sink).unwrap();
    let sent_before = before["sent"].as_u64().unwrap_or(0);
    let drain_started = Instant::now();
    if let Some(r) = redis.as_mut() {
        r.start_again();
    }
    if let Some(k) = kafka.as_mut() {
        k.resume();
    }
    // Before the drain loop: the alarm lane goes first, so this returns early in the drain.
    let alarms_upstream = alarm_lane_wait(alarm_sub.as_ref(), kafka.as_ref(), drain_started).await;
    let mut peak = 0;
    loop {
        let s = sink_health(gw.http, sink).unwrap_or_default();
        peak = peak.max(s["sentPerSecond"].as_u64().unwrap_or(0));
        // Caught up with the backlog; live records keep the lag near zero.
        if s["connected"] == true && s["lagRecords"].as_u64().unwrap_or(u64::MAX) < 2_000 {
            break;
        }
        assert!(
            drain_started.elapsed() < Duration::from_secs(900),
            "drain did not finish: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = drain_started.elapsed().as_secs_f64();
    let after = sink_health(gw.http, sink).unwrap();
    let sent = after["sent"].as_u64().unwrap_or(0) - sent_before;
    stop.store(true, Ordering::Relaxed);
    live.await.unwrap();
    let mut lat = watcher.await.unwrap();
    lat.sort_unstable();
    println!(
        "drain {sink}: {sent} records sent in {secs:.1}s after the upstream came back = {:.0} records/s \
         (peak reported {peak}/s), while live ingest ran at ~1000 readings/s; live Socket.IO latency \
         during the drain: p50 {} ms, p99 {} ms, max {} ms (n={}, {} live readings published)",
        sent as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(-1),
        lat.len(),
        live_sent.load(Ordering::Relaxed),
    );
    match alarms_upstream {
        Some(t) => println!(
            "drain {sink}: the 3 alarm transitions stored behind the {total}-reading backlog were \
             upstream {:.0} ms after the link came back",
            t.as_secs_f64() * 1000.0
        ),
        None => println!("drain {sink}: alarm transitions not seen upstream within 60 s"),
    }
}

/// The time from `since` until three alarm transitions are upstream (the Redis `alarm-events`
/// channel, or the Kafka topic read back whole), polled every 20 ms; `None` after 60 s.
async fn alarm_lane_wait(
    sub: Option<&common::upstream::RedisSubscriber>,
    kafka: Option<&KafkaBroker>,
    since: Instant,
) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(60) {
        let seen = match (sub, kafka) {
            (Some(s), _) => s.messages().len(),
            (None, Some(k)) => k.read_all("alarm-events").await.len(),
            (None, None) => 0,
        };
        if seen >= 3 {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backlog = args
        .iter()
        .position(|a| a == "--backlog")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000u64);
    let names: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<u64>().is_err())
        .collect();
    let want = |n: &str| names.is_empty() || names.iter().any(|a| *a == n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if want("redis") {
            drain("redis", backlog).await;
        }
        if want("kafka") {
            drain("kafka", backlog).await;
        }
    });
}
