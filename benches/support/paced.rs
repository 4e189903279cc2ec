//! Raw MQTT 3.1.1 publishers for the benches: one device publishing QoS 1 readings at an even
//! pace, timing each PUBACK (the flash-wear load: the simulator sends in bursts, which hides
//! the cost of a commit per reading). The one publishing flat out until the gateway is killed
//! is `mqtt_raw::publish_until_killed`, shared with the kill -9 test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mqtt_raw::{Raw, publish};

/// What a paced run saw: readings sent, PUBACKs received, and their latencies in µs (sorted).
pub struct Paced {
    pub sent: u64,
    pub acked: u64,
    pub puback_us: Vec<u64>,
}

/// Publishes `rate` readings/s for `secs` from one connection, then waits (at most 30 s) for
/// the last PUBACKs.
pub async fn publish_evenly(mqtt: SocketAddr, device: &str, rate: u64, secs: u64) -> Paced {
    let (raw, _, code) = Raw::connect(mqtt, 4, device, true, None).await;
    assert_eq!(code, 0, "CONNACK");
    let (mut rd, mut wr) = raw.stream.into_split();
    let sent_at: Arc<Mutex<HashMap<u16, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let reader = tokio::spawn({
        let (sent_at, latencies) = (sent_at.clone(), latencies.clone());
        async move {
            let mut ack = [0u8; 4];
            while rd.read_exact(&mut ack).await.is_ok() {
                let pkid = u16::from_be_bytes([ack[2], ack[3]]);
                if let Some(at) = sent_at.lock().unwrap().remove(&pkid) {
                    latencies
                        .lock()
                        .unwrap()
                        .push(at.elapsed().as_micros() as u64);
                }
            }
        }
    });
    let topic = format!("sensors/{device}/temperature");
    let total = rate * secs;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..total {
        tick.tick().await;
        let pkid = (n % 65_535) as u16 + 1;
        // Below the default temperature threshold: no alarm records on top of the readings.
        let payload = format!("{}.5", n % 30);
        sent_at.lock().unwrap().insert(pkid, Instant::now());
        wr.write_all(&publish(4, 1, false, pkid, &topic, payload.as_bytes()))
            .await
            .expect("publish");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.lock().unwrap().len() < total as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(wr);
    reader.abort();
    let mut puback_us = std::mem::take(&mut *latencies.lock().unwrap());
    puback_us.sort_unstable();
    Paced {
        sent: total,
        acked: puback_us.len() as u64,
        puback_us,
    }
}
