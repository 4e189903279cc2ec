//! Relay mode (`edge-gateway relay`): the central side of the reference deployment, served by
//! this binary. Instead of devices, the source is the central Redis (and optionally Kafka)
//! that gateways write to; records go through the same store, hub and Socket.IO API as at the
//! edge, so central dashboards get the full reference API. Each replica reads the feed itself
//! and serves its own sockets: N replicas need nothing from each other.
//!
//! Records from the feed skip the pipeline: admission, timestamp grading, thresholds and
//! alarms were done by the gateway that made them, and doing them again would invent status
//! changes and alerts of our own. What the relay adds is checking (the reference schema,
//! size), dedup by `(gatewayId, seq)` and kept feed positions.

mod dedup;
mod intake;
mod parse;
mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::config::Config;
use crate::health::{Health, RelayFigures};
use crate::hub::Hub;
use crate::ingest::AckCursor;
use crate::pipeline::AlarmRequest;
use crate::sinks::FeedSettings;
use crate::sinks::kafka::feed as kafka_feed;
use crate::sinks::redis::command_sender::{self, Outgoing};
use crate::sinks::redis::feed;
use crate::store::{Store, StoreWriter};
use crate::{GatewayError, Options};

/// Store cursor names: a source's kept position (a Redis stream: ms of its last entry taken;
/// a Kafka `<topic>/<partition>`: its next offset) and a gateway's dedup floor.
const POSITION_PREFIX: &str = "relay:position:";
const FLOOR_PREFIX: &str = "relay:gateway:";

/// Feed messages between the readers and the intake: a few batches' worth. A full queue
/// stops the reader (stream mode reads on later; Redis may drop a slow channel subscriber,
/// as it would the reference service).
const FEED_QUEUE: usize = 4_096;

/// Central alarm actions waiting to be sent down (people click, they do not flood).
const ALARM_COMMANDS: usize = 64;

/// Which gateway each alarm belongs to (from the relayed `alarm:state` records): where an
/// action on it is sent.
type AlarmOwners = Arc<Mutex<HashMap<String, String>>>;
/// Alarms whose owner is remembered; beyond, actions on new ones answer "unknown".
const MAX_ALARM_OWNERS: usize = 100_000;

