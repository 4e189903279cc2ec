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
fn the_total_client_buffer_is_at_least_a_mebibyte() {
    let c = load(None, env(&[])).unwrap();
    assert_eq!(c.config.socketio.total_buffer_bytes, 32 << 20);
    let key = "EDGE_GATEWAY_SOCKETIO__TOTAL_BUFFER_BYTES";
    let err = load(None, env(&[(key, "65536")])).unwrap_err().to_string();
    assert!(
        err.contains("socketio.total_buffer_bytes") && err.contains("at least 1048576"),
        "{err}"
    );
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

    let f = file(
        "[[thresholds]]\nsensor_type = \"t\"\noperator = \">\"\nwarning = 9.0\n\ndeadband = -2.0\n",
    );
    let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("thresholds[0].deadband") && err.contains(":6)"),
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

const PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

#[test]
fn secrets_from_files_trimmed_and_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwt"), "jwt-from-file\n").unwrap();
    std::fs::write(dir.path().join("site"), "site-pw\r\n").unwrap();
    std::fs::write(dir.path().join("hash"), format!("{PHC}\n")).unwrap();
    let redis = dir.path().join("redis");
    std::fs::write(&redis, "redis pw ").unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        "[auth]\njwt_secret = \"\"\njwt_secret_file = \"jwt\"\n[site_mqtt]\nendpoint = \"s:1883\"\npassword_file = \"site\"\n[[mqtt.users]]\nusername = \"u\"\npassword_hash_file = \"hash\"\ndevices = [\"*\"]\n",
    )
    .unwrap();
    let redis_env = redis.to_str().unwrap();
    let loaded = load(Some(&config), env(&[("REDIS_PASSWORD_FILE", redis_env)])).unwrap();
    let c = &loaded.config;
    assert_eq!(c.auth.jwt_secret.expose(), "jwt-from-file");
    assert_eq!(c.site_mqtt.password.expose(), "site-pw");
    assert_eq!(c.sinks.redis.password.expose(), "redis pw ");
    assert_eq!(c.mqtt.users[0].password_hash.expose(), PHC);
    assert!(loaded.secrets_in_file().is_empty());
    assert_eq!(
        loaded.origin("sinks.redis.password").to_string(),
        redis.display().to_string()
    );

    let loaded = load(
        None,
        env(&[("EDGE_GATEWAY_SITE_MQTT__PASSWORD_FILE", redis_env)]),
    )
    .unwrap();
    assert_eq!(loaded.config.site_mqtt.password.expose(), "redis pw ");
}

