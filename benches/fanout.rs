//! Fan-out at the hardware's limit: the gateway pinned to core 0, the Socket.IO clients and the
//! publisher (this process) pinned to core 1 (`taskset`), so the two stop stealing from each
//! other. Figures are printed; nothing is asserted (machines are noisy).
//!
//! `cargo bench --bench fanout -- [sweep] [stalled] [overload] [idle] [replay]` (all by default;
//! `FANOUT_SWEEP=100x2000,10000x100` runs only those sweep points, `FANOUT_OVERLOAD=10000x100`
//! only that overload run).
//! - sweep: 100, 1000 and 10000 `all-devices` clients at rates up to and past saturation:
//!   latency p50/p99/p999 (client receive time − reading timestamp), delivered ratio, gateway
//!   CPU and RSS;
//! - stalled: 100 reading clients at 2000 readings/s, without and with one client that reads
//!   nothing, so the others' p99 can be compared;
//! - overload: twice the saturating rate for 30 s (100 clients at 20000 readings/s, 10000 at
//!   100/s), RSS every second, and the peak with 10000 clients against the bound of issue 13;
//! - idle: memory per idle client at 1000 and 10000 clients, against the bound of issue 13;
//! - replay: a client 100,000 records behind resumes (`auth.after`) while 100 clients get
//!   1000 readings/s live: its replay rate, and the others' p99 before and during it.
//!
//! One core of clients parsing every frame is itself a limit near a million frames/s; where
//! the delivered ratio falls short, compare the gateway's CPU with 100 % to tell who saturated.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::binary::GatewayProcess as Gw;
use common::socketio;
use edge_gateway::time::{format_ms, now_ms};
use rumqttc::QoS;
use support::{Measure, latency_ms, percentile, pin, publish_fanout_load, publisher};
use tokio::sync::Mutex;

fn start_pinned() -> Gw {
    let gw = Gw::start(&[
        ("SOCKET_IO_MAX_CLIENTS", "100000"),
        ("EDGE_GATEWAY_SERVER__MAX_CONNECTIONS_PER_IP", "100000"),
        ("EDGE_GATEWAY_DEVICES__OFFLINE_AFTER_MS", "600000"),
    ]);
    pin(gw.peer.id(), "0");
    gw
}

struct Load {
    clients: usize,
    stalled: usize,
    rate: usize,
    secs: u64,
}

struct Outcome {
    delivered: u64,
    expected: u64,
    sorted_ms: Vec<i64>,
    cpu_pct: f64,
    rss_kib: Vec<u64>,
    /// The gateway's high-water mark (`VmHWM`) at the end of the run.
    peak_rss_kib: u64,
    overflows: f64,
    /// `edge_gateway_socketio_buffered_bytes_peak`: the most all clients' buffers held at once.
    buffered_peak: f64,
    /// Events refused because all clients' buffers together were full.
    budget_refused: f64,
}

impl Outcome {
    fn line(&self, load: &Load) -> String {
        let l = &self.sorted_ms;
        format!(
            "{} clients{} at {} readings/s: delivered {}/{} ({:.1} %), latency ms p50 {} p99 {} p999 {} max {}; \
             gateway CPU {:.0} % of its core, RSS {} KiB (peak {} KiB); overflows {}; \
             buffers together peaked at {:.1} MiB, {} events refused for it",
            load.clients,
            if load.stalled > 0 {
                format!(" + {} stalled", load.stalled)
            } else {
                String::new()
            },
            load.rate,
            self.delivered,
            self.expected,
            self.delivered as f64 / self.expected.max(1) as f64 * 100.0,
            percentile(l, 0.50),
            percentile(l, 0.99),
            percentile(l, 0.999),
            l.last().copied().unwrap_or(-1),
            self.cpu_pct,
            self.rss_kib.last().copied().unwrap_or(0),
            self.peak_rss_kib,
            self.overflows,
            self.buffered_peak / 1048576.0,
            self.budget_refused
        )
    }
}

