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
    assert_eq!(c.auth.jwt_secret.expose(), "s3cret");
    assert!(!c.metrics.enabled);
    assert_eq!(c.mqtt.listen, "127.0.0.1:1999".parse().unwrap());
    assert_eq!(c.gateway_id, "42");
    assert!(!format!("{:?}", c.auth).contains("s3cret"));
}

#[test]
fn dashboard_switch_is_a_boolean() {
    let c = load(None, env(&[("EDGE_GATEWAY_DASHBOARD__ENABLED", "false")])).unwrap();
    assert!(!c.config.dashboard.enabled);
    let err = load(None, env(&[("EDGE_GATEWAY_DASHBOARD__ENABLED", "maybe")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dashboard.enabled")
            && err.contains("environment variable EDGE_GATEWAY_DASHBOARD__ENABLED"),
        "{err}"
    );
    let f = file("[dashboard]\nenabled = 1\n");
    let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("enabled = 1"),
        "{err}"
    );
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
        err.contains("thresholds[0]") && err.contains(":1)") && err.contains("out of order"),
        "{err}"
    );

    // Keys inside inline tables have their line too.
    let f = file("[modbus]\nserial_ports = [\n  { path = \"/dev/ttyS0\", data_bits = 9 },\n]\n");
    let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("modbus.serial_ports[0].data_bits") && err.contains(":3)"),
        "{err}"
    );
}

#[test]
fn every_secret_is_redacted() {
    let f = file(
        "[auth]\njwt_secret = \"jwt-s3cret\"\n[sinks.redis]\nhost = \"r\"\npassword = \"redis-s3cret\"\n[site_mqtt]\nendpoint = \"site:1883\"\nusername = \"u\"\npassword = \"mqtt-s3cret\"\n",
    );
    let loaded = load(Some(f.path()), env(&[])).unwrap();
    let shown = format!("{loaded:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(shown.matches("\"<redacted>\"").count(), 3, "{shown}");
    let c = &loaded.config;
    assert_eq!(c.auth.jwt_secret.expose(), "jwt-s3cret");
    assert_eq!(c.sinks.redis.password.expose(), "redis-s3cret");
    assert_eq!(c.site_mqtt.password.expose(), "mqtt-s3cret");

    // A numeric secret from the environment stays a string.
    let loaded = load(
        None,
        env(&[("REDIS_PASSWORD", "1234"), ("JWT_SECRET", "1.5")]),
    )
    .unwrap();
    assert_eq!(loaded.config.sinks.redis.password.expose(), "1234");
    assert_eq!(loaded.config.auth.jwt_secret.expose(), "1.5");
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
    assert_eq!(s.redis.password.expose(), "pw");
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
        err.contains("sinks.kafka.brokers") && err.contains("environment variable KAFKA_BROKERS"),
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
    let f = file("[sinks.redis]\nhost = \"r\"\n[sinks.redis.delivery]\nbackoff_initial_ms = 0\n");
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
