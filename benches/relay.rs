//! The central side, side by side: the reference Node websocket-service (benches/reference-node,
//! the guide's socket.io 4 server with its Redis subscriber) and `edge-gateway relay`, fed the
//! same readings through one redis-server and read by the same dashboards. Figures are printed;
//! nothing is asserted (machines are noisy).
//!
//! `cargo bench --bench relay -- [node] [relay] [replicas]` (all by default).
//! - node, relay: 100 and 1000 `all-devices` dashboards, each against a fresh service; the
//!   publisher steps the rate up until a step fails. A rate holds when every reading reaches
//!   every dashboard and p99 ≤ 50 ms (dashboard receive time − the reading's `timestamp`, set
//!   as it is published). The service runs on core 0; redis-server, the publisher and the
//!   dashboards (this process) on core 1 (`taskset`).
//! - replicas: 1, then 3 relay replicas (all on core 0) behind HAProxy (core 1; the relay's
//!   shipped deploy/haproxy config): the highest total deliveries/s to 1000 dashboards. On a
//!   2-core machine this shows what splitting one core's work over replicas costs, not scale-out.
//!
//! - node-replicas (only when named): the same with the reference service's replicas, as the
//!   reference deployment scales it.
//!
//! `RELAY_BENCH_SECS` sets the length of a step (10 s by default); `RELAY_BENCH_TMPDIR` where
//! the services' temp dirs (logs, configs, the relay's store) go.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::peer::PeerProcess;
use common::upstream::RedisServer;
use common::{free_port, socketio, try_http_get};
use edge_gateway::record::{Level, Reading, Record};
use edge_gateway::time::now_ms;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use support::{cpu_secs_of, http_ok, latency_ms, pin, status_kib_of};

/// The latency a rate must hold at p99 to count.
const P99_BOUND_MS: i64 = 50;
/// How long a step may take to deliver its last readings after publishing ends.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a service may take to answer /health after it is spawned.
const START: Duration = Duration::from_secs(30);

