//! edge-gateway: reads factory sensors, buffers every reading durably in redb, serves the
//! reference Socket.IO API to on-site dashboards. See ARCHITECTURE.md for the map.
//!
//! Data flow: sources → [`pipeline`] (devices, alarms) → [`store::writer`] (group commit)
//! → [`hub`] → [`api`] (Socket.IO rooms). Only committed records leave the store side.

pub mod alarms;
pub mod api;
pub mod backoff;
pub mod config;
pub mod firmware_profile;
pub mod health;
pub mod hub;
pub mod ids;
pub mod ingest;
pub mod pipeline;
pub mod record;
pub mod relay;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod time;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::config::{Config, MqttConfig, ServerConfig, StoreConfig};
use crate::health::Health;
use crate::hub::Hub;
use crate::sources::{SourceError, SourceSections};
use crate::store::writer::WriteRequest;
use crate::store::{Store, StoreError, StoreWriter};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mqtt(#[from] sources::mqtt::MqttSourceError),
    #[error(transparent)]
    Modbus(#[from] sources::modbus::ModbusSourceError),
    #[error("cannot listen on {addr} (server.host/server.port): {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("the simulator publishes through the embedded broker: set mqtt.enabled = true")]
    SimulatorNeedsBroker,
    #[error("cannot start the store writer thread: {0}")]
    Writer(std::io::Error),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error(
        "relay mode reads the central Redis or Kafka the gateways write to: set sinks.redis.host (REDIS_HOST) with relay.redis = true, or sinks.kafka.brokers (KAFKA_BROKERS) with relay.kafka = true"
    )]
    RelayWithoutSource,
    #[error("TLS certificate of a listener: {0}")]
    Tls(#[from] tls::TlsError),
}

impl From<SourceError> for GatewayError {
    fn from(e: SourceError) -> GatewayError {
        match e {
            SourceError::Mqtt(e) => GatewayError::Mqtt(e),
            SourceError::Modbus(e) => GatewayError::Modbus(e),
        }
    }
}

/// Write requests queued for the store writer: pipeline batches (one per pipeline wake-up,
/// up to 1024 source messages each) and sink cursor moves. The writer group-commits
/// whatever is queued, so a few dozen keep it busy; the burst buffer is the ingest queue in
/// front of the pipeline (`store.queue_capacity`), and a full writer queue pushes back there.
const WRITE_QUEUE_REQUESTS: usize = 64;

/// Committed batches the hub holds for a slow live consumer. One that falls further behind
/// replays the gap from the store by `seq`, so this bounds memory, not correctness.
pub(crate) const HUB_COMMITS: usize = 1024;
/// Operator actions on alarms waiting for the pipeline: people click, they do not flood; a
/// full queue answers "busy" instead of growing.
const ALARM_COMMANDS: usize = 256;

/// How often `stop` checks whether connected sinks caught up with the store.
const SINK_DRAIN_POLL: Duration = Duration::from_millis(20);

/// How long `stop` waits for the HTTP server to close its connections.
const SERVER_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Run-time choices that are not configuration.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    /// Overrides `simulator.devices`.
    pub simulate: Option<usize>,
}

/// A running gateway. Dropping it does not stop it; call [`Gateway::stop`].
pub struct Gateway {
    http_addr: SocketAddr,
    gateway_id: Arc<str>,
    store: Store,
    health: Arc<Health>,
    sources_stop: CancellationToken,
    api_stop: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    pipeline: JoinHandle<()>,
    sinks_stop: CancellationToken,
    sinks: Vec<JoinHandle<()>>,
    sinks_drain: Duration,
    writer: std::thread::JoinHandle<()>,
    api: Vec<JoinHandle<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    /// Opens the store, starts the broker, the pipeline, the writer and the API. Returns once
    /// every listener is bound.
    pub async fn start(config: Config, options: Options) -> Result<Gateway, GatewayError> {
        let config = Arc::new(config);
        let gateway_id = gateway_id(&config);
        telemetry::prometheus();
        let simulate = simulated_devices(&config, &options)?;

        let store = Store::open(&options.data_dir)?;
        let store_writer = StoreWriter::new(store.clone(), gateway_id.to_string())?;
        let health = health_for(&config, &store)?;
        let hub = Hub::new(HUB_COMMITS);
        let (listener, http_addr, http_tls) = bind_http(&config.server).await?;

        // Sources stop first; the writer hears it too, so a failing store gives up in time.
        let sources_stop = CancellationToken::new();
        let (write_tx, writer) =
            spawn_writer(store_writer, &config.store, &hub, &health, &sources_stop)?;

        // The burst buffer in front of the pipeline, sized in config (see ARCHITECTURE.md on
        // the PUBACK-to-commit window for what a bigger one costs).
        let (ingest_tx, ingest_rx) = mpsc::channel(config.store.queue_capacity);
        // Operator actions on alarms (dashboards, the central side) go to the pipeline, which
        // owns the alarm state.
        let (alarm_tx, alarm_rx) = mpsc::channel(ALARM_COMMANDS);
        let sinks_stop = CancellationToken::new();
        let upstream = Upstream {
            gateway_id: &gateway_id,
            health: &health,
            store: &store,
            hub: &hub,
            write_tx: &write_tx,
        };
        let sinks = upstream.spawn(&config.sinks, &alarm_tx, &sinks_stop);
        let inputs = (ingest_rx, alarm_rx);
        let sections = pipeline_sections(&config);
        let pipeline = pipeline::spawn(sections, &store, health.clone(), inputs, write_tx)?;

        let sources = sources::spawn(
            source_sections(&config),
            simulate,
            &gateway_id,
            &health,
            ingest_tx,
            &sources_stop,
        )
        .await?;
        spawn_subscriber_port(&config.mqtt, &hub, &gateway_id)?;

        let api_stop = CancellationToken::new();
        let state = ApiState::new(
            config.clone(),
            gateway_id.clone(),
            store.clone(),
            health.clone(),
            hub,
            alarm_tx,
        );
        let (api, server) = spawn_api(state, listener, http_tls, &api_stop);
        tracing::info!(%http_addr, gateway_id = %gateway_id, data_dir = %options.data_dir.display(), "edge-gateway ready");

        Ok(Gateway {
            http_addr,
            gateway_id,
            store,
            health,
            sources_stop,
            api_stop,
            sources,
            pipeline,
            sinks_stop,
            sinks,
            sinks_drain: Duration::from_millis(config.sinks.drain_timeout_ms),
            writer,
            api,
            server,
        })
    }

