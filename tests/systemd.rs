//! sd_notify protocol against the real binary: READY=1 once serving, WATCHDOG=1 repeatedly,
//! STOPPING=1 on SIGTERM, then exit 0.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::binary::gateway_command;
use common::free_port;
use common::peer::PeerProcess;

#[test]
fn notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut cmd = gateway_command(&dir.path().join("data"), free_port(), free_port());
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    // Killed on every exit path, so a failed assertion leaves no gateway behind.
    let mut child = PeerProcess::spawn(&mut cmd, &dir.path().join("gateway.log"), "cargo build");

    // The first notification, watching the gateway meanwhile: an early exit fails at once.
    sock.set_nonblocking(true).unwrap();
    let mut first = None;
    child.wait_ready("a notification", Duration::from_secs(20), || {
        let mut buf = [0u8; 256];
        first = sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec());
        first.is_some()
    });
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let first = String::from_utf8_lossy(&first.unwrap())
        .trim_end()
        .to_string();

    let mut buf = [0u8; 256];
    // sd-notify terminates each state with a newline; systemd accepts either.
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
    };
    assert_eq!(first, "READY=1");
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(recv(), "WATCHDOG=1");
    }
    // Half the 200 ms period: three pings take about 200–300 ms.
    assert!(started.elapsed() < Duration::from_secs(5));

    child.signal("TERM");
    let mut rest = Vec::new();
    loop {
        let msg = recv();
        let stop = msg == "STOPPING=1";
        rest.push(msg);
        if stop {
            break;
        }
    }
    assert!(
        rest[..rest.len() - 1].iter().all(|m| m == "WATCHDOG=1"),
        "{rest:?}"
    );
    let exit = child.wait();
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn sighup_without_tls_keeps_the_gateway_running() {
    let mut gw = common::binary::GatewayProcess::start(&[("LOG_LEVEL", "info")]);
    let hups = |gw: &common::binary::GatewayProcess| gw.peer.log().matches("SIGHUP:").count();
    gw.peer.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while hups(&gw) == 0 {
        assert!(gw.peer.exited().is_none(), "SIGHUP ended the gateway");
        assert!(
            Instant::now() < deadline,
            "SIGHUP not logged: {}",
            gw.peer.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = common::http_get(gw.http, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(gw.peer.exited().is_none(), "SIGHUP ended the gateway");
}
