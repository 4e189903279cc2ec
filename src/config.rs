//! Configuration: one TOML file where every key has a default, overridden by environment
//! variables. The reference service's names (PORT, CORS_ORIGINS, SOCKET_IO_*, JWT_SECRET,
//! RATE_LIMIT_*, LOG_LEVEL, METRICS_ENABLED) map onto their keys; every other key can be set with
//! `EDGE_GATEWAY_<SECTION>__<KEY>` (e.g. `EDGE_GATEWAY_MQTT__LISTEN`). A bad value is reported
//! with its key and where it came from: the file and line, or the environment variable.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alarms::{Operator, ThresholdRule, check_rule};
use crate::ids::check_id;

/// The full, commented default configuration printed by `edge-gateway default-config`.
/// A unit test proves it deserializes to exactly [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default-config.toml");

/// Reference environment names and the config keys they set.
const REFERENCE_ENV: &[(&str, &str)] = &[
    ("HOST", "server.host"),
    ("PORT", "server.port"),
    ("CORS_ORIGINS", "server.cors_origins"),
    ("SOCKET_IO_PATH", "socketio.path"),
    ("SOCKET_IO_PING_INTERVAL", "socketio.ping_interval_ms"),
    ("SOCKET_IO_PING_TIMEOUT", "socketio.ping_timeout_ms"),
    ("SOCKET_IO_MAX_CLIENTS", "socketio.max_clients"),
    ("JWT_SECRET", "auth.jwt_secret"),
    ("RATE_LIMIT_WINDOW", "rate_limit.window_ms"),
    ("RATE_LIMIT_MAX_REQUESTS", "rate_limit.max_requests"),
    ("LOG_LEVEL", "log.level"),
    ("METRICS_ENABLED", "metrics.enabled"),
    ("REDIS_HOST", "sinks.redis.host"),
    ("REDIS_PORT", "sinks.redis.port"),
    ("REDIS_PASSWORD", "sinks.redis.password"),
    ("KAFKA_BROKERS", "sinks.kafka.brokers"),
    ("KAFKA_CLIENT_ID", "sinks.kafka.client_id"),
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["server.cors_origins", "sinks.kafka.brokers"];

/// Prefix of our own environment overrides.
pub const ENV_PREFIX: &str = "EDGE_GATEWAY_";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identifies this gateway upstream and in every record; empty means the host name.
    pub gateway_id: String,
    pub server: ServerConfig,
    pub socketio: SocketIoConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub mqtt: MqttConfig,
    pub store: StoreConfig,
    pub devices: DevicesConfig,
    /// Threshold alert rules; a file that lists any replaces the whole default list.
    pub thresholds: Vec<ThresholdRule>,
    pub simulator: SimulatorConfig,
    /// Upstream store-and-forward: each sink is on once its endpoint is set.
    pub sinks: SinksConfig,
    /// Modbus RTU/TCP devices polled with their firmware profiles.
    pub modbus: ModbusConfig,
    /// Line-oriented ASCII sensors on serial ports.
    pub serial_sensors: Vec<SerialSensorConfig>,
    /// A client of the site's own MQTT broker; off while `endpoint` is empty.
    pub site_mqtt: SiteMqttConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Browser origins allowed by CORS and on the WebSocket handshake; `*` allows any.
    pub cors_origins: Vec<String>,
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
    /// Packets queued per client before emits to it fail; small keeps idle clients cheap.
    pub client_buffer_packets: usize,
    pub system_status_interval_ms: u64,
    pub history_default_limit: usize,
    pub history_max_limit: usize,
}

#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret; empty disables authentication.
    pub jwt_secret: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.jwt_secret.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        };
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &shown)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub window_ms: u64,
    /// Handshakes per client IP, and events per socket, allowed in one window.
    pub max_requests: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
}

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
    /// Maximum); at the cap the connection's socket is not read.
    pub receive_maximum: u16,
    /// Bytes of publishes waiting for their commit, over all connections; when full, no
    /// socket is read.
    pub inflight_bytes_max: usize,
    /// A connection that sends no CONNECT within this is closed.
    pub connect_timeout_ms: u64,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttUser {
    pub username: String,
    /// Argon2 PHC string (`edge-gateway hash-password` prints one).
    pub password_hash: String,
    /// Device ids this credential may publish for; `*` matches any run of characters.
    pub devices: Vec<String>,
}

impl fmt::Debug for MqttUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttUser")
            .field("username", &self.username)
            .field("password_hash", &redacted(&self.password_hash))
            .field("devices", &self.devices)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Most records in one redb commit.
    pub batch_max_records: usize,
    /// Longest a record waits for companions before its commit starts.
    pub commit_interval_ms: u64,
    /// Records queued for the writer before ingest applies back-pressure.
    pub queue_capacity: usize,
    /// Records older than this are evicted.
    pub retention_max_age_secs: u64,
    /// Logical bytes the store may hold before the oldest records are evicted.
    pub byte_budget_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Silence after which a device is marked offline and a connectivity alert raised.
    pub offline_after_ms: u64,
    pub check_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Simulated devices; `--simulate N` overrides.
    pub devices: usize,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// At shutdown, how long connected sinks may keep sending what is still unsent.
    pub drain_timeout_ms: u64,
    pub redis: RedisSinkConfig,
    pub kafka: KafkaSinkConfig,
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

/// The three record kinds and their upstream names (channels, streams or topics).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindNames {
    pub sensor_readings: String,
    pub device_status: String,
    pub alerts: String,
}

