//! Starting a whole gateway in-process on free loopback ports with a temp store.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use edge_gateway::config::Config;
use edge_gateway::{Gateway, Options};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
