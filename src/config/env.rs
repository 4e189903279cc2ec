//! The environment overlay: which variables are config keys, and how their untyped values
//! become TOML values laid over the file's table.

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
    ("JWT_SECRET_FILE", "auth.jwt_secret_file"),
    ("RATE_LIMIT_WINDOW", "rate_limit.window_ms"),
    ("RATE_LIMIT_MAX_REQUESTS", "rate_limit.max_requests"),
    ("LOG_LEVEL", "log.level"),
    ("METRICS_ENABLED", "metrics.enabled"),
    ("REDIS_HOST", "sinks.redis.host"),
    ("REDIS_PORT", "sinks.redis.port"),
    ("REDIS_PASSWORD", "sinks.redis.password"),
    ("REDIS_PASSWORD_FILE", "sinks.redis.password_file"),
    ("KAFKA_BROKERS", "sinks.kafka.brokers"),
    ("KAFKA_CLIENT_ID", "sinks.kafka.client_id"),
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["server.cors_origins", "sinks.kafka.brokers"];

/// Prefix of our own environment overrides.
pub const ENV_PREFIX: &str = "EDGE_GATEWAY_";

/// Maps an environment variable name onto a config key, if it is one of ours.
pub(super) fn env_key(name: &str) -> Option<String> {
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
pub(super) fn guess_value(key: &str, raw: &str) -> toml::Value {
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

/// Sets a dotted key in the table, making (or replacing) the tables on the way.
pub(super) fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
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
