//! Configuration: one TOML file where every key has a default, overridden by environment
//! variables. The reference service's names (PORT, CORS_ORIGINS, SOCKET_IO_*, JWT_SECRET,
//! RATE_LIMIT_*, LOG_LEVEL, METRICS_ENABLED) map onto their keys; every other key can be set with
//! `EDGE_GATEWAY_<SECTION>__<KEY>` (e.g. `EDGE_GATEWAY_MQTT__LISTEN`). A bad value is reported
//! with its key and where it came from: the file and line, or the environment variable.
//!
//! This file loads (file, env overlay, file:line origins) and holds the root; each area's
//! schema, defaults and validation live together in its own file. Every password and key is a
//! [`Secret`].

mod devices;
mod env;
mod modbus;
mod mqtt;
mod relay;
mod secret;
mod serial;
mod server;
mod sinks;
mod site_mqtt;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::alarms::ThresholdRule;
use crate::tls::ClientTls;

pub use devices::{AlarmsConfig, DevicesConfig, SimulatorConfig};
pub use env::ENV_PREFIX;
pub use modbus::{ModbusConfig, ModbusDeviceConfig};
pub use mqtt::{MqttConfig, MqttUser};
pub use relay::RelayConfig;
pub use secret::Secret;
use secret::SecretSources;
pub use serial::{Parity, SerialPortConfig, SerialSensorConfig};
pub use server::{
    AuthConfig, DashboardConfig, LogConfig, MetricsConfig, RateLimitConfig, ServerConfig,
    SocketIoConfig,
};
pub use sinks::{
    DeliveryConfig, KafkaCompression, KafkaSasl, KafkaSinkConfig, KindNames, RedisMode,
    RedisSinkConfig, SinksConfig,
};
pub use site_mqtt::{SiteMqttConfig, SiteSubscription};
pub use store::StoreConfig;

/// The full, commented default configuration printed by `edge-gateway default-config`.
/// A unit test proves it deserializes to exactly [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../default-config.toml");

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
    /// The built-in dashboard page at `/`.
    pub dashboard: DashboardConfig,
    pub mqtt: MqttConfig,
    pub store: StoreConfig,
    pub devices: DevicesConfig,
    /// Threshold alert rules; a file that lists any replaces the whole default list.
    pub thresholds: Vec<ThresholdRule>,
    /// The alarm life cycle's gateway-wide settings.
    pub alarms: AlarmsConfig,
    pub simulator: SimulatorConfig,
    /// Upstream store-and-forward: each sink is on once its endpoint is set.
    pub sinks: SinksConfig,
    /// Modbus RTU/TCP devices polled with their firmware profiles.
    pub modbus: ModbusConfig,
    /// Line-oriented ASCII sensors on serial ports.
    pub serial_sensors: Vec<SerialSensorConfig>,
    /// A client of the site's own MQTT broker; off while `endpoint` is empty.
    pub site_mqtt: SiteMqttConfig,
    /// Relay mode only (`edge-gateway relay`): the central sources.
    pub relay: RelayConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway_id: String::new(),
            server: ServerConfig::default(),
            socketio: SocketIoConfig::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            dashboard: DashboardConfig::default(),
            mqtt: MqttConfig::default(),
            store: StoreConfig::default(),
            devices: DevicesConfig::default(),
            thresholds: devices::default_thresholds(),
            alarms: AlarmsConfig::default(),
            simulator: SimulatorConfig::default(),
            sinks: SinksConfig::default(),
            modbus: ModbusConfig::default(),
            serial_sensors: Vec::new(),
            site_mqtt: SiteMqttConfig::default(),
            relay: RelayConfig::default(),
        }
    }
}

impl Config {
    /// Every area's checks, in the order of the file's sections; the first failure is reported.
    fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        self.server.validate(check)?;
        self.socketio.validate(check)?;
        self.rate_limit.validate(check)?;
        self.log.validate(check)?;
        self.mqtt.validate(check)?;
        self.store.validate(check)?;
        self.devices.validate(check)?;
        self.simulator.validate(check)?;
        self.sinks.validate(check)?;
        devices::validate_thresholds(&self.thresholds, check)?;
        self.modbus.validate(check)?;
        for (i, sensor) in self.serial_sensors.iter().enumerate() {
            sensor.validate(i, check)?;
        }
        self.site_mqtt.validate(check)?;
        self.relay.validate(check)
    }
}

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
    secrets_in_file: Vec<String>,
}

