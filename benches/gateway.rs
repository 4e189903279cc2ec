//! Benchmarks of the real binary as a child process (so its RSS is its own), driven over the
//! network like production: rumqttc publishers, Socket.IO clients over websocket.
//!
//! `cargo bench --bench gateway -- [ingest] [fanout] [idle] [startup] [wear] [flood] [kill]`
//! (all by default; `kill` runs 50 rounds, `--rounds=N` to change).
//! Figures are printed; nothing is asserted (machines are noisy). The client side runs on the
//! same cores as the gateway, so the figures are a floor.
//!
//! The Socket.IO clients are tests/common/socketio.rs: the Engine.IO v4 websocket framing
//! spoken directly, cheap enough to run 1000 of next to the gateway.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/mqtt_raw/mod.rs"]
mod mqtt_raw;
#[path = "support/paced.rs"]
mod paced;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::binary::GatewayProcess as Gw;
use common::socketio;
use edge_gateway::time::now_ms;
use rumqttc::QoS;
use support::{Measure, http_ok, latency_ms, percentile, publish_fanout_load, publisher};
use tokio::sync::Mutex;

/// Durable MQTT ingest: readings/s from first publish to the last reading committed.
async fn ingest(qos: QoS) {
    let gw = Gw::start(&[]);
    let publishers = 4;
    let per_publisher = 50_000;
    let total = publishers * per_publisher;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let client = publisher(gw.mqtt, &format!("bench-pub-{p}")).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..per_publisher {
                let topic = format!("sensors/bench-{p}-{:02}/temperature", i % 50);
                let payload = format!("{{\"value\":{}.5,\"unit\":\"°C\"}}", i % 30);
                client.publish(topic, qos, false, payload).await.unwrap();
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut accepted = 0.0;
    let mut last_progress = Instant::now();
    // Stop when all arrived, or nothing more arrived for 3 s (QoS 0 may be dropped by the broker).
    while Instant::now() < deadline && last_progress.elapsed() < Duration::from_secs(3) {
        let now = gw.metric("edge_gateway_readings_accepted_total");
        if now > accepted {
            accepted = now;
            last_progress = Instant::now();
        }
        if accepted as usize >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = if accepted as usize >= total {
        started.elapsed()
    } else {
        last_progress - started
    };
    let (p50, p99, mean) = gw.histogram_ms("edge_gateway_receive_to_commit_seconds");
    let (c50, c99, cmean) = gw.histogram_ms("edge_gateway_commit_seconds");
    let batches = gw.metric("edge_gateway_commit_batch_records_count");
    println!(
        "ingest {qos:?}: {accepted:.0}/{total} readings committed in {:.2}s = {:.0} readings/s durable \
         (publishing took {:.2}s); {:.0} commits, {:.0} records/commit",
        elapsed.as_secs_f64(),
        accepted / elapsed.as_secs_f64(),
        published.as_secs_f64(),
        batches,
        accepted / batches
    );
    println!(
        "  receive(PUBACK)->commit window: p50 <= {p50} ms, p99 <= {p99} ms, mean {mean:.2} ms; \
         commit duration p50 <= {c50} ms, p99 <= {c99} ms, mean {cmean:.2} ms; RSS {} KiB",
        gw.rss_kib()
    );
    for c in clients {
        let _ = c.disconnect().await;
    }
}

/// Start-up with a big store: `records` readings stored over MQTT, then the time from spawning
/// the binary to `/health` answering, after a clean stop (the integrity check is skipped) and
/// after kill -9 (the whole file is checked and walked).
async fn startup(records: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("gateway.log");
    let (http, mqtt) = (common::free_port(), common::free_port());
    let spawn = || {
        let mut cmd = common::binary::gateway_command(&data, http, mqtt);
        cmd.env(
            "EDGE_GATEWAY_STORE__BYTE_BUDGET_BYTES",
            (4u64 << 30).to_string(),
        );
        let started = Instant::now();
        let peer = Gw::spawn(&mut cmd, &log, http);
        (peer, started.elapsed())
    };
    let (mut peer, _) = spawn();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], mqtt));
    let publishers = 4;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let client = publisher(addr, &format!("startup-{p}")).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..records / publishers {
                let topic = format!("sensors/start-{p}-{:03}/temperature", i % 500);
                client
                    .publish(topic, QoS::AtLeastOnce, false, format!("{}.5", i % 30))
                    .await
                    .unwrap();
            }
            client
        }));
    }
    for t in tasks {
        let _ = t.await.unwrap().disconnect().await;
    }
    let http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let text = http_ok(http_addr, "/metrics").unwrap_or_default();
        if common::metric(&text, "edge_gateway_readings_accepted_total")
            .is_some_and(|n| n as usize >= records / publishers * publishers)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peer.signal("TERM");
    peer.wait();
    let file = data.join(edge_gateway::store::STORE_FILE);
    let mib = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) / (1 << 20);
    let (mut peer, clean) = spawn();
    peer.kill();
    let (mut peer, unclean) = spawn();
    println!(
        "startup with {records} readings stored ({mib} MiB file): ready in {:.0} ms after a clean \
         stop, {:.0} ms after kill -9 (integrity check and table walk)",
        clean.as_secs_f64() * 1e3,
        unclean.as_secs_f64() * 1e3
    );
    peer.signal("TERM");
    peer.wait();
}

