//! edge-gateway: reads factory sensors, buffers every reading durably in redb, serves the
//! reference Socket.IO API to on-site dashboards. See ARCHITECTURE.md for the map.
//!
//! Data flow: sources → [`pipeline`] (devices, alarms) → [`store::writer`] (group commit)
//! → [`hub`] → [`api`] (Socket.IO rooms). Only committed records leave the store side.

pub mod alarms;
pub mod api;
pub mod config;
pub mod firmware_profile;
pub mod health;
pub mod hub;
pub mod ids;
pub mod ingest;
pub mod pipeline;
pub mod record;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod time;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::config::Config;
use crate::health::Health;
use crate::hub::Hub;
use crate::pipeline::Pipeline;
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
}

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
        let gateway_id: Arc<str> = if config.gateway_id.is_empty() {
            config::hostname().into()
        } else {
            config.gateway_id.as_str().into()
        };
        telemetry::prometheus();
        let simulate = options.simulate.unwrap_or(config.simulator.devices);
        if simulate > 0 && !config.mqtt.enabled {
            return Err(GatewayError::SimulatorNeedsBroker);
        }

        let store = Store::open(&options.data_dir)?;
        let writer = StoreWriter::new(store.clone(), gateway_id.to_string())?;
        let mut sink_names = Vec::new();
        if !config.sinks.redis.host.is_empty() {
            sink_names.push("redis");
        }
        if !config.sinks.kafka.brokers.is_empty() {
            sink_names.push("kafka");
        }
        let health = Arc::new(Health::new(config.mqtt.enabled, &sink_names));
        let stats = store.stats()?;
        health
            .store_bytes
            .store(stats.logical_bytes, std::sync::atomic::Ordering::Relaxed);
        let hub = Hub::new(1024);

        let addr = format!("{}:{}", config.server.host, config.server.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| GatewayError::Listen {
                addr: addr.clone(),
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| GatewayError::Listen { addr, source })?;

        let sources_stop = CancellationToken::new();
        let api_stop = CancellationToken::new();
        let (ingest_tx, ingest_rx) = mpsc::channel(config.store.queue_capacity);
        let (write_tx, write_rx) = mpsc::channel(64);

        let writer = store::writer::spawn(
            writer,
            write_rx,
            hub.clone(),
            config.store.clone(),
            health.clone(),
            tokio::runtime::Handle::current(),
        )
        .map_err(GatewayError::Writer)?;

        let sinks_stop = CancellationToken::new();
        let mut sinks = Vec::new();
        for sink_health in &health.sinks {
            let ctx = sinks::SinkContext {
                store: store.clone(),
                hub: hub.clone(),
                writer: write_tx.clone(),
                health: sink_health.clone(),
                stop: sinks_stop.clone(),
            };
            let id = gateway_id.to_string();
            sinks.push(match sink_health.name {
                "redis" => {
                    let c = config.sinks.redis.clone();
                    let delivery = c.delivery.clone();
                    tokio::spawn(sinks::run(
                        sinks::redis::RedisSink::new(c, id),
                        delivery,
                        ctx,
                    ))
                }
                _ => {
                    let c = config.sinks.kafka.clone();
                    let delivery = c.delivery.clone();
                    tokio::spawn(sinks::run(
                        sinks::kafka::KafkaSink::new(c, id),
                        delivery,
                        ctx,
                    ))
                }
            });
        }

        let mut pipeline = Pipeline::new(&config, health.clone());
        pipeline.restore(&store.devices()?);
        let pipeline = tokio::spawn(pipeline::run(
            pipeline,
            ingest_rx,
            write_tx,
            Duration::from_millis(config.devices.check_interval_ms),
        ));

        let mut sources =
            sources::modbus::spawn(&config.modbus, ingest_tx.clone(), sources_stop.clone())?;
        for sensor in &config.serial_sensors {
            sources.push(tokio::spawn(sources::serial_line::run(
                sensor.clone(),
                ingest_tx.clone(),
                sources_stop.clone(),
            )));
        }
        if !config.site_mqtt.endpoint.is_empty() {
            sources.push(tokio::spawn(sources::site_mqtt::run(
                config.site_mqtt.clone(),
                gateway_id.to_string(),
                config.mqtt.max_payload_bytes,
                ingest_tx.clone(),
                sources_stop.clone(),
            )));
        }
        if config.mqtt.enabled {
            if simulate > 0 {
                sources.push(tokio::spawn(sources::simulator::run(
                    ingest_tx.clone(),
                    simulate,
                    Duration::from_millis(config.simulator.interval_ms),
                    sources_stop.clone(),
                )));
            }
            let listener =
                sources::mqtt::DeviceListener::bind(&config.mqtt, ingest_tx, sources_stop.clone())
                    .await?;
            health.mqtt_anonymous.store(
                config.mqtt.allow_anonymous,
                std::sync::atomic::Ordering::Relaxed,
            );
            sources.push(tokio::spawn(listener.run()));
            if let Some(listen) = config.mqtt.subscriber_listen {
                let port =
                    sources::mqtt::SubscriberPort::start(listen, config.mqtt.max_connections)?;
                tokio::spawn(republish(port, hub.subscribe(), gateway_id.clone()));
            }
            tracing::info!(listen = %config.mqtt.listen, "MQTT device listener ready");
        } else {
            drop(ingest_tx);
        }

        let state = ApiState {
            config: config.clone(),
            gateway_id: gateway_id.clone(),
            store: store.clone(),
            health: health.clone(),
            hub: hub.clone(),
        };
        let (router, io) = api::app(state.clone());
        let api = vec![
            tokio::spawn(api::run_emitter(
                io.clone(),
                state.clone(),
                api_stop.clone(),
            )),
            tokio::spawn(api::run_system_status(io.clone(), state, api_stop.clone())),
        ];
        let server = tokio::spawn(api::serve(listener, router, io, api_stop.clone()));
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

    /// Cancelled when the gateway begins to stop; for tasks that live as long as it does.
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
            let deadline = tokio::time::Instant::now() + self.sinks_drain;
            while tokio::time::Instant::now() < deadline {
                let next = self.store.next_seq().unwrap_or(0);
                let pending = self.health.sinks.iter().any(|s| {
                    s.connected() && s.cursor.load(std::sync::atomic::Ordering::Relaxed) < next
                });
                if !pending {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
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
        match tokio::time::timeout(Duration::from_secs(10), self.server).await {
            Ok(Ok(result)) => result.map_err(GatewayError::Serve),
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::warn!("HTTP server did not finish closing within 10 s");
                Ok(())
            }
        }
    }
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
