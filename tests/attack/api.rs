//! A hostile or careless dashboard against the HTTP/Socket.IO API of the real binary: sockets
//! that never finish a header or sit idle, one IP opening hundreds of connections, tokens that
//! are not yet or no longer valid, ids that are not ids, sessions abandoned under CPU load, and
//! probes behind a token.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::binary::GatewayProcess;
use crate::common::{http_get, metric};

const SECRET: &str = "attack-secret";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// One HTTP/1.1 request on its own connection; (status, headers, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// True once the peer closed `s` (read returns 0 or an error other than a timeout).
fn closed_by_peer(mut s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn metrics_of(gw: &GatewayProcess) -> String {
    http_get(gw.http, "/metrics").1
}

fn clients(gw: &GatewayProcess) -> u64 {
    let health: Value = serde_json::from_str(&http_get(gw.http, "/health").1).unwrap();
    health["components"]["socketio"]["clients"]
        .as_u64()
        .unwrap()
}

#[test]
fn slowloris_headers_and_idle_keep_alive_are_closed_in_time() {
    let gw = GatewayProcess::start(&[
        ("EDGE_GATEWAY_SERVER__HEADER_READ_TIMEOUT_MS", "4000"),
        ("EDGE_GATEWAY_SERVER__IDLE_TIMEOUT_MS", "5000"),
        ("EDGE_GATEWAY_SERVER__MAX_CONNECTIONS_PER_IP", "1000"),
    ]);
    let first_byte = Instant::now();
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(gw.http).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // One more header line each: trickling bytes does not restart the clock.
    for s in &mut slow {
        s.write_all(b"a\r\nX-More: b").unwrap();
    }
    assert!(
        first_byte.elapsed() < Duration::from_millis(3000),
        "setting up took too long to tell the timeout apart"
    );
    assert!(
        !closed_by_peer(&slow[299]),
        "closed before the header timeout"
    );

    // An idle keep-alive connection: one full request answered, then nothing.
    let mut idle = TcpStream::connect(gw.http).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first[9..12], b"200");
    let answered = Instant::now();

    // The watch looks every quarter of the shorter timeout: closed from 4 s on. The bounds are
    // generous (a loaded CI box); without the timeouts they would stay open for ever. Both are
    // watched in one loop, so a slow close of the half-sent headers cannot hide when the idle
    // connection went.
    let mut idle_seen_open = Duration::ZERO;
    let mut idle_closed = false;
    loop {
        let still_open = slow.iter().filter(|s| !closed_by_peer(s)).count();
        if !idle_closed {
            if closed_by_peer(&idle) {
                idle_closed = true;
            } else {
                idle_seen_open = answered.elapsed();
            }
        }
        if still_open == 0 && idle_closed {
            break;
        }
        assert!(
            still_open == 0 || first_byte.elapsed() < Duration::from_secs(10),
            "{still_open} half-sent headers still held {:?} after they began (header timeout 4 s)",
            first_byte.elapsed()
        );
        assert!(
            idle_closed || answered.elapsed() < Duration::from_secs(12),
            "idle keep-alive connection still open 12 s after its response (idle timeout 5 s)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        idle_seen_open >= Duration::from_millis(4500),
        "the idle connection was closed before its idle timeout (last seen open {idle_seen_open:?} after its response)"
    );
    let m = metrics_of(&gw);
    assert!(
        metric(
            &m,
            "edge_gateway_socketio_rejected_total{reason=\"header_timeout\"}"
        )
        .is_some_and(|n| n >= 300.0),
        "{m}"
    );
}

#[test]
fn connections_over_the_per_ip_cap_are_refused_and_counted() {
    let gw = GatewayProcess::start(&[("EDGE_GATEWAY_SERVER__MAX_CONNECTIONS_PER_IP", "20")]);
    // /health is served on its own connection in `start`; wait until it is gone.
    std::thread::sleep(Duration::from_millis(200));
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(gw.http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(held.iter().all(|s| !closed_by_peer(s)));
    let mut over = TcpStream::connect(gw.http).unwrap();
    let _ = over.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    assert!(closed_by_peer(&over), "the 21st connection was served");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let m = metrics_of(&gw);
    assert_eq!(
        metric(
            &m,
            "edge_gateway_socketio_rejected_total{reason=\"connections_per_ip\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn handshake_rate_limit_says_when_to_retry() {
    let gw = GatewayProcess::start(&[
        ("RATE_LIMIT_MAX_REQUESTS", "2"),
        ("RATE_LIMIT_WINDOW", "60000"),
    ]);
    for _ in 0..2 {
        let (status, _, _) = request(
            gw.http,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            &[],
            "",
        );
        assert_eq!(status, 200);
    }
    let (status, head, _) = request(
        gw.http,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[],
        "",
    );
    assert_eq!(status, 429);
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("429 carries Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

/// A Socket.IO v4 client over HTTP long-polling, one request per connection.
struct Polling {
    http: SocketAddr,
    sid: String,
    queued: std::cell::RefCell<std::collections::VecDeque<String>>,
}

impl Polling {
    /// Engine.IO open and Socket.IO CONNECT with `auth`; Err(connect_error packet).
    fn connect(http: SocketAddr, query: &str, auth: Option<Value>) -> Result<Polling, String> {
        let (status, _, body) = request(
            http,
            "GET",
            &format!("/socket.io/?EIO=4&transport=polling{query}"),
            &[],
            "",
        );
        assert_eq!(status, 200, "{body}");
        let open: Value = serde_json::from_str(&body[1..]).unwrap();
        let p = Polling {
            http,
            sid: open["sid"].as_str().unwrap().to_string(),
            queued: Default::default(),
        };
        let connect = match auth {
            Some(a) => format!("40{a}"),
            None => "40".into(),
        };
        p.post(&connect);
        let reply = p.next();
        if reply.starts_with("44") {
            return Err(reply);
        }
        assert!(reply.starts_with("40"), "{reply}");
        Ok(p)
    }

    fn post(&self, packets: &str) {
        let (status, _, body) = request(
            self.http,
            "POST",
            &format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid),
            &[("Content-Type", "text/plain;charset=UTF-8")],
            packets,
        );
        assert_eq!(status, 200, "{body}");
    }

    /// The next Socket.IO packet, answering engine.io pings meanwhile.
    fn next(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no Socket.IO packet within 10 s");
            if let Some(p) = self.queued.borrow_mut().pop_front() {
                return p;
            }
            let (_, _, body) = request(
                self.http,
                "GET",
                &format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid),
                &[],
                "",
            );
            for p in body.split('\u{1e}') {
                match p {
                    "2" => self.post("3"),
                    "" => {}
                    p => self.queued.borrow_mut().push_back(p.to_string()),
                }
            }
        }
    }

    /// The next packet that is not `welcome`.
    fn reply(&self) -> String {
        loop {
            let p = self.next();
            if !p.starts_with("42[\"welcome\"") {
                return p;
            }
        }
    }
}

#[test]
fn jwt_nbf_and_expiry_are_checked_without_leeway() {
    let gw = GatewayProcess::start(&[("JWT_SECRET", SECRET)]);
    let now = now_secs();
    let good = token(json!({"sub": "dash", "exp": now + 600}));
    assert!(Polling::connect(gw.http, "", Some(json!({"token": good}))).is_ok());

    let future = token(json!({"sub": "dash", "exp": now + 600, "nbf": now + 300}));
    let err = Polling::connect(gw.http, "", Some(json!({"token": future}))).err();
    assert!(
        err.as_deref().is_some_and(|e| e.contains("invalid token")),
        "a token valid only in 5 minutes: {err:?}"
    );

    let expired = token(json!({"sub": "dash", "exp": now_secs() - 1}));
    let err = Polling::connect(gw.http, "", Some(json!({"token": expired}))).err();
    assert!(
        err.as_deref().is_some_and(|e| e.contains("invalid token")),
        "a token expired 1 s ago: {err:?}"
    );
}

/// `42[event,arg]` with an ack id (`421[...]`) or without.
fn event(name: &str, arg: &Value, ack: bool) -> String {
    let ack = if ack { "1" } else { "" };
    format!("42{ack}{}", json!([name, arg]))
}

#[test]
fn subscribe_device_refuses_what_is_not_a_device_id() {
    let gw = GatewayProcess::start(&[]);
    let p = Polling::connect(gw.http, "", None).unwrap();
    let long = Value::String("d".repeat(10_000));
    let object = json!({"deviceId": "line-1", "pad": "x".repeat(1000)});

    p.post(&event("subscribe:device", &long, true));
    let reply = p.reply();
    assert!(reply.starts_with("431["), "an ack for a 10k id: {reply}");
    assert!(reply.contains("\"success\":false"), "{reply}");
    assert!(reply.contains("Invalid device id"), "{reply}");

    p.post(&event("subscribe:device", &object, false));
    let reply = p.reply();
    assert!(
        reply.starts_with("42[\"error\""),
        "an error event for an object id: {reply}"
    );
    assert!(reply.contains("Invalid device id"), "{reply}");

    p.post(&event("subscribe:device", &json!("line-1"), true));
    let reply = p.reply();
    assert!(reply.starts_with("431["), "{reply}");
    assert!(reply.contains("\"success\":true"), "{reply}");

    let m = metrics_of(&gw);
    for reason in ["bad_device_id", "bad_event"] {
        assert_eq!(
            metric(
                &m,
                &format!("edge_gateway_socketio_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(1.0),
            "{m}"
        );
    }
}

#[test]
fn probes_need_a_bearer_token_when_protected() {
    let gw = GatewayProcess::start(&[
        ("JWT_SECRET", SECRET),
        ("EDGE_GATEWAY_AUTH__PROTECT_PROBES", "true"),
    ]);
    let good = token(json!({"sub": "prometheus", "exp": now_secs() + 600}));
    let bearer = format!("Bearer {good}");
    for path in ["/health", "/metrics"] {
        let (status, head, _) = request(gw.http, "GET", path, &[], "");
        assert_eq!(status, 401, "{path} without a token");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        let (status, _, _) = request(
            gw.http,
            "GET",
            path,
            &[("Authorization", "Bearer x.y.z")],
            "",
        );
        assert_eq!(status, 401, "{path} with a bad token");
        let (status, _, _) = request(gw.http, "GET", path, &[("Authorization", &bearer)], "");
        assert_eq!(status, 200, "{path} with a token");
    }
    // Off by default: the same gateway without the flag answers probes without a token.
    let open = GatewayProcess::start(&[("JWT_SECRET", SECRET)]);
    assert_eq!(request(open.http, "GET", "/health", &[], "").0, 200);
}

/// Burns CPU on every core until dropped, so the gateway's tasks run late.
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start() -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn abandoned_polling_sessions_expire_under_cpu_load() {
    const SESSIONS: usize = 60;
    // Long enough that a session outlives its own set-up on a loaded machine.
    let gw = GatewayProcess::start(&[
        ("SOCKET_IO_PING_INTERVAL", "2000"),
        ("SOCKET_IO_PING_TIMEOUT", "2000"),
    ]);
    let load = CpuLoad::start();
    let http = gw.http;
    let workers: Vec<_> = (0..SESSIONS)
        .map(|i| {
            std::thread::spawn(move || {
                let p = Polling::connect(http, "", None).unwrap();
                p.post(&event(
                    "subscribe:device",
                    &json!(format!("ghost-{i}")),
                    false,
                ));
                p.post(&event("ping", &Value::Null, false));
                if i % 2 == 0 {
                    let _ = p.reply();
                }
                // Abandoned: no more polls, no pongs.
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let abandoned = Instant::now();
    // Ping interval + timeout is 4 s; allow the loaded machine some slack.
    let deadline = Duration::from_secs(14);
    let mut left = clients(&gw);
    while left > 0 && abandoned.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = clients(&gw);
    }
    drop(load);
    assert_eq!(
        left,
        0,
        "{left} of {SESSIONS} abandoned sessions still hold a slot {:?} after abandonment",
        abandoned.elapsed()
    );
}

/// Opens an Engine.IO session and sends Socket.IO CONNECT and Engine.IO CLOSE in one POST, as
/// a polling client does when it connects and is closed at once (a page navigated away).
/// socketioxide runs the namespace connect in a task of its own, so the session can be closed
/// before the socket enters the namespace; the socket then stays there with nobody to close it.
fn connect_and_close(http: SocketAddr) {
    let (status, _, body) = request(http, "GET", "/socket.io/?EIO=4&transport=polling", &[], "");
    assert_eq!(status, 200, "{body}");
    let open: Value = serde_json::from_str(&body[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let (status, _, body) = request(http, "POST", &path, &[], "40\u{1e}1");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn sessions_closed_while_connecting_do_not_stay() {
    const SESSIONS: usize = 50;
    let gw = GatewayProcess::start(&[
        ("SOCKET_IO_PING_INTERVAL", "1000"),
        ("SOCKET_IO_PING_TIMEOUT", "1000"),
    ]);
    for _ in 0..SESSIONS {
        connect_and_close(gw.http);
    }
    let closed = Instant::now();
    // Ping interval + timeout is 2 s; allow a loaded machine some slack.
    let deadline = Duration::from_secs(10);
    let mut left = clients(&gw);
    while left > 0 && closed.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = clients(&gw);
    }
    assert_eq!(
        left,
        0,
        "{left} of {SESSIONS} sessions closed while connecting still hold a slot {:?} later",
        closed.elapsed()
    );
}

/// `sensor:all` seqs from `ws` until `done(seqs)`, or None after `secs` without that.
async fn seqs_until(
    ws: &mut crate::common::socketio::Ws,
    secs: u64,
    done: impl Fn(&[u64]) -> bool,
) -> Option<Vec<u64>> {
    use crate::common::socketio::{next_event, parse_event};
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done(&seqs) {
        let frame = tokio::time::timeout_at(deadline, next_event(ws))
            .await
            .ok()??;
        if let Some((name, r)) = parse_event(&frame)
            && name == "sensor:all"
        {
            seqs.push(r["seq"].as_u64().unwrap());
        }
    }
    Some(seqs)
}

/// One QoS 0 reading per line over one connection.
fn publish_lines(gw: &GatewayProcess, from: usize, count: usize) {
    let lines: String = (from..from + count).map(|i| format!("{i}\n")).collect();
    let mut child = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &gw.mqtt.port().to_string()])
        .args(["-q", "0", "-t", "sensors/stall-1/temperature", "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Stalled clients whose own buffers never fill (`client_buffer_packets` is huge) must not
/// hold the gateway's memory either: all buffers together stay within
/// `socketio.total_buffer_bytes`, give or take the few events and the one websocket write a
/// client may always hold. Those refused for it are replayed to and lose nothing, like a
/// client whose own buffer is full; the reading client loses nothing either.
#[test]
fn all_buffers_together_stay_within_total_buffer_bytes_and_nobody_loses_a_reading() {
    // ~10 MB per client: more than the kernel's socket buffers take (4 MB by default).
    const READINGS: usize = 30_000;
    const STALLED: usize = 16;
    const TOTAL: f64 = 1_048_576.0;
    let (gw, rt) = replaying_gateway(&[
        ("EDGE_GATEWAY_SOCKETIO__CLIENT_BUFFER_PACKETS", "1000000"),
        ("EDGE_GATEWAY_SOCKETIO__TOTAL_BUFFER_BYTES", "1048576"),
        // The stalled clients do not answer the ping sent as they connect while the reader
        // takes its 30,000 readings (slow in a debug build).
        ("SOCKET_IO_PING_TIMEOUT", "300000"),
    ]);
    rt.block_on(async {
        use crate::common::socketio::{connect, connect_small_window};
        let mut stalled = Vec::new();
        for _ in 0..STALLED {
            stalled.push(connect_small_window(gw.http, &["subscribe-all-devices"], 16_384).await);
        }
        let mut reader = connect(gw.http, &["subscribe-all-devices"]).await;
        let reading = tokio::spawn(async move {
            seqs_until(&mut reader, 120, |s| {
                s.len() >= READINGS && unique(s).len() >= READINGS
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        publish_lines(&gw, 0, READINGS);
        let Some(live) = reading.await.unwrap() else {
            panic!("the reading client missed readings: {}", gw.peer.log_tail());
        };
        let live = unique(&live);
        assert_eq!(live.len(), READINGS);
        let m = metrics_of(&gw);
        // Without the bound the stalled clients held what the kernel did not take, ~16 × 20,000
        // slots of 40 bytes. A client may pass the bound by 8 events (~0.4 KiB each when its own) and
        // one websocket write (16 KiB and a frame).
        let peak = metric(&m, "edge_gateway_socketio_buffered_bytes_peak").expect("peak");
        let slack = (STALLED + 1) as f64 * (8.0 * 512.0 + 17.0 * 1024.0);
        assert!(
            peak <= TOTAL + slack,
            "peak {peak} > {TOTAL} + {slack}\n{m}"
        );
        assert!(
            metric(&m, "edge_gateway_socketio_budget_refused_total").is_some_and(|n| n >= 1.0),
            "{m}"
        );
        // Each stalled client reads again: everything, in order.
        for ws in stalled.iter_mut().take(3) {
            let Some(missed) = seqs_until(ws, 120, |s| {
                s.len() >= READINGS && unique(s).len() >= READINGS
            })
            .await
            else {
                panic!("a stalled client missed readings: {}", gw.peer.log_tail());
            };
            assert_eq!(unique(&missed), live, "in order, none missing");
        }
        // Every charge is given back: the 13 that never read again leave with events queued.
        drop(stalled);
        let deadline = Instant::now() + Duration::from_secs(30);
        let buffered = loop {
            let m = metrics_of(&gw);
            let buffered = metric(&m, "edge_gateway_socketio_buffered_bytes");
            if buffered == Some(0.0) || Instant::now() > deadline {
                break buffered;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(buffered, Some(0.0), "{}", metrics_of(&gw));
    });
}

/// The binary with `env`, replays unpaced and devices that stay online through a test, and a
/// runtime for its clients.
fn replaying_gateway(env: &[(&str, &str)]) -> (GatewayProcess, tokio::runtime::Runtime) {
    let mut all = vec![
        ("EDGE_GATEWAY_SOCKETIO__RESUME_RECORDS_PER_SEC", "0"),
        ("EDGE_GATEWAY_DEVICES__OFFLINE_AFTER_MS", "600000"),
    ];
    all.extend_from_slice(env);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    (GatewayProcess::start(&all), rt)
}

/// Each `seq` once, in the order first seen (a replay may repeat what was already sent).
fn unique(seqs: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

/// A dashboard that stops reading must neither slow the others nor grow without bound, and
/// once it reads again it gets everything it missed: when its buffer is full it leaves its
/// rooms and is replayed to from the store (the resume path). The old room broadcast dropped
/// what did not fit, silently.
#[test]
fn a_client_that_stops_reading_is_replayed_to_and_loses_nothing() {
    const READINGS: usize = 3_000;
    let (gw, rt) = replaying_gateway(&[("EDGE_GATEWAY_SOCKETIO__CLIENT_BUFFER_PACKETS", "64")]);
    rt.block_on(async {
        use crate::common::socketio::{connect, connect_small_window};
        let mut stalled = connect_small_window(gw.http, &["subscribe-all-devices"], 32_768).await;
        let mut reader = connect(gw.http, &["subscribe-all-devices"]).await;
        let reading =
            tokio::spawn(
                async move { seqs_until(&mut reader, 120, |s| s.len() >= READINGS).await },
            );
        tokio::time::sleep(Duration::from_millis(300)).await;
        publish_lines(&gw, 0, READINGS);
        let Some(live) = reading.await.unwrap() else {
            panic!("the reading client missed readings: {}", gw.peer.log_tail());
        };
        assert_eq!(live.len(), READINGS);
        let overflows = metric(&metrics_of(&gw), "edge_gateway_socketio_overflows_total");
        assert!(
            overflows.is_some_and(|n| n >= 1.0),
            "the stalled client overflowed"
        );
        // Reads again: everything it missed, in order.
        let Some(missed) = seqs_until(&mut stalled, 120, |s| {
            s.iter().collect::<std::collections::HashSet<_>>().len() >= READINGS
        })
        .await
        else {
            panic!("the stalled client missed readings: {}", gw.peer.log_tail());
        };
        let mut firsts = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for s in missed {
            if seen.insert(s) {
                firsts.push(s);
            }
        }
        assert_eq!(firsts, live, "in order, none missing");
    });
    let m = metrics_of(&gw);
    assert!(
        metric(&m, "edge_gateway_socketio_replayed_records_total").is_some_and(|n| n > 0.0),
        "{m}"
    );
    // A client that reads nothing never drains, so the probe after a broadcast finds it
    // every time and nobody gets a record twice.
    assert_eq!(
        metric(&m, "edge_gateway_socketio_events_duplicated_total").unwrap_or(0.0),
        0.0,
        "{m}"
    );
}
