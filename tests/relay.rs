//! Relay mode end to end, with real servers only: two gateways (simulated devices, Redis sink in
//! stream mode) → redis-server → three `edge-gateway relay` replicas → HAProxy from Debian with
//! the shipped configuration → socket.io-client v4 (websocket, polling) and v2 dashboards
//! (tests/conformance/relay_dashboards.js). A replica is killed with -9 mid-run and restarted
//! later on its store; bad input is written to the central channels and streams.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::binary::GatewayProcess;
use common::peer::PeerProcess;
use common::upstream::{KafkaBroker, RedisServer};
use common::{free_port, socketio, try_http_get};
use redis::Commands;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const GATEWAYS: [&str; 2] = ["gw-a", "gw-b"];

/// A relay replica on a free port with its own store.
struct Replica {
    peer: PeerProcess,
    http: u16,
    data: PathBuf,
    log: PathBuf,
    /// Where it reads from (env overrides), for a restart.
    feed: Vec<(String, String)>,
}

fn relay_command(data: &Path, http: u16, feed: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
    cmd.args(["relay", "--data-dir"])
        .arg(data)
        .env("HOST", "127.0.0.1")
        .env("PORT", http.to_string())
        .env("EDGE_GATEWAY_GATEWAY_ID", format!("relay-{http}"))
        .env("RATE_LIMIT_MAX_REQUESTS", "100000000")
        .env("EDGE_GATEWAY_SOCKETIO__SYSTEM_STATUS_INTERVAL_MS", "300")
        .env("LOG_LEVEL", "info");
    for (k, v) in feed {
        cmd.env(k, v);
    }
    cmd
}

