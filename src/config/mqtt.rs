//! The embedded MQTT broker devices publish to.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Check, ConfigError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Payloads above this are rejected (counted as `oversize`).
    pub max_payload_bytes: usize,
    pub max_connections: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_payload_bytes: 16_384,
            max_connections: 1_000,
        }
    }
}

impl MqttConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        if self.max_payload_bytes < 16 {
            return Err(check.fail("mqtt.max_payload_bytes", "must be at least 16"));
        }
        check.positive("mqtt.max_connections", self.max_connections as u64)
    }
}