    /// Where Socket.IO, /health and /metrics are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// A read handle on the store (history, stats).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Cancelled at the last step of [`Gateway::stop`], when the API closes: after the sources,
    /// the pipeline, the sinks and the writer have stopped. For tasks that must keep running
    /// through the shutdown and end with the gateway, like the systemd watchdog.
    pub fn stopping(&self) -> CancellationToken {
        self.api_stop.clone()
    }

    /// Stops in order: sources, then the pipeline, then the sinks (after letting connected ones
    /// catch up for `sinks.drain_timeout_ms`), then the writer (which commits everything
    /// received, cursors included), then the API (closing every client).
    pub async fn stop(self) -> Result<(), GatewayError> {
        self.sources_stop.cancel();
        for task in self.sources {
            let _ = task.await;
        }
        let _ = self.pipeline.await;
        if !self.sinks.is_empty() {
            sinks_catch_up(&self.store, &self.health, self.sinks_drain).await;
        }
        self.sinks_stop.cancel();
        for task in self.sinks {
            let _ = task.await;
        }
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        self.api_stop.cancel();
        for task in self.api {
            let _ = task.await;
        }
        match tokio::time::timeout(SERVER_CLOSE_TIMEOUT, self.server).await {
            Ok(Ok(result)) => result.map_err(GatewayError::Serve),
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::warn!("HTTP server did not finish closing within 10 s");
                Ok(())
            }
        }
    }
}

/// How many simulated devices to run: `--simulate`, else `simulator.devices`.
fn simulated_devices(config: &Config, options: &Options) -> Result<usize, GatewayError> {
    let simulate = options.simulate.unwrap_or(config.simulator.devices);
    if simulate > 0 && !config.mqtt.enabled {
        return Err(GatewayError::SimulatorNeedsBroker);
    }
    Ok(simulate)
}

/// `gateway_id` from the config, the hostname when it is empty.
pub(crate) fn gateway_id(config: &Config) -> Arc<str> {
    if config.gateway_id.is_empty() {
        config::hostname().into()
    } else {
        config.gateway_id.as_str().into()
    }
}

/// Health with one entry per configured sink, and the store's current size.
fn health_for(config: &Config, store: &Store) -> Result<Arc<Health>, StoreError> {
    let sink_names: Vec<_> = sinks::configured(&config.sinks)
        .iter()
        .map(|s| s.name())
        .collect();
    let health = Health::new(config.mqtt.enabled, &sink_names);
    health
        .store_bytes
        .store(store.stats()?.logical_bytes, Ordering::Relaxed);
    // Set before anything serves /health (the writer only announces it on the hub).
    if let Some(aside) = store.recovered_from() {
        let _ = health.store_recovered_from.set(aside.display().to_string());
    }
    Ok(Arc::new(health))
}

/// Each source's own section of the configuration.
fn pipeline_sections(config: &Config) -> pipeline::Sections<'_> {
    pipeline::Sections {
        devices: &config.devices,
        store_max_age: Duration::from_secs(config.store.retention_max_age_secs),
        thresholds: &config.thresholds,
        alarms: &config.alarms,
    }
}