/// Rates (readings/s) tried in order until one fails.
fn ladder(dashboards: usize) -> &'static [usize] {
    if dashboards <= 100 {
        &[50, 100, 250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000]
    } else {
        &[10, 20, 50, 100, 200, 300, 500, 750, 1_000]
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------------------------
// The services
// ---------------------------------------------------------------------------------------------

/// A service under test: the processes measured and where dashboards connect (the service
/// itself, or HAProxy in front of replicas).
struct Service {
    name: String,
    http: SocketAddr,
    /// Killed first (fields drop in order), then HAProxy, then the temp dir goes.
    procs: Vec<PeerProcess>,
    /// The relay replicas' HTTP addresses, for their /metrics (none for the Node service).
    metrics: Vec<SocketAddr>,
    _lb: Option<PeerProcess>,
    _dir: tempfile::TempDir,
}

impl Service {
    fn cpu_secs(&self) -> f64 {
        self.procs.iter().map(|p| cpu_secs_of(p.id())).sum()
    }

    fn rss_kib(&self, field: &str) -> u64 {
        self.procs
            .iter()
            .map(|p| status_kib_of(p.id(), field))
            .sum()
    }

    /// The relay's own counts so far, summed over replicas: records taken from the feed,
    /// refused, and Socket.IO packets dropped for a full client; empty for Node.
    fn counts(&self) -> String {
        if self.metrics.is_empty() {
            return String::new();
        }
        let sum = |name: &str| -> f64 {
            let sample = |l: &&str| l.starts_with(name) && !l.starts_with('#');
            let value = |l: &str| l.rsplit(' ').next()?.parse::<f64>().ok();
            (self.metrics.iter())
                .filter_map(|a| http_ok(*a, "/metrics"))
                .map(|text| text.lines().filter(sample).filter_map(value).sum::<f64>())
                .fold(0.0, |a, b| a + b)
        };
        format!(
            "; relay so far: records relayed {}, duplicate {}, rejected {}, socket.io overflows {}",
            sum("edge_gateway_relay_records_total{result=\"relayed\""),
            sum("edge_gateway_relay_records_total{result=\"duplicate\""),
            sum("edge_gateway_relay_rejected_total"),
            sum("edge_gateway_socketio_overflows_total")
        )
    }
}

/// A service's config, logs and (relay) store: under `RELAY_BENCH_TMPDIR` if set (e.g.
/// /dev/shm, to take the disk out of the relay's figures), else the system's temp dir.
fn temp_dir() -> tempfile::TempDir {
    let builder = tempfile::Builder::new().prefix("egw-relaybench-").clone();
    match std::env::var_os("RELAY_BENCH_TMPDIR") {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .expect("create a temp dir")
}

/// Waits until `http` answers /health; Err with the log tail if the process exits first.
fn ready(peer: &mut PeerProcess, http: SocketAddr) -> Result<(), String> {
    peer.try_wait_ready(START, || try_http_get(http, "/health").is_some())
        .map_err(|e| format!("{e:?}; {}", peer.log_tail()))
}

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference-node")
}

/// `npm ci` in benches/reference-node unless its node_modules is there.
fn npm_ci(dir: &Path) -> Result<(), String> {
    if dir.join("node_modules").exists() {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .map_err(|e| format!("npm (apt install npm): {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("npm ci in {}: {status}", dir.display()))
}

/// One reference service with the deployment reference's settings (production, LOG_LEVEL
/// info, 512 MB old space, 4 libuv threads), on core 0; returns it and its HTTP port.
fn start_node(redis: &RedisServer, dir: &Path, name: &str) -> Result<(PeerProcess, u16), String> {
    let code = reference_dir();
    npm_ci(&code)?;
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg("src/index.js")
        .current_dir(&code)
        .env("NODE_ENV", "production")
        .env("PORT", port.to_string())
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis.port().to_string())
        .env("LOG_LEVEL", "info")
        .env("NODE_OPTIONS", "--max-old-space-size=512")
        .env("UV_THREADPOOL_SIZE", "4");
    let log = dir.join(format!("{name}.log"));
    let mut peer = PeerProcess::spawn(&mut cmd, &log, "apt install nodejs");
    ready(&mut peer, loopback(port))?;
    pin(peer.id(), "0");
    Ok((peer, port))
}

/// A replica's config: it reads the channels of `[sinks.redis]` (the ones gateways publish
/// to); the limits that would refuse 1000 dashboards from one IP are raised through the
/// environment.
fn relay_config(redis: &RedisServer, port: u16, name: &str) -> String {
    format!(
        "gateway_id = \"{name}\"\n\n[server]\nhost = \"127.0.0.1\"\nport = {port}\n\n\
         [sinks.redis]\nhost = \"127.0.0.1\"\nport = {}\nmode = \"publish\"\n\n\
         [relay]\nredis = true\n",
        redis.port()
    )
}

/// One `edge-gateway relay` replica on core 0; returns it and its HTTP port.
fn start_replica(
    redis: &RedisServer,
    dir: &Path,
    name: &str,
) -> Result<(PeerProcess, u16), String> {
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, relay_config(redis, port, name)).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
    cmd.args(["relay", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join(name))
        .env("LOG_LEVEL", "warn")
        .env("SOCKET_IO_MAX_CLIENTS", "100000")
        .env("EDGE_GATEWAY_SERVER__MAX_CONNECTIONS_PER_IP", "100000")
        .env("RATE_LIMIT_MAX_REQUESTS", "100000000");
    let log = dir.join(format!("{name}.log"));
    let mut peer = PeerProcess::spawn(&mut cmd, &log, "cargo build");
    ready(&mut peer, loopback(port))?;
    pin(peer.id(), "0");
    Ok((peer, port))
}

/// The relay's shipped HAProxy config (deploy/haproxy/, sticky sessions as in the reference
/// deployment) bound to `port` in front of `backends`; clients without a cookie or a
/// `dashboard=` parameter, as here, are spread round robin.
fn haproxy_config(port: u16, backends: &[u16]) -> Result<String, String> {
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/edge-gateway-relay.cfg");
    let text =
        std::fs::read_to_string(&shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
    let mut cfg = String::new();
    for line in text.lines() {
        match line.trim_start() {
            l if l.starts_with("bind ") => cfg.push_str(&format!("    bind 127.0.0.1:{port}\n")),
            l if l.starts_with("server ") => {}
            _ => cfg.push_str(&format!("{line}\n")),
        }
    }
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("    server r{i} 127.0.0.1:{b} cookie r{i}\n"));
    }
    Ok(cfg)
}

/// HAProxy (core 1, inherited from this process) on a free port; returns it and the port.
fn start_haproxy(dir: &Path, backends: &[u16]) -> Result<(PeerProcess, u16), String> {
    let port = free_port();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(port, backends)?).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg);
    let mut peer = PeerProcess::spawn(&mut cmd, &dir.join("haproxy.log"), "apt install haproxy");
    // A 503 from HAProxy itself is an answer too: wait for a replica's 200 through it.
    let through = || try_http_get(loopback(port), "/health").is_some_and(|(s, _)| s == 200);
    peer.try_wait_ready(START, through)
        .map_err(|e| format!("{e:?}; {}", peer.log_tail()))?;
    Ok((peer, port))
}

