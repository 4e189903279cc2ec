//! Disk full: the store's file system runs out of space mid-ingest. The gateway must not
//! panic, must report the store down (/health 503, `alert:system`), keep what it was given,
//! and recover by itself once space returns.
//!
//! Needs a small tmpfs, so root (CI runs as root). Elsewhere the test says why it is skipped;
//! under CI=true a missing mount is a failure.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rumqttc::QoS;

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { dir })
    }

    /// A tmpfs, or `None` (the test says why it is skipped) where none can be mounted and
    /// this is not CI, which runs as root and must mount it.
    fn mount_or_skip(size: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(size) {
            Ok(fs) => Some(fs),
            Err(e) if std::env::var("CI").is_err() => {
                eprintln!("skipped: cannot mount a tmpfs here ({e}); CI runs this as root");
                None
            }
            Err(e) => panic!("cannot mount a tmpfs for the disk-full test: {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_stops_accepting_alerts_and_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount_or_skip("16m") else {
        return;
    };
    let data = fs.path().join("store");
    let mut config = test_config();
    config.store.byte_budget_bytes = 1 << 20;
    let mqtt = config.mqtt.listen;
    let gw = start(config, &data).await;
    let dashboard = SocketIoEvents::connect(gw.http_addr()).await;
    let (client, mut acks) = mqtt_client(mqtt, "disk").await;
    let store = gw.store().clone();

    // Leave almost nothing free, then keep ingesting.
    let filler = fs.path().join("filler");
    let free = fs.available();
    std::fs::write(&filler, vec![0u8; (free - 8 * 1024) as usize]).unwrap();
    let mut published = 0u64;
    let down = loop {
        for _ in 0..50 {
            let payload = format!(
                r#"{{"value": {}, "location": "{}"}}"#,
                published % 40,
                "x".repeat(200)
            );
            client
                .publish(
                    "sensors/full-1/temperature",
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .unwrap();
            published += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (code, body) = http_get(gw.http_addr(), "/health");
        if code == 503 {
            break body;
        }
        assert!(published < 20_000, "the store never failed on a full disk");
    };
    let health: serde_json::Value = serde_json::from_str(&down).unwrap();
    assert_eq!(health["components"]["store"]["status"], "down", "{down}");
    assert!(health["components"]["store"]["error"].is_string(), "{down}");
    eventually(
        "alert:system about the store",
        Duration::from_secs(5),
        || {
            dashboard
                .of("alert:system")
                .into_iter()
                .find(|a| a["severity"] == "critical" && a["affectedServices"][0] == "store")
        },
    )
    .await;
    // The process keeps serving: HTTP answers, MQTT still takes publishes.
    for _ in 0..20 {
        client
            .publish("sensors/full-1/temperature", QoS::AtLeastOnce, false, "21")
            .await
            .unwrap();
        published += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(http_get(gw.http_addr(), "/health").0, 503);

    // Space returns: the store recovers by itself and everything queued is committed.
    std::fs::remove_file(&filler).unwrap();
    eventually("store healthy again", Duration::from_secs(20), || {
        (http_get(gw.http_addr(), "/health").0 == 200).then_some(())
    })
    .await;
    eventually("recovery alert", Duration::from_secs(5), || {
        dashboard
            .of("alert:system")
            .into_iter()
            .find(|a| a["severity"] == "warning" && a["affectedServices"][0] == "store")
    })
    .await;
    acks.wait_for(|n| *n >= published).await.unwrap();
    eventually(
        "every acknowledged reading stored",
        Duration::from_secs(20),
        || (history(&store, "full-1").len() as u64 == published).then_some(()),
    )
    .await;
    // And new readings flow as before.
    client
        .publish("sensors/full-1/temperature", QoS::AtLeastOnce, false, "22")
        .await
        .unwrap();
    eventually("a reading after recovery", Duration::from_secs(10), || {
        (history(&store, "full-1").len() as u64 == published + 1).then_some(())
    })
    .await;
    gw.stop().await.unwrap();
}

/// Publishes `n` QoS 1 temperature readings of `device` (~250 bytes each, never over a
/// threshold); `n`.
async fn publish_readings(client: &rumqttc::AsyncClient, device: &str, n: u64) -> u64 {
    let payload = format!(r#"{{"value": 21, "location": "{}"}}"#, "x".repeat(200));
    let topic = format!("sensors/{device}/temperature");
    for _ in 0..n {
        client
            .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    n
}

/// The store itself fills a small disk (its byte budget is larger than the disk): it makes
/// room by evicting its oldest readings, keeps committing everything it is given without a
/// restart, keeps a reserve for the next full disk, takes readings while something else fills
/// the rest, and a stop while the disk is full ends within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_the_store_heals_and_stop_ends_in_time_while_full() {
    let Some(fs) = Tmpfs::mount_or_skip("24m") else {
        return;
    };
    let data = fs.path().join("store");
    let mut config = test_config();
    config.store.byte_budget_bytes = 1 << 30;
    let mqtt = config.mqtt.listen;
    let gw = start(config, &data).await;
    let (client, _acks) = mqtt_client(mqtt, "fill").await;
    let store = gw.store().clone();
    let mut published = 0u64;
    let mut publish = async |n: u64| {
        published += publish_readings(&client, "fill-1", n).await;
        published
    };
    // Committed readings: every record but the device's one online status (the value never
    // crosses a threshold).
    let committed =
        |store: &edge_gateway::store::Store| store.next_seq().unwrap().saturating_sub(2);

    // Ingest, 500 readings at a time, until the store has had to evict (the budget never
    // asks it to). Each step waits for the store: while it cannot commit, ingest is held back,
    // and once it made room everything held back is committed, nothing dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    // Keep going for 20,000 readings past the first eviction: the store keeps making room.
    let mut first_eviction = None;
    let total = loop {
        let total = publish(500).await;
        let step = std::time::Instant::now() + Duration::from_secs(20);
        while committed(&store) < total {
            assert!(
                std::time::Instant::now() < step,
                "the store did not commit what it was given: {} of {total}, {} bytes free, health {:?}",
                committed(&store),
                fs.available(),
                http_get(gw.http_addr(), "/health")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(committed(&store), total, "nothing dropped, nothing doubled");
        let stats = store.stats().unwrap();
        if stats.records < total + 1 && total >= 20_000 + *first_eviction.get_or_insert(total) {
            break total;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store never made room on a full disk: {stats:?}, {} bytes free",
            fs.available()
        );
    };
    eventually("store healthy", Duration::from_secs(20), || {
        (http_get(gw.http_addr(), "/health").0 == 200).then_some(())
    })
    .await;
    let newest = history(&store, "fill-1");
    assert_eq!(
        newest.last().unwrap()["seq"].as_u64(),
        Some(total + 1),
        "the newest reading is in history"
    );
    let metrics = http_get(gw.http_addr(), "/metrics").1;
    assert!(
        metric(
            &metrics,
            r#"edge_gateway_store_evicted_total{reason="disk"}"#
        )
        .unwrap_or(0.0)
            > 0.0,
        "evictions for free space are counted"
    );

    // It has a reserve again for the next full disk: without one, redb could not even evict
    // (its file is sparse; the pages it sees free are holes that need new blocks), and the
    // store stayed wedged until space came back.
    eventually("a disk reserve again", Duration::from_secs(20), || {
        fs.path()
            .join("store/edge-gateway.reserve")
            .exists()
            .then_some(())
    })
    .await;

    // Something else takes the rest of the disk; stop while it is full.
    let filler = fs.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; fs.available() as usize]);
    // rumqttc's publish waits for room in its queue once PUBACKs stop: a writer that no
    // longer commits must fail the test here, not hang it.
    tokio::time::timeout(Duration::from_secs(60), publish(2_000))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the store stopped committing on the full disk: {} committed, health {:?}",
                committed(&store),
                http_get(gw.http_addr(), "/health")
            )
        });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), gw.stop())
        .await
        .expect("stop ends within 20 s on a full disk")
        .unwrap();
    eprintln!("stopped in {:?}", stopping.elapsed());
}