fn source_sections(config: &Config) -> SourceSections<'_> {
    SourceSections {
        mqtt: &config.mqtt,
        modbus: &config.modbus,
        serial_sensors: &config.serial_sensors,
        site_mqtt: &config.site_mqtt,
        simulator: &config.simulator,
    }
}

/// The HTTP listener bound on `server.host:server.port`, the address it got, and its
/// certificate when HTTPS is on.
pub(crate) async fn bind_http(config: &ServerConfig) -> Result<HttpListener, GatewayError> {
    let tls = api::server_tls(config)?;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen { addr, source })?;
    Ok((listener, local, tls))
}

pub(crate) type HttpListener = (TcpListener, SocketAddr, Option<Arc<tls::ServerTls>>);

/// What the upstream sinks and the central alarm commands are started with.
struct Upstream<'a> {
    gateway_id: &'a str,
    health: &'a Health,
    store: &'a Store,
    hub: &'a Hub,
    write_tx: &'a mpsc::Sender<WriteRequest>,
}

impl Upstream<'_> {
    /// The sinks, and the central alarm commands (handed to the pipeline like a local
    /// action), all ending on `stop`.
    fn spawn(
        &self,
        config: &crate::config::SinksConfig,
        alarm_tx: &mpsc::Sender<pipeline::AlarmRequest>,
        stop: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = sinks::spawn(
            config,
            self.gateway_id,
            &self.health.sinks,
            self.store,
            self.hub,
            self.write_tx,
            stop,
        );
        let applier = sinks::redis::commands::Applier::new(
            alarm_tx.clone(),
            self.store.clone(),
            self.write_tx.clone(),
        );
        tasks.extend(sinks::redis::commands::spawn(
            config,
            self.gateway_id,
            applier,
            stop,
        ));
        tasks
    }
}

/// Starts the single store writer thread and returns the queue to it.
pub(crate) fn spawn_writer(
    writer: StoreWriter,
    config: &StoreConfig,
    hub: &Hub,
    health: &Arc<Health>,
    stopping: &CancellationToken,
) -> Result<(mpsc::Sender<WriteRequest>, std::thread::JoinHandle<()>), GatewayError> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_REQUESTS);
    let thread = store::writer::spawn(
        writer,
        rx,
        hub.clone(),
        config.clone(),
        store::StoreLimits::from(config),
        health.clone(),
        tokio::runtime::Handle::current(),
        stopping.clone(),
    )
    .map_err(GatewayError::Writer)?;
    Ok((tx, thread))
}

/// Starts the Socket.IO emitter, the `system:status` broadcaster and the HTTP server; all
/// end on `stop`.
pub(crate) fn spawn_api(
    state: ApiState,
    listener: TcpListener,
    tls: Option<Arc<tls::ServerTls>>,
    stop: &CancellationToken,
) -> (Vec<JoinHandle<()>>, JoinHandle<std::io::Result<()>>) {
    let (router, io) = api::app(state.clone());
    let limits = api::ConnLimits::new(&state.config.server);
    let tasks = vec![
        tokio::spawn(api::run_emitter(io.clone(), state.clone(), stop.clone())),
        tokio::spawn(api::run_system_status(io.clone(), state, stop.clone())),
    ];
    let server = tokio::spawn(api::serve(listener, router, io, limits, tls, stop.clone()));
    (tasks, server)
}

/// Waits until every connected sink has sent everything the store holds, or `limit` passed.
async fn sinks_catch_up(store: &Store, health: &Health, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let next = store.next_seq().unwrap_or(0);
        let pending = health
            .sinks
            .iter()
            .any(|s| s.connected() && s.cursor.load(Ordering::Relaxed) < next);
        if !pending {
            break;
        }
        tokio::time::sleep(SINK_DRAIN_POLL).await;
    }
}
/// The MQTT subscriber port for site clients, when `mqtt.subscriber_listen` is set, fed with
/// what the hub carries.
fn spawn_subscriber_port(
    config: &MqttConfig,
    hub: &Hub,
    gateway_id: &Arc<str>,
) -> Result<(), GatewayError> {
    if let Some(listen) = config.subscriber_listen.filter(|_| config.enabled) {
        let port = sources::mqtt::SubscriberPort::start(listen, config.max_connections)?;
        tokio::spawn(republish(port, hub.subscribe(), gateway_id.clone()));
    }
    Ok(())
}

/// Feeds committed readings and status changes to the MQTT subscriber port. Best effort, like
/// any live view: after a lag it goes on with the newest commits (the store has the rest).
async fn republish(
    mut port: sources::mqtt::SubscriberPort,
    mut events: tokio::sync::broadcast::Receiver<hub::HubEvent>,
    gateway_id: Arc<str>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(hub::HubEvent::Committed(batch)) => port.publish_committed(&batch, &gateway_id),
            Ok(hub::HubEvent::System(_)) => {}
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    commits = n,
                    "MQTT subscriber port fell behind; skipped commits"
                )
            }
            Err(RecvError::Closed) => break,
        }
    }
}
