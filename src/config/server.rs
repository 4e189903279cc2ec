//! The API side: HTTP/Socket.IO server, JWT auth, rate limits, logging and metrics.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Check, ConfigError, Secret};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Browser origins allowed by CORS and on the WebSocket handshake; `*` allows any.
    pub cors_origins: Vec<String>,
    /// From the first byte of a request to its last header line; a client slower than this
    /// (slowloris) is closed, so a few thousand half-sent headers cannot pin sockets and memory.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight is closed after this long. Long-polls
    /// and websockets are not idle (a request is in flight; the engine.io heartbeat covers them).
    pub idle_timeout_ms: u64,
    /// Open TCP connections per client IP (websockets included); the next one is closed at
    /// accept. Behind a reverse proxy every client shares its address: raise this there.
    pub max_connections_per_ip: usize,
    /// HTTPS/WSS on this port when both are set (PEM certificate chain and key), reloaded on
    /// SIGHUP or when the files change; empty = plain HTTP (or TLS at a reverse proxy).
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 3003,
            cors_origins: vec!["http://localhost:5173".into()],
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_connections_per_ip: 256,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl ServerConfig {
    /// The certificate and key files when HTTPS is on.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        (!self.tls_cert_file.is_empty() && !self.tls_key_file.is_empty()).then(|| {
            (
                self.tls_cert_file.clone().into(),
                self.tls_key_file.clone().into(),
            )
        })
    }

    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        for origin in &self.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(check.fail(
                    "server.cors_origins",
                    format!("`{origin}` is not `*` or an http(s):// origin"),
                ));
            }
        }
        check.positive("server.header_read_timeout_ms", self.header_read_timeout_ms)?;
        check.positive("server.idle_timeout_ms", self.idle_timeout_ms)?;
        check.positive(
            "server.max_connections_per_ip",
            self.max_connections_per_ip as u64,
        )?;
        check.server_tls("server", &self.tls_cert_file, &self.tls_key_file)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    pub path: String,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub max_clients: usize,
    /// Largest websocket message or polling body a client may send; bigger closes that client.
    pub max_payload_bytes: u64,
    /// Events queued per client before it is moved to a replay; up to ~0.34 KiB each.
    pub client_buffer_packets: usize,
    /// What all clients' buffers hold together, queued and being written, at most: once they
    /// do, a client holding 8 events or more is moved to a replay, as when its own is full.
    pub total_buffer_bytes: usize,
    pub system_status_interval_ms: u64,
    pub history_default_limit: usize,
    pub history_max_limit: usize,
    /// Most records replayed to a client that reconnects with `after` (older ones are skipped
    /// and the client is told with `resume:truncated`).
    pub resume_max_records: u64,
    /// Replay pace per client, records per second (0: as fast as the client reads).
    pub resume_records_per_sec: u64,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            path: "/socket.io".into(),
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_clients: 10_000,
            max_payload_bytes: 65_536,
            client_buffer_packets: 1024,
            total_buffer_bytes: 32 << 20,
            system_status_interval_ms: 5_000,
            history_default_limit: 1_000,
            history_max_limit: 10_000,
            resume_max_records: 100_000,
            resume_records_per_sec: 20_000,
        }
    }
}

impl SocketIoConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') || self.path.len() < 2 {
            return Err(check.fail("socketio.path", "must start with `/` and name a path"));
        }
        check.positive("socketio.ping_interval_ms", self.ping_interval_ms)?;
        check.positive("socketio.ping_timeout_ms", self.ping_timeout_ms)?;
        check.positive("socketio.max_clients", self.max_clients as u64)?;
        check.positive(
            "socketio.client_buffer_packets",
            self.client_buffer_packets as u64,
        )?;
        if self.total_buffer_bytes < 1 << 20 {
            return Err(check.fail(
                "socketio.total_buffer_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        check.positive(
            "socketio.system_status_interval_ms",
            self.system_status_interval_ms,
        )?;
        if self.max_payload_bytes < 1024 {
            return Err(check.fail("socketio.max_payload_bytes", "must be at least 1024"));
        }
        check.positive("socketio.history_max_limit", self.history_max_limit as u64)?;
        check.positive("socketio.resume_max_records", self.resume_max_records)?;
        if self.history_default_limit == 0 || self.history_default_limit > self.history_max_limit {
            return Err(check.fail(
                "socketio.history_default_limit",
                format!(
                    "must be between 1 and history_max_limit ({})",
                    self.history_max_limit
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret; empty disables authentication.
    pub jwt_secret: Secret,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. 0: a token is refused the second it
    /// expires; raise it only for dashboards whose clocks drift from the gateway's.
    pub jwt_leeway_secs: u64,
    /// With a secret set, `/health` and `/metrics` also need `Authorization: Bearer <JWT>`.
    /// Off by default: load balancers and Prometheus probe them without a token.
    pub protect_probes: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub window_ms: u64,
    /// Handshakes per client IP, and events per socket, allowed in one window.
    pub max_requests: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            window_ms: 900_000,
            max_requests: 100,
        }
    }
}

impl RateLimitConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        check.positive("rate_limit.window_ms", self.window_ms)?;
        check.positive("rate_limit.max_requests", u64::from(self.max_requests))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl LogConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        match tracing_subscriber::EnvFilter::try_new(&self.level) {
            Ok(_) => Ok(()),
            Err(e) => Err(check.fail(
                "log.level",
                format!("`{}` is not a log filter: {e}", self.level),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

/// The built-in dashboard page at `/` (its assets are embedded in the binary).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    pub enabled: bool,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig { enabled: true }
    }
}
