//! sd_notify protocol against the real binary: READY=1 once serving, WATCHDOG=1 repeatedly,
//! STOPPING=1 on SIGTERM, then exit 0.

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_edge-gateway"))
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("HOST", "127.0.0.1")
        .env("PORT", free_port().to_string())
        .env(
            "EDGE_GATEWAY_MQTT__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Killed on every exit path, so a failed assertion leaves no gateway behind.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let mut child = Kill(child);

    let mut buf = [0u8; 256];
    // sd-notify terminates each state with a newline; systemd accepts either.
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
    };
    assert_eq!(recv(), "READY=1");
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(recv(), "WATCHDOG=1");
    }
    // Half the 200 ms period: three pings take about 200–300 ms.
    assert!(started.elapsed() < Duration::from_secs(5));

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
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
    let exit = child.0.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}