/// A small store (well under 1 MiB) on a disk something else fills: past the grace period it
/// gives up its reserve and evicts into it, so the writer keeps committing while the disk
/// stays full (it used to panic computing how much to evict from a log under 1 MiB), and
/// stop ends in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_store_makes_room_on_a_disk_filled_by_something_else() {
    let Some(fs) = Tmpfs::mount_or_skip("16m") else {
        return;
    };
    let data = fs.path().join("store");
    let mut config = test_config();
    config.store.byte_budget_bytes = 1 << 20;
    config.store.disk_full_grace_ms = 0;
    let mqtt = config.mqtt.listen;
    let gw = start(config, &data).await;
    let (client, mut acks) = mqtt_client(mqtt, "small").await;
    let store = gw.store().clone();
    let mut published = 0u64;
    let mut publish = async |n: u64| {
        published += publish_readings(&client, "small-1", n).await;
        published
    };
    let total = publish(200).await;
    tokio::time::timeout(Duration::from_secs(20), acks.wait_for(|n| *n >= total))
        .await
        .expect("the first readings are acknowledged")
        .unwrap();
    assert!(store.stats().unwrap().logical_bytes < 512 * 1024);

    // Something else takes the rest of the disk; the store has to grow into it.
    let filler = fs.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; fs.available() as usize]);
    // Bounded as a whole: a writer that stopped committing holds PUBACKs back, and rumqttc's
    // publish then waits for room in its queue.
    let healed = tokio::time::timeout(Duration::from_secs(60), async {
        let total = publish(2_000).await;
        acks.wait_for(|n| *n >= total).await.map(|_| total)
    })
    .await;
    let Ok(Ok(total)) = healed else {
        panic!(
            "the store did not make room on the full disk: {} acknowledged, {} bytes free, health {:?}",
            *acks.borrow(),
            fs.available(),
            http_get(gw.http_addr(), "/health")
        );
    };
    assert_eq!(
        store.next_seq().unwrap().saturating_sub(2),
        total,
        "every acknowledged reading committed (one status record besides)"
    );
    tokio::time::timeout(Duration::from_secs(20), gw.stop())
        .await
        .expect("stop ends within 20 s on a full disk")
        .unwrap();
}
