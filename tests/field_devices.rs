//! Field devices against real peers: Modbus slaves (pymodbus over TCP and RTU, and a small
//! RTU responder of our own for faulty slaves) on socat pty pairs, a pty emitting line-protocol
//! readings, and mosquitto as the site broker, restarted mid-test. Every register of a test
//! slave holds a value naming its slave and address, so a value attributed to the wrong
//! register or slave shows.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::peer::{PeerProcess, python, read_log};
use common::*;
use edge_gateway::config::{Config, ModbusDeviceConfig, SerialSensorConfig, SiteSubscription};
use edge_gateway::sources::modbus::{self, bus::RtuLine};
use edge_gateway::store::Store;
use rumqttc::QoS;

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/modbus_slaves.py");

/// The test profile: two holding-register blocks and one input register (three reads).
const TEST_PROFILE: &str = r#"
model = "test slave"
[[points]]
sensor_type = "r0"
function_code = 3
address = 0
[[points]]
sensor_type = "r1"
function_code = 3
address = 1
[[points]]
sensor_type = "r2"
function_code = 3
address = 2
[[points]]
sensor_type = "r10"
function_code = 3
address = 10
[[points]]
sensor_type = "r11"
function_code = 3
address = 11
[[points]]
sensor_type = "i5"
function_code = 4
address = 5
unit = "u"
"#;

/// What a register of the test slaves holds (see tests/peers/modbus_slaves.py).
fn expected(unit: u8, sensor_type: &str) -> f64 {
    let u = f64::from(unit) * 1000.0;
    match sensor_type {
        "i5" => u + 505.0,
        s => u + s[1..].parse::<f64>().expect("r<address>"),
    }
}

/// A socat pty pair: `a` for the peer, `b` for the gateway.
struct PtyPair {
    a: PathBuf,
    b: PathBuf,
    log: PathBuf,
    socat: Option<PeerProcess>,
}

