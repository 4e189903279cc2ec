//! The binary's command line: configuration errors exit 2 and name the key and its source.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("EDGE_GATEWAY_")
            || ["PORT", "HOST", "JWT_SECRET", "LOG_LEVEL"].contains(&k.as_str())
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
fn missing_config_file_is_a_config_error() {
    let out = bin()
        .args(["check-config", "/nonexistent/edge-gateway.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/edge-gateway.toml"));
}
