//! The store on a bad day: a burst far larger than one commit, and a damaged file.

use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::common::*;

fn health(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (code, body) = http_get(addr, "/health");
    (code, serde_json::from_str(&body).unwrap())
}

/// Thousands of devices fall silent at once: the offline sweep hands the writer one batch
/// of a status change and an alert per device, several times the byte budget. The budget
/// holds after every commit, and every record of the burst is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_sweep_never_takes_the_store_over_its_budget() {
    const DEVICES: u64 = 12_000;
    const BUDGET: u64 = 2 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.store.byte_budget_bytes = BUDGET;
    config.devices.offline_after_ms = 1_000;
    // The sweep marks at most 1,000 devices offline per tick: short ticks keep the test short.
    config.devices.check_interval_ms = 500;
    config.devices.max_devices = 2 * DEVICES as usize;
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    let (client, _acks) = mqtt_client(mqtt, "burst").await;
    for i in 0..DEVICES {
        client
            .publish(
                format!("sensors/burst-{i}/temperature"),
                QoS::AtMostOnce,
                false,
                "21",
            )
            .await
            .unwrap();
    }
    // A reading and an online status per device, then an offline status and an alert.
    let everything = 4 * DEVICES;
    let store = gw.store().clone();
    let mut max_bytes = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, h) = health(gw.http_addr());
        let bytes = h["components"]["store"]["bytes"].as_u64().unwrap();
        max_bytes = max_bytes.max(bytes);
        assert!(
            bytes <= BUDGET,
            "store at {bytes} bytes after a commit, budget {BUDGET}"
        );
        if store.next_seq().unwrap() > everything {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep was not committed in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = store.stats().unwrap();
    assert!(stats.logical_bytes <= BUDGET, "{stats:?}");
    assert!(
        max_bytes > BUDGET / 2,
        "the test never filled the budget: {max_bytes}"
    );
    // The newest records are the end of the sweep, kept over everything older.
    let newest = store.read_raw(stats.next_seq - 1, 1).unwrap();
    assert_eq!(
        newest[0].seq, everything,
        "every record of the burst committed"
    );
    gw.stop().await.unwrap();
}

/// Overwrites `len` bytes at `at` (a fraction of the file) with a pattern redb never writes.
fn damage(path: &std::path::Path, at: f64, len: usize) {
    use std::io::{Seek, SeekFrom, Write};
    let size = std::fs::metadata(path).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start((size as f64 * at) as u64)).unwrap();
    f.write_all(&vec![0xA5; len]).unwrap();
    f.sync_all().unwrap();
}

async fn populate(dir: &std::path::Path, device: &str, n: u64) {
    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir).await;
    let (client, _acks) = mqtt_client(mqtt, "populate").await;
    for i in 0..n {
        client
            .publish(
                format!("sensors/{device}/temperature"),
                QoS::AtLeastOnce,
                false,
                format!("{}", i % 50),
            )
            .await
            .unwrap();
    }
    let store = gw.store().clone();
    eventually("readings committed", Duration::from_secs(30), || {
        (history(&store, device).len() as u64 == n).then_some(())
    })
    .await;
    gw.stop().await.unwrap();
}

/// A store file damaged on disk: the gateway starts on a fresh store, keeps the damaged file
/// aside, says so in /health and on `alert:system`-carrying health, and stores again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_file_is_moved_aside_and_the_gateway_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), "dmg-1", 5_000).await;
    let file = dir.path().join(edge_gateway::store::STORE_FILE);
    damage(&file, 0.3, 256 * 1024);

    let config = test_config();
    let mqtt = config.mqtt.listen;
    let gw = start(config, dir.path()).await;
    assert!(
        gw.store().checked_at_open(),
        "a file changed since its clean stop is checked"
    );
    let (code, h) = health(gw.http_addr());
    assert_eq!(code, 200, "{h}");
    let aside = h["components"]["store"]["recoveredFromCorruption"]
        .as_str()
        .unwrap_or_else(|| panic!("health says nothing of the damaged file: {h}"))
        .to_string();
    assert!(aside.contains(".corrupt-"), "{aside}");
    assert!(std::path::Path::new(&aside).exists(), "{aside}");
    assert_eq!(
        gw.store().recovered_from(),
        Some(std::path::Path::new(&aside))
    );
    assert!(history(gw.store(), "dmg-1").is_empty(), "a fresh store");

    let (client, _acks) = mqtt_client(mqtt, "after").await;
    client
        .publish("sensors/dmg-1/temperature", QoS::AtLeastOnce, false, "7")
        .await
        .unwrap();
    let store = gw.store().clone();
    eventually(
        "a reading stored after recovery",
        Duration::from_secs(10),
        || (history(&store, "dmg-1").len() == 1).then_some(()),
    )
    .await;
    gw.stop().await.unwrap();
}
