//! Relay mode (`edge-gateway relay`): what a central replica reads. Where it reads is the
//! `[sinks.redis]` / `[sinks.kafka]` sections a gateway writes with (host, mode, channel,
//! stream and topic names), so one file describes both ends of the link.

use serde::Deserialize;

use super::{Check, ConfigError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Read the central Redis of `[sinks.redis]`: its channels (`mode = "publish"`) or its
    /// streams (`mode = "stream"`, from a position kept in the store).
    pub redis: bool,
    /// Read the topics of `[sinks.kafka]`, every partition, from offsets kept in the store.
    /// Not available yet: `true` is refused.
    pub kafka: bool,
    /// A message bigger than this is counted and skipped.
    pub max_message_bytes: usize,
    /// Stream entries per XREAD (and the most messages handed to the store at once).
    pub read_batch: usize,
    /// A gateway silent this long is shown as not alive (`/health`, `relay:gateways`).
    pub gateway_silence_ms: u64,
    /// Most gateways tracked (dedup, figures); records of further ones are relayed without
    /// dedup and counted.
    pub max_gateways: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            redis: true,
            kafka: false,
            max_message_bytes: 64 * 1024,
            read_batch: 1_000,
            gateway_silence_ms: 30_000,
            max_gateways: 1_024,
        }
    }
}

impl RelayConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        check.positive("relay.max_message_bytes", self.max_message_bytes as u64)?;
        check.positive("relay.gateway_silence_ms", self.gateway_silence_ms)?;
        check.positive("relay.max_gateways", self.max_gateways as u64)?;
        if self.kafka {
            return Err(check.fail(
                "relay.kafka",
                "the Kafka source is not available yet: read the Redis channels or streams (relay.redis)",
            ));
        }
        if !(1..=100_000).contains(&self.read_batch) {
            return Err(check.fail("relay.read_batch", "must be between 1 and 100000"));
        }
        Ok(())
    }
}