impl KindNames {
    fn new(sensor_readings: &str, device_status: &str, alerts: &str) -> KindNames {
        KindNames {
            sensor_readings: sensor_readings.into(),
            device_status: device_status.into(),
            alerts: alerts.into(),
        }
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

#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// Redis host name or address (REDIS_HOST); empty disables the sink.
    pub host: String,
    pub port: u16,
    /// ACL user name; empty for the default user.
    pub username: String,
    /// REDIS_PASSWORD; empty for none.
    pub password: String,
    pub db: i64,
    pub mode: RedisMode,
    pub channels: KindNames,
    pub streams: KindNames,
    /// `XADD ... MAXLEN ~ n`: the approximate length each stream is trimmed to.
    pub stream_maxlen: u64,
    pub delivery: DeliveryConfig,
}

impl fmt::Debug for RedisSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSinkConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("db", &self.db)
            .field("mode", &self.mode)
            .field("channels", &self.channels)
            .field("streams", &self.streams)
            .field("stream_maxlen", &self.stream_maxlen)
            .field("delivery", &self.delivery)
            .finish()
    }
}

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        "<unset>"
    } else {
        "<redacted>"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaCompression {
    None,
    Gzip,
    Snappy,
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
    /// How often partition counts are re-read (leader changes are followed on every error).
    pub metadata_refresh_ms: u64,
    pub delivery: DeliveryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway_id: String::new(),
            server: ServerConfig {
                host: "0.0.0.0".into(),
                port: 3003,
                cors_origins: vec!["http://localhost:5173".into()],
            },
            socketio: SocketIoConfig::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig {
                window_ms: 900_000,
                max_requests: 100,
            },
            log: LogConfig {
                level: "info".into(),
            },
            metrics: MetricsConfig { enabled: true },
            mqtt: MqttConfig::default(),
            store: StoreConfig::default(),
            devices: DevicesConfig {
                offline_after_ms: 60_000,
                check_interval_ms: 1_000,
            },
            thresholds: default_thresholds(),
            simulator: SimulatorConfig {
                devices: 0,
                interval_ms: 1_000,
            },
            sinks: SinksConfig::default(),
            modbus: ModbusConfig::default(),
            serial_sensors: Vec::new(),
            site_mqtt: SiteMqttConfig::default(),
        }
    }
}

macro_rules! section_default {
    ($t:ty, $e:expr) => {
        impl Default for $t {
            fn default() -> Self {
                $e
            }
        }
    };
}
section_default!(ServerConfig, Config::default().server);
section_default!(RateLimitConfig, Config::default().rate_limit);
section_default!(LogConfig, Config::default().log);
section_default!(MetricsConfig, Config::default().metrics);
section_default!(DevicesConfig, Config::default().devices);
section_default!(SimulatorConfig, Config::default().simulator);
section_default!(
    SinksConfig,
    SinksConfig {
        drain_timeout_ms: 5_000,
        redis: RedisSinkConfig::default(),
        kafka: KafkaSinkConfig::default(),
    }
);
section_default!(
    DeliveryConfig,
    DeliveryConfig {
        batch_max_records: 2_000,
        linger_ms: 5,
        request_timeout_ms: 10_000,
        backoff_initial_ms: 250,
        backoff_max_ms: 30_000,
        max_records_per_sec: 0,
    }
);
section_default!(
    KindNames,
    KindNames::new("sensor-readings", "device-status", "alerts")
);
section_default!(
    RedisSinkConfig,
    RedisSinkConfig {
        host: String::new(),
        port: 6379,
        username: String::new(),
        password: String::new(),
        db: 0,
        mode: RedisMode::Publish,
        channels: KindNames::default(),
        streams: KindNames::default(),
        stream_maxlen: 1_000_000,
        delivery: DeliveryConfig::default(),
    }
);
section_default!(
    KafkaSinkConfig,
    KafkaSinkConfig {
        brokers: Vec::new(),
        client_id: "edge-gateway".into(),
        topics: KindNames::new("sensors-data", "device-status", "alerts"),
        compression: KafkaCompression::None,
        metadata_refresh_ms: 60_000,
        delivery: DeliveryConfig::default(),
    }
);
section_default!(
    SocketIoConfig,
    SocketIoConfig {
        path: "/socket.io".into(),
        ping_interval_ms: 25_000,
        ping_timeout_ms: 20_000,
        max_clients: 10_000,
        max_payload_bytes: 65_536,
        client_buffer_packets: 1024,
        system_status_interval_ms: 5_000,
        history_default_limit: 1_000,
        history_max_limit: 10_000,
    }
);
section_default!(
    MqttConfig,
    MqttConfig {
        enabled: true,
        listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
        max_payload_bytes: 16_384,
        max_connections: 1_000,
        subscriber_listen: None,
        allow_anonymous: true,
        users: Vec::new(),
        receive_maximum: 128,
        inflight_bytes_max: 16 * 1024 * 1024,
        connect_timeout_ms: 10_000,
    }
);
section_default!(
    StoreConfig,
    StoreConfig {
        batch_max_records: 4_000,
        commit_interval_ms: 2,
        queue_capacity: 16_384,
        retention_max_age_secs: 30 * 24 * 3600,
        byte_budget_bytes: 256 * 1024 * 1024,
    }
);