impl Loaded {
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// The secret keys whose values are written in the config file itself (not `*_file`,
    /// credentials or the environment): such a file must not be readable by others.
    pub fn secrets_in_file(&self) -> &[String] {
        &self.secrets_in_file
    }
}

/// What the areas' checks report through: an error names the key and where its value came from.
struct Check<'a> {
    loaded: &'a Loaded,
}

impl Check<'_> {
    fn fail(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            origin: self.loaded.origin(key),
            message: message.into(),
        }
    }

    fn positive(&self, key: &str, value: u64) -> Result<(), ConfigError> {
        if value == 0 {
            return Err(self.fail(key, "must be greater than 0"));
        }
        Ok(())
    }

    /// The TLS keys of one client (`<prefix>.tls`, `ca_file`, `client_cert_file`,
    /// `client_key_file`, `server_name`): files set only with `tls = true`, certificate and
    /// key together, every file read and parsed now so a bad one fails the start.
    fn client_tls(&self, prefix: &str, enabled: bool, tls: &ClientTls) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let set = [
            ("ca_file", tls.ca_file.is_some()),
            ("client_cert_file", tls.client_cert_file.is_some()),
            ("client_key_file", tls.client_key_file.is_some()),
            ("server_name", tls.server_name.is_some()),
        ];
        if !enabled {
            return match set.iter().find(|(_, s)| *s) {
                Some((k, _)) => Err(self.fail(
                    &key(k),
                    "is set but tls = false: set tls = true or remove it",
                )),
                None => Ok(()),
            };
        }
        // Blamed on the one that is set: that is where the origin (file:line) points.
        match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(_), None) => {
                let msg = "is set without client_key_file (mTLS needs both)";
                return Err(self.fail(&key("client_cert_file"), msg));
            }
            (None, Some(_)) => {
                let msg = "is set without client_cert_file (mTLS needs both)";
                return Err(self.fail(&key("client_key_file"), msg));
            }
            _ => {}
        }
        let file_error = |k: &str, e: crate::tls::TlsError| self.fail(&key(k), e.to_string());
        if let Some(ca) = &tls.ca_file {
            crate::tls::load_certs(ca).map_err(|e| file_error("ca_file", e))?;
        }
        if let Some(cert) = &tls.client_cert_file {
            crate::tls::load_certs(cert).map_err(|e| file_error("client_cert_file", e))?;
        }
        if let Some(k) = &tls.client_key_file {
            crate::tls::load_key(k).map_err(|e| file_error("client_key_file", e))?;
        }
        crate::tls::client_config(tls).map_err(|e| match e {
            crate::tls::TlsError::ServerName(_) => file_error("server_name", e),
            e => file_error("client_key_file", e),
        })?;
        Ok(())
    }

    /// A listener's `<prefix>.tls_cert_file` and `tls_key_file`: both or neither, and a pair
    /// that loads.
    fn server_tls(&self, prefix: &str, cert: &str, key: &str) -> Result<(), ConfigError> {
        let cert_key = format!("{prefix}.tls_cert_file");
        let key_key = format!("{prefix}.tls_key_file");
        match (cert.is_empty(), key.is_empty()) {
            (true, true) => return Ok(()),
            (false, true) => return Err(self.fail(&cert_key, "is set without tls_key_file")),
            (true, false) => return Err(self.fail(&key_key, "is set without tls_cert_file")),
            (false, false) => {}
        }
        let (cert, key) = (Path::new(cert), Path::new(key));
        crate::tls::load_certs(cert).map_err(|e| self.fail(&cert_key, e.to_string()))?;
        crate::tls::load_key(key).map_err(|e| self.fail(&key_key, e.to_string()))?;
        crate::tls::server_config(cert, key).map_err(|e| self.fail(&key_key, e.to_string()))?;
        Ok(())
    }

    /// `<prefix>.backoff_initial_ms` > 0 and `<prefix>.backoff_max_ms` not below it.
    fn backoff(&self, prefix: &str, initial_ms: u64, max_ms: u64) -> Result<(), ConfigError> {
        self.positive(&format!("{prefix}.backoff_initial_ms"), initial_ms)?;
        if max_ms < initial_ms {
            return Err(self.fail(
                &format!("{prefix}.backoff_max_ms"),
                "must be at least backoff_initial_ms",
            ));
        }
        Ok(())
    }
}

