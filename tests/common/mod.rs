//! Starting a whole gateway in-process on free loopback ports with a temp store.
#![allow(dead_code)]

pub mod upstream;

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
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
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

/// A minimal Socket.IO v4 client over a raw websocket (EIO4): answers pings and records every
/// event as (name, first argument).
pub struct SocketIoEvents {
    events: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SocketIoEvents {
    pub async fn connect(addr: SocketAddr) -> SocketIoEvents {
        SocketIoEvents::connect_and_emit(addr, &[]).await
    }

    /// Connects, then emits each event (no arguments), e.g. `subscribe-all-devices`.
    pub async fn connect_and_emit(addr: SocketAddr, emits: &[&str]) -> SocketIoEvents {
        use futures_util::{SinkExt, StreamExt};
        let emits: Vec<String> = emits.iter().map(|e| format!("42[\"{e}\"]")).collect();
        use tokio_tungstenite::tungstenite::Message;
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                let text = text.as_str();
                if text.starts_with('0') {
                    let _ = ws.send(Message::text("40")).await;
                } else if text == "2" {
                    let _ = ws.send(Message::text("3")).await;
                } else if text.starts_with("40") {
                    for e in &emits {
                        let _ = ws.send(Message::text(e.clone())).await;
                    }
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                } else if let Some(body) = text.strip_prefix("42")
                    && let Ok(serde_json::Value::Array(mut parts)) = serde_json::from_str(body)
                    && !parts.is_empty()
                {
                    let name = parts.remove(0).as_str().unwrap_or_default().to_string();
                    let arg = parts.into_iter().next().unwrap_or(serde_json::Value::Null);
                    sink.lock().unwrap().push((name, arg));
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("socket.io connect in time")
            .expect("socket.io connected");
        SocketIoEvents { events, task }
    }

    /// Every payload of `event` received so far.
    pub fn of(&self, event: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| name == event)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Drop for SocketIoEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}