fn default_thresholds() -> Vec<ThresholdRule> {
    let rule = |sensor_type: &str, warning: f64, critical: f64, unit: &str| ThresholdRule {
        sensor_type: sensor_type.into(),
        operator: Operator::Gt,
        warning: Some(warning),
        critical: Some(critical),
        unit: unit.into(),
    };
    vec![
        rule("temperature", 35.0, 45.0, "°C"),
        rule("humidity", 70.0, 85.0, "%"),
        rule("pressure", 1050.0, 1080.0, "hPa"),
        rule("vibration", 7.0, 11.0, "mm/s"),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// Line settings of one serial port (RS-485 Modbus line or ASCII sensor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialPortConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
    pub path: String,
    pub baud_rate: u32,
    /// 7 or 8.
    pub data_bits: u8,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Silence between Modbus RTU frames; 0 = 3.5 character times at `baud_rate` (1750 µs
    /// above 19200 baud, as the Modbus serial line spec says).
    pub inter_frame_gap_us: u64,
}

impl SerialPortConfig {
    /// Bits on the wire per character: start, data, parity, stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// The RTU inter-frame gap (t3.5).
    pub fn inter_frame_gap(&self) -> std::time::Duration {
        if self.inter_frame_gap_us > 0 {
            return std::time::Duration::from_micros(self.inter_frame_gap_us);
        }
        if self.baud_rate > 19_200 {
            return std::time::Duration::from_micros(1_750);
        }
        let us = 3_500_000 * u64::from(self.bits_per_char()) / u64::from(self.baud_rate.max(1));
        std::time::Duration::from_micros(us)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// Where firmware profiles live (`<profile>.toml`). A relative path is resolved against
    /// the config file's directory (or the working directory without a file).
    pub profiles_dir: PathBuf,
    /// Consecutive failed polls before a device goes offline (hysteresis); one good poll
    /// brings it back online.
    pub offline_after_failures: u32,
    /// An offline device is quarantined: polled again after this, doubling up to the cap, so
    /// a dead slave costs its bus at most one timeout per backoff period.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Line settings per RTU port; a port used by a device but not listed here gets the
    /// defaults (9600 baud, 8N1).
    pub serial_ports: Vec<SerialPortConfig>,
    pub devices: Vec<ModbusDeviceConfig>,
}

/// One Modbus device: RTU when `port` is set, TCP when `endpoint` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    pub device_id: String,
    pub location: String,
    /// Firmware profile name: `<profiles_dir>/<profile>.toml`.
    pub profile: String,
    /// RTU: the serial port of the RS-485 line, and the slave address on it (1-247).
    pub port: String,
    pub slave_id: u8,
    /// TCP: `host:port` of the device or of its Modbus TCP gateway, and the unit id.
    pub endpoint: String,
    pub unit_id: u8,
    pub poll_interval_ms: u64,
    /// A request not answered within this counts as a timeout.
    pub timeout_ms: u64,
    /// Immediate retries of a request after a garbled reply (bad CRC, wrong slave or length).
    /// A timeout is not retried within the cycle: it is paid once.
    pub retries: u32,
}

impl ModbusDeviceConfig {
    pub fn is_rtu(&self) -> bool {
        !self.port.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialSensorConfig {
    /// Device path of the adapter; reopened after it disappears (unplugged) and comes back.
    pub path: String,
    pub baud_rate: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    /// A regex with named groups `value` (required), `device`, `sensor` and `unit`
    /// (optional: the keys below fill in). Empty = `deviceId,sensorType,value[,unit]`.
    pub pattern: String,
    /// Used when a line carries no device id / sensor type / unit.
    pub device_id: String,
    pub sensor_type: String,
    pub unit: String,
    pub location: String,
    /// Longer lines are discarded (counted as `oversize`).
    pub max_line_bytes: usize,
    /// Wait between attempts to reopen the port.
    pub reconnect_ms: u64,
}

impl SerialSensorConfig {
    pub fn port(&self) -> SerialPortConfig {
        SerialPortConfig {
            path: self.path.clone(),
            baud_rate: self.baud_rate,
            data_bits: self.data_bits,
            parity: self.parity,
            stop_bits: self.stop_bits,
            inter_frame_gap_us: 0,
        }
    }
}

/// One subscription on the site broker. After `strip_prefix` is removed, the topic must follow
/// the gateway's topic contract (`sensors/{deviceId}/{sensorType}`, `devices/{deviceId}/status`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteSubscription {
    pub filter: String,
    /// 0 or 1.
    pub qos: u8,
    pub strip_prefix: String,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteMqttConfig {
    /// `host:port` of the site broker; empty disables the client.
    pub endpoint: String,
    /// Empty = `edge-gateway-<gatewayId>`.
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub keep_alive_secs: u64,
    /// Reconnect backoff, doubling up to the cap; subscriptions are renewed on every connect.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub subscriptions: Vec<SiteSubscription>,
}

impl fmt::Debug for SiteMqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteMqttConfig")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("keep_alive_secs", &self.keep_alive_secs)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

section_default!(
    SerialPortConfig,
    SerialPortConfig {
        path: String::new(),
        baud_rate: 9_600,
        data_bits: 8,
        parity: Parity::None,
        stop_bits: 1,
        inter_frame_gap_us: 0,
    }
);
section_default!(
    ModbusConfig,
    ModbusConfig {
        profiles_dir: PathBuf::from("firmware-profiles"),
        offline_after_failures: 3,
        backoff_initial_ms: 5_000,
        backoff_max_ms: 60_000,
        serial_ports: Vec::new(),
        devices: Vec::new(),
    }
);
section_default!(
    ModbusDeviceConfig,
    ModbusDeviceConfig {
        device_id: String::new(),
        location: String::new(),
        profile: String::new(),
        port: String::new(),
        slave_id: 1,
        endpoint: String::new(),
        unit_id: 1,
        poll_interval_ms: 1_000,
        timeout_ms: 500,
        retries: 1,
    }
);
section_default!(
    SerialSensorConfig,
    SerialSensorConfig {
        path: String::new(),
        baud_rate: 9_600,
        data_bits: 8,
        parity: Parity::None,
        stop_bits: 1,
        pattern: String::new(),
        device_id: String::new(),
        sensor_type: String::new(),
        unit: String::new(),
        location: String::new(),
        max_line_bytes: 256,
        reconnect_ms: 1_000,
    }
);
section_default!(
    SiteSubscription,
    SiteSubscription {
        filter: String::new(),
        qos: 1,
        strip_prefix: String::new(),
    }
);
section_default!(
    SiteMqttConfig,
    SiteMqttConfig {
        endpoint: String::new(),
        client_id: String::new(),
        username: String::new(),
        password: String::new(),
        keep_alive_secs: 30,
        backoff_initial_ms: 500,
        backoff_max_ms: 30_000,
        subscriptions: vec![
            SiteSubscription {
                filter: "sensors/+/+".into(),
                ..SiteSubscription::default()
            },
            SiteSubscription {
                filter: "devices/+/status".into(),
                ..SiteSubscription::default()
            },
        ],
    }
);

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Default,
    File { path: PathBuf, line: Option<usize> },
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the built-in default"),
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid value for `{key}` (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: Origin,
        message: String,
    },
}

/// The loaded configuration and where each overridden key came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    origins: BTreeMap<String, Origin>,
}

impl Loaded {
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }
}

/// Loads the file (if any), applies environment overrides from `env`, and validates.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let (text, mut table) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.into(),
                message: e.to_string(),
            })?;
            (Some(text), table)
        }
        None => (None, toml::Table::new()),
    };

    let mut origins = BTreeMap::new();
    if let (Some(path), Some(text)) = (file, text.as_deref()) {
        record_file_origins(path, text, &mut origins);
    }
    let mut env_values = BTreeMap::new();
    for (name, value) in env {
        let Some(key) = env_key(&name) else { continue };
        env_values.insert(key.clone(), value.clone());
        set_path(&mut table, &key, guess_value(&key, &value));
        origins.insert(key, Origin::Env(name));
    }

    let mut config = deserialize(table, &env_values, &origins, file, text.as_deref())?;
    if let Some(dir) = file.and_then(Path::parent)
        && config.modbus.profiles_dir.is_relative()
    {
        config.modbus.profiles_dir = dir.join(&config.modbus.profiles_dir);
    }
    let loaded = Loaded { config, origins };
    validate(&loaded)?;
    Ok(loaded)
}