impl PtyPair {
    fn new(dir: &Path, name: &str) -> PtyPair {
        let mut p = PtyPair {
            a: dir.join(format!("{name}-a")),
            b: dir.join(format!("{name}-b")),
            log: dir.join(format!("{name}-socat.log")),
            socat: None,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let mut socat = PeerProcess::spawn(
            Command::new("socat")
                .arg(format!("pty,raw,echo=0,link={}", self.a.display()))
                .arg(format!("pty,raw,echo=0,link={}", self.b.display())),
            &self.log,
            "apt-get install socat",
        );
        socat.wait_ready("the ptys", Duration::from_secs(10), || {
            self.a.exists() && self.b.exists()
        });
        self.socat = Some(socat);
    }

    /// Ends socat: both ptys go away, as when a USB adapter is unplugged.
    fn stop(&mut self) {
        self.socat = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.a.exists() || self.b.exists() {
            if Instant::now() > deadline {
                let _ = std::fs::remove_file(&self.a);
                let _ = std::fs::remove_file(&self.b);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts tests/peers/modbus_slaves.py and waits for its "ready".
fn slaves(args: &[&str]) -> PeerProcess {
    let mut peer = PeerProcess::spawn_logged(
        python().arg("-u").arg(PEERS).args(args),
        "scripts/test.sh installs tests/python/requirements.txt into .venv-tests; \
         EDGE_GATEWAY_PYTHON names its python",
    );
    let log = peer.log_path().to_path_buf();
    peer.wait_ready("\"ready\" on stdout", Duration::from_secs(30), || {
        read_log(&log).lines().any(|l| l.trim() == "ready")
    });
    peer
}

fn write_profile(dir: &Path) -> PathBuf {
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("test-slave.toml"), TEST_PROFILE).unwrap();
    profiles
}

fn rtu_device(id: &str, port: &Path, slave: u8, timeout_ms: u64) -> ModbusDeviceConfig {
    ModbusDeviceConfig {
        device_id: id.into(),
        location: "Line 4".into(),
        profile: "test-slave".into(),
        port: port.display().to_string(),
        slave_id: slave,
        poll_interval_ms: 300,
        timeout_ms,
        retries: 1,
        ..ModbusDeviceConfig::default()
    }
}

fn modbus_config(dir: &Path, devices: Vec<ModbusDeviceConfig>) -> Config {
    let mut c = test_config();
    c.modbus.profiles_dir = write_profile(dir);
    c.modbus.offline_after_failures = 2;
    c.modbus.backoff_initial_ms = 2_000;
    c.modbus.backoff_max_ms = 4_000;
    c.modbus.devices = devices;
    c
}

/// Every stored reading of a test slave holds the value of its own register.
fn assert_all_attributed(store: &Store, units: &[(&str, u8)]) -> usize {
    let mut n = 0;
    for (device, unit) in units {
        for r in history(store, device) {
            let sensor = r["sensorType"].as_str().unwrap();
            assert_eq!(
                r["value"].as_f64().unwrap(),
                expected(*unit, sensor),
                "{device} {sensor}: value from another register or slave: {r}"
            );
            n += 1;
        }
    }
    n
}

fn status_of(store: &Store, device: &str) -> Option<String> {
    store
        .devices()
        .unwrap()
        .iter()
        .find(|d| d["deviceId"] == device)
        .and_then(|d| d["status"].as_str().map(str::to_string))
}

fn metrics_text(gw: &edge_gateway::Gateway) -> String {
    http_get(gw.http_addr(), "/metrics").1
}

fn requests(text: &str, bus: &Path, device: &str, result: &str) -> f64 {
    metric(
        text,
        &format!(
            "edge_gateway_modbus_requests_total{{bus=\"{}\",device=\"{device}\",result=\"{result}\"}}",
            bus.display()
        ),
    )
    .unwrap_or(0.0)
}

/// The issue's "done when": an RTU line with three slaves (one dead) and a TCP device stream
/// correct readings to a socket.io client and into history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_line_with_a_dead_slave_and_a_tcp_device_reach_dashboards_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let line = PtyPair::new(dir.path(), "rs485");
    let _rtu = slaves(&[
        "--rtu",
        line.a.to_str().unwrap(),
        "--raw",
        "--units",
        "1,2,3",
        "--dead",
        "3",
    ]);
    let tcp_port = free_port();
    let _tcp = slaves(&["--tcp", &tcp_port.to_string(), "--units", "7"]);

    let mut devices = vec![
        rtu_device("rtu-1", &line.b, 1, 200),
        rtu_device("rtu-2", &line.b, 2, 200),
        rtu_device("rtu-dead", &line.b, 3, 200),
    ];
    devices.push(ModbusDeviceConfig {
        device_id: "tcp-7".into(),
        location: "Hall 2".into(),
        profile: "test-slave".into(),
        endpoint: format!("127.0.0.1:{tcp_port}"),
        unit_id: 7,
        poll_interval_ms: 300,
        timeout_ms: 1_000,
        ..ModbusDeviceConfig::default()
    });
    let config = modbus_config(dir.path(), devices);
    let gw = start(config, dir.path()).await;
    let dashboard =
        SocketIoEvents::connect_and_emit(gw.http_addr(), &["subscribe-all-devices"]).await;
    let store = gw.store().clone();

    eventually(
        "readings from every live device",
        Duration::from_secs(60),
        || {
            ["rtu-1", "rtu-2", "tcp-7"]
                .iter()
                .all(|d| history(&store, d).len() >= 60)
                .then_some(())
        },
    )
    .await;
    eventually(
        "the dead slave marked offline",
        Duration::from_secs(30),
        || (status_of(&store, "rtu-dead").as_deref() == Some("offline")).then_some(()),
    )
    .await;
    eventually(
        "the dashboard got readings of every live device",
        Duration::from_secs(30),
        || {
            let got = dashboard.of("sensor:all");
            ["rtu-1", "rtu-2", "tcp-7"]
                .iter()
                .all(|d| got.iter().any(|r| r["deviceId"] == *d))
                .then_some(got)
        },
    )
    .await;

    let n = assert_all_attributed(&store, &[("rtu-1", 1), ("rtu-2", 2), ("tcp-7", 7)]);
    assert!(n >= 180);
    for r in dashboard.of("sensor:all") {
        let unit = match r["deviceId"].as_str().unwrap() {
            "rtu-1" => 1,
            "rtu-2" => 2,
            "tcp-7" => 7,
            other => panic!("reading from {other}: {r}"),
        };
        assert_eq!(
            r["value"].as_f64().unwrap(),
            expected(unit, r["sensorType"].as_str().unwrap()),
            "{r}"
        );
    }
    let h = history(&store, "rtu-1");
    assert_eq!(h[0]["location"], "Line 4");
    let i5 = h.iter().find(|r| r["sensorType"] == "i5").unwrap();
    assert_eq!(i5["unit"], "u");
    assert!(history(&store, "rtu-dead").is_empty());
    assert_eq!(status_of(&store, "rtu-1").as_deref(), Some("online"));
    assert_eq!(status_of(&store, "tcp-7").as_deref(), Some("online"));
    let statuses: Vec<_> = dashboard
        .of("device:all")
        .into_iter()
        .filter(|s| s["deviceId"] == "rtu-dead")
        .collect();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0]["status"], "offline");

    let text = metrics_text(&gw);
    assert!(
        requests(&text, &line.b, "rtu-1", "ok") >= 30.0,
        "{}",
        text.lines()
            .filter(|l| l.contains("modbus"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(requests(&text, &line.b, "rtu-dead", "timeout") >= 2.0);
    // Quarantine: the dead slave is not asked every 300 ms cycle.
    let cycles = metric(
        &text,
        &format!(
            "edge_gateway_modbus_cycle_seconds_count{{bus=\"{}\"}}",
            line.b.display()
        ),
    )
    .unwrap();
    let dead_timeouts = requests(&text, &line.b, "rtu-dead", "timeout");
    assert!(dead_timeouts < cycles / 2.0);
    let sum = metric(
        &text,
        &format!(
            "edge_gateway_modbus_cycle_seconds_sum{{bus=\"{}\"}}",
            line.b.display()
        ),
    )
    .unwrap();
    println!(
        "scheduler on the RTU line (2 live + 1 dead, quarantined): {cycles} cycles, mean {:.1} ms, \
         the dead slave cost a timeout in {dead_timeouts} of them",
        sum / cycles * 1000.0
    );
    gw.stop().await.unwrap();
}

/// A slow slave (every 4th reply 400 ms late, timeout 150 ms), a bad-CRC slave (every other
/// reply corrupt) and a dead one on the same line as a good one: values always land on their
/// own register and slave, garbled replies are counted and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_corrupt_replies_are_never_attributed_to_another_request() {
    let dir = tempfile::tempdir().unwrap();
    let line = PtyPair::new(dir.path(), "faulty");
    let _rtu = slaves(&[
        "--rtu",
        line.a.to_str().unwrap(),
        "--raw",
        "--units",
        "1,2,3,4",
        "--slow",
        "2:400",
        "--bad-crc",
        "3",
        "--dead",
        "4",
    ]);
    let config = modbus_config(
        dir.path(),
        vec![
            rtu_device("good", &line.b, 1, 150),
            rtu_device("slow", &line.b, 2, 150),
            rtu_device("crc", &line.b, 3, 150),
            rtu_device("dead", &line.b, 4, 150),
        ],
    );
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !["good", "slow", "crc"]
        .iter()
        .all(|d| history(&store, d).len() >= 30)
    {
        let text = metrics_text(&gw);
        assert!(
            Instant::now() < deadline,
            "no readings from every slave in time:\n{}",
            text.lines()
                .filter(|l| l.contains("modbus") && !l.contains("_bucket"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = metrics_text(&gw);
    let n = assert_all_attributed(&store, &[("good", 1), ("slow", 2), ("crc", 3)]);
    assert!(history(&store, "dead").is_empty());
    assert_eq!(status_of(&store, "dead").as_deref(), Some("offline"));
    assert_eq!(status_of(&store, "good").as_deref(), Some("online"));

    let slow_timeouts = requests(&text, &line.b, "slow", "timeout");
    let crc_errors = requests(&text, &line.b, "crc", "crc");
    let stray = ["good", "crc", "dead"]
        .iter()
        .map(|d| requests(&text, &line.b, d, "mismatch"))
        .sum::<f64>();
    let discarded = metric(
        &text,
        &format!(
            "edge_gateway_modbus_discarded_bytes_total{{bus=\"{}\"}}",
            line.b.display()
        ),
    )
    .unwrap_or(0.0);
    println!(
        "faulty line: {n} readings checked; slow slave timeouts {slow_timeouts}, late replies \
         seen as stray frames by the next request {stray}, CRC errors {crc_errors}, bytes \
         discarded {discarded}"
    );
    assert!(slow_timeouts >= 2.0, "{text}");
    assert!(crc_errors >= 2.0, "{text}");
    assert!(discarded > 0.0, "{text}");
    gw.stop().await.unwrap();
}

/// pymodbus' own RTU server on a pty, two slaves: the gateway reads both, and `probe` reads a
/// pymodbus TCP device from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_rtu_slaves_and_the_probe_command() {
    let dir = tempfile::tempdir().unwrap();
    let line = PtyPair::new(dir.path(), "pym");
    let _rtu = slaves(&["--rtu", line.a.to_str().unwrap(), "--units", "1,2"]);
    let config = modbus_config(
        dir.path(),
        vec![
            rtu_device("pym-1", &line.b, 1, 500),
            rtu_device("pym-2", &line.b, 2, 500),
        ],
    );
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    eventually(
        "readings from both pymodbus slaves",
        Duration::from_secs(60),
        || {
            ["pym-1", "pym-2"]
                .iter()
                .all(|d| history(&store, d).len() >= 12)
                .then_some(())
        },
    )
    .await;
    assert_all_attributed(&store, &[("pym-1", 1), ("pym-2", 2)]);
    gw.stop().await.unwrap();

    // probe: exit 0 with values, 1 when the device does not answer, 2 for config errors.
    let tcp_port = free_port();
    let _tcp = slaves(&["--tcp", &tcp_port.to_string(), "--units", "5"]);
    let profiles = write_profile(dir.path());
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[modbus]\nprofiles_dir = \"{}\"\n\n[[modbus.devices]]\ndevice_id = \"meter\"\nprofile = \"test-slave\"\nendpoint = \"127.0.0.1:{tcp_port}\"\nunit_id = 5\n\n[[modbus.devices]]\ndevice_id = \"nobody\"\nprofile = \"test-slave\"\nendpoint = \"127.0.0.1:{}\"\ntimeout_ms = 300\n",
            profiles.display(),
            free_port()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_edge-gateway");
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env_remove("PORT")
            .output()
            .unwrap()
    };
    let out = run(&["probe", "meter", "--config", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    assert!(
        stdout.contains("r10") && stdout.contains("5010") && stdout.contains("5505"),
        "{stdout}"
    );
    let out = run(&["probe", "nobody", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["probe", "nope", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// Poll cycle time of one RTU line with three slaves, all alive and with one dead, measured
/// through the library's own poller (printed, not asserted: run with `--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_cycle_time_with_and_without_a_dead_slave() {
    let dir = tempfile::tempdir().unwrap();
    let mut figures = Vec::new();
    for (name, dead) in [("3 live slaves", None), ("2 live + 1 dead", Some("3"))] {
        let line = PtyPair::new(dir.path(), if dead.is_some() { "cyc-dead" } else { "cyc" });
        let mut args = vec![
            "--rtu",
            line.a.to_str().unwrap(),
            "--raw",
            "--units",
            "1,2,3",
        ];
        if let Some(d) = dead {
            args.extend(["--dead", d]);
        }
        let _peer = slaves(&args);
        let config = modbus_config(
            dir.path(),
            (1..=3)
                .map(|u| rtu_device(&format!("s{u}"), &line.b, u, 200))
                .collect(),
        );
        let devices = modbus::devices(&config.modbus).unwrap();
        let mut link = RtuLine::new(
            modbus::port_settings(&config.modbus, &line.b.display().to_string()),
            Duration::from_millis(100),
            Duration::from_millis(100),
        );
        let mut cycles = Vec::new();
        for i in 0..12 {
            let t0 = Instant::now();
            for d in &devices {
                let outcome = modbus::poll(&mut link, d, None).await;
                if dead.is_none() || d.config.slave_id != 3 {
                    assert!(
                        outcome.result.is_ok(),
                        "{}: {:?}",
                        d.config.device_id,
                        outcome.result
                    );
                }
            }
            if i >= 2 {
                cycles.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        cycles.sort_by(f64::total_cmp);
        figures.push(format!(
            "{name}: median {:.1} ms, min {:.1} ms, max {:.1} ms ({} cycles, 3 reads per slave, 9600 baud pty, timeout 200 ms)",
            cycles[cycles.len() / 2],
            cycles[0],
            cycles[cycles.len() - 1],
            cycles.len()
        ));
    }
    println!("RTU poll cycle:\n  {}", figures.join("\n  "));
}

/// A pty emitting `deviceId,sensorType,value,unit` lines; closed (socat ends, the ptys vanish
/// like an unplugged adapter) and reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_line_sensor_reads_lines_and_survives_the_port_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut pty = PtyPair::new(dir.path(), "ascii");
    let mut config = test_config();
    config.serial_sensors = vec![SerialSensorConfig {
        path: pty.b.display().to_string(),
        location: "Weighbridge".into(),
        reconnect_ms: 200,
        ..SerialSensorConfig::default()
    }];
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    let send = |path: &Path, lines: &[String]| {
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        for l in lines {
            f.write_all(l.as_bytes()).unwrap();
        }
    };
    let values = |store: &Store| -> Vec<f64> {
        history(store, "scale-1")
            .iter()
            .map(|r| r["value"].as_f64().unwrap())
            .collect()
    };
    // The gateway may not have opened the port yet: repeat until lines arrive.
    let mut round = 0;
    eventually("first lines stored", Duration::from_secs(30), || {
        round += 1;
        send(
            &pty.a,
            &[
                format!("scale-1,weight,{round}.5,kg\r\n"),
                "garbage line\n".into(),
            ],
        );
        (!values(&store).is_empty()).then_some(())
    })
    .await;
    let h = history(&store, "scale-1");
    assert_eq!(h[0]["unit"], "kg");
    assert_eq!(h[0]["location"], "Weighbridge");
    assert_eq!(h[0]["sensorType"], "weight");

    pty.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    pty.start();
    eventually(
        "lines after the port came back",
        Duration::from_secs(30),
        || {
            send(&pty.a, &["scale-1,weight,999,kg\n".to_string()]);
            values(&store).contains(&999.0).then_some(())
        },
    )
    .await;
    let text = metrics_text(&gw);
    let bad = metric(
        &text,
        &format!(
            "edge_gateway_serial_lines_total{{port=\"{}\",result=\"bad_line\"}}",
            pty.b.display()
        ),
    );
    assert!(bad.unwrap_or(0.0) >= 1.0, "{text}");
    gw.stop().await.unwrap();
}

/// mosquitto on a free port with a temp config; restartable on the same port.
struct Mosquitto {
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    proc: Option<PeerProcess>,
}

impl Mosquitto {
    fn new(dir: &Path) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let mut m = Mosquitto {
            port,
            conf,
            log: dir.join("mosquitto.log"),
            proc: None,
        };
        m.start();
        m
    }

    fn start(&mut self) {
        let mut proc = PeerProcess::spawn(
            Command::new("mosquitto").arg("-c").arg(&self.conf),
            &self.log,
            "apt-get install mosquitto",
        );
        let port = self.port;
        proc.wait_ready("listening", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.proc = Some(proc);
    }

    fn stop(&mut self) {
        self.proc = None;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_broker_readings_arrive_and_resume_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::new(dir.path());
    let mut config = test_config();
    config.site_mqtt.endpoint = format!("127.0.0.1:{}", broker.port);
    config.site_mqtt.backoff_initial_ms = 100;
    config.site_mqtt.backoff_max_ms = 500;
    config.site_mqtt.subscriptions.push(SiteSubscription {
        filter: "plant/hall3/#".into(),
        qos: 1,
        strip_prefix: "plant/hall3/".into(),
    });
    let gw = start(config, dir.path()).await;
    let store = gw.store().clone();
    let site = std::net::SocketAddr::from(([127, 0, 0, 1], broker.port));
    let (client, _acks) = mqtt_client(site, "site-publisher").await;
    let values = |store: &Store| -> Vec<f64> {
        history(store, "site-dev")
            .iter()
            .map(|r| r["value"].as_f64().unwrap())
            .collect()
    };

    let publish_until = |value_floor: f64| {
        let client = client.clone();
        let store = store.clone();
        async move {
            let mut v = value_floor;
            eventually("a site reading stored", Duration::from_secs(30), || {
                v += 1.0;
                let c = client.clone();
                let topic = if (v as u64).is_multiple_of(2) {
                    "sensors/site-dev/temperature"
                } else {
                    "plant/hall3/sensors/site-dev/temperature"
                };
                tokio::spawn(async move {
                    let _ = c
                        .publish(topic, QoS::AtLeastOnce, false, format!("{v}"))
                        .await;
                });
                values(&store)
                    .iter()
                    .any(|x| *x > value_floor)
                    .then_some(())
            })
            .await;
        }
    };
    publish_until(0.0).await;

    broker.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.start();
    publish_until(1000.0).await;
    let got = values(&store);
    assert!(got.iter().any(|x| *x > 1000.0), "{got:?}");
    assert!(got.iter().any(|x| *x < 1000.0), "{got:?}");
    let status = status_of(&store, "site-dev");
    assert_eq!(status.as_deref(), Some("online"));
    // Topics outside the contract are rejected, not stored.
    client
        .publish("plant/hall3/nonsense", QoS::AtLeastOnce, false, "1")
        .await
        .unwrap();
    gw.stop().await.unwrap();
}
