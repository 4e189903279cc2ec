//! Real upstream servers for sink tests: `redis-server` and a `tansu` Kafka broker, each on a
//! free 127.0.0.1 port, with stop/restart for outage tests and helpers that read back what
//! they hold. Every process is killed when its handle drops.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rskafka::BackoffConfig;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

use super::free_port;
use super::peer::{NotReady, PeerProcess, log_tail, read_log};

const LOOPBACK: &str = "127.0.0.1";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const KAFKA_START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const KAFKA_CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// A free port is only free until someone else binds it: a server that exits at start is
/// tried again on another port, this many times in all.
const START_ATTEMPTS: u32 = 3;

fn port_refuses(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
}

/// What [`RedisServer`] and [`KafkaBroker`] share: a server process on one loopback port that
/// stays the same across restarts, with its data and log in a temp dir removed on drop.
struct Server {
    /// Dropped (killed) before `dir` is removed.
    process: Option<PeerProcess>,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    /// `name` names the temp dir (`egw-<name>-*`) and the log (`<name>.log`).
    fn new(name: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("egw-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("create temp dir for {name}: {e}"));
        let log = dir.path().join(format!("{name}.log"));
        Server {
            process: None,
            port: 0,
            dir,
            log,
        }
    }

    fn addr(&self) -> String {
        format!("{LOOPBACK}:{}", self.port)
    }

    fn spawn(&mut self, cmd: &mut Command, hint: &str) {
        assert!(self.process.is_none(), "{}: still running", self.addr());
        self.process = Some(PeerProcess::spawn(cmd, &self.log, hint));
    }

    fn process(&self) -> &PeerProcess {
        self.process
            .as_ref()
            .unwrap_or_else(|| panic!("the server on {} is not running", self.addr()))
    }

    fn process_mut(&mut self) -> &mut PeerProcess {
        self.process.as_mut().expect("spawned")
    }

    /// True when ready; false to try again on another port (it exited at start and attempts
    /// remain); else panics with the log tail.
    fn settle(&mut self, attempt: u32, what: &str, result: Result<(), NotReady>) -> bool {
        match result {
            Ok(()) => true,
            Err(NotReady::Exited(_)) if attempt < START_ATTEMPTS => {
                self.process = None;
                false
            }
            Err(e) => self.process_mut().fail(what, e),
        }
    }

    /// Sends `sig` and waits for the exit (SIGKILL after [`STOP_TIMEOUT`]) and until the port
    /// refuses connections; true if the process exited by itself.
    fn stop(&mut self, sig: &str) -> bool {
        let mut process = self
            .process
            .take()
            .unwrap_or_else(|| panic!("the server on {} is not running", self.addr()));
        let clean = process.stop(sig, STOP_TIMEOUT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !port_refuses(self.port) {
            assert!(
                Instant::now() < deadline,
                "{} still accepts connections after its server exited",
                self.addr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        clean
    }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` on 127.0.0.1 with an append-only file fsynced on every write, so whatever
/// was acknowledged before [`RedisServer::stop`] is back after [`RedisServer::start_again`].
pub struct RedisServer {
    server: Server,
    password: Option<String>,
}

impl RedisServer {
    /// Starts `redis-server` (optionally with `--requirepass`) and waits until it answers PING.
    pub fn start(password: Option<&str>) -> RedisServer {
        let mut redis = RedisServer {
            server: Server::new("redis"),
            password: password.map(str::to_owned),
        };
        for attempt in 1..=START_ATTEMPTS {
            redis.server.port = free_port();
            if redis.spawn(attempt) {
                return redis;
            }
        }
        unreachable!()
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `redis://[:password@]127.0.0.1:<port>/`, password percent-encoded, for gateway configs.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{}@{}/", percent_encode(p), self.addr()),
            None => format!("redis://{}/", self.addr()),
        }
    }

    /// The data and log directory (survives restarts; removed on drop).
    pub fn dir(&self) -> &Path {
        self.server.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.server.log.clone()
    }

    pub fn log(&self) -> String {
        read_log(&self.server.log)
    }

    pub fn is_running(&self) -> bool {
        self.server.process.is_some()
    }

    /// A sync client that authenticates with the server's password (if any).
    pub fn client(&self) -> redis::Client {
        client_for(self.port(), self.password.as_deref())
    }

    /// A fresh sync connection; panics if the server does not accept it.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to redis-server on {}: {e}", self.addr()))
    }

    /// Graceful outage: SIGTERM, wait for exit, and make sure the port refuses connections.
    pub fn stop(&mut self) {
        let clean = self.server.stop("TERM");
        assert!(
            clean,
            "redis-server on {} did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed); log: {}",
            self.addr(),
            log_tail(&self.server.log)
        );
    }

    /// Restarts on the same port and directory, so the AOF is replayed; waits for PING.
    pub fn start_again(&mut self) {
        self.spawn(START_ATTEMPTS);
    }

    /// Every entry of `stream` (XRANGE - +) as field/value pairs, in stream order.
    pub fn xrange_all(&self, stream: &str) -> Vec<Vec<(String, String)>> {
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut self.connection())
            .unwrap_or_else(|e| panic!("XRANGE {stream} - + on {}: {e}", self.addr()));
        entries
            .into_iter()
            .map(|(_id, kv)| {
                kv.chunks(2)
                    .map(|p| {
                        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                        (s(&p[0]), p.get(1).map(|v| s(v)).unwrap_or_default())
                    })
                    .collect()
            })
            .collect()
    }

