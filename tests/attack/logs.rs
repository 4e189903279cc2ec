//! What the gateway writes to its log must stay readable and honest: no ERROR lines for an
//! ordinary MQTT disconnect (an operator learns to ignore ERROR otherwise), no terminal colour
//! codes in a file or pipe, and device ids that cannot disguise themselves.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::common::{free_port, http_get, metric, mqtt_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_disconnects_log_no_error_and_logs_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let mut gw = Command::new(env!("CARGO_BIN_EXE_edge-gateway"))
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", http.to_string())
        .env("EDGE_GATEWAY_MQTT__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let http_addr = format!("127.0.0.1:{http}").parse().unwrap();
    let mqtt_addr = format!("127.0.0.1:{mqtt}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Refused until the listener is up.
    while std::net::TcpStream::connect(http_addr).is_err()
        || http_get(http_addr, "/health").0 != 200
    {
        if let Some(status) = gw.try_wait().unwrap() {
            panic!(
                "gateway exited ({status}) before /health answered:\n{}",
                std::fs::read_to_string(&log_path).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for round in 0..5 {
        let (client, mut acks) = mqtt_client(mqtt_addr, &format!("clean-{round}")).await;
        client
            .publish(
                "sensors/line-1/temperature",
                QoS::AtLeastOnce,
                false,
                "21.5",
            )
            .await
            .unwrap();
        // A device id that would read backwards on a dashboard (RTL override) is refused.
        client
            .publish(
                "sensors/evil\u{202E}gpj.exe/temperature",
                QoS::AtLeastOnce,
                false,
                "1",
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), acks.wait_for(|n| *n >= 2))
            .await
            .expect("both publishes acknowledged")
            .unwrap();
        client.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let metrics = http_get(http_addr, "/metrics").1;
    assert!(
        metric(
            &metrics,
            "edge_gateway_readings_rejected_total{reason=\"bad_topic\"}"
        )
        .is_some_and(|n| n >= 5.0),
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status()
        .unwrap();
    let status = gw.wait().unwrap();
    assert!(status.success(), "{status}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines for clean disconnects:\n{text}"
    );
}
