//! The built-in dashboard against the real binary: its HTTP caching (gzip, ETag → 304,
//! `dashboard.enabled = false`), and the page itself in Debian's headless Chromium driven by
//! playwright-core (`tests/dashboard/dashboard.js`, one scenario per test), with every
//! non-loopback request blocked. Screenshots and figures go to
//! `$CARGO_TARGET_TMPDIR/dashboard/`. Needs `chromium` (apt) and `npm ci` in tests/dashboard
//! (scripts/test.sh does both).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::binary::GatewayProcess;
use common::upstream::RedisServer;

/// One browser scenario at a time: each is a gateway and a Chromium on a 2-core box.
static BROWSER: Mutex<()> = Mutex::new(());

const CHROMIUM: &str = "/usr/bin/chromium";

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("create the dashboard output dir");
    dir
}

/// Runs one scenario of `tests/dashboard/dashboard.js` against `gw`; fails with its output.
fn run_scenario(scenario: &str, gw: &GatewayProcess, env: &[(&str, &str)]) -> String {
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    assert!(
        node_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/dashboard first (scripts/test.sh does)"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)"
    );
    let mut cmd = Command::new("node");
    cmd.arg("dashboard.js")
        .current_dir(&node_dir)
        .env("SCENARIO", scenario)
        .env("GATEWAY_URL", format!("http://{}", gw.http))
        .env("GATEWAY_MQTT_PORT", gw.mqtt.port().to_string())
        .env("OUT_DIR", out_dir())
        .env("CHROMIUM", CHROMIUM);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run node (tests/dashboard)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "dashboard scenario `{scenario}` failed:\n{text}\ngateway log:\n{}",
        gw.peer.log_tail()
    );
    text
}

fn browser_lock() -> std::sync::MutexGuard<'static, ()> {
    BROWSER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Loads, shows the simulated devices, live values, a trend from history then live, an alert
/// (and the alarm ack where the alarm API exists), device offline, health with a sink;
/// desktop and phone screenshots.
#[test]
fn dashboard_in_chromium() {
    let _one = browser_lock();
    let redis = RedisServer::start(None);
    let port = redis.port().to_string();
    let gw = GatewayProcess::start(&[
        ("EDGE_GATEWAY_GATEWAY_ID", "line-7-gw"),
        ("EDGE_GATEWAY_SIMULATOR__DEVICES", "12"),
        ("EDGE_GATEWAY_SIMULATOR__INTERVAL_MS", "250"),
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
    ]);
    // Some history for the trend to start from.
    std::thread::sleep(Duration::from_secs(3));
    run_scenario("main", &gw, &[]);
}

/// 1,000 devices at 200 ms (5,000 readings/s where the gateway keeps up): paging, filtering,
/// and the page's main-thread CPU over 10 s (a figure, printed, not asserted).
#[test]
fn dashboard_with_a_thousand_devices() {
    let _one = browser_lock();
    let gw = GatewayProcess::start(&[
        ("EDGE_GATEWAY_SIMULATOR__DEVICES", "1000"),
        ("EDGE_GATEWAY_SIMULATOR__INTERVAL_MS", "200"),
    ]);
    run_scenario("load", &gw, &[("EXPECT_DEVICES", "1000")]);
}

/// With JWT_SECRET the page asks for a token, refuses a bad one, keeps a good one.
#[test]
fn dashboard_asks_for_a_token() {
    let _one = browser_lock();
    let secret = "dashboard-test-secret";
    let gw = GatewayProcess::start(&[
        ("JWT_SECRET", secret),
        ("EDGE_GATEWAY_SIMULATOR__DEVICES", "3"),
    ]);
    run_scenario("auth", &gw, &[("JWT_SECRET", secret)]);
}

/// The page's connection is cut (browser offline) while readings keep being stored; after
/// the reconnect its trend holds every stored reading of the series, once.
#[test]
fn dashboard_resumes_without_gaps() {
    let _one = browser_lock();
    let gw = GatewayProcess::start(&[
        ("EDGE_GATEWAY_SIMULATOR__DEVICES", "8"),
        ("EDGE_GATEWAY_SIMULATOR__INTERVAL_MS", "250"),
        ("SOCKET_IO_PING_INTERVAL", "2000"),
        ("SOCKET_IO_PING_TIMEOUT", "2000"),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    run_scenario("resume", &gw, &[]);
}

/// `(status, head, body)` of a GET with extra header lines.
fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[test]
fn assets_are_compressed_and_revalidated() {
    let gw = GatewayProcess::start(&[]);
    let (status, head, page) = get(gw.http, "/", "");
    assert_eq!(status, 200, "{head}");
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("/socket.io/socket.io.min.js") && !page.contains("__SOCKETIO"));

    let (status, head, gz) = get(gw.http, "/", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"));
    assert_eq!(header(&head, "cache-control"), Some("no-cache"));
    assert_eq!(gunzip(&gz), page.as_bytes());
    let etag = header(&head, "etag").expect("an ETag").to_string();
    let (status, head, body) = get(
        gw.http,
        "/",
        &format!("Accept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n"),
    );
    assert_eq!((status, body.len()), (304, 0), "{head}");
    // The identity representation has its own validator.
    let (status, _, _) = get(gw.http, "/", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status, 200);

    for path in ["/socket.io/socket.io.js", "/socket.io/socket.io.min.js"] {
        let (status, head, body) = get(gw.http, path, "Accept-Encoding: gzip\r\n");
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            header(&head, "content-type")
                .unwrap()
                .starts_with("text/javascript")
        );
        let js = String::from_utf8(gunzip(&body)).unwrap();
        assert!(
            js.contains("socket.io") || js.contains("engine.io"),
            "{path}"
        );
    }
    // Engine.io requests still reach Socket.IO.
    let (status, _, body) = get(gw.http, "/socket.io/?EIO=4&transport=polling", "");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).starts_with("0{\"sid\""));
}

#[test]
fn dashboard_can_be_turned_off() {
    let gw = GatewayProcess::start(&[("EDGE_GATEWAY_DASHBOARD__ENABLED", "false")]);
    assert_eq!(get(gw.http, "/", "").0, 404);
    assert_eq!(get(gw.http, "/dashboard/app.js", "").0, 404);
    // The socket.io client is served either way, as the reference server does.
    assert_eq!(get(gw.http, "/socket.io/socket.io.min.js", "").0, 200);
}
