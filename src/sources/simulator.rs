//! Simulated devices for demos and tests without hardware. Each message is a topic and
//! payload parsed by the MQTT topic contract (like a device's publish) and handed straight to
//! the pipeline, with drift, occasional threshold breaches, and devices that drop offline
//! (announced on their status topic, like a last will) and come back.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ingest::Ingest;

use super::topic::parse;

/// Sensor types cycled through the simulated devices: (type, unit, base, spread, spike).
const KINDS: &[(&str, &str, f64, f64, f64)] = &[
    ("temperature", "°C", 24.0, 4.0, 48.0),
    ("humidity", "%", 45.0, 10.0, 88.0),
    ("pressure", "hPa", 1013.0, 8.0, 1085.0),
    ("vibration", "mm/s", 2.5, 1.5, 12.0),
];

/// xorshift64*: deterministic per seed, good enough for demo noise, no dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct SimDevice {
    id: String,
    kind: usize,
    location: String,
    value: f64,
    /// Ticks left in an outage; 0 = publishing.
    silent_for: u32,
}

/// Parses like a device publish and hands over; false once the pipeline is gone.
async fn publish(tx: &mpsc::Sender<Ingest>, topic: &str, payload: &str) -> bool {
    match parse(
        topic.as_bytes(),
        payload.as_bytes(),
        usize::MAX,
        Instant::now(),
    ) {
        Ok(msg) => tx.send(msg).await.is_ok(),
        Err(reason) => {
            tracing::error!(
                topic,
                reason = reason.as_str(),
                "simulator message rejected"
            );
            true
        }
    }
}

pub async fn run(
    tx: mpsc::Sender<Ingest>,
    devices: usize,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ crate::time::now_ms() as u64);
    let mut sims: Vec<SimDevice> = (0..devices)
        .map(|i| SimDevice {
            id: format!("sim-device-{:03}", i + 1),
            kind: i % KINDS.len(),
            location: format!("Assembly Line {}", i / KINDS.len() + 1),
            value: KINDS[i % KINDS.len()].2,
            silent_for: 0,
        })
        .collect();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        devices,
        interval_ms = interval.as_millis() as u64,
        "simulator publishing"
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        for d in &mut sims {
            let (sensor, unit, base, spread, spike) = KINDS[d.kind];
            if d.silent_for > 0 {
                d.silent_for -= 1;
                continue;
            }
            // One tick in 2000 a device drops out for 20–40 ticks.
            if rng.next_f64() < 0.0005 {
                d.silent_for = 20 + (rng.next_f64() * 20.0) as u32;
                if !publish(&tx, &format!("devices/{}/status", d.id), "offline").await {
                    return;
                }
                continue;
            }
            // Mean-reverting random walk, with a rare spike past the critical threshold.
            d.value += (base - d.value) * 0.1 + (rng.next_f64() - 0.5) * spread * 0.5;
            let value = if rng.next_f64() < 0.002 {
                spike
            } else {
                d.value
            };
            let payload = format!(
                r#"{{"value":{:.2},"unit":"{unit}","location":"{}"}}"#,
                value, d.location
            );
            if !publish(&tx, &format!("sensors/{}/{sensor}", d.id), &payload).await {
                tracing::error!("simulator cannot hand over: the pipeline is gone; stopping");
                return;
            }
        }
    }
}