/// Fan-out: `rate` readings/s published over MQTT for `secs`, each delivered to `clients`
/// subscribers of `all-devices`; latency = client receive time − reading timestamp.
async fn fanout(clients: usize, rate: usize, secs: u64) {
    let gw = Gw::start(&[("SOCKET_IO_PING_INTERVAL", "25000")]);
    let latencies = Arc::new(Mutex::new(Vec::<i64>::with_capacity(
        clients * rate * secs as usize,
    )));
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut ws = socketio::connect(gw.http, &["subscribe-all-devices"]).await;
        let latencies = latencies.clone();
        let delivered = delivered.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut local = Vec::with_capacity(rate * secs as usize);
            let stopped = || stop.load(Ordering::Relaxed) == 1;
            socketio::read_events(&mut ws, stopped, |frame| {
                if !frame.starts_with("42[\"sensor:all\"") {
                    return true;
                }
                local.extend(latency_ms(frame));
                delivered.fetch_add(1, Ordering::Relaxed);
                local.len() < rate * secs as usize
            })
            .await;
            latencies.lock().await.extend(local);
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = gw.cpu_secs();
    let total = rate * secs as usize;
    let started = Instant::now();
    publish_fanout_load(gw.mqtt, rate, secs, || {}).await;
    let publish_secs = started.elapsed().as_secs_f64();
    let expected = (total * clients) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss = gw.rss_kib();
    let cpu = gw.cpu_secs() - cpu_before;
    let accepted = gw.metric("edge_gateway_readings_accepted_total");
    let rejected = gw.metric("edge_gateway_readings_rejected_total");
    let text = http_ok(gw.http, "/metrics").unwrap_or_default();
    for l in text.lines().filter(|l| {
        l.contains("emitted") || l.contains("catchup") || l.contains("socketio_clients")
    }) {
        println!("  {l}");
    }
    println!(
        "fanout: gateway accepted {accepted} readings of {total} published ({rejected} rejected)"
    );
    stop.store(1, Ordering::Relaxed);
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    let got = delivered.load(Ordering::Relaxed);
    let mut l = std::mem::take(&mut *latencies.lock().await);
    l.sort_unstable();
    println!(
        "fanout: {rate} readings/s x {secs}s to {clients} clients: delivered {got}/{expected} \
         ({:.0} deliveries/s over {elapsed:.1}s, publishing {publish_secs:.1}s); latency ms p50 {} p99 {} max {} \
         (n={}); gateway RSS {rss} KiB, gateway CPU {cpu:.1}s ({:.0}% of one core)",
        got as f64 / elapsed,
        percentile(&l, 0.50),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(-1),
        l.len(),
        cpu / elapsed * 100.0
    );
}

