//! Starting a whole gateway in-process on free loopback ports with a temp store.
#![allow(dead_code)]

pub mod binary;
pub mod certs;
pub mod peer;
pub mod socketio;
pub mod tls_peers;
pub mod upstream;

#[allow(unused_imports)]
pub use socketio::SocketIoEvents;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use edge_gateway::config::Config;
use edge_gateway::{Gateway, Options};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every reading of `device` in history (up to 100,000), oldest first.
pub fn history(store: &edge_gateway::store::Store, device: &str) -> Vec<serde_json::Value> {
    store
        .history(&edge_gateway::store::HistoryQuery {
            device_id: device.into(),
            sensor_type: None,
            from_ms: None,
            to_ms: None,
            limit: 100_000,
        })
        .unwrap()
}

pub fn test_config() -> Config {
    let mut c = Config {
        gateway_id: "test-gw".into(),
        ..Config::default()
    };
    c.server.host = "127.0.0.1".into();
    c.server.port = 0;
    c.mqtt.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    c.rate_limit.max_requests = 100_000;
    c.log.level = "warn".into();
    c
}

pub async fn start(config: Config, dir: &Path) -> Gateway {
    Gateway::start(
        config,
        Options {
            data_dir: dir.to_path_buf(),
            simulate: None,
        },
    )
    .await
    .expect("gateway starts")
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

/// A plain HTTP/1.1 GET; None if nothing answers (yet) or the reply is not HTTP.
pub fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.get(9..12)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls `f` until it returns Some or the deadline passes.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client `id` that published `value` QoS 1 on `sensors/{device}/temperature` and got its
/// PUBACK (the reading is committed); the client stays connected while the caller keeps it.
pub async fn published_acked(
    addr: std::net::SocketAddr,
    id: &str,
    device: &str,
    value: &str,
) -> AsyncClient {
    let (client, mut acks) = mqtt_client(addr, id).await;
    client
        .publish(
            format!("sensors/{device}/temperature"),
            rumqttc::QoS::AtLeastOnce,
            false,
            value.to_string(),
        )
        .await
        .unwrap();
    acks.wait_for(|a| *a >= 1).await.unwrap();
    client
}

/// Value of an unlabelled or exactly-labelled sample in Prometheus text.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A connected rumqttc client whose event loop runs in the background; returns the client and
/// a counter of PUBACKs received.
pub async fn mqtt_client(
    addr: std::net::SocketAddr,
    id: &str,
) -> (AsyncClient, tokio::sync::watch::Receiver<u64>) {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let mut acks = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acks += 1;
                    let _ = tx.send(acks);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (client, rx)
}