/// Maps an environment variable name onto a config key, if it is one of ours.
fn env_key(name: &str) -> Option<String> {
    if let Some((_, key)) = REFERENCE_ENV.iter().find(|(env, _)| *env == name) {
        return Some((*key).to_string());
    }
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if rest == "GATEWAY_ID" {
        return Some("gateway_id".into());
    }
    // Only `SECTION__KEY` names are config; other EDGE_GATEWAY_* variables belong to tools.
    if !rest.contains("__") {
        return None;
    }
    Some(
        rest.split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// Environment values are untyped: numbers and booleans become TOML numbers and booleans,
/// comma lists become arrays where the key is a list, everything else a string.
fn guess_value(key: &str, raw: &str) -> toml::Value {
    if LIST_KEYS.contains(&key) {
        return toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        );
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>()
        && raw.contains('.')
    {
        return toml::Value::Float(f);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        cur = entry.as_table_mut().expect("just made a table");
    }
    cur.insert(last.to_string(), value);
}

fn deserialize(
    mut table: toml::Table,
    env_values: &BTreeMap<String, String>,
    origins: &BTreeMap<String, Origin>,
    file: Option<&Path>,
    text: Option<&str>,
) -> Result<Config, ConfigError> {
    // An env value guessed as a number may be meant as a string (e.g. gateway_id = "42"):
    // retry such keys as strings before reporting.
    let mut retried = Vec::new();
    loop {
        let result: Result<Config, _> =
            serde_path_to_error::deserialize(toml::Value::Table(table.clone()));
        let err = match result {
            Ok(config) => return Ok(config),
            Err(err) => err,
        };
        let key = err.path().to_string();
        let message = err.inner().to_string();
        if let Some(raw) = env_values.get(&key)
            && !retried.contains(&key)
            && message.contains("expected a string")
        {
            set_path(&mut table, &key, toml::Value::String(raw.clone()));
            retried.push(key);
            continue;
        }
        if let Some(origin @ Origin::Env(_)) = origins.get(&key) {
            return Err(ConfigError::Invalid {
                key,
                origin: origin.clone(),
                message,
            });
        }
        // The bad value is in the file: let toml point at its line and column.
        if let (Some(path), Some(text)) = (file, text)
            && let Err(e) = toml::from_str::<Config>(text)
        {
            return Err(ConfigError::Syntax {
                path: path.into(),
                message: e.to_string(),
            });
        }
        let origin = origins.get(&key).cloned().unwrap_or(Origin::Default);
        return Err(ConfigError::Invalid {
            key,
            origin,
            message,
        });
    }
}

/// Records the line of every leaf key in the file, for validation messages.
fn record_file_origins(path: &Path, text: &str, origins: &mut BTreeMap<String, Origin>) {
    let Ok(doc) = toml_edit::Document::parse(text) else {
        return;
    };
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    fn walk(
        prefix: &str,
        table: &toml_edit::Table,
        out: &mut Vec<(String, Option<usize>)>,
        line_of: &dyn Fn(usize) -> usize,
    ) {
        for (key, item) in table.iter() {
            let full = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            match item {
                toml_edit::Item::Table(t) => walk(&full, t, out, line_of),
                toml_edit::Item::ArrayOfTables(array) => {
                    for (i, t) in array.iter().enumerate() {
                        let element = format!("{full}[{i}]");
                        out.push((element.clone(), t.span().map(|s| line_of(s.start))));
                        walk(&element, t, out, line_of);
                    }
                }
                _ => {
                    let line = table
                        .key(key)
                        .and_then(|k| k.span())
                        .or_else(|| item.span())
                        .map(|s| line_of(s.start));
                    out.push((full, line));
                }
            }
        }
    }
    let mut found = Vec::new();
    walk("", doc.as_table(), &mut found, &line_of);
    for (key, line) in found {
        origins.insert(
            key,
            Origin::File {
                path: path.into(),
                line,
            },
        );
    }
}

fn validate(loaded: &Loaded) -> Result<(), ConfigError> {
    let c = &loaded.config;
    let fail = |key: &str, message: String| ConfigError::Invalid {
        key: key.into(),
        origin: loaded.origin(key),
        message,
    };
    let positive = |key: &str, v: u64| {
        if v == 0 {
            Err(fail(key, "must be greater than 0".into()))
        } else {
            Ok(())
        }
    };

    for origin in &c.server.cors_origins {
        if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(fail(
                "server.cors_origins",
                format!("`{origin}` is not `*` or an http(s):// origin"),
            ));
        }
    }
    if !c.socketio.path.starts_with('/') || c.socketio.path.len() < 2 {
        return Err(fail(
            "socketio.path",
            "must start with `/` and name a path".into(),
        ));
    }
    positive("socketio.ping_interval_ms", c.socketio.ping_interval_ms)?;
    positive("socketio.ping_timeout_ms", c.socketio.ping_timeout_ms)?;
    positive("socketio.max_clients", c.socketio.max_clients as u64)?;
    positive(
        "socketio.client_buffer_packets",
        c.socketio.client_buffer_packets as u64,
    )?;
    positive(
        "socketio.system_status_interval_ms",
        c.socketio.system_status_interval_ms,
    )?;
    if c.socketio.max_payload_bytes < 1024 {
        return Err(fail(
            "socketio.max_payload_bytes",
            "must be at least 1024".into(),
        ));
    }
    positive(
        "socketio.history_max_limit",
        c.socketio.history_max_limit as u64,
    )?;
    if c.socketio.history_default_limit == 0
        || c.socketio.history_default_limit > c.socketio.history_max_limit
    {
        return Err(fail(
            "socketio.history_default_limit",
            format!(
                "must be between 1 and history_max_limit ({})",
                c.socketio.history_max_limit
            ),
        ));
    }
    positive("rate_limit.window_ms", c.rate_limit.window_ms)?;
    positive(
        "rate_limit.max_requests",
        u64::from(c.rate_limit.max_requests),
    )?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.level) {
        return Err(fail(
            "log.level",
            format!("`{}` is not a log filter: {e}", c.log.level),
        ));
    }
    if c.mqtt.max_payload_bytes < 16 {
        return Err(fail("mqtt.max_payload_bytes", "must be at least 16".into()));
    }
    positive("mqtt.max_connections", c.mqtt.max_connections as u64)?;
    positive("mqtt.receive_maximum", u64::from(c.mqtt.receive_maximum))?;
    positive("mqtt.connect_timeout_ms", c.mqtt.connect_timeout_ms)?;
    if c.mqtt.inflight_bytes_max < c.mqtt.max_payload_bytes.saturating_mul(4).max(65_536) {
        return Err(fail(
            "mqtt.inflight_bytes_max",
            "must hold at least one packet of the largest size (4 x max_payload_bytes, at least 65536)".into(),
        ));
    }
    if c.mqtt.subscriber_listen == Some(c.mqtt.listen) {
        return Err(fail(
            "mqtt.subscriber_listen",
            "must differ from mqtt.listen".into(),
        ));
    }
    for (i, u) in c.mqtt.users.iter().enumerate() {
        if u.username.is_empty() || c.mqtt.users[..i].iter().any(|o| o.username == u.username) {
            return Err(fail(
                &format!("mqtt.users[{i}].username"),
                "must be non-empty and unique".into(),
            ));
        }
        if let Err(e) = argon2::password_hash::PasswordHash::new(&u.password_hash) {
            return Err(fail(
                &format!("mqtt.users[{i}].password_hash"),
                format!("is not a PHC string ({e}); `edge-gateway hash-password` prints one"),
            ));
        }
        if u.devices.is_empty() || u.devices.iter().any(|d| d.is_empty()) {
            return Err(fail(
                &format!("mqtt.users[{i}].devices"),
                "must list device ids or patterns (`*` = any)".into(),
            ));
        }
    }
    if !(1..=100_000).contains(&c.store.batch_max_records) {
        return Err(fail(
            "store.batch_max_records",
            "must be between 1 and 100000".into(),
        ));
    }
    positive("store.queue_capacity", c.store.queue_capacity as u64)?;
    positive(
        "store.retention_max_age_secs",
        c.store.retention_max_age_secs,
    )?;
    if c.store.byte_budget_bytes < 1024 * 1024 {
        return Err(fail(
            "store.byte_budget_bytes",
            "must be at least 1 MiB (1048576)".into(),
        ));
    }
    positive("devices.check_interval_ms", c.devices.check_interval_ms)?;
    if c.devices.offline_after_ms < c.devices.check_interval_ms {
        return Err(fail(
            "devices.offline_after_ms",
            "must be at least devices.check_interval_ms".into(),
        ));
    }
    positive("simulator.interval_ms", c.simulator.interval_ms)?;
    let r = &c.sinks.redis;
    if !r.host.is_empty() {
        positive("sinks.redis.port", u64::from(r.port))?;
        let names = match r.mode {
            RedisMode::Publish => ("sinks.redis.channels", &r.channels),
            RedisMode::Stream => ("sinks.redis.streams", &r.streams),
        };
        validate_names(names.0, names.1, &fail)?;
        positive("sinks.redis.stream_maxlen", r.stream_maxlen)?;
        validate_delivery("sinks.redis.delivery", &r.delivery, &fail)?;
    }
    let k = &c.sinks.kafka;
    if !k.brokers.is_empty() {
        for broker in &k.brokers {
            let port_ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(fail(
                    "sinks.kafka.brokers",
                    format!("`{broker}` is not host:port"),
                ));
            }
        }
        if k.client_id.is_empty() {
            return Err(fail("sinks.kafka.client_id", "must not be empty".into()));
        }
        validate_names("sinks.kafka.topics", &k.topics, &fail)?;
        positive("sinks.kafka.metadata_refresh_ms", k.metadata_refresh_ms)?;
        validate_delivery("sinks.kafka.delivery", &k.delivery, &fail)?;
    }
    for (i, rule) in c.thresholds.iter().enumerate() {
        check_rule(rule).map_err(|m| fail(&format!("thresholds[{i}]"), m))?;
    }
    validate_modbus(&c.modbus, &fail)?;
    for (i, s) in c.serial_sensors.iter().enumerate() {
        let key = |k: &str| format!("serial_sensors[{i}].{k}");
        if s.path.is_empty() {
            return Err(fail(&key("path"), "must name the serial port".into()));
        }
        validate_port(&s.port(), &key, &fail)?;
        if s.pattern.is_empty() {
            continue;
        }
        let re = regex::Regex::new(&s.pattern)
            .map_err(|e| fail(&key("pattern"), format!("not a regex: {e}")))?;
        let groups: Vec<&str> = re.capture_names().flatten().collect();
        if !groups.contains(&"value") {
            return Err(fail(&key("pattern"), "needs a named group `value`".into()));
        }
        if !groups.contains(&"device") && s.device_id.is_empty() {
            return Err(fail(
                &key("device_id"),
                "needed: the pattern has no `device` group".into(),
            ));
        }
        if !groups.contains(&"sensor") && s.sensor_type.is_empty() {
            return Err(fail(
                &key("sensor_type"),
                "needed: the pattern has no `sensor` group".into(),
            ));
        }
        positive(&key("max_line_bytes"), s.max_line_bytes as u64)?;
        positive(&key("reconnect_ms"), s.reconnect_ms)?;
    }
    let m = &c.site_mqtt;
    if !m.endpoint.is_empty() {
        if !is_host_port(&m.endpoint) {
            return Err(fail(
                "site_mqtt.endpoint",
                format!("`{}` is not host:port", m.endpoint),
            ));
        }
        positive("site_mqtt.keep_alive_secs", m.keep_alive_secs)?;
        positive("site_mqtt.backoff_initial_ms", m.backoff_initial_ms)?;
        if m.backoff_max_ms < m.backoff_initial_ms {
            return Err(fail(
                "site_mqtt.backoff_max_ms",
                "must be at least backoff_initial_ms".into(),
            ));
        }
        if m.subscriptions.is_empty() {
            return Err(fail("site_mqtt.subscriptions", "must not be empty".into()));
        }
        for (i, sub) in m.subscriptions.iter().enumerate() {
            if sub.filter.is_empty() {
                return Err(fail(
                    &format!("site_mqtt.subscriptions[{i}].filter"),
                    "must not be empty".into(),
                ));
            }
            if sub.qos > 1 {
                return Err(fail(
                    &format!("site_mqtt.subscriptions[{i}].qos"),
                    "must be 0 or 1".into(),
                ));
            }
        }
    }
    Ok(())
}

fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

fn validate_port(
    p: &SerialPortConfig,
    key: &dyn Fn(&str) -> String,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if p.baud_rate == 0 {
        return Err(fail(&key("baud_rate"), "must be greater than 0".into()));
    }
    if !(7..=8).contains(&p.data_bits) {
        return Err(fail(&key("data_bits"), "must be 7 or 8".into()));
    }
    if !(1..=2).contains(&p.stop_bits) {
        return Err(fail(&key("stop_bits"), "must be 1 or 2".into()));
    }
    Ok(())
}

fn validate_modbus(
    m: &ModbusConfig,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if m.offline_after_failures == 0 {
        return Err(fail(
            "modbus.offline_after_failures",
            "must be greater than 0".into(),
        ));
    }
    if m.backoff_initial_ms == 0 {
        return Err(fail(
            "modbus.backoff_initial_ms",
            "must be greater than 0".into(),
        ));
    }
    if m.backoff_max_ms < m.backoff_initial_ms {
        return Err(fail(
            "modbus.backoff_max_ms",
            "must be at least backoff_initial_ms".into(),
        ));
    }
    let mut paths = std::collections::HashSet::new();
    for (i, p) in m.serial_ports.iter().enumerate() {
        let key = |k: &str| format!("modbus.serial_ports[{i}].{k}");
        if p.path.is_empty() {
            return Err(fail(&key("path"), "must name the serial port".into()));
        }
        if !paths.insert(p.path.as_str()) {
            return Err(fail(&key("path"), format!("`{}` is listed twice", p.path)));
        }
        validate_port(p, &key, fail)?;
    }
    let mut ids = std::collections::HashSet::new();
    let mut slaves = std::collections::HashSet::new();
    for (i, d) in m.devices.iter().enumerate() {
        let key = |k: &str| format!("modbus.devices[{i}].{k}");
        check_id(&d.device_id).map_err(|e| fail(&key("device_id"), e.to_string()))?;
        if !ids.insert(d.device_id.as_str()) {
            return Err(fail(
                &key("device_id"),
                format!("`{}` is configured twice", d.device_id),
            ));
        }
        match (d.port.is_empty(), d.endpoint.is_empty()) {
            (false, true) => {
                if !(1..=247).contains(&d.slave_id) {
                    return Err(fail(&key("slave_id"), "must be 1-247".into()));
                }
                if !slaves.insert((d.port.as_str(), d.slave_id)) {
                    return Err(fail(
                        &key("slave_id"),
                        format!("slave {} is already on {}", d.slave_id, d.port),
                    ));
                }
            }
            (true, false) => {
                if !is_host_port(&d.endpoint) {
                    return Err(fail(
                        &key("endpoint"),
                        format!("`{}` is not host:port", d.endpoint),
                    ));
                }
            }
            _ => {
                return Err(fail(
                    &key("port"),
                    "set either `port` (RTU) or `endpoint` (TCP)".into(),
                ));
            }
        }
        if d.poll_interval_ms == 0 {
            return Err(fail(
                &key("poll_interval_ms"),
                "must be greater than 0".into(),
            ));
        }
        if d.timeout_ms == 0 {
            return Err(fail(&key("timeout_ms"), "must be greater than 0".into()));
        }
        if d.profile.is_empty() || d.profile.contains(['/', '\\']) {
            return Err(fail(
                &key("profile"),
                "must name a profile file in modbus.profiles_dir (without `.toml`)".into(),
            ));
        }
        crate::firmware_profile::load(&m.profiles_dir, &d.profile)
            .map_err(|e| fail(&key("profile"), e.to_string()))?;
    }
    Ok(())
}