/// `write_bytes` of `/proc/<pid>/io`: bytes the process caused to be written to storage.
fn write_bytes(gw: &Gw) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/io", gw.peer.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Flash wear: one device publishing QoS 1 evenly at `rate` readings/s for `secs`, with
/// `store.durable_commit_interval_ms` = `interval` (`None`: the default). Bytes written per
/// reading from the gateway's `/proc/<pid>/io`, and the PUBACK latency that costs.
async fn wear(rate: u64, secs: u64, interval: Option<&str>) {
    let env: Vec<(&str, &str)> = interval
        .map(|i| ("EDGE_GATEWAY_STORE__DURABLE_COMMIT_INTERVAL_MS", i))
        .into_iter()
        .collect();
    let gw = Gw::start(&env);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (bytes_before, durable_before) = (
        write_bytes(&gw),
        gw.metric("edge_gateway_store_durable_commits_total"),
    );
    let commits_before = gw.metric("edge_gateway_commit_batch_records_count");
    let run = paced::publish_evenly(gw.mqtt, "wear-1", rate, secs).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes = write_bytes(&gw) - bytes_before;
    let durable = gw.metric("edge_gateway_store_durable_commits_total") - durable_before;
    let commits = gw.metric("edge_gateway_commit_batch_records_count") - commits_before;
    let us = &run.puback_us;
    let pct = |p: f64| us.get(((us.len() as f64 * p) as usize).min(us.len().saturating_sub(1)));
    let ms = |v: Option<&u64>| v.map_or(-1.0, |v| *v as f64 / 1000.0);
    println!(
        "wear {rate}/s for {secs}s, durable_commit_interval_ms={}: {:.0} bytes written per reading \
         ({:.1} KB/s, {:.1} GB/day); {:.0} commits, {:.0} durable; PUBACK ms p50 {:.1} p99 {:.1} max {:.1} \
         ({}/{} acked)",
        interval.unwrap_or("default"),
        bytes as f64 / run.sent as f64,
        bytes as f64 / secs as f64 / 1000.0,
        bytes as f64 / secs as f64 * 86_400.0 / 1e9,
        commits,
        durable,
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(us.last()),
        run.acked,
        run.sent,
    );
}

/// The flood: 1,000,000 QoS 1 readings from `connections` rumqttc publishers as fast
/// as they go (1000 in flight each, over `mqtt.receive_maximum`). Offered rate (the publish
/// loops), committed rate, loss, the publishers' slow-down (the longest a `publish` call was
/// held back) and the gateway's peak RSS.
async fn flood(connections: usize, total: usize) {
    let gw = Gw::start(&[("EDGE_GATEWAY_STORE__BYTE_BUDGET_BYTES", "2147483648")]);
    let per = total / connections;
    let cpu_before = (gw.cpu_secs(), support::cpu_secs_of(std::process::id()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = publisher(gw.mqtt, &format!("flood-{c}")).await;
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for n in 0..per {
                let call = Instant::now();
                let topic = format!("sensors/flood-{c}/temperature");
                client
                    .publish(topic, QoS::AtLeastOnce, false, n.to_string())
                    .await
                    .unwrap();
                slowest = slowest.max(call.elapsed());
            }
            (client, slowest)
        }));
    }
    let mut slowest = Duration::ZERO;
    let mut clients = Vec::new();
    for t in tasks {
        let (client, s) = t.await.unwrap();
        slowest = slowest.max(s);
        clients.push(client);
    }
    let offered = started.elapsed();
    let want = (per * connections) as f64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while gw.metric("edge_gateway_readings_accepted_total") < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let committed_in = started.elapsed();
    let gateway_cpu = gw.cpu_secs() - cpu_before.0;
    let clients_cpu = support::cpu_secs_of(std::process::id()) - cpu_before.1;
    let accepted = gw.metric("edge_gateway_readings_accepted_total");
    let (p50, p99, _) = gw.histogram_ms("edge_gateway_mqtt_puback_seconds");
    println!(
        "flood: {want:.0} QoS 1 readings from {connections} connections: offered in {:.1}s ({:.0}/s), \
         {accepted:.0} committed in {:.1}s ({:.0}/s durable), loss {:.0}; longest publish call held back {} ms; \
         PUBACK p50 <= {p50} ms p99 <= {p99} ms; {:.0} durable commits; gateway peak RSS {} KiB; \
         CPU: gateway {gateway_cpu:.1} s ({:.1} µs per reading), publishers {clients_cpu:.1} s",
        offered.as_secs_f64(),
        want / offered.as_secs_f64(),
        committed_in.as_secs_f64(),
        accepted / committed_in.as_secs_f64(),
        want - accepted,
        slowest.as_millis(),
        gw.metric("edge_gateway_store_durable_commits_total"),
        gw.peak_rss_kib(),
        gateway_cpu * 1e6 / accepted.max(1.0),
    );
    for c in clients {
        let _ = c.disconnect().await;
    }
}

