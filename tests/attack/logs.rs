//! What the gateway writes to its log must stay readable and honest: no ERROR lines for an
//! ordinary MQTT disconnect (an operator learns to ignore ERROR otherwise), no terminal colour
//! codes in a file or pipe, and device ids that cannot disguise themselves.

use std::time::Duration;

use rumqttc::QoS;

use crate::common::binary::GatewayProcess;
use crate::common::{eventually, http_get, metric, mqtt_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_disconnects_log_no_error_and_logs_carry_no_colour_codes() {
    let mut gw = GatewayProcess::start(&[]);
    let (http_addr, mqtt_addr) = (gw.http, gw.mqtt);

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

    // Counted when the ingest side has read them, which may be just after the PUBACK.
    eventually(
        "5 bad_topic rejections counted",
        Duration::from_secs(10),
        || {
            let metrics = http_get(http_addr, "/metrics").1;
            metric(
                &metrics,
                "edge_gateway_readings_rejected_total{reason=\"bad_topic\"}",
            )
            .filter(|n| *n >= 5.0)
        },
    )
    .await;
    gw.peer.signal("TERM");
    let status = gw.peer.wait();
    assert!(status.success(), "{status}");

    let text = gw.peer.log();
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
