//! The binary's command line: configuration errors exit 2 and name the key and its source.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("EDGE_GATEWAY_")
            || [
                "PORT",
                "HOST",
                "JWT_SECRET",
                "JWT_SECRET_FILE",
                "REDIS_HOST",
                "REDIS_PASSWORD",
                "REDIS_PASSWORD_FILE",
                "CREDENTIALS_DIRECTORY",
                "LOG_LEVEL",
            ]
            .contains(&k.as_str())
        {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn default_config_round_trips_through_check_config() {
    let out = bin().arg("default-config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let out = bin().arg("check-config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_file_value_exits_2_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[server]\nport = 3003\n[socketio]\nping_interval_ms = \"often\"\n",
    )
    .unwrap();
    let out = bin().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4") && err.contains("ping_interval_ms"),
        "{err}"
    );

    let out = bin()
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_env_value_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .env("SOCKET_IO_MAX_CLIENTS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SOCKET_IO_MAX_CLIENTS") && err.contains("socketio.max_clients"),
        "{err}"
    );
}

#[test]
fn relay_without_a_redis_host_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["relay", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sinks.redis.host (REDIS_HOST)"), "{stderr}");
}

#[test]
fn missing_config_file_is_a_config_error() {
    let out = bin()
        .args(["check-config", "/nonexistent/edge-gateway.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/edge-gateway.toml"));
}

fn check_config(path: &std::path::Path) -> std::process::Output {
    bin().arg("check-config").arg(path).output().unwrap()
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn check_config_warns_about_readable_secrets_without_printing_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[auth]\njwt_secret = \"hunter2-jwt\"\n[sinks.redis]\nhost = \"r\"\npassword = \"hunter2-redis\"\n",
    )
    .unwrap();
    chmod(&path, 0o640);
    let out = check_config(&path);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        err.contains("warning")
            && err.contains("auth.jwt_secret, sinks.redis.password")
            && err.contains("mode 640"),
        "{err}"
    );
    assert!(!all.contains("hunter2"), "{all}");

    chmod(&path, 0o600);
    let out = check_config(&path);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_reads_secret_files_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwt"), "hunter2\n").unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("site_mqtt.password"), "hunter2\n").unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[auth]\njwt_secret_file = \"jwt\"\n[site_mqtt]\nendpoint = \"s:1883\"\n",
    )
    .unwrap();
    chmod(&path, 0o644);
    let out = bin()
        .arg("check-config")
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.is_empty(), "{err}");

    // The same secret from the file and the environment: exit 2 naming both keys.
    let out = bin()
        .arg("check-config")
        .arg(&path)
        .env("JWT_SECRET", "hunter2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.jwt_secret_file")
            && err.contains("gw.toml:2")
            && err.contains("`auth.jwt_secret` is set too (from environment variable JWT_SECRET)")
            && !err.contains("hunter2"),
        "{err}"
    );

    // An unreadable secret file: exit 2 naming the key and the path.
    std::fs::remove_file(dir.path().join("jwt")).unwrap();
    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let missing = dir.path().join("jwt");
    assert!(
        err.contains("auth.jwt_secret_file")
            && err.contains(&format!("cannot read {}", missing.display())),
        "{err}"
    );
}