/// kill -9 at a random moment of a flood from 4 raw publishers (64 in flight each), `rounds`
/// times on one store: after each, the store opens and holds every PUBACKed reading.
async fn kill(rounds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut acked_total, mut lost_total) = (0usize, 0usize);
    let mut worst_open = Duration::ZERO;
    for round in 0..rounds {
        let (http, mqtt) = (common::free_port(), common::free_port());
        let mut cmd = common::binary::gateway_command(&data, http, mqtt);
        let mut peer = Gw::spawn(&mut cmd, &dir.path().join("gateway.log"), http);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], mqtt));
        let devices: Vec<String> = (0..4).map(|p| format!("kill-{round}-{p}")).collect();
        let publishers: Vec<_> = devices
            .iter()
            .map(|d| {
                let d = d.clone();
                tokio::spawn(async move { mqtt_raw::publish_until_killed(addr, &d).await })
            })
            .collect();
        let wait = 200 + (now_ms() as u64 ^ round.wrapping_mul(0x9E37_79B9)) % 800;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        peer.kill();
        let opened = Instant::now();
        let store = edge_gateway::store::Store::open(&data).expect("store reopens");
        worst_open = worst_open.max(opened.elapsed());
        for (device, p) in devices.iter().zip(publishers) {
            let acked = p.await.unwrap();
            let stored: std::collections::HashSet<u64> = common::history(&store, device)
                .iter()
                .map(|r| r["value"].as_f64().unwrap() as u64)
                .collect();
            acked_total += acked.len();
            lost_total += acked.iter().filter(|v| !stored.contains(v)).count();
        }
        drop(store);
    }
    println!(
        "kill -9: {rounds} rounds, {acked_total} readings PUBACKed before the kills, {lost_total} of them \
         missing after restart; the store opened every time (slowest open {} ms)",
        worst_open.as_millis()
    );
}

/// RSS idle, and per idle Socket.IO client.
async fn idle(clients: usize) {
    let gw = Gw::start(&[("SOCKET_IO_MAX_CLIENTS", "100000")]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = gw.rss_kib();
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(socketio::connect(gw.http, &[]).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = gw.rss_kib();
    println!(
        "idle: RSS {idle} KiB ({:.1} MiB) with no clients; {with} KiB with {clients} idle clients = {:.1} KiB per client; \
         gateway reports {} clients",
        idle as f64 / 1024.0,
        (with.saturating_sub(idle)) as f64 / clients as f64,
        gw.metric("edge_gateway_socketio_clients")
    );
    drop(conns);
}

fn main() {
    let args = support::bench_names();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let rounds = std::env::args()
        .find_map(|a| a.strip_prefix("--rounds=").and_then(|n| n.parse().ok()))
        .unwrap_or(50);
    let extra_intervals: Vec<String> = std::env::args()
        .filter_map(|a| a.strip_prefix("--interval=").map(String::from))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if want("ingest") {
            ingest(QoS::AtLeastOnce).await;
            ingest(QoS::AtMostOnce).await;
        }
        if want("fanout") {
            fanout(100, 5_000, 10).await;
        }
        if want("idle") {
            idle(1_000).await;
        }
        if want("startup") {
            startup(1_000_000).await;
        }
        if want("flood") {
            flood(16, 1_000_000).await;
        }
        if want("kill") {
            kill(rounds).await;
        }
        if want("wear") {
            // `--interval=MS` compares other cadences with 0 and the default, `--rate=N` picks
            // rates (both repeatable).
            let mut intervals = vec![Some("0"), None];
            intervals.extend(extra_intervals.iter().map(|i| Some(i.as_str())));
            let rates: Vec<u64> = std::env::args()
                .filter_map(|a| a.strip_prefix("--rate=").and_then(|r| r.parse().ok()))
                .collect();
            let rates = if rates.is_empty() {
                vec![10, 100, 1000]
            } else {
                rates
            };
            for &rate in &rates {
                for &interval in &intervals {
                    wear(rate, 20, interval).await;
                }
            }
        }
    });
}