/// What runs a replica: the reference Node service or `edge-gateway relay`.
#[derive(Clone, Copy)]
enum Kind {
    Node,
    Relay,
}

/// `n` replicas of `kind`; dashboards connect to the first one, or through HAProxy with `lb`.
fn start_service(redis: &RedisServer, kind: Kind, n: usize, lb: bool) -> Result<Service, String> {
    let dir = temp_dir();
    let (mut procs, mut ports) = (Vec::new(), Vec::new());
    let label = match kind {
        Kind::Node => "reference Node",
        Kind::Relay => "relay",
    };
    for i in 0..n {
        let name = format!("replica-{i}");
        let (peer, port) = match kind {
            Kind::Node => start_node(redis, dir.path(), &name)?,
            Kind::Relay => start_replica(redis, dir.path(), &name)?,
        };
        procs.push(peer);
        ports.push(port);
    }
    let metrics = match kind {
        Kind::Node => Vec::new(),
        Kind::Relay => ports.iter().map(|p| loopback(*p)).collect(),
    };
    let (http, lb_peer, name) = if lb {
        let (peer, port) = start_haproxy(dir.path(), &ports)?;
        (
            loopback(port),
            Some(peer),
            format!("{label} x{n} via HAProxy"),
        )
    } else {
        (loopback(ports[0]), None, label.to_string())
    };
    Ok(Service {
        name,
        http,
        procs,
        metrics,
        _lb: lb_peer,
        _dir: dir,
    })
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

/// Latencies in 1 ms buckets (the last holds everything slower), shared by every dashboard
/// task, reset between steps.
struct Latencies {
    buckets: Vec<AtomicU64>,
    delivered: AtomicU64,
}

impl Latencies {
    const MAX_MS: usize = 60_000;

    fn new() -> Latencies {
        Latencies {
            buckets: (0..=Self::MAX_MS).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicU64::new(0),
        }
    }

    fn record(&self, ms: i64) {
        let i = ms.clamp(0, Self::MAX_MS as i64) as usize;
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// The `q` quantile in ms; -1 if nothing was recorded.
    fn quantile(&self, q: f64) -> i64 {
        let total = self.delivered();
        let want = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return ms as i64;
            }
        }
        -1
    }

    fn reset(&self) {
        self.buckets
            .iter()
            .for_each(|b| b.store(0, Ordering::Relaxed));
        self.delivered.store(0, Ordering::Relaxed);
    }
}

/// `n` `all-devices` dashboards (tests/common's minimal Socket.IO client) recording the
/// latency of every `sensor:all`.
struct Dashboards {
    n: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Latencies>,
    /// `sensor:all` events per dashboard in this step: lost readings spread over every
    /// dashboard, or whole dashboards that fell behind or were closed.
    each: Vec<Arc<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Dashboards {
    async fn connect(http: SocketAddr, n: usize) -> Dashboards {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Latencies::new());
        let (mut tasks, mut each) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let mut ws = socketio::connect(http, &["subscribe-all-devices"]).await;
            let mine = Arc::new(AtomicU64::new(0));
            each.push(mine.clone());
            let (stop, seen) = (stop.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                let stopped = || stop.load(Ordering::Relaxed);
                socketio::read_events(&mut ws, stopped, |frame| {
                    if frame.starts_with("42[\"sensor:all\"") {
                        seen.record(latency_ms(frame).unwrap_or(i64::MAX));
                        mine.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                })
                .await;
            }));
        }
        Dashboards {
            n,
            stop,
            seen,
            each,
            tasks,
        }
    }

    fn reset(&self) {
        self.seen.reset();
        self.each.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }

    /// The fewest and most events one dashboard got this step, and how many sockets closed.
    fn spread(&self) -> String {
        let counts = self.each.iter().map(|c| c.load(Ordering::Relaxed));
        let (min, max) = counts.fold((u64::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)));
        let closed = self.tasks.iter().filter(|t| t.is_finished()).count();
        format!("; per dashboard {min}..{max}, {closed} closed")
    }

    async fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// A reading as a gateway's Redis sink publishes it: the reference JSON with gatewayId and seq
