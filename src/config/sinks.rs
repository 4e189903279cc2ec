//! Upstream store-and-forward to Redis and Kafka: what each sink sends where, and how it
//! batches, paces and retries.

use serde::Deserialize;

use super::{Check, ConfigError, Secret, client_tls_files};
use crate::tls::ClientTls;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// At shutdown, how long connected sinks may keep sending what is still unsent.
    pub drain_timeout_ms: u64,
    pub redis: RedisSinkConfig,
    pub kafka: KafkaSinkConfig,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            drain_timeout_ms: 5_000,
            redis: RedisSinkConfig::default(),
            kafka: KafkaSinkConfig::default(),
        }
    }
}

impl SinksConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        self.redis.validate(check)?;
        self.kafka.validate(check)
    }
}

/// How a sink batches, paces and retries; the same keys for every sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Most records in one upstream request (one Redis pipeline, one Kafka produce round).
    pub batch_max_records: usize,
    /// Once live, how long to wait for more records before sending a partial batch.
    pub linger_ms: u64,
    /// A request (connect, pipeline, produce) not answered within this counts as failed.
    pub request_timeout_ms: u64,
    /// Reconnect backoff: doubles from the initial value up to the cap, with jitter.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Caps the catch-up rate after an outage so the backlog does not crowd out the live
    /// gateway (ingest, dashboards) on a small CPU; 0 = as fast as the upstream takes it.
    pub max_records_per_sec: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch_max_records: 2_000,
            linger_ms: 5,
            request_timeout_ms: 10_000,
            backoff_initial_ms: 250,
            backoff_max_ms: 30_000,
            max_records_per_sec: 0,
        }
    }
}

impl DeliveryConfig {
    fn validate(&self, prefix: &str, check: &Check) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.batch_max_records) {
            return Err(check.fail(
                &format!("{prefix}.batch_max_records"),
                "must be between 1 and 100000",
            ));
        }
        check.positive(
            &format!("{prefix}.request_timeout_ms"),
            self.request_timeout_ms,
        )?;
        check.backoff(prefix, self.backoff_initial_ms, self.backoff_max_ms)
    }
}

/// The record kinds and their upstream names (channels, streams or topics).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindNames {
    pub sensor_readings: String,
    pub device_status: String,
    pub alerts: String,
    /// Alarm transitions (raise, clear, ack, shelve, ...): their own channel, stream or topic.
    pub alarm_events: String,
}

impl KindNames {
    fn new(sensor_readings: &str, device_status: &str, alerts: &str) -> KindNames {
        KindNames {
            sensor_readings: sensor_readings.into(),
            device_status: device_status.into(),
            alerts: alerts.into(),
            alarm_events: "alarm-events".into(),
        }
    }

    fn validate(&self, prefix: &str, check: &Check) -> Result<(), ConfigError> {
        for (key, value) in [
            ("sensor_readings", &self.sensor_readings),
            ("device_status", &self.device_status),
            ("alerts", &self.alerts),
            ("alarm_events", &self.alarm_events),
        ] {
            if value.is_empty() {
                return Err(check.fail(&format!("{prefix}.{key}"), "must not be empty"));
            }
        }
        Ok(())
    }
}

impl Default for KindNames {
    fn default() -> Self {
        KindNames::new("sensor-readings", "device-status", "alerts")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// PUBLISH to channels, what the reference websocket service subscribes to.
    Publish,
    /// XADD to streams, for consumers that must not miss records while disconnected.
    Stream,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// Redis host name or address (REDIS_HOST); empty disables the sink.
    pub host: String,
    pub port: u16,
    /// ACL user name; empty for the default user.
    pub username: String,
    /// REDIS_PASSWORD; empty for none.
    pub password: Secret,
    pub db: i64,
    /// TLS to the upstream (the system's CA bundle plus `ca_file`).
    pub tls: bool,
    /// Extra trusted CA certificates (PEM file); empty = the system's only.
    pub ca_file: String,
    /// Our certificate chain and key (PEM files), for an upstream that requires them (mTLS).
    pub client_cert_file: String,
    pub client_key_file: String,
    /// The name the server certificate must carry when it is not the host we connect to.
    pub server_name: String,
    pub mode: RedisMode,
    pub channels: KindNames,
    pub streams: KindNames,
    /// `XADD ... MAXLEN ~ n`: the approximate length each stream is trimmed to.
    pub stream_maxlen: u64,
    pub delivery: DeliveryConfig,
}

impl Default for RedisSinkConfig {
    fn default() -> Self {
        RedisSinkConfig {
            host: String::new(),
            port: 6379,
            username: String::new(),
            password: Secret::default(),
            db: 0,
            tls: false,
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            server_name: String::new(),
            mode: RedisMode::Publish,
            channels: KindNames::default(),
            streams: KindNames::default(),
            stream_maxlen: 1_000_000,
            delivery: DeliveryConfig::default(),
        }
    }
}

impl RedisSinkConfig {
    /// The TLS settings when `tls = true`.
    pub fn tls(&self) -> Option<ClientTls> {
        self.tls.then(|| self.tls_files())
    }