/// A replica reading the streams (`mode = "stream"`) or channels (`"publish"`) of `redis`.
fn redis_feed(redis: &RedisServer, mode: &str) -> Vec<(String, String)> {
    [
        ("REDIS_HOST", "127.0.0.1".to_string()),
        ("REDIS_PORT", redis.port().to_string()),
        ("EDGE_GATEWAY_SINKS__REDIS__MODE", mode.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Replica {
    fn start(dir: &Path, n: usize, redis: &RedisServer, mode: &str) -> Replica {
        Replica::start_on(dir, n, redis_feed(redis, mode))
    }

    fn start_on(dir: &Path, n: usize, feed: Vec<(String, String)>) -> Replica {
        let http = free_port();
        let data = dir.join(format!("relay-{n}"));
        let log = dir.join(format!("relay-{n}.log"));
        let peer = GatewayProcess::spawn(&mut relay_command(&data, http, &feed), &log, http);
        Replica {
            peer,
            http,
            data,
            log,
            feed,
        }
    }

    /// The same replica again on its store (and a new port), after it died.
    fn restart(&mut self) {
        self.http = free_port();
        let log = self.log.with_extension("2.log");
        let mut cmd = relay_command(&self.data, self.http, &self.feed);
        self.peer = GatewayProcess::spawn(&mut cmd, &log, self.http);
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    fn health(&self) -> serde_json::Value {
        let (_, body) = try_http_get(self.addr(), "/health").unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_default()
    }
}

fn gateway(id: &str, redis: &RedisServer) -> GatewayProcess {
    let port = redis.port().to_string();
    GatewayProcess::start(&[
        ("EDGE_GATEWAY_GATEWAY_ID", id),
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
        ("EDGE_GATEWAY_SINKS__REDIS__MODE", "stream"),
        ("EDGE_GATEWAY_SINKS__REDIS__DELIVERY__LINGER_MS", "1"),
        ("EDGE_GATEWAY_SIMULATOR__DEVICES", "3"),
        ("EDGE_GATEWAY_SIMULATOR__INTERVAL_MS", "200"),
    ])
}

/// HAProxy with deploy/haproxy/edge-gateway-relay.cfg, its addresses replaced by ours.
fn haproxy(dir: &Path, replicas: &[Replica]) -> (PeerProcess, SocketAddr) {
    let shipped =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/haproxy/edge-gateway-relay.cfg"))
            .unwrap();
    let port = free_port();
    let mut cfg = shipped.replace("bind *:8080", &format!("bind 127.0.0.1:{port}"));
    for (i, r) in replicas.iter().enumerate() {
        let shipped_addr = format!("10.0.0.1{}:3003", i + 1);
        assert!(
            cfg.contains(&shipped_addr),
            "{shipped_addr} in the shipped config"
        );
        cfg = cfg.replace(&shipped_addr, &format!("127.0.0.1:{}", r.http));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    let mut peer = PeerProcess::spawn(&mut cmd, &dir.join("haproxy.log"), "apt install haproxy");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    peer.wait_ready("haproxy serving /health", Duration::from_secs(20), || {
        try_http_get(addr, "/health").is_some_and(|(code, _)| code == 200)
    });
    (peer, addr)
}

/// Per gateway, the `seq` of every entry of `stream` (what the gateways wrote).
fn written(redis: &RedisServer, stream: &str) -> BTreeMap<String, BTreeSet<u64>> {
    let mut conn = redis.connection();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).unwrap();
    let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for e in reply.ids {
        let (Some(gw), Some(seq)) = (e.get::<String>("gatewayId"), e.get::<u64>("seq")) else {
            continue;
        };
        out.entry(gw).or_default().insert(seq);
    }
    out
}

/// Highest `seq` per gateway over every stream.
fn last_written(redis: &RedisServer) -> BTreeMap<String, u64> {
    let mut last = BTreeMap::new();
    for stream in ["sensor-readings", "device-status", "alerts", "alarm-events"] {
        for (gw, seqs) in written(redis, stream) {
            let top = seqs.last().copied().unwrap_or(0);
            let e = last.entry(gw).or_insert(0);
            *e = top.max(*e);
        }
    }
    last
}

/// Waits until `replica` relayed everything the gateways wrote.
async fn caught_up(replica: &Replica, last: &BTreeMap<String, u64>) {
    common::eventually(
        "replica caught up with the streams",
        Duration::from_secs(60),
        || {
            let h = replica.health();
            last.iter()
                .all(|(gw, &seq)| h["relay"]["gateways"][gw]["lastSeq"].as_u64() == Some(seq))
                .then_some(())
        },
    )
    .await;
}

fn wait_for_file(path: &Path, what: &str, node: &mut PeerProcess) {
    node.wait_ready(what, Duration::from_secs(90), || path.exists());
}

/// Every reading of both gateways reaches every dashboard, once, across a replica killed
/// with -9 (its dashboards fail over and resume by their {gatewayId: seq} map) and restarted
/// on its store (it catches up from its kept stream position and misses nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_haproxy_deliver_every_reading_and_fail_over_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(None);
    let mut gateways: Vec<GatewayProcess> = GATEWAYS.iter().map(|id| gateway(id, &redis)).collect();
    let mut replicas: Vec<Replica> = (1..=3)
        .map(|n| Replica::start(dir.path(), n, &redis, "stream"))
        .collect();
    let (_haproxy, lb) = haproxy(dir.path(), &replicas);

    let nodedir = dir.path().join("dashboards");
    std::fs::create_dir_all(&nodedir).unwrap();
    let mut cmd = Command::new("node");
    cmd.current_dir(Path::new(ROOT).join("tests/conformance"))
        .arg("relay_dashboards.js")
        .arg(format!("http://{lb}"))
        .arg("2")
        .arg(&nodedir);
    let mut node = PeerProcess::spawn(
        &mut cmd,
        &dir.path().join("node.log"),
        "npm ci in tests/conformance",
    );
    wait_for_file(
        &nodedir.join("ready"),
        "every dashboard connected and fed",
        &mut node,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Kill the replica holding the most dashboards.
    let victim = (0..3)
        .max_by_key(|&i| replicas[i].health()["components"]["socketio"]["clients"].as_u64())
        .unwrap();
    let clients = replicas[victim].health()["components"]["socketio"]["clients"].as_u64();
    assert!(clients.unwrap_or(0) > 0, "some dashboards on the victim");
    replicas[victim].peer.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    replicas[victim].restart();
    tokio::time::sleep(Duration::from_secs(2)).await;

    for g in &mut gateways {
        assert!(
            g.peer.stop("TERM", Duration::from_secs(20)),
            "gateway stops cleanly"
        );
    }
    let last = last_written(&redis);
    assert_eq!(last.len(), 2, "both gateways wrote: {last:?}");
    for r in &replicas {
        caught_up(r, &last).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(nodedir.join("stop"), "").unwrap();
    wait_for_file(
        &nodedir.join("result.json"),
        "dashboards' results",
        &mut node,
    );

    let readings = written(&redis, "sensor-readings");
    let results: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(nodedir.join("result.json")).unwrap())
            .unwrap();
    check_dashboards(&results, &readings);
    check_restarted(&replicas[victim], &readings).await;
}

/// No gaps from a dashboard's first reading of a gateway to the last one written, nothing
/// invented, no duplicate for one that never reconnected; some failed over and resumed.
fn check_dashboards(results: &[serde_json::Value], readings: &BTreeMap<String, BTreeSet<u64>>) {
    assert_eq!(results.len(), 8);
    let mut failed_over = 0;
    for d in results {
        let name = d["name"].as_str().unwrap();
        let connects = d["connects"].as_u64().unwrap();
        for gw in GATEWAYS {
            let got: BTreeSet<u64> = d["seqs"][gw]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: nothing from {gw}"))
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let first = *got.first().unwrap();
            let expected: BTreeSet<u64> = readings[gw].range(first..).copied().collect();
            let missing: Vec<_> = expected.difference(&got).collect();
            let invented: Vec<_> = got.difference(&readings[gw]).collect();
            assert!(
                missing.is_empty(),
                "{name} ({connects} connects) missed {gw} seqs {missing:?}"
            );
            assert!(
                invented.is_empty(),
                "{name}: {gw} seqs never written {invented:?}"
            );
        }
        if connects > 1 {
            failed_over += 1;
            assert!(d["resumes"].as_u64().unwrap() >= 1, "{name} resumed: {d}");
        } else {
            assert_eq!(d["duplicates"].as_u64(), Some(0), "{name}: {d}");
        }
    }
    assert!(
        failed_over > 0,
        "the killed replica's dashboards reconnected"
    );
}

/// The restarted replica's store holds every reading, those written while it was dead
/// included: a resume with an empty map replays them all.
async fn check_restarted(replica: &Replica, readings: &BTreeMap<String, BTreeSet<u64>>) {
    check_restarted_has(replica, readings, &GATEWAYS).await;
}

async fn check_restarted_has(
    replica: &Replica,
    readings: &BTreeMap<String, BTreeSet<u64>>,
    gateways: &[&str],
) {
    let mut ws = socketio::connect_with_auth(
        replica.addr(),
        r#"{"after":{}}"#,
        &["subscribe-all-devices"],
    )
    .await;
    let mut got: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let done = std::sync::atomic::AtomicBool::new(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    socketio::read_events(
        &mut ws,
        || tokio::time::Instant::now() > deadline,
        |frame| {
            match socketio::parse_event(frame) {
                Some((name, r)) if name == "sensor:all" => {
                    let gw = r["gatewayId"].as_str().unwrap().to_string();
                    got.entry(gw)
                        .or_default()
                        .insert(r["seq"].as_u64().unwrap());
                }
                Some((name, _)) if name == "resume:done" => {
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    return false;
                }
                _ => {}
            }
            true
        },
    )
    .await;
    assert!(done.into_inner(), "resume:done from the restarted replica");
    for &gw in gateways {
        let missing: Vec<_> = readings[gw].difference(&got[gw]).collect();
        assert!(
            missing.is_empty(),
            "restarted replica lacks {gw} seqs {missing:?}"
        );
    }
}

fn relay_rejected(metrics: &str, reason: &str) -> f64 {
    common::metric(
        metrics,
        &format!("edge_gateway_relay_rejected_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Junk on the central channels and streams (not JSON, unknown fields, a wrong schema, a huge
/// message, a stream entry without data) is counted by reason and skipped; the replica keeps
/// relaying good records after it, and its dedup drops a repeated (gatewayId, seq).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_central_input_is_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(None);
    let publish = Replica::start(dir.path(), 1, &redis, "publish");
    let stream = Replica::start(dir.path(), 2, &redis, "stream");
    let mut conn = redis.connection();
    let good = |seq: u64| {
        format!(
            r#"{{"deviceId":"press-1","sensorType":"temperature","value":{seq},"unit":"C","timestamp":"{}","status":"normal","location":"hall","gatewayId":"gw-x","seq":{seq}}}"#,
            edge_gateway::time::format_ms(edge_gateway::time::now_ms())
        )
    };
    let huge = format!(r#"{{"deviceId":"{}"}}"#, "x".repeat(100_000));
    let junk = [
        "not json".to_string(),
        good(1).replace(r#""location""#, r#""extra":1,"location""#),
        r#"{"status":"online"}"#.to_string(),
        huge,
    ];
    // The publish replica subscribes shortly after it answers /health: publish until it hears.
    common::eventually(
        "the publish replica hears the channel",
        Duration::from_secs(30),
        || {
            let _: i64 = conn.publish("sensor-readings", good(1)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            publish.health()["relay"]["gateways"]["gw-x"]["lastSeq"]
                .as_u64()
                .map(|_| ())
        },
    )
    .await;
    for j in &junk {
        let _: i64 = conn.publish("sensor-readings", j).unwrap();
        let _: String = conn
            .xadd("sensor-readings", "*", &[("data", j.as_str())])
            .unwrap();
    }
    let _: String = conn
        .xadd(
            "sensor-readings",
            "*",
            &[("gatewayId", "gw-x"), ("seq", "9")],
        )
        .unwrap();
    for seq in [2, 2, 3] {
        let _: i64 = conn.publish("sensor-readings", good(seq)).unwrap();
        let _: String = conn
            .xadd("sensor-readings", "*", &[("data", good(seq).as_str())])
            .unwrap();
    }
    for r in [&publish, &stream] {
        common::eventually(
            "good records after the junk",
            Duration::from_secs(30),
            || {
                (r.health()["relay"]["gateways"]["gw-x"]["lastSeq"].as_u64() == Some(3))
                    .then_some(())
            },
        )
        .await;
        let (_, metrics) = try_http_get(r.addr(), "/metrics").unwrap();
        for reason in ["not_json", "schema", "too_large"] {
            let n = relay_rejected(&metrics, reason);
            let want = if reason == "schema" { 2.0 } else { 1.0 };
            assert_eq!(n, want, "{reason} on replica {}: {metrics}", r.http);
        }
        let g = &r.health()["relay"]["gateways"]["gw-x"];
        assert!(g["duplicates"].as_u64().unwrap() >= 1, "{g}");
        assert!(g["alive"].as_bool().unwrap(), "{g}");
    }
    let (_, metrics) = try_http_get(stream.addr(), "/metrics").unwrap();
    assert_eq!(relay_rejected(&metrics, "missing_data"), 1.0, "{metrics}");
}

/// Emits `event` with `params` and an ack id over the minimal client; the ack's payload.
async fn emit_with_ack(
    ws: &mut socketio::Ws,
    event: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let frame = format!("421{}", serde_json::json!([event, params]));
    ws.send(Message::text(frame)).await.unwrap();
    let wait = async {
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            if text.as_str() == "2" {
                let _ = ws.send(Message::text("3")).await;
            } else if let Some(ack) = text.as_str().strip_prefix("431") {
                let v: serde_json::Value = serde_json::from_str(ack).unwrap();
                return v[0].clone();
            }
        }
        panic!("socket closed before the ack of {event}");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("an ack in time")
}

/// An `alarm:ack` from a central dashboard goes down to the gateway that raised the alarm, as
/// an entry of its command stream in the documented format; an alarm nobody relayed is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_alarm_ack_goes_down_to_its_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(None);
    let replica = Replica::start(dir.path(), 1, &redis, "stream");
    let mut conn = redis.connection();
    let alarm = serde_json::json!({
        "alarmId": "press-1/temperature/threshold", "deviceId": "press-1",
        "sensorType": "temperature", "rule": "threshold", "transition": "raise",
        "previousState": "normal", "state": "active_unacked", "severity": "critical",
        "value": 91.5, "threshold": {"value": 90.0, "operator": ">"},
        "timestamp": edge_gateway::time::format_ms(edge_gateway::time::now_ms()),
        "user": null, "comment": null, "shelvedUntil": null, "chattering": false,
        "gatewayId": "gw-x", "seq": 1
    });
    let _: String = conn
        .xadd(
            "alarm-events",
            "*",
            &[
                ("gatewayId", "gw-x"),
                ("seq", "1"),
                ("data", &alarm.to_string()),
            ],
        )
        .unwrap();
    let now = edge_gateway::time::format_ms(edge_gateway::time::now_ms());
    let status_of_1 = serde_json::json!({
        "deviceId": "press-1", "status": "online", "timestamp": now, "location": "hall",
        "gatewayId": "gw-x", "seq": 2
    });
    let reading_of_2 = serde_json::json!({
        "deviceId": "press-2", "sensorType": "temperature", "value": 20.5, "unit": "C",
        "timestamp": now, "status": "normal", "location": "hall", "gatewayId": "gw-x", "seq": 3
    });
    for (stream, seq, data) in [
        ("device-status", "2", status_of_1),
        ("sensor-readings", "3", reading_of_2),
    ] {
        let fields = [
            ("gatewayId", "gw-x"),
            ("seq", seq),
            ("data", &data.to_string()),
        ];
        let _: String = conn.xadd(stream, "*", &fields).unwrap();
    }
    common::eventually("the alarm relayed", Duration::from_secs(30), || {
        (replica.health()["relay"]["gateways"]["gw-x"]["lastSeq"].as_u64() == Some(3)).then_some(())
    })
    .await;

    // Which gateways are alive, for dashboards in the system-status room.
    let status =
        common::SocketIoEvents::connect_and_emit(replica.addr(), &["subscribe-system"]).await;
    common::eventually("relay:gateways with gw-x", Duration::from_secs(30), || {
        status
            .of("relay:gateways")
            .iter()
            .any(|g| {
                g["gateways"]["gw-x"]["lastSeq"] == 3 && g["gateways"]["gw-x"]["alive"] == true
            })
            .then_some(())
    })
    .await;

    // The replica counts the relayed devices and alarms as the edge counts its own.
    common::eventually(
        "system:status with the relayed counts",
        Duration::from_secs(30),
        || {
            status
                .of("system:status")
                .iter()
                .any(|s| {
                    let m = &s["metrics"];
                    m["totalDevices"] == 2 && m["activeDevices"] == 2 && m["activeAlerts"] == 1
                })
                .then_some(())
        },
    )
    .await;

    let mut ws = socketio::connect(replica.addr(), &[]).await;
    // The replica's current alarms, from the relayed transition, with its origin.
    let current = emit_with_ack(&mut ws, "get:alarms", serde_json::json!({})).await;
    assert_eq!(current["success"], true, "{current}");
    let alarms = current["data"].as_array().expect("data");
    assert_eq!(alarms.len(), 1, "{current}");
    assert_eq!(alarms[0]["alarmId"], "press-1/temperature/threshold");
    assert_eq!(
        (&alarms[0]["gatewayId"], &alarms[0]["seq"]),
        (&"gw-x".into(), &1.into())
    );
    let reply = emit_with_ack(
        &mut ws,
        "alarm:ack",
        serde_json::json!({"alarmId": "press-1/temperature/threshold", "comment": "seen"}),
    )
    .await;
    assert_eq!(reply["success"], true, "{reply}");
    let reply = emit_with_ack(
        &mut ws,
        "alarm:ack",
        serde_json::json!({"alarmId": "other/temperature/threshold"}),
    )
    .await;
    assert_eq!(reply["success"], false, "{reply}");

    let sent: redis::streams::StreamRangeReply = conn.xrange_all("gateway-commands:gw-x").unwrap();
    assert_eq!(sent.ids.len(), 1);
    let data: String = sent.ids[0].get("data").unwrap();
    let command: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(command["command"], "ack", "{command}");
    assert_eq!(command["alarmId"], "press-1/temperature/threshold");
    assert_eq!(command["comment"], "seen");
    assert!(command["commandId"].is_string(), "{command}");

    // Killed and restarted on its store: the alarm is still current, counted, and owned.
    let mut replica = replica;
    replica.peer.kill();
    replica.restart();
    let status =
        common::SocketIoEvents::connect_and_emit(replica.addr(), &["subscribe-system"]).await;
    common::eventually(
        "activeAlerts after the restart",
        Duration::from_secs(30),
        || {
            status
                .of("system:status")
                .iter()
                .any(|s| s["metrics"]["activeAlerts"] == 1)
                .then_some(())
        },
    )
    .await;
    let mut ws = socketio::connect(replica.addr(), &[]).await;
    let current = emit_with_ack(&mut ws, "get:alarms", serde_json::json!({})).await;
    assert_eq!(
        current["data"].as_array().map(Vec::len),
        Some(1),
        "{current}"
    );
    let reply = emit_with_ack(
        &mut ws,
        "alarm:ack",
        serde_json::json!({"alarmId": "press-1/temperature/threshold", "comment": "again"}),
    )
    .await;
    assert_eq!(reply["success"], true, "{reply}");
    let sent: redis::streams::StreamRangeReply = conn.xrange_all("gateway-commands:gw-x").unwrap();
    assert_eq!(sent.ids.len(), 2);
}

/// The Kafka source: a gateway's Kafka sink → tansu (partitioned topics) → a relay reading every
/// partition from offsets it keeps; killed with -9 and restarted on its store, it has every
/// reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_reads_every_partition_and_resumes_after_kill() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = KafkaBroker::start().await;
    for (topic, partitions) in [
        ("sensors-data", 3),
        ("device-status", 2),
        ("alerts", 1),
        ("alarm-events", 1),
    ] {
        kafka.create_topic(topic, partitions).await;
    }
    let brokers = kafka.addr();
    let mut gw = GatewayProcess::start(&[
        ("EDGE_GATEWAY_GATEWAY_ID", "gw-k"),
        ("KAFKA_BROKERS", &brokers),
        ("EDGE_GATEWAY_SINKS__KAFKA__DELIVERY__LINGER_MS", "1"),
        ("EDGE_GATEWAY_SIMULATOR__DEVICES", "3"),
        ("EDGE_GATEWAY_SIMULATOR__INTERVAL_MS", "200"),
    ]);
    let feed = vec![
        ("KAFKA_BROKERS".to_string(), brokers.clone()),
        ("EDGE_GATEWAY_RELAY__KAFKA".to_string(), "true".to_string()),
        ("EDGE_GATEWAY_RELAY__REDIS".to_string(), "false".to_string()),
    ];
    let mut relay = Replica::start_on(dir.path(), 1, feed);
    common::eventually("the relay hears gw-k", Duration::from_secs(60), || {
        relay.health()["relay"]["gateways"]["gw-k"]["lastSeq"]
            .as_u64()
            .map(|_| ())
    })
    .await;
    relay.peer.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        gw.peer.stop("TERM", Duration::from_secs(20)),
        "gateway stops cleanly"
    );

    let mut readings: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for topic in ["sensors-data", "device-status", "alerts", "alarm-events"] {
        for r in kafka.read_all(topic).await {
            let seq: u64 = std::str::from_utf8(&r.headers["seq"])
                .unwrap()
                .parse()
                .unwrap();
            let e = last.entry("gw-k".to_string()).or_insert(0);
            *e = seq.max(*e);
            if topic == "sensors-data" {
                readings.entry("gw-k".to_string()).or_default().insert(seq);
            }
        }
    }
    caught_up(&relay, &last).await;
    check_restarted_has(&relay, &readings, &["gw-k"]).await;
}

/// The feed over TLS: a gateway's Redis sink → redis-server on its TLS port → a relay with
/// `[sinks.redis] tls = true` and the CA → a Socket.IO dashboard on the relay gets the readings
/// with their origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_a_relay_over_tls_redis() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::certs::Certs::make();
    let redis = common::tls_peers::TlsRedis::start(&certs.pair("server"), &certs.ca(), false);
    let (port, ca) = (redis.tls_port.to_string(), certs.ca().display().to_string());
    let tls = [
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", port.as_str()),
        ("EDGE_GATEWAY_SINKS__REDIS__MODE", "stream"),
        ("EDGE_GATEWAY_SINKS__REDIS__TLS", "true"),
        ("EDGE_GATEWAY_SINKS__REDIS__CA_FILE", ca.as_str()),
    ];
    let feed = tls.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let replica = Replica::start_on(dir.path(), 0, feed.collect());
    let dashboard =
        common::SocketIoEvents::connect_and_emit(replica.addr(), &["subscribe-all-devices"]).await;
    let mut env = tls.to_vec();
    env.extend([
        ("EDGE_GATEWAY_GATEWAY_ID", "gw-tls"),
        ("EDGE_GATEWAY_SINKS__REDIS__DELIVERY__LINGER_MS", "1"),
        ("EDGE_GATEWAY_SIMULATOR__DEVICES", "2"),
        ("EDGE_GATEWAY_SIMULATOR__INTERVAL_MS", "200"),
    ]);
    let _gateway = GatewayProcess::start(&env);
    common::eventually(
        "readings from gw-tls on the relay",
        Duration::from_secs(60),
        || {
            let from_gateway = dashboard
                .of("sensor:all")
                .iter()
                .filter(|r| r["gatewayId"] == "gw-tls" && r["seq"].is_u64())
                .count();
            (from_gateway >= 5).then_some(())
        },
    )
    .await;
    assert!(redis.stream_len("sensor-readings") >= 5);
    let health = replica.health();
    assert_eq!(
        health["relay"]["gateways"]["gw-tls"]["duplicates"], 0,
        "{health}"
    );
}
