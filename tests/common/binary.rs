//! The edge-gateway binary as a child process (the kill -9 test, sd_notify, the benches),
//! started as a [`PeerProcess`] so an early exit fails at once with the gateway's own log.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::peer::PeerProcess;
use super::{free_port, try_http_get};

/// `edge-gateway run --data-dir <data_dir>` serving HTTP on `http` and MQTT on `mqtt` (both
/// 127.0.0.1), logging at warn; add env vars before [`GatewayProcess::spawn`].
pub fn gateway_command(data_dir: &Path, http: u16, mqtt: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
    cmd.args(["run", "--data-dir"])
        .arg(data_dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", http.to_string())
        .env("EDGE_GATEWAY_MQTT__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("LOG_LEVEL", "warn");
    cmd
}

/// The gateway binary on free loopback ports with a temp store.
pub struct GatewayProcess {
    pub peer: PeerProcess,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts the binary with `extra_env` and waits until /health answers.
    pub fn start(extra_env: &[(&str, &str)]) -> GatewayProcess {
        let dir = tempfile::Builder::new()
            .prefix("egw-bin-")
            .tempdir()
            .expect("create temp dir for the gateway");
        let (http, mqtt) = (free_port(), free_port());
        let mut cmd = gateway_command(&dir.path().join("data"), http, mqtt);
        cmd.env("RATE_LIMIT_MAX_REQUESTS", "100000000");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        GatewayProcess {
            peer: GatewayProcess::spawn(&mut cmd, &dir.path().join("gateway.log"), http),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], mqtt)),
            _dir: dir,
        }
    }

    /// Resident memory now (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// The most resident memory so far (`VmHWM`, the high-water mark) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.peer.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Spawns a [`gateway_command`] logging to `log` and waits until /health on `http` answers.
    pub fn spawn(cmd: &mut Command, log: &Path, http: u16) -> PeerProcess {
        let mut peer = PeerProcess::spawn(cmd, log, "cargo build");
        let addr = SocketAddr::from(([127, 0, 0, 1], http));
        peer.wait_ready("/health answering", Duration::from_secs(20), || {
            try_http_get(addr, "/health").is_some()
        });
        peer
    }
}
