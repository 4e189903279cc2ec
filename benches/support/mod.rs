//! What only the benchmarks share: measuring the gateway binary (RSS, CPU, metrics) or any
//! process (by pid; pinning it to a core) and rumqttc publishers that flood. Starting
//! processes, HTTP and Socket.IO come from tests/common, the one home of test support.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_gateway::time::{format_ms, now_ms, parse_rfc3339_ms};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::common::binary::GatewayProcess;
use crate::common::try_http_get;

/// Figures of the gateway binary as a child process.
pub trait Measure {
    fn rss_kib(&self) -> u64;
    /// User + system CPU seconds the gateway has used so far.
    fn cpu_secs(&self) -> f64;
    /// Sum of every sample of `name` (all label sets).
    fn metric(&self, name: &str) -> f64;
    /// (p50, p99) upper bucket bounds and the mean of a Prometheus histogram, in ms.
    fn histogram_ms(&self, name: &str) -> (f64, f64, f64);
}

impl Measure for GatewayProcess {
    fn rss_kib(&self) -> u64 {
        GatewayProcess::rss_kib(self)
    }

    fn cpu_secs(&self) -> f64 {
        cpu_secs_of(self.peer.id())
    }

    fn metric(&self, name: &str) -> f64 {
        let text = http_ok(self.http, "/metrics").unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    }

    fn histogram_ms(&self, name: &str) -> (f64, f64, f64) {
        let text = http_ok(self.http, "/metrics").unwrap_or_default();
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.parse().ok()?))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
        let q = |q: f64| {
            buckets
                .iter()
                .find(|b| b.1 >= q * total)
                .map(|b| b.0 * 1000.0)
                .unwrap_or(f64::NAN)
        };
        let sum = self.metric(&format!("{name}_sum"));
        let count = self.metric(&format!("{name}_count"));
        (q(0.5), q(0.99), sum / count * 1000.0)
    }
}

/// User + system CPU seconds process `pid` has used so far (0 once it is gone).
pub fn cpu_secs_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/<pid>/status` figure in KiB, e.g. `VmRSS:` (now) or `VmHWM:` (peak); 0 if absent.
pub fn status_kib_of(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Pins every thread of `pid` to `cpu` (a `taskset` CPU list).
pub fn pin(pid: u32, cpu: &str) {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .output()
        .expect("taskset runs");
    assert!(out.status.success(), "taskset: {out:?}");
}

/// The parts a bench was asked to run: its command-line words, options (`--…`) left out.
pub fn bench_names() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}

/// Pins this process (the load: clients, publisher, and the peers it starts, which inherit
/// the pinning) to core 1 and returns the one-worker runtime the load runs on; the service
/// under test is pinned to core 0 when it starts.
pub fn load_runtime() -> tokio::runtime::Runtime {
    pin(std::process::id(), "1");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Receive time − the reading's `timestamp`, in ms, of a `sensor:*` event frame.
pub fn latency_ms(frame: &str) -> Option<i64> {
    let now = now_ms();
    let pos = frame.find("\"timestamp\":\"")? + 13;
    let sent = parse_rfc3339_ms(frame.get(pos..pos + 24)?)?;
    Some(now - sent)
}

/// The `p` quantile (0..=1) of sorted values; -1 if there are none.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(-1)
}

/// The body of a 200 reply to a GET; None for anything else.
pub fn http_ok(addr: SocketAddr, path: &str) -> Option<String> {
    try_http_get(addr, path)
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
}

pub async fn publisher(mqtt: SocketAddr, id: &str) -> AsyncClient {
    let mut opts = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("publisher event loop: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    client
}

/// The fan-out load: `rate` QoS 0 readings/s for `secs` from devices `fan-000`…`fan-099`, in
/// 10 ms ticks, each stamped with its send time (see [`latency_ms`]); `each_second` runs once
/// a second (e.g. to sample RSS).
pub async fn publish_fanout_load(
    mqtt: SocketAddr,
    rate: usize,
    secs: u64,
    mut each_second: impl FnMut(),
) {
    let client = publisher(mqtt, "bench-fanout").await;
    let total = rate * secs as usize;
    let per_tick = (rate / 100).max(1);
    let tick = Duration::from_millis(10);
    let (mut sent, mut next, mut second) = (0, Instant::now(), Instant::now());
    while sent < total {
        for _ in 0..per_tick {
            let topic = format!("sensors/fan-{:03}/vibration", sent % 100);
            let payload = format!(
                r#"{{"value":{}.0,"timestamp":"{}"}}"#,
                sent % 5,
                format_ms(now_ms())
            );
            client
                .publish(topic, QoS::AtMostOnce, false, payload)
                .await
                .unwrap();
            sent += 1;
        }
        if second.elapsed() >= Duration::from_secs(1) {
            each_second();
            second = Instant::now();
        }
        next += tick;
        tokio::time::sleep_until(next.into()).await;
    }
}
