//! TLS peers for `tests/tls.rs`: redis-server with a TLS port (and a plain one to read back
//! what arrived), mosquitto with a TLS listener (and a plain one to publish on), and socat's
//! `OPENSSL-LISTEN` as the TLS terminator in front of a broker that has no TLS of its own.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::certs::Pair;
use super::free_port;
use super::peer::PeerProcess;

const START_TIMEOUT: Duration = Duration::from_secs(15);

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A redis-server with `tls_port` serving `pair` (client certificates from `ca` required
/// when `require_client_cert`) and `plain_port` for the test's own reads.
pub struct TlsRedis {
    pub plain_port: u16,
    pub tls_port: u16,
    process: PeerProcess,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    pub fn start(pair: &Pair, ca: &Path, require_client_cert: bool) -> TlsRedis {
        let dir = tempfile::Builder::new()
            .prefix("egw-tls-redis-")
            .tempdir()
            .unwrap();
        let (plain_port, tls_port) = (free_port(), free_port());
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
        ])
        .args(["--port", &plain_port.to_string()])
        .args(["--tls-port", &tls_port.to_string()])
        .arg("--tls-cert-file")
        .arg(&pair.cert)
        .arg("--tls-key-file")
        .arg(&pair.key)
        .arg("--tls-ca-cert-file")
        .arg(ca)
        .args([
            "--tls-auth-clients",
            if require_client_cert { "yes" } else { "no" },
        ])
        .arg("--dir")
        .arg(dir.path());
        let mut process = PeerProcess::spawn(
            &mut cmd,
            &dir.path().join("redis.log"),
            "apt install redis-server",
        );
        process.wait_ready("redis TLS and plain ports", START_TIMEOUT, || {
            accepts(plain_port) && accepts(tls_port)
        });
        TlsRedis {
            plain_port,
            tls_port,
            process,
            _dir: dir,
        }
    }

    /// A client of the plain port.
    pub fn plain(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.plain_port))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// How many entries stream `name` holds.
    pub fn stream_len(&self, name: &str) -> u64 {
        redis::cmd("XLEN")
            .arg(name)
            .query(&mut self.plain())
            .unwrap()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// mosquitto with a TLS listener on `tls_port` (client certificates from `ca` required when
/// `require_client_cert`) and a plain one on `plain_port`, both anonymous.
pub struct TlsMosquitto {
    pub plain_port: u16,
    pub tls_port: u16,
    process: PeerProcess,
    _dir: tempfile::TempDir,
}

impl TlsMosquitto {
    pub fn start(pair: &Pair, ca: &Path, require_client_cert: bool) -> TlsMosquitto {
        let dir = tempfile::Builder::new()
            .prefix("egw-tls-mosquitto-")
            .tempdir()
            .unwrap();
        let (plain_port, tls_port) = (free_port(), free_port());
        let conf = format!(
            "per_listener_settings false\nallow_anonymous true\nuser root\n\
             listener {plain_port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate {require_client_cert}\n",
            ca = ca.display(),
            cert = pair.cert.display(),
            key = pair.key.display(),
        );
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(&conf_path);
        let mut process = PeerProcess::spawn(
            &mut cmd,
            &dir.path().join("mosquitto.log"),
            "apt install mosquitto",
        );
        process.wait_ready("mosquitto TLS and plain listeners", START_TIMEOUT, || {
            accepts(plain_port) && accepts(tls_port)
        });
        TlsMosquitto {
            plain_port,
            tls_port,
            process,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// socat terminating TLS with `pair` on a free port and forwarding to `backend` in the clear.
pub struct TlsTerminator {
    pub port: u16,
    process: PeerProcess,
}

impl TlsTerminator {
    /// On a port picked here.
    pub fn start(pair: &Pair, backend: u16) -> TlsTerminator {
        TlsTerminator::start_on(free_port(), pair, backend)
    }

    pub fn start_on(port: u16, pair: &Pair, backend: u16) -> TlsTerminator {
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            pair.cert.display(),
            pair.key.display()
        );
        let mut cmd = Command::new("socat");
        cmd.arg(listen).arg(format!("TCP:127.0.0.1:{backend}"));
        let mut process = PeerProcess::spawn_logged(&mut cmd, "apt install socat");
        process.wait_ready("socat TLS terminator", START_TIMEOUT, || accepts(port));
        TlsTerminator { port, process }
    }
}