    /// Starts collecting messages published on `channels`; returns once subscribed, so
    /// everything published afterwards is seen.
    pub fn subscribe(&self, channels: &[&str]) -> RedisSubscriber {
        RedisSubscriber::start(
            self.port(),
            self.password.clone(),
            channels.iter().map(|c| c.to_string()).collect(),
        )
    }

    /// Spawns on `self.server.port` and waits for PING; false if it exited at start and
    /// `attempt` may be retried on another port.
    fn spawn(&mut self, attempt: u32) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", LOOPBACK, "--port", &self.port().to_string()])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.server.dir.path())
            .arg("--logfile")
            .arg(&self.server.log);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        // Config errors go to stderr before the logfile is opened: the peer log is the same file.
        self.server.spawn(&mut cmd, "apt install redis-server");
        let client = self.client();
        let ready = self.server.process_mut().try_wait_ready(START_TIMEOUT, || {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(500))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            matches!(pong.as_deref(), Ok("PONG"))
        });
        self.server.settle(attempt, "an answer to PING", ready)
    }
}

fn client_for(port: u16, password: Option<&str>) -> redis::Client {
    use redis::IntoConnectionInfo;
    let mut info = redis::ConnectionAddr::Tcp(LOOPBACK.into(), port)
        .into_connection_info()
        .expect("connection info");
    if let Some(p) = password {
        info = info.set_redis_settings(redis::RedisConnectionInfo::default().set_password(p));
    }
    redis::Client::open(info).expect("redis client")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Collects `(channel, payload)` pub/sub messages on a background thread. Reconnects and
/// resubscribes (best effort) when the server goes away; messages published while it is
/// disconnected are lost, as with any Redis subscriber.
pub struct RedisSubscriber {
    channels: Vec<String>,
    messages: Arc<Mutex<Vec<(String, String)>>>,
    subscriptions: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RedisSubscriber {
    fn start(port: u16, password: Option<String>, channels: Vec<String>) -> RedisSubscriber {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let subscriptions = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (channels, messages, subscriptions, stop) = (
                channels.clone(),
                messages.clone(),
                subscriptions.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("redis-subscriber".into())
                .spawn(move || {
                    let client = client_for(port, password.as_deref());
                    while !stop.load(Ordering::Relaxed) {
                        collect(&client, &channels, &messages, &subscriptions, &stop);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
                .expect("spawn redis subscriber thread")
        };
        let sub = RedisSubscriber {
            channels,
            messages,
            subscriptions,
            stop,
            thread: Some(thread),
        };
        sub.wait_subscribed(1, START_TIMEOUT);
        sub
    }

    /// Snapshot of everything received so far, in arrival order.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// How many times the subscription has been (re)established; 1 after `subscribe` returns.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::SeqCst)
    }

    /// Blocks until the subscriber has (re)connected and subscribed to all its channels `n`
    /// times: `n` counts connections, not channels. `subscribe` already waited for `n = 1`; use
    /// `n = 2` after one server restart, before publishing again.
    pub fn wait_subscribed(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.subscriptions() < n {
            assert!(
                Instant::now() < deadline,
                "redis subscriber on {:?} subscribed {} time(s), not {n}, within {timeout:?} \
                 (n counts (re)connections, not channels)",
                self.channels,
                self.subscriptions()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One connection's worth of collecting; returns when the connection fails or on stop.
fn collect(
    client: &redis::Client,
    channels: &[String],
    messages: &Mutex<Vec<(String, String)>>,
    subscriptions: &AtomicUsize,
    stop: &AtomicBool,
) {
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return;
    };
    let mut pubsub = con.as_pubsub();
    if pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .is_err()
        || pubsub.subscribe(channels).is_err()
        || pubsub
            .set_read_timeout(Some(Duration::from_millis(100)))
            .is_err()
    {
        return;
    }
    subscriptions.fetch_add(1, Ordering::SeqCst);
    while !stop.load(Ordering::Relaxed) {
        match pubsub.get_message() {
            Ok(msg) => {
                let payload = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
                messages
                    .lock()
                    .unwrap()
                    .push((msg.get_channel_name().to_owned(), payload));
            }
            Err(e) if e.is_timeout() => {}
            Err(_) => return,
        }
    }
}

impl Drop for RedisSubscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka (tansu)
// ---------------------------------------------------------------------------------------------

/// One record as read back from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
}

/// The `tansu` binary: `$TANSU`, else `~/.cargo/bin/tansu`, else `tansu` on PATH.
fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU") {
        return p.into();
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cargo/bin/tansu");
        if p.exists() {
            return p;
        }
    }
    "tansu".into()
}

/// Bounded retries: rskafka's default `BackoffConfig` retries forever, which turns a broken
/// broker into a hung test instead of a failure.
pub fn kafka_backoff(deadline: Duration) -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        base: 2.,
        deadline: Some(deadline),
    }
}

/// A `tansu` Kafka broker on 127.0.0.1 with in-memory storage (its dynostore engine only knows
/// memory://, s3:// and gs://, so nothing survives a process restart). For outages that keep
/// the data use [`KafkaBroker::pause`]/[`KafkaBroker::resume`] (SIGSTOP/SIGCONT: connections
/// hang rather than being refused); [`KafkaBroker::stop`]/[`KafkaBroker::start_again`] give a
/// refused-connection outage but come back EMPTY.
pub struct KafkaBroker {
    server: Server,
    paused: bool,
    /// The port clients are told to use, when it is not the listener's (a TLS terminator
    /// in front); readiness is then only the listener accepting connections.
    advertised_port: Option<u16>,
}

impl KafkaBroker {
    /// Starts the broker and waits until it answers Kafka metadata requests.
    pub async fn start() -> KafkaBroker {
        KafkaBroker::start_inner(None).await
    }

    /// A broker that advertises `127.0.0.1:<advertised_port>` (a TLS terminator in front of
    /// it) instead of its own listener.
    pub async fn start_advertising(advertised_port: u16) -> KafkaBroker {
        KafkaBroker::start_inner(Some(advertised_port)).await
    }

    async fn start_inner(advertised_port: Option<u16>) -> KafkaBroker {
        let mut broker = KafkaBroker {
            server: Server::new("tansu"),
            paused: false,
            advertised_port,
        };
        for attempt in 1..=START_ATTEMPTS {
            broker.server.port = free_port();
            if broker.spawn(attempt).await {
                return broker;
            }
        }
        unreachable!()
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `127.0.0.1:<port>`, the bootstrap address.
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    pub fn log_path(&self) -> PathBuf {
        self.server.log.clone()
    }

    pub fn log(&self) -> String {
        read_log(&self.server.log)
    }

    /// An rskafka client whose retries give up after 10 s.
    pub async fn client(&self) -> Client {
        match self
            .bounded("connect", self.try_client(Duration::from_secs(10)))
            .await
        {
            Ok(c) => c,
            Err(e) => panic!(
                "rskafka client for tansu on {}: {e}; log: {}",
                self.addr(),
                log_tail(&self.server.log)
            ),
        }
    }

    async fn try_client(
        &self,
        deadline: Duration,
    ) -> Result<Client, rskafka::client::error::Error> {
        ClientBuilder::new(vec![self.addr()])
            .backoff_config(kafka_backoff(deadline))
            .build()
            .await
    }

    /// Bounds a call to the broker: rskafka has no request timeout (its backoff deadline only
    /// limits retries after errors), so a request to a paused broker would wait forever.
    async fn bounded<T>(&self, what: &str, call: impl Future<Output = T>) -> T {
        match tokio::time::timeout(KAFKA_CALL_TIMEOUT, call).await {
            Ok(v) => v,
            Err(_) => panic!(
                "{what}: tansu on {} did not answer within {KAFKA_CALL_TIMEOUT:?} (paused: {}); log: {}",
                self.addr(),
                self.paused,
                log_tail(&self.server.log)
            ),
        }
    }

    /// Creates `name` with `partitions` partitions (replication factor 1).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let client = self.client().await;
        let controller = client.controller_client().expect("controller client");
        self.bounded(
            &format!("create topic {name}"),
            controller.create_topic(name, partitions, 1, 5_000),
        )
        .await
        .unwrap_or_else(|e| panic!("create topic {name} on tansu {}: {e}", self.addr()));
    }

    /// Every record of every partition of `topic`, from offset 0 to the high watermark, ordered
    /// by (partition, offset). Panics if the topic does not exist.
    pub async fn read_all(&self, topic: &str) -> Vec<KafkaRecord> {
        self.bounded(&format!("read {topic}"), self.read_all_unbounded(topic))
            .await
    }

    async fn read_all_unbounded(&self, topic: &str) -> Vec<KafkaRecord> {
        let client = self.client().await;
        let partitions = client
            .list_topics()
            .await
            .unwrap_or_else(|e| panic!("list topics on tansu {}: {e}", self.addr()))
            .into_iter()
            .find(|t| t.name == topic)
            .unwrap_or_else(|| panic!("topic {topic} does not exist on tansu {}", self.addr()))
            .partitions;
        let mut out = Vec::new();
        for p in partitions {
            let pc = client
                .partition_client(topic, p, UnknownTopicHandling::Error)
                .await
                .unwrap_or_else(|e| panic!("partition client {topic}/{p}: {e}"));
            let high = pc
                .get_offset(OffsetAt::Latest)
                .await
                .unwrap_or_else(|e| panic!("high watermark of {topic}/{p}: {e}"));
            let mut offset = pc
                .get_offset(OffsetAt::Earliest)
                .await
                .unwrap_or_else(|e| panic!("low watermark of {topic}/{p}: {e}"));
            while offset < high {
                let (records, _) = pc
                    .fetch_records(offset, 1..10_000_000, 100)
                    .await
                    .unwrap_or_else(|e| panic!("fetch {topic}/{p} at offset {offset}: {e}"));
                let Some(last) = records.last().map(|r| r.offset) else {
                    panic!(
                        "fetch {topic}/{p} at offset {offset} returned nothing below high watermark {high}"
                    );
                };
                out.extend(records.into_iter().map(|r| KafkaRecord {
                    partition: p,
                    offset: r.offset,
                    key: r.record.key,
                    value: r.record.value.unwrap_or_default(),
                    headers: r.record.headers,
                }));
                offset = last + 1;
            }
        }
        out
    }

    /// Freezes the broker (SIGSTOP): its socket stays open but nothing answers; data is kept.
    /// rskafka requests then hang rather than fail (no request timeout), so code under test
    /// needs its own timeouts; this file's helpers panic after 20 s.
    pub fn pause(&mut self) {
        assert!(!self.paused, "KafkaBroker::pause: already paused");
        self.server.process().signal("STOP");
        self.paused = true;
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&mut self) {
        assert!(self.paused, "KafkaBroker::resume: not paused");
        self.server.process().signal("CONT");
        self.paused = false;
    }

    /// Refused-connection outage: SIGINT and wait until the port refuses. LOSES ALL DATA
    /// (memory storage). SIGINT rather than SIGTERM because tansu gives open connections 5 s
    /// to finish on SIGTERM and there is nothing to flush.
    pub fn stop(&mut self) {
        if self.paused {
            self.server.process().signal("CONT");
            self.paused = false;
        }
        if !self.server.stop("INT") {
            eprintln!(
                "tansu on {} ignored SIGINT for {STOP_TIMEOUT:?}; killed",
                self.addr()
            );
        }
    }

    /// Starts a fresh broker on the same port (empty: topics must be created again).
    pub async fn start_again(&mut self) {
        self.spawn(START_ATTEMPTS).await;
    }

    /// Spawns on `self.server.port` and waits until it answers metadata requests; false if it
    /// exited at start and `attempt` may be retried on another port.
    async fn spawn(&mut self, attempt: u32) -> bool {
        let url = format!("tcp://{}", self.addr());
        let advertised = match self.advertised_port {
            Some(p) => format!("tcp://{LOOPBACK}:{p}"),
            None => url.clone(),
        };
        let bin = tansu_bin();
        // An IP literal matters: tansu listens on [::] when it cannot parse the listener host.
        let mut cmd = Command::new(&bin);
        cmd.arg("broker")
            .args(["--storage-engine", "memory://tansu/"])
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--cluster-id", "egw-test"])
            // tansu loads `.env` (dotenv) from its cwd upwards and reads these from the env.
            .current_dir(self.server.dir.path())
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "warn");
        self.server.spawn(
            &mut cmd,
            "cargo install --locked tansu --features dynostore",
        );
        let addr = self.addr();
        if self.advertised_port.is_some() {
            let port = self.server.port;
            let ready = self
                .server
                .process_mut()
                .try_wait_ready(KAFKA_START_TIMEOUT, || !port_refuses(port));
            return self.server.settle(attempt, "accepts connections", ready);
        }
        let ready = self
            .server
            .process_mut()
            .try_wait_ready_async(KAFKA_START_TIMEOUT, || {
                let addr = addr.clone();
                async move {
                    let attempt = async {
                        let c = kafka_client(addr, Duration::from_millis(500)).await?;
                        c.list_topics().await
                    };
                    matches!(
                        tokio::time::timeout(Duration::from_secs(2), attempt).await,
                        Ok(Ok(_))
                    )
                }
            })
            .await;
        self.server
            .settle(attempt, "answers to Kafka metadata requests", ready)
    }
}

async fn kafka_client(
    addr: String,
    deadline: Duration,
) -> Result<Client, rskafka::client::error::Error> {
    ClientBuilder::new(vec![addr])
        .backoff_config(kafka_backoff(deadline))
        .build()
        .await
}