fn validate_names(
    prefix: &str,
    names: &KindNames,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for (key, value) in [
        ("sensor_readings", &names.sensor_readings),
        ("device_status", &names.device_status),
        ("alerts", &names.alerts),
    ] {
        if value.is_empty() {
            return Err(fail(&format!("{prefix}.{key}"), "must not be empty".into()));
        }
    }
    Ok(())
}

fn validate_delivery(
    prefix: &str,
    d: &DeliveryConfig,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    if !(1..=100_000).contains(&d.batch_max_records) {
        return Err(fail(
            &key("batch_max_records"),
            "must be between 1 and 100000".into(),
        ));
    }
    for (k, v) in [
        ("request_timeout_ms", d.request_timeout_ms),
        ("backoff_initial_ms", d.backoff_initial_ms),
    ] {
        if v == 0 {
            return Err(fail(&key(k), "must be greater than 0".into()));
        }
    }
    if d.backoff_max_ms < d.backoff_initial_ms {
        return Err(fail(
            &key("backoff_max_ms"),
            "must be at least backoff_initial_ms".into(),
        ));
    }
    Ok(())
}

/// The host name, for the default gateway id.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "edge-gateway".into())
}

/// `--data-dir`, else systemd's `$STATE_DIRECTORY` (first entry), else `./data`.
pub fn data_dir(cli: Option<PathBuf>, state_directory: Option<String>) -> PathBuf {
    cli.or_else(|| {
        state_directory
            .and_then(|s| s.split(':').next().map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty())
    })
    .unwrap_or_else(|| PathBuf::from("data"))
}

