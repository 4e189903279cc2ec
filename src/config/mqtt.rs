//! The gateway's own MQTT listener devices publish to, and the subscriber port for site clients.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Check, ConfigError, Secret};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub enabled: bool,
    /// Where devices publish (the gateway's own MQTT 3.1.1/5 listener).
    pub listen: SocketAddr,
    /// Payloads above this are rejected (counted as `oversize`); packets above 4x this (at
    /// least 64 KiB) close the connection.
    pub max_payload_bytes: usize,
    pub max_connections: usize,
    /// Where site clients subscribe to committed readings (an embedded rumqttd); unset = off.
    pub subscriber_listen: Option<SocketAddr>,
    /// Let clients without credentials publish for any device (warned at start, on /health).
    pub allow_anonymous: bool,
    /// Device credentials; each may publish only for its `devices`.
    pub users: Vec<MqttUser>,
    /// QoS 1 publishes a connection may have waiting for their commit (MQTT 5 Receive
    /// Maximum); at the cap the connection's socket is not read. It bounds what one connection
    /// can push per commit (in flight over the commit latency), not memory: that is
    /// `inflight_bytes_max`.
    pub receive_maximum: u16,
    /// Bytes of publishes waiting for their commit, over all connections; when full, no
    /// socket is read.
    pub inflight_bytes_max: usize,
    /// A connection that sends no CONNECT within this is closed.
    pub connect_timeout_ms: u64,
    /// MQTT over TLS for devices (e.g. `0.0.0.0:8883`), next to `listen`; unset = off.
    pub tls_listen: Option<SocketAddr>,
    /// The TLS listener's certificate chain and key (PEM), reloaded on SIGHUP or when the
    /// files change.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttUser {
    pub username: String,
    /// Argon2 PHC string (`edge-gateway hash-password` prints one).
    pub password_hash: Secret,
    /// Device ids this credential may publish for; `*` matches any run of characters.
    pub devices: Vec<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_payload_bytes: 16_384,
            max_connections: 1_000,
            subscriber_listen: None,
            allow_anonymous: true,
            users: Vec::new(),
            receive_maximum: 1024,
            inflight_bytes_max: 16 * 1024 * 1024,
            connect_timeout_ms: 10_000,
            tls_listen: None,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl MqttConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        if self.max_payload_bytes < 16 {
            return Err(check.fail("mqtt.max_payload_bytes", "must be at least 16"));
        }
        check.positive("mqtt.max_connections", self.max_connections as u64)?;
        check.positive("mqtt.receive_maximum", u64::from(self.receive_maximum))?;
        check.positive("mqtt.connect_timeout_ms", self.connect_timeout_ms)?;
        if self.inflight_bytes_max < self.max_payload_bytes.saturating_mul(4).max(65_536) {
            return Err(check.fail(
                "mqtt.inflight_bytes_max",
                "must hold at least one packet of the largest size (4 x max_payload_bytes, at least 65536)",
            ));
        }
        if self.subscriber_listen == Some(self.listen) {
            return Err(check.fail("mqtt.subscriber_listen", "must differ from mqtt.listen"));
        }
        self.validate_tls(check)?;
        for (i, u) in self.users.iter().enumerate() {
            u.validate(i, &self.users[..i], check)?;
        }
        Ok(())
    }
}

impl MqttConfig {
    /// The TLS listener's address, certificate and key when it is on.
    pub fn tls(&self) -> Option<(SocketAddr, PathBuf, PathBuf)> {
        let listen = self.tls_listen?;
        Some((
            listen,
            self.tls_cert_file.clone().into(),
            self.tls_key_file.clone().into(),
        ))
    }

    fn validate_tls(&self, check: &Check) -> Result<(), ConfigError> {
        let files = !self.tls_cert_file.is_empty() || !self.tls_key_file.is_empty();
        match self.tls_listen {
            None if files => {
                let key = if self.tls_cert_file.is_empty() {
                    "mqtt.tls_key_file"
                } else {
                    "mqtt.tls_cert_file"
                };
                Err(check.fail(key, "is set but mqtt.tls_listen is not"))
            }
            None => Ok(()),
            Some(addr) if addr == self.listen || Some(addr) == self.subscriber_listen => Err(check
                .fail(
                    "mqtt.tls_listen",
                    "must differ from mqtt.listen and mqtt.subscriber_listen",
                )),
            Some(_) if !files => Err(check.fail(
                "mqtt.tls_listen",
                "needs mqtt.tls_cert_file and mqtt.tls_key_file",
            )),
            Some(_) => check.server_tls("mqtt", &self.tls_cert_file, &self.tls_key_file),
        }
    }
}

impl MqttUser {
    fn validate(&self, i: usize, before: &[MqttUser], check: &Check) -> Result<(), ConfigError> {
        if self.username.is_empty() || before.iter().any(|o| o.username == self.username) {
            return Err(check.fail(
                &format!("mqtt.users[{i}].username"),
                "must be non-empty and unique",
            ));
        }
        if let Err(e) = argon2::password_hash::PasswordHash::new(self.password_hash.expose()) {
            return Err(check.fail(
                &format!("mqtt.users[{i}].password_hash"),
                format!("is not a PHC string ({e}); `edge-gateway hash-password` prints one"),
            ));
        }
        if self.devices.is_empty() || self.devices.iter().any(|d| d.is_empty()) {
            return Err(check.fail(
                &format!("mqtt.users[{i}].devices"),
                "must list device ids or patterns (`*` = any)",
            ));
        }
        Ok(())
    }
}
