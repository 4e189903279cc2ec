//! Broker memory must not be a lever: retained messages and junk topics from anyone on the
//! device port cost nothing lasting. Measured before the fix: 4000 retained 60 KB messages took
//! RSS from 32 to 279 MB in 2.7 s (and clearing them freed nothing); 500k distinct junk topics,
//! all rejected, took RSS from 10 to 201 MB with an empty store.

use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS};

use crate::common::binary::GatewayProcess;
use crate::common::{eventually, http_get, metric};

/// A publisher whose event loop ignores errors: the gateway may refuse or disconnect it.
async fn flooder(addr: std::net::SocketAddr, id: &str) -> AsyncClient {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_floods_and_junk_topics_cost_no_lasting_memory() {
    let gw = GatewayProcess::start(&[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = gw.rss_kib();

    let blob = "x".repeat(60 * 1024);
    let mut tasks = Vec::new();
    for p in 0..4 {
        let client = flooder(gw.mqtt, &format!("retain-{p}")).await;
        let blob = blob.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1000 {
                let topic = format!("sensors/blob-{p}-{i}/payload");
                let _ = client
                    .publish(topic, QoS::AtMostOnce, true, blob.clone())
                    .await;
            }
            for i in 0..25_000 {
                let topic = format!("junk/{p}/{i}/nothing-here");
                let _ = client.publish(topic, QoS::AtMostOnce, false, "1").await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = client.disconnect().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Let whatever the gateway queued drain.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let after = gw.rss_kib();
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!(
        "RSS {} MiB → {} MiB (+{grown_mib} MiB), peak {} MiB",
        before / 1024,
        after / 1024,
        gw.peak_rss_kib() / 1024
    );
    assert!(
        grown_mib <= 48,
        "4000 retained 60 KB messages and 100k junk topics left +{grown_mib} MiB resident"
    );

    // And the gateway still serves a real device.
    let client = flooder(gw.mqtt, "honest").await;
    client
        .publish(
            "sensors/honest-1/temperature",
            QoS::AtLeastOnce,
            false,
            "20.5",
        )
        .await
        .unwrap();
    eventually("the honest reading stored", Duration::from_secs(15), || {
        let m = http_get(gw.http, "/metrics").1;
        metric(&m, "edge_gateway_readings_accepted_total").filter(|n| *n >= 1.0)
    })
    .await;
    assert_eq!(http_get(gw.http, "/health").0, 200);
}