#[test]
fn secret_value_and_file_together_name_both_keys() {
    let f = file("[auth]\njwt_secret = \"inline\"\n\njwt_secret_file = \"/run/x\"\n");
    let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("`auth.jwt_secret_file`")
            && err.contains(":4)")
            && err.contains("`auth.jwt_secret` is set too")
            && err.contains(":2)")
            && !err.contains("inline"),
        "{err}"
    );
    let err = load(
        None,
        env(&[("REDIS_PASSWORD", "pw"), ("REDIS_PASSWORD_FILE", "/run/x")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sinks.redis.password_file")
            && err.contains("REDIS_PASSWORD_FILE")
            && err.contains("environment variable REDIS_PASSWORD)"),
        "{err}"
    );
}

#[test]
fn unreadable_or_empty_secret_file_names_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = load(None, env(&[("JWT_SECRET_FILE", missing.to_str().unwrap())]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth.jwt_secret_file")
            && err.contains("JWT_SECRET_FILE")
            && err.contains(&format!("cannot read {}", missing.display())),
        "{err}"
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let f = file(&format!(
        "[site_mqtt]\npassword_file = {:?}\n",
        empty.to_str().unwrap()
    ));
    let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("site_mqtt.password_file") && err.contains("is empty"),
        "{err}"
    );
    let f = file("[auth]\njwt_secret_file = 7\n");
    let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
    assert!(err.contains("must be a file path"), "{err}");
}

#[test]
fn secrets_from_systemd_credentials() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("sinks.redis.password"), "cred-pw\n").unwrap();
    let dir = creds.path().to_str().unwrap();
    let loaded = load(None, env(&[("CREDENTIALS_DIRECTORY", dir)])).unwrap();
    assert_eq!(loaded.config.sinks.redis.password.expose(), "cred-pw");
    assert!(loaded.config.auth.jwt_secret.is_empty());

    let err = load(
        None,
        env(&[("CREDENTIALS_DIRECTORY", dir), ("REDIS_PASSWORD", "pw")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`sinks.redis.password`")
            && err.contains("REDIS_PASSWORD")
            && err.contains(&format!("{dir}/sinks.redis.password")),
        "{err}"
    );

    // A credential that cannot be read is reported under the secret's own key.
    std::fs::create_dir(creds.path().join("auth.jwt_secret")).unwrap();
    let err = load(None, env(&[("CREDENTIALS_DIRECTORY", dir)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid value for `auth.jwt_secret` ")
            && err.contains(&format!("cannot read {dir}/auth.jwt_secret")),
        "{err}"
    );
}

#[test]
fn secrets_in_file_lists_inline_values_only() {
    let f = file(&format!(
        "[auth]\njwt_secret = \"s\"\n[sinks.redis]\npassword = \"\"\n[[mqtt.users]]\nusername = \"u\"\npassword_hash = \"{PHC}\"\ndevices = [\"*\"]\n"
    ));
    let loaded = load(Some(f.path()), env(&[("REDIS_PASSWORD", "from-env")])).unwrap();
    assert_eq!(
        loaded.secrets_in_file(),
        ["auth.jwt_secret", "mqtt.users[0].password_hash"]
    );
}

#[test]
fn a_bad_value_after_a_secret_file_key_is_still_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwt"), "s").unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        "[auth]\njwt_secret_file = \"jwt\"\n[store]\nbatch_max_records = \"many\"\n",
    )
    .unwrap();
    let err = load(Some(&config), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("batch_max_records") && err.contains(":4") && !err.contains("unknown"),
        "{err}"
    );
}

mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Every leaf key of the default configuration (arrays count as leaves), plus the secret
    /// file keys and one that does not exist.
    fn keys() -> Vec<String> {
        fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(t) => walk(&key, t, out),
                    _ => out.push(key),
                }
            }
        }
        let default: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let mut out = Vec::new();
        walk("", &default, &mut out);
        out.extend(
            [
                "auth.jwt_secret_file",
                "sinks.redis.password_file",
                "site_mqtt.password_file",
                "mqtt.users",
                "no.such_key",
            ]
            .map(String::from),
        );
        out
    }

    /// Values of every TOML type, including arrays of tables shaped like the config's lists.
    fn value() -> impl Strategy<Value = toml::Value> {
        let scalar = prop_oneof![
            any::<i64>().prop_map(toml::Value::Integer),
            prop_oneof![Just(0i64), Just(1), Just(-1), 0..70_000i64].prop_map(toml::Value::Integer),
            any::<f64>().prop_map(toml::Value::Float),
            any::<bool>().prop_map(toml::Value::Boolean),
            prop_oneof![
                "\\PC{0,24}",
                "[a-z]{1,8}:[0-9]{1,5}",
                "[0-9.]{1,15}:[0-9]{1,5}",
                "/[a-z/]{0,12}"
            ]
            .prop_map(toml::Value::String),
        ];
        let field = prop::sample::select(
            &[
                "username",
                "password_hash",
                "devices",
                "sensor_type",
                "operator",
                "warning",
                "critical",
                "filter",
                "qos",
                "device_id",
                "port",
                "profile",
                "endpoint",
            ][..],
        );
        let table = prop::collection::btree_map(field, scalar.clone(), 0..5).prop_map(|m| {
            toml::Value::Table(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        });
        prop_oneof![
            4 => scalar.clone(),
            1 => prop::collection::vec(scalar, 0..4).prop_map(toml::Value::Array),
            1 => prop::collection::vec(table, 0..3).prop_map(toml::Value::Array),
        ]
    }

    fn load_text(text: &str, env_pairs: Vec<(String, String)>) {
        let f = file(text);
        let _ = load(Some(f.path()), env_pairs);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_text_never_panics(text in "\\PC{0,300}") {
            load_text(&text, Vec::new());
        }

        /// The default file with keys replaced by values of any type, and environment
        /// overrides of any key with any text: an error or a config, never a panic.
        #[test]
        fn changed_defaults_never_panic(
            changes in prop::collection::vec((any::<prop::sample::Index>(), value()), 0..8),
            overrides in prop::collection::vec((any::<prop::sample::Index>(), "\\PC{0,16}"), 0..4),
        ) {
            let keys = keys();
            let mut table: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
            for (i, v) in changes {
                env::set_path(&mut table, i.get::<String>(&keys), v);
            }
            let text = toml::to_string(&table);
            prop_assume!(text.is_ok());
            let overrides = overrides
                .into_iter()
                .map(|(i, v)| {
                    let name = i.get::<String>(&keys).replace('.', "__").to_ascii_uppercase();
                    (format!("{ENV_PREFIX}{name}"), v)
                })
                .collect();
            load_text(&text.unwrap(), overrides);
        }
    }
}

#[test]
fn toml_and_type_errors_never_quote_a_secret() {
    for text in [
        "[auth]\njwt_secret = \"hunter2\n",
        "[auth]\njwt_secret = 12345\n",
        "[sinks.redis]\nhost = \"r\"\npassword = 12345\n",
        "site_mqtt = { endpoint = \"s:1\", password = 12345 }\n",
    ] {
        let f = file(text);
        let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(
            !err.contains("hunter2") && !err.contains("12345") && err.contains("line"),
            "{err}"
        );
    }
    let f = file("[store]\nbatch_max_records = \"many\"\n");
    let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("\"many\""),
        "other keys' values still show: {err}"
    );
}

#[test]
fn durable_commit_interval_is_bounded_and_named_with_its_origin() {
    assert_eq!(Config::default().store.durable_commit_interval_ms, 400);
    let f = file("[store]\ndurable_commit_interval_ms = 60000\n");
    let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("store.durable_commit_interval_ms") && err.contains(":2"),
        "{err}"
    );
    let err = load(
        None,
        env(&[("EDGE_GATEWAY_STORE__DURABLE_COMMIT_INTERVAL_MS", "20000")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("store.durable_commit_interval_ms")
            && err.contains("EDGE_GATEWAY_STORE__DURABLE_COMMIT_INTERVAL_MS"),
        "{err}"
    );
    let f = file("[store]\ndurable_commit_interval_ms = 0\n");
    let c = load(Some(f.path()), env(&[])).unwrap();
    assert_eq!(
        c.config.store.durable_commit_interval_ms, 0,
        "0: every commit durable"
    );
}