    fn tls_files(&self) -> ClientTls {
        client_tls_files(
            &self.ca_file,
            &self.client_cert_file,
            &self.client_key_file,
            &self.server_name,
        )
    }

    fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        if self.host.is_empty() {
            return Ok(());
        }
        check.positive("sinks.redis.port", u64::from(self.port))?;
        check.client_tls("sinks.redis", self.tls, &self.tls_files())?;
        match self.mode {
            RedisMode::Publish => self.channels.validate("sinks.redis.channels", check)?,
            RedisMode::Stream => self.streams.validate("sinks.redis.streams", check)?,
        }
        check.positive("sinks.redis.stream_maxlen", self.stream_maxlen)?;
        self.delivery.validate("sinks.redis.delivery", check)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaCompression {
    None,
    Gzip,
    Snappy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaSasl {
    None,
    Plain,
    ScramSha256,
    ScramSha512,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port` (KAFKA_BROKERS, comma-separated); empty disables the sink.
    pub brokers: Vec<String>,
    /// KAFKA_CLIENT_ID.
    pub client_id: String,
    pub topics: KindNames,
    /// lz4 and zstd are left out: their crates are C libraries, and the static ARM builds
    /// stay pure Rust.
    pub compression: KafkaCompression,
    /// TLS to the upstream (the system's CA bundle plus `ca_file`).
    pub tls: bool,
    /// Extra trusted CA certificates (PEM file); empty = the system's only.
    pub ca_file: String,
    /// Our certificate chain and key (PEM files), for an upstream that requires them (mTLS).
    pub client_cert_file: String,
    pub client_key_file: String,
    /// The name the server certificate must carry when it is not the host we connect to.
    pub server_name: String,
    /// SASL authentication: "none", "plain", "scram-sha-256" or "scram-sha-512" (use it with
    /// `tls = true`: PLAIN sends the password as it is).
    pub sasl_mechanism: KafkaSasl,
    pub username: String,
    pub password: Secret,
    /// How often partition counts are re-read (leader changes are followed on every error).
    pub metadata_refresh_ms: u64,
    pub delivery: DeliveryConfig,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            brokers: Vec::new(),
            client_id: "edge-gateway".into(),
            topics: KindNames::new("sensors-data", "device-status", "alerts"),
            compression: KafkaCompression::None,
            tls: false,
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            server_name: String::new(),
            sasl_mechanism: KafkaSasl::None,
            username: String::new(),
            password: Secret::default(),
            metadata_refresh_ms: 60_000,
            delivery: DeliveryConfig::default(),
        }
    }
}

impl KafkaSinkConfig {
    /// The TLS settings when `tls = true`.
    pub fn tls(&self) -> Option<ClientTls> {
        self.tls.then(|| self.tls_files())
    }

    fn tls_files(&self) -> ClientTls {
        client_tls_files(
            &self.ca_file,
            &self.client_cert_file,
            &self.client_key_file,
            &self.server_name,
        )
    }

    fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Ok(());
        }
        for broker in &self.brokers {
            let port_ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(check.fail(
                    "sinks.kafka.brokers",
                    format!("`{broker}` is not host:port"),
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err(check.fail("sinks.kafka.client_id", "must not be empty"));
        }
        self.topics.validate("sinks.kafka.topics", check)?;
        check.client_tls("sinks.kafka", self.tls, &self.tls_files())?;
        if self.sasl_mechanism != KafkaSasl::None && self.username.is_empty() {
            return Err(check.fail(
                "sinks.kafka.username",
                "must be set when sasl_mechanism is not \"none\"",
            ));
        }
        check.positive("sinks.kafka.metadata_refresh_ms", self.metadata_refresh_ms)?;
        self.delivery.validate("sinks.kafka.delivery", check)
    }
}