/// The TLS files and name of one client from its string keys (empty = unset).
fn client_tls_files(
    ca_file: &str,
    client_cert_file: &str,
    client_key_file: &str,
    server_name: &str,
) -> ClientTls {
    let path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    ClientTls {
        ca_file: path(ca_file),
        client_cert_file: path(client_cert_file),
        client_key_file: path(client_key_file),
        server_name: (!server_name.is_empty()).then(|| server_name.to_string()),
    }
}

/// `host:port` with a non-empty host and a port above 0.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
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
                message: secret::redact_toml_error(e.to_string()),
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
    let mut credentials = None;
    for (name, value) in env {
        if name == "CREDENTIALS_DIRECTORY" {
            credentials = Some(PathBuf::from(&value));
        }
        let Some(key) = env::env_key(&name) else {
            continue;
        };
        env_values.insert(key.clone(), value.clone());
        env::set_path(&mut table, &key, env::guess_value(&key, &value));
        origins.insert(key, Origin::Env(name));
    }

    let secrets_in_file = SecretSources {
        credentials: credentials.as_deref(),
    }
    .resolve(&mut table, &mut origins)?;
    let mut config = deserialize(table, &env_values, &origins, file, text.as_deref())?;
    if let Some(dir) = file.and_then(Path::parent)
        && config.modbus.profiles_dir.is_relative()
    {
        config.modbus.profiles_dir = dir.join(&config.modbus.profiles_dir);
    }
    let loaded = Loaded {
        config,
        origins,
        secrets_in_file,
    };
    loaded.config.validate(&Check { loaded: &loaded })?;
    Ok(loaded)
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
            env::set_path(&mut table, &key, toml::Value::String(raw.clone()));
            retried.push(key);
            continue;
        }
        let message = secret::redact_type_error(&key, message);
        if let Some(origin @ Origin::Env(_)) = origins.get(&key) {
            return Err(ConfigError::Invalid {
                key,
                origin: origin.clone(),
                message,
            });
        }
        // The bad value is in the file: let toml point at its line and column (unless toml
        // stops earlier, at a `*_file` secret key only `load` knows).
        if let (Some(path), Some(text)) = (file, text)
            && let Err(e) = toml::from_str::<Config>(text)
            && e.to_string()
                .contains(key.rsplit('.').next().unwrap_or(&key))
        {
            return Err(ConfigError::Syntax {
                path: path.into(),
                message: secret::redact_toml_error(e.to_string()),
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

/// Records the line of every key in the file (tables and inline tables included, and every
/// element of an array of tables as `key[i]`), for validation messages.
fn record_file_origins(path: &Path, text: &str, origins: &mut BTreeMap<String, Origin>) {
    let Ok(doc) = DeTable::parse(text) else {
        return;
    };
    let mut found = Vec::new();
    key_offsets("", doc.get_ref(), &mut found);
    for (key, offset) in found {
        let line = text[..offset.min(text.len())].matches('\n').count() + 1;
        origins.insert(
            key,
            Origin::File {
                path: path.into(),
                line: Some(line),
            },
        );
    }
}

/// Each key under `prefix` with the byte offset where it is written.
fn key_offsets(prefix: &str, table: &DeTable<'_>, out: &mut Vec<(String, usize)>) {
    for (key, value) in table {
        let full = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.push((full.clone(), key.span().start));
        match value.get_ref() {
            DeValue::Table(t) => key_offsets(&full, t, out),
            DeValue::Array(items)
                if !items.is_empty() && items.iter().all(|i| i.get_ref().is_table()) =>
            {
                for (i, item) in items.iter().enumerate() {
                    let element = format!("{full}[{i}]");
                    out.push((element.clone(), item.span().start));
                    if let DeValue::Table(t) = item.get_ref() {
                        key_offsets(&element, t, out);
                    }
                }
            }
            _ => {}
        }
    }
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