/// (`Record::to_wire`), stamped now.
fn reading_json(n: usize, seq: u64) -> String {
    let reading = Record::Reading(Reading {
        device_id: format!("relay-{:03}", n % 100),
        sensor_type: "vibration".into(),
        value: (n % 5) as f64,
        unit: "mm/s".into(),
        ts_ms: now_ms(),
        status: Level::Normal,
        location: "Line 1".into(),
    });
    serde_json::to_string(&reading.to_wire("bench-gw", Some(seq))).expect("a reading renders")
}

/// Publishes `rate` readings/s for `secs` on `sensor-readings` from devices
/// `relay-000`…`relay-099`: every 10 ms, one pipeline of the PUBLISHes due by then.
async fn publish(conn: &mut MultiplexedConnection, rate: usize, secs: u64, seq: &mut u64) {
    let total = rate as u64 * secs;
    let start = Instant::now();
    let (mut sent, mut tick) = (0u64, 0u64);
    while sent < total {
        tick += 1;
        let due = (rate as u64 * tick / 100).min(total);
        if due > sent {
            let mut pipe = redis::pipe();
            for n in sent..due {
                *seq += 1;
                pipe.cmd("PUBLISH")
                    .arg("sensor-readings")
                    .arg(reading_json(n as usize, *seq))
                    .ignore();
            }
            pipe.query_async::<()>(conn)
                .await
                .expect("PUBLISH to the bench's redis-server");
            sent = due;
        }
        tokio::time::sleep_until((start + Duration::from_millis(10 * tick)).into()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Steps, climbs and the table
// ---------------------------------------------------------------------------------------------

/// One rate held (or not) for one step.
struct Step {
    rate: usize,
    dashboards: usize,
    delivered: u64,
    expected: u64,
    p50: i64,
    p99: i64,
    max: i64,
    cpu_pct: f64,
    rss_kib: u64,
    /// The 1-minute load average at the end (the machine is shared).
    load: String,
    counts: String,
}

impl Step {
    fn holds(&self) -> bool {
        self.delivered == self.expected && (0..=P99_BOUND_MS).contains(&self.p99)
    }

    fn line(&self) -> String {
        format!(
            "{} dashboards at {} readings/s: delivered {}/{} ({:.1} %), latency ms p50 {} p99 {} \
             max {}; CPU {:.0} % of core 0, RSS {} KiB; load {}{}{}",
            self.dashboards,
            self.rate,
            self.delivered,
            self.expected,
            self.delivered as f64 / self.expected.max(1) as f64 * 100.0,
            self.p50,
            self.p99,
            self.max,
            self.cpu_pct,
            self.rss_kib,
            self.load,
            self.counts,
            if self.holds() { "" } else { "  <- fails" }
        )
    }
}

async fn step(
    svc: &Service,
    dash: &Dashboards,
    conn: &mut MultiplexedConnection,
    rate: usize,
    secs: u64,
    seq: &mut u64,
) -> Step {
    dash.reset();
    let (cpu_before, started) = (svc.cpu_secs(), Instant::now());
    publish(conn, rate, secs, seq).await;
    let expected = rate as u64 * secs * dash.n as u64;
    let deadline = Instant::now() + DRAIN;
    while dash.seen.delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = &dash.seen;
    Step {
        rate,
        dashboards: dash.n,
        delivered: s.delivered(),
        expected,
        p50: s.quantile(0.50),
        p99: s.quantile(0.99),
        max: s.quantile(1.0),
        cpu_pct: (svc.cpu_secs() - cpu_before) / started.elapsed().as_secs_f64() * 100.0,
        rss_kib: svc.rss_kib("VmRSS:"),
        load: load_average(),
        counts: format!("{}{}", dash.spread(), svc.counts()),
    }
}

/// What one service did for one number of dashboards.
struct Row {
    service: String,
    dashboards: usize,
    /// The highest rate that held, and the first that did not.
    held: Option<Step>,
    failed: Option<Step>,
    peak_rss_kib: u64,
}

/// Steps up the ladder with `dashboards` connected until a rate fails.
async fn climb(svc: &Service, redis: &RedisServer, dashboards: usize, secs: u64) -> Row {
    let dash = Dashboards::connect(svc.http, dashboards).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The dashboards share this process's one worker: a PUBLISH reply may wait behind them.
    let patient = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .expect("connect the publisher to redis-server");
    let (mut held, mut failed, mut seq) = (None, None, 0);
    // Warm-up, not measured: a fresh service's first readings (connections, allocations,
    // a new gateway's first record) are not what a rate can be held at.
    publish(&mut conn, ladder(dashboards)[0], 2, &mut seq).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for &rate in ladder(dashboards) {
        let s = step(svc, &dash, &mut conn, rate, secs, &mut seq).await;
        println!("{}: {}", svc.name, s.line());
        if !s.holds() {
            failed = Some(s);
            break;
        }
        held = Some(s);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    dash.close().await;
    Row {
        service: svc.name.clone(),
        dashboards,
        held,
        failed,
        peak_rss_kib: svc.rss_kib("VmHWM:"),
    }
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().next().unwrap_or("?").to_string()
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| service | dashboards | readings/s held (p99 ≤ {P99_BOUND_MS} ms, all delivered) | \
         deliveries/s | p99 ms | CPU % of core 0 | RSS MiB (peak) | next step |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in rows {
        let held = r.held.as_ref();
        let next = r.failed.as_ref().map_or("none failed".to_string(), |f| {
            format!(
                "{}/s: {:.1} % delivered, p99 {} ms",
                f.rate,
                f.delivered as f64 / f.expected.max(1) as f64 * 100.0,
                f.p99
            )
        });
        println!(
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} |",
            r.service,
            r.dashboards,
            held.map_or("none".into(), |s| s.rate.to_string()),
            held.map_or("-".into(), |s| (s.rate * s.dashboards).to_string()),
            held.map_or("-".into(), |s| s.p99.to_string()),
            held.map_or("-".into(), |s| format!("{:.0}", s.cpu_pct)),
            held.map_or("-".into(), |s| mib(s.rss_kib)),
            mib(r.peak_rss_kib),
            next
        );
    }
}

/// Starts a fresh service with `start` for each number of dashboards and climbs.
async fn measure(
    rows: &mut Vec<Row>,
    dashboards: &[usize],
    secs: u64,
    redis: &RedisServer,
    start: impl Fn(&RedisServer) -> Result<Service, String>,
) {
    for &n in dashboards {
        match start(redis) {
            Ok(svc) => rows.push(climb(&svc, redis, n, secs).await),
            Err(e) => println!("service did not start: {e}"),
        }
    }
}

fn main() {
    let args = support::bench_names();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let secs = std::env::var("RELAY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // Children (redis-server, HAProxy) inherit core 1; the services are moved to core 0.
    let rt = support::load_runtime();
    rt.block_on(async {
        let redis = RedisServer::start(None);
        let mut rows = Vec::new();
        for (arg, kind) in [("node", Kind::Node), ("relay", Kind::Relay)] {
            if want(arg) {
                let one = |r: &RedisServer| start_service(r, kind, 1, false);
                measure(&mut rows, &[100, 1_000], secs, &redis, one).await;
            }
        }
        for (arg, kind) in [("replicas", Kind::Relay), ("node-replicas", Kind::Node)] {
            if want(arg) && (arg == "replicas" || !args.is_empty()) {
                for n in [1, 3] {
                    let lb = |r: &RedisServer| start_service(r, kind, n, true);
                    measure(&mut rows, &[1_000], secs, &redis, lb).await;
                }
            }
        }
        print_table(&rows);
    });
}