/// `$CONFIGURATION_DIRECTORY/edge-gateway.toml` (systemd's ConfigurationDirectory=), if present.
pub fn systemd_config_file(configuration_directory: Option<String>) -> Option<PathBuf> {
    let dir = configuration_directory?.split(':').next()?.to_string();
    let path = PathBuf::from(dir).join("edge-gateway.toml");
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn printed_default_is_the_default() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn reference_env_names_override() {
        let loaded = load(
            None,
            env(&[
                ("PORT", "4000"),
                ("CORS_ORIGINS", "http://a.example, https://b.example"),
                ("SOCKET_IO_PING_INTERVAL", "1000"),
                ("JWT_SECRET", "s3cret"),
                ("METRICS_ENABLED", "false"),
                ("EDGE_GATEWAY_MQTT__LISTEN", "127.0.0.1:1999"),
                ("EDGE_GATEWAY_GATEWAY_ID", "42"),
                ("EDGE_GATEWAY_BIN", "/not/config"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        let c = &loaded.config;
        assert_eq!(c.server.port, 4000);
        assert_eq!(
            c.server.cors_origins,
            vec!["http://a.example", "https://b.example"]
        );
        assert_eq!(c.socketio.ping_interval_ms, 1000);
        assert_eq!(c.auth.jwt_secret, "s3cret");
        assert!(!c.metrics.enabled);
        assert_eq!(c.mqtt.listen, "127.0.0.1:1999".parse().unwrap());
        assert_eq!(c.gateway_id, "42");
        assert!(!format!("{:?}", c.auth).contains("s3cret"));
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = load(None, env(&[("PORT", "http")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.port") && err.contains("environment variable PORT"),
            "{err}"
        );
        let err = load(None, env(&[("EDGE_GATEWAY_STORE__NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("EDGE_GATEWAY_STORE__NOPE") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn bad_file_value_names_key_and_line() {
        let f = file("[server]\nport = 3003\n\n[store]\nbatch_max_records = \"many\"\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("line 5") && err.contains("batch_max_records"),
            "{err}"
        );

        let f = file("[mqtt]\nlisten = \"0.0.0.0:1883\"\nsurprise = 1\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("surprise"), "{err}");
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let f = file("[devices]\ncheck_interval_ms = 1000\noffline_after_ms = 10\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("devices.offline_after_ms") && err.contains(":3"),
            "{err}"
        );

        let err = load(None, env(&[("SOCKET_IO_PATH", "socket")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("environment variable SOCKET_IO_PATH"), "{err}");

        let f = file(
            "[[thresholds]]\nsensor_type = \"t\"\noperator = \">\"\nwarning = 9.0\ncritical = 1.0\n",
        );
        let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("thresholds[0]") && err.contains("out of order"),
            "{err}"
        );
    }

    #[test]
    fn modbus_devices_and_profiles_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("firmware-profiles")).unwrap();
        std::fs::write(
            dir.path().join("firmware-profiles/bad.toml"),
            "model = \"m\"\n[[points]]\nsensor_type = \"t\"\nfunction_code = 7\naddress = 0\n",
        )
        .unwrap();
        let cfg = dir.path().join("gw.toml");
        let write = |text: &str| std::fs::write(&cfg, text).unwrap();

        write(
            "[modbus]\n\n[[modbus.devices]]\ndevice_id = \"d1\"\nprofile = \"bad\"\nport = \"/dev/ttyUSB0\"\n",
        );
        let err = load(Some(&cfg), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("modbus.devices[0].profile")
                && err.contains("gw.toml:5")
                && err.contains("bad.toml")
                && err.contains("points[0].function_code"),
            "{err}"
        );

        write(
            "[[modbus.devices]]\ndevice_id = \"d1\"\nprofile = \"missing\"\nendpoint = \"10.0.0.1:502\"\n",
        );
        let err = load(Some(&cfg), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("missing.toml") && err.contains("cannot read"),
            "{err}"
        );

        write("[[modbus.devices]]\ndevice_id = \"d1\"\nprofile = \"x\"\n");
        let err = load(Some(&cfg), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("modbus.devices[0].port") && err.contains("either"),
            "{err}"
        );

        write(
            "[[modbus.devices]]\ndevice_id = \"d1\"\nprofile = \"x\"\nport = \"/dev/ttyS0\"\nslave_id = 0\n",
        );
        let err = load(Some(&cfg), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("modbus.devices[0].slave_id") && err.contains("gw.toml:5"),
            "{err}"
        );

        write("[[modbus.devices]]\ndevice_id = \"d1\"\nprofiel = \"x\"\n");
        let err = load(Some(&cfg), env(&[])).unwrap_err().to_string();
        assert!(err.contains("profiel"), "{err}");

        // The shipped profiles, found relative to the config file.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
        write(&format!(
            "[modbus]\nprofiles_dir = \"{}\"\n[[modbus.devices]]\ndevice_id = \"m1\"\nprofile = \"sdm630\"\nendpoint = \"127.0.0.1:502\"\n",
            shipped.display()
        ));
        load(Some(&cfg), env(&[])).unwrap();
    }

    #[test]
    fn sink_env_names_and_validation() {
        let loaded = load(
            None,
            env(&[
                ("REDIS_HOST", "redis.plant"),
                ("REDIS_PORT", "6380"),
                ("REDIS_PASSWORD", "pw"),
                ("KAFKA_BROKERS", "k1:9092, k2:9093"),
                ("KAFKA_CLIENT_ID", "gw-7"),
                ("EDGE_GATEWAY_SINKS__REDIS__MODE", "stream"),
                ("EDGE_GATEWAY_SINKS__KAFKA__COMPRESSION", "snappy"),
                (
                    "EDGE_GATEWAY_SINKS__KAFKA__DELIVERY__BATCH_MAX_RECORDS",
                    "500",
                ),
            ]),
        )
        .unwrap();
        let s = &loaded.config.sinks;
        assert_eq!((s.redis.host.as_str(), s.redis.port), ("redis.plant", 6380));
        assert_eq!(s.redis.password, "pw");
        assert_eq!(s.redis.mode, RedisMode::Stream);
        assert_eq!(s.kafka.brokers, vec!["k1:9092", "k2:9093"]);
        assert_eq!(s.kafka.client_id, "gw-7");
        assert_eq!(s.kafka.compression, KafkaCompression::Snappy);
        assert_eq!(s.kafka.delivery.batch_max_records, 500);
        assert!(!format!("{:?}", s.redis).contains("pw\""));

        let err = load(None, env(&[("KAFKA_BROKERS", "kafka-without-port")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sinks.kafka.brokers")
                && err.contains("environment variable KAFKA_BROKERS"),
            "{err}"
        );
        let err = load(
            None,
            env(&[
                ("REDIS_HOST", "r"),
                ("EDGE_GATEWAY_SINKS__REDIS__MODE", "fanout"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sinks.redis.mode"), "{err}");
        let f =
            file("[sinks.redis]\nhost = \"r\"\n[sinks.redis.delivery]\nbackoff_initial_ms = 0\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("sinks.redis.delivery.backoff_initial_ms") && err.contains(":4"),
            "{err}"
        );
    }

    #[test]
    fn data_dir_precedence() {
        assert_eq!(
            data_dir(Some("/x".into()), Some("/y".into())),
            PathBuf::from("/x")
        );
        assert_eq!(data_dir(None, Some("/y:/z".into())), PathBuf::from("/y"));
        assert_eq!(data_dir(None, None), PathBuf::from("data"));
    }
}