/// A running relay replica. Call [`Relay::stop`].
pub struct Relay {
    http_addr: SocketAddr,
    store: Store,
    health: Arc<Health>,
    feed_stop: CancellationToken,
    feeds: Vec<JoinHandle<()>>,
    intake: JoinHandle<()>,
    writer: std::thread::JoinHandle<()>,
    api_stop: CancellationToken,
    api: Vec<JoinHandle<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Relay {
    /// Opens the store, starts the feed, the intake, the writer and the API; returns once the
    /// HTTP listener is bound.
    pub async fn start(config: Config, options: Options) -> Result<Relay, GatewayError> {
        if !reads_redis(&config) && !reads_kafka(&config) {
            return Err(GatewayError::RelayWithoutSource);
        }
        let config = Arc::new(config);
        let relay_id = crate::gateway_id(&config);
        crate::telemetry::prometheus();
        let store = Store::open(&options.data_dir)?;
        let store_writer = StoreWriter::new(store.clone(), relay_id.to_string())?;
        let health = Arc::new(Health::new(false, &[]));
        let figures = Arc::new(RelayFigures::default());
        let _ = health.relay.set(figures.clone());
        let hub = Hub::new(crate::HUB_COMMITS);
        let (listener, http_addr, http_tls) = crate::bind_http(&config.server).await?;

        let feed_stop = CancellationToken::new();
        let (write_tx, writer) =
            crate::spawn_writer(store_writer, &config.store, &hub, &health, &feed_stop)?;
        let owners = AlarmOwners::default();
        let (feeds, intake) = spawn_feed(
            &config,
            &store,
            write_tx,
            (figures, health.clone()),
            owners.clone(),
            &feed_stop,
        )?;

        let api_stop = CancellationToken::new();
        let (alarm_tx, mut api_tasks) =
            spawn_alarm_forwarding(&config, &relay_id, owners, &api_stop);
        let state = ApiState::new(
            config.clone(),
            relay_id.clone(),
            store.clone(),
            health.clone(),
            hub,
            alarm_tx,
        );
        let (api, server) = crate::spawn_api(state, listener, http_tls, &api_stop);
        api_tasks.extend(api);
        tracing::info!(%http_addr, relay_id = %relay_id, data_dir = %options.data_dir.display(), "edge-gateway relay ready");
        Ok(Relay {
            http_addr,
            store,
            health,
            feed_stop,
            feeds,
            intake,
            writer,
            api_stop,
            api: api_tasks,
            server,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// See [`crate::Gateway::stopping`].
    pub fn stopping(&self) -> CancellationToken {
        self.api_stop.clone()
    }

    /// Stops in order: the feed, the intake (which hands the writer what it holds), the
    /// writer (committing everything, kept positions included), then the API.
    pub async fn stop(self) -> Result<(), GatewayError> {
        self.feed_stop.cancel();
        for task in self.feeds {
            let _ = task.await;
        }
        let _ = self.intake.await;
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        self.api_stop.cancel();
        for task in self.api {
            let _ = task.await;
        }
        match tokio::time::timeout(Duration::from_secs(10), self.server).await {
            Ok(Ok(result)) => result.map_err(GatewayError::Serve),
            _ => Ok(()),
        }
    }
}

/// The feed readers and the intake task between them and the writer.
fn spawn_feed(
    config: &Config,
    store: &Store,
    writer: mpsc::Sender<crate::store::writer::WriteRequest>,
    (figures, health): (Arc<RelayFigures>, Arc<Health>),
    owners: AlarmOwners,
    stop: &CancellationToken,
) -> Result<(Vec<JoinHandle<()>>, JoinHandle<()>), GatewayError> {
    let (feed_tx, feed_rx) = mpsc::channel(FEED_QUEUE);
    let positions = kept(store, POSITION_PREFIX)?;
    let settings = FeedSettings {
        max_message_bytes: config.relay.max_message_bytes,
        read_batch: config.relay.read_batch,
    };
    let positions: HashMap<Arc<str>, u64> =
        positions.into_iter().map(|(k, v)| (k.into(), v)).collect();
    let mut feeds = Vec::new();
    if reads_redis(config) {
        feeds.push(feed::spawn(
            &config.sinks.redis,
            settings.clone(),
            positions.clone(),
            feed_tx.clone(),
            figures.clone(),
            stop,
        ));
    }
    if reads_kafka(config) {
        feeds.push(kafka_feed::spawn(
            &config.sinks.kafka,
            settings,
            positions,
            feed_tx,
            figures.clone(),
            stop,
        ));
    }
    let mut view = view::View::new(config.devices.max_devices, MAX_ALARM_OWNERS);
    restore_alarms(store, &owners, &mut view)?;
    let intake = intake::Intake {
        rx: feed_rx,
        writer,
        dedup: restore_dedup(store, config.relay.max_gateways)?,
        figures,
        owners,
        view,
        health,
        read_batch: config.relay.read_batch,
        window: (
            (config.store.retention_max_age_secs as i64).saturating_mul(1000),
            config.devices.max_future_skew_ms as i64,
        ),
    };
    Ok((feeds, tokio::spawn(intake.run())))
}

/// The queue the API hands alarm actions to, and the tasks that send them down.
fn spawn_alarm_forwarding(
    config: &Config,
    relay_id: &str,
    owners: AlarmOwners,
    stop: &CancellationToken,
) -> (mpsc::Sender<AlarmRequest>, Vec<JoinHandle<()>>) {
    let (alarm_tx, alarm_rx) = mpsc::channel(ALARM_COMMANDS);
    let (send_tx, send_rx) = mpsc::channel(ALARM_COMMANDS);
    let tasks = vec![
        command_sender::spawn(&config.sinks.redis, relay_id.to_string(), send_rx, stop),
        tokio::spawn(forward_alarm_actions(
            alarm_rx,
            owners,
            send_tx,
            stop.clone(),
        )),
    ];
    (alarm_tx, tasks)
}

/// Whether this replica reads the central Redis (`relay.redis` and a `sinks.redis.host`).
pub fn reads_redis(config: &Config) -> bool {
    config.relay.redis && !config.sinks.redis.host.is_empty()
}

/// Whether it reads Kafka (`relay.kafka` and `sinks.kafka.brokers`).
pub fn reads_kafka(config: &Config) -> bool {
    config.relay.kafka && !config.sinks.kafka.brokers.is_empty()
}

/// The cursors kept under `prefix`.
fn kept(store: &Store, prefix: &str) -> Result<HashMap<String, u64>, GatewayError> {
    Ok(store.cursors_with_prefix(prefix)?.into_iter().collect())
}

fn restore_dedup(store: &Store, max_gateways: usize) -> Result<dedup::Dedup, GatewayError> {
    let mut dedup = dedup::Dedup::new(max_gateways);
    for (gateway, floor) in kept(store, FLOOR_PREFIX)? {
        dedup.restore(gateway, floor);
    }
    Ok(dedup)
}

/// The current alarms kept in the store: who owns each (so actions on them still go down
/// after a restart) and which are active.
fn restore_alarms(
    store: &Store,
    owners: &AlarmOwners,
    view: &mut view::View,
) -> Result<(), GatewayError> {
    let mut owners = owners.lock().expect("owners lock poisoned");
    for alarm in store.restore_alarms()? {
        view.note_alarm(&alarm.to_string());
        if let (Some(id), Some(gateway)) = (alarm["alarmId"].as_str(), alarm["gatewayId"].as_str())
            && owners.len() < MAX_ALARM_OWNERS
        {
            owners.insert(id.to_string(), gateway.to_string());
        }
    }
    Ok(())
}

/// Central alarm actions go to the gateway that owns the alarm (its command stream); the
/// action is answered as done once Redis took it. The gateway applies it, and its transition
/// comes back through the feed as `alarm:state`. An alarm never relayed here is unknown.
async fn forward_alarm_actions(
    mut rx: mpsc::Receiver<AlarmRequest>,
    owners: AlarmOwners,
    sender: mpsc::Sender<Outgoing>,
    stop: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => break,
            r = rx.recv() => match r {
                Some(r) => r,
                None => break,
            },
        };
        let id = request.command.alarm_id.clone();
        let owner = owners
            .lock()
            .expect("owners lock poisoned")
            .get(&id)
            .cloned();
        let Some(gateway_id) = owner else {
            let _ = request
                .reply
                .send(Err(crate::alarms::ActionError::Unknown(id)));
            continue;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let out = Outgoing {
                gateway_id: gateway_id.clone(),
                command: request.command,
                reply,
            };
            if sender.send(out).await.is_err() {
                return;
            }
            match answer.await {
                Ok(Ok(())) => {
                    let sent = Arc::new(AckCursor::default());
                    sent.token(1, None, false).complete();
                    let _ = request.reply.send(Ok(sent));
                }
                // Dropping the reply answers "unavailable".
                Ok(Err(e)) => {
                    tracing::warn!(alarm = %id, gateway = %gateway_id, error = %e, "alarm action not sent to its gateway")
                }
                Err(_) => {}
            }
        });
    }
}