/// Readers of `sensor:all` collecting latencies until `stop`.
async fn readers(
    gw: &Gw,
    n: usize,
    expect_each: usize,
    stop: &Arc<AtomicBool>,
    delivered: &Arc<AtomicU64>,
    latencies: &Arc<Mutex<Vec<i64>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ws = socketio::connect(gw.http, &["subscribe-all-devices"]).await;
        let (stop, delivered, latencies) = (stop.clone(), delivered.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::with_capacity(expect_each);
            let stopped = || stop.load(Ordering::Relaxed);
            socketio::read_events(&mut ws, stopped, |frame| {
                if frame.starts_with("42[\"sensor:all\"") {
                    local.extend(latency_ms(frame));
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                true
            })
            .await;
            latencies.lock().await.extend(local);
        }));
    }
    tasks
}

async fn run(load: &Load) -> Outcome {
    let gw = start_pinned();
    let expect_each = load.rate * load.secs as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let tasks = readers(
        &gw,
        load.clients,
        expect_each,
        &stop,
        &delivered,
        &latencies,
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..load.stalled {
        stalled.push(socketio::connect(gw.http, &["subscribe-all-devices"]).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = gw.cpu_secs();
    let started = Instant::now();
    let mut rss = Vec::new();
    publish_fanout_load(gw.mqtt, load.rate, load.secs, || rss.push(gw.rss_kib())).await;
    let expected = (expect_each * load.clients) as u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = gw.cpu_secs() - cpu_before;
    rss.push(gw.rss_kib());
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let mut sorted_ms = std::mem::take(&mut *latencies.lock().await);
    sorted_ms.sort_unstable();
    Outcome {
        delivered: delivered.load(Ordering::Relaxed),
        expected,
        sorted_ms,
        cpu_pct: cpu / started.elapsed().as_secs_f64() * 100.0,
        rss_kib: rss,
        peak_rss_kib: gw.peak_rss_kib(),
        overflows: gw.metric("edge_gateway_socketio_overflows_total"),
        buffered_peak: gw.metric("edge_gateway_socketio_buffered_bytes_peak"),
        budget_refused: gw.metric("edge_gateway_socketio_budget_refused_total"),
    }
}

/// The sweep's points: `FANOUT_SWEEP=100x2000,10000x100` (clients x readings/s) picks some.
fn sweep_points() -> Vec<(usize, usize)> {
    points(
        "FANOUT_SWEEP",
        &[
            (100, 500),
            (100, 2_000),
            (100, 5_000),
            (100, 10_000),
            (1_000, 200),
            (1_000, 500),
            (1_000, 1_000),
            (10_000, 20),
            (10_000, 50),
            (10_000, 100),
        ],
    )
}

/// `var` (clients x readings/s, comma-separated) if set, else `all`.
fn points(var: &str, all: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let Ok(picked) = std::env::var(var) else {
        return all.to_vec();
    };
    picked
        .split(',')
        .map(|p| {
            let (c, r) = p.split_once('x').expect("clients x rate, e.g. 100x2000");
            (
                c.trim().parse().expect("clients"),
                r.trim().parse().expect("rate"),
            )
        })
        .collect()
}

async fn sweep() {
    for (clients, rate) in sweep_points() {
        let load = Load {
            clients,
            stalled: 0,
            rate,
            secs: 10,
        };
        println!("sweep: {}", run(&load).await.line(&load));
    }
}

async fn stalled() {
    for stalled in [0, 1] {
        let load = Load {
            clients: 100,
            stalled,
            rate: 2_000,
            secs: 10,
        };
        println!("stalled: {}", run(&load).await.line(&load));
    }
}

/// What issue 13 asks of memory: the gateway's peak RSS with 10000 clients under overload,
/// and per idle client.
const PEAK_RSS_BOUND_MIB: u64 = 256;
const IDLE_CLIENT_BOUND_KIB: f64 = 12.0;

fn bound(what: &str, figure: f64, bound: f64, unit: &str) -> String {
    let verdict = if figure <= bound { "within" } else { "OVER" };
    format!("{what} {figure:.1} {unit}: {verdict} the bound of {bound} {unit}")
}

async fn overload() {
    for (clients, rate) in points("FANOUT_OVERLOAD", &[(100, 20_000), (10_000, 100)]) {
        let load = Load {
            clients,
            stalled: 0,
            rate,
            secs: 30,
        };
        let out = run(&load).await;
        println!("overload: {}", out.line(&load));
        println!("overload: RSS KiB every second: {:?}", out.rss_kib);
        if clients == 10_000 {
            let peak = out.peak_rss_kib as f64 / 1024.0;
            let line = bound("peak RSS", peak, PEAK_RSS_BOUND_MIB as f64, "MiB");
            println!("overload: {clients} clients at {rate} readings/s: {line}");
        }
    }
}

async fn idle(clients: usize) {
    let gw = start_pinned();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = gw.rss_kib();
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(socketio::connect(gw.http, &["subscribe-all-devices"]).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = gw.rss_kib();
    let per_client = with.saturating_sub(before) as f64 / clients as f64;
    let line = bound("per idle client", per_client, IDLE_CLIENT_BOUND_KIB, "KiB");
    println!("idle: {clients} clients: RSS {before} KiB → {with} KiB; {line}");
}

/// Floods `n` QoS 0 readings and waits until the gateway accepted them all.
async fn backlog(gw: &Gw, n: usize) {
    let client = publisher(gw.mqtt, "bench-backlog").await;
    for i in 0..n {
        let topic = format!("sensors/old-{:03}/vibration", i % 100);
        client
            .publish(topic, QoS::AtMostOnce, false, format!("{}.0", i % 5))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while gw.metric("edge_gateway_readings_accepted_total") < n as f64 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 100 live clients at 1000 readings/s for 10 s over a store holding `BEHIND` readings; with
/// `replaying`, one more client resumes from the start of it after 2 s. (p99 of the live
/// clients, the replaying client's records/s).
async fn live_with_replay(replaying: bool) -> (i64, usize, Option<(u64, f64)>) {
    const BEHIND: usize = 100_000;
    let gw = start_pinned();
    backlog(&gw, BEHIND).await;
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let tasks = readers(&gw, 100, 10_000, &stop, &delivered, &latencies).await;
    let publishing = {
        let mqtt = gw.mqtt;
        tokio::spawn(async move {
            let client = publisher(mqtt, "bench-live").await;
            let mut next = Instant::now();
            for sent in 0..10_000usize {
                let payload = format!(r#"{{"value":1.0,"timestamp":"{}"}}"#, format_ms(now_ms()));
                let topic = format!("sensors/live-{:03}/vibration", sent % 100);
                client
                    .publish(topic, QoS::AtMostOnce, false, payload)
                    .await
                    .unwrap();
                next += Duration::from_millis(1);
                tokio::time::sleep_until(next.into()).await;
            }
        })
    };
    let mut replay = None;
    if replaying {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = Instant::now();
        let auth = r#"{"after":0}"#;
        let mut ws = socketio::connect_with_auth(gw.http, auth, &["subscribe-all-devices"]).await;
        let mut got = 0u64;
        while let Some(frame) = socketio::next_event(&mut ws).await {
            if frame.starts_with("42[\"sensor:all\"") {
                got += 1;
            } else if frame.starts_with("42[\"resume:done\"") {
                break;
            }
        }
        replay = Some((got, started.elapsed().as_secs_f64()));
    }
    let _ = publishing.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let mut l = std::mem::take(&mut *latencies.lock().await);
    l.sort_unstable();
    (percentile(&l, 0.99), l.len(), replay)
}

async fn replay() {
    let (quiet_p99, quiet_n, _) = live_with_replay(false).await;
    let (p99, n, replay) = live_with_replay(true).await;
    let (got, secs) = replay.unwrap_or((0, f64::NAN));
    println!(
        "replay: a client 100000 records behind got {got} in {secs:.1} s ({:.0} records/s at \
         socketio.resume_records_per_sec 20000); 100 live clients at 1000 readings/s: p99 \
         {quiet_p99} ms without it (n={quiet_n}), {p99} ms with it (n={n})",
        got as f64 / secs
    );
}

fn main() {
    let args = support::bench_names();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let rt = support::load_runtime();
    rt.block_on(async {
        if want("idle") {
            idle(1_000).await;
            idle(10_000).await;
        }
        if want("stalled") {
            stalled().await;
        }
        if want("sweep") {
            sweep().await;
        }
        if want("overload") {
            overload().await;
        }
        if want("replay") {
            replay().await;
        }
    });
}
