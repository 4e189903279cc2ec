//! Upstream store-and-forward: each sink reads committed records from the store, in `seq`
//! order, from its own cursor, sends them upstream, and moves its cursor (through the store
//! writer, in the next group commit) only once the upstream acknowledged them.
//!
//! The delivery loop ([`run`]) is shared; the protocols live in [`redis`] and [`kafka`] behind
//! [`Upstream`]. Nothing outside this module knows Redis or Kafka; sinks know nothing of the
//! sources or of Socket.IO.

pub mod kafka;
mod lane;
pub mod redis;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{DeliveryConfig, KindNames};
use crate::health::SinkHealth;
use crate::hub::{Hub, HubEvent};
use crate::record::{Alert, Level, RecordKind};
use crate::store::writer::WriteRequest;
use crate::store::{RawRecord, Store, StoreError};
use crate::telemetry as t;
use crate::time::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("kafka: {0}")]
    Kafka(#[from] rskafka::client::error::Error),
    #[error("kafka topic `{topic}` does not exist on the brokers (create it, or set {key})")]
    MissingTopic { topic: String, key: String },
    #[error("{what} not answered within {timeout_ms} ms")]
    Timeout { what: &'static str, timeout_ms: u64 },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A TLS failure in plain words (expired, unknown CA, name mismatch, refused client cert).
    #[error("{0}")]
    Tls(String),
}

impl SinkError {
    /// The TLS failure in `e`'s chain in plain words, or `other(e)` when there is none.
    pub fn tls_aware<E: std::error::Error + 'static>(
        e: E,
        other: impl FnOnce(E) -> SinkError,
    ) -> SinkError {
        match crate::tls::TlsProblem::find(&e) {
            Some(problem) => SinkError::Tls(problem.to_string()),
            None => other(e),
        }
    }
}

/// One upstream protocol. `send` must return only once the upstream acknowledged every
/// record of the batch (or failed): the cursor moves on that answer.
pub trait Upstream: Send {
    /// (Re)establishes the link; called after a failure before the next `send`.
    fn connect(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn send(&mut self, batch: &[RawRecord]) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Whether the upstream answers at the protocol level within `timeout`, on a link of its
    /// own (Kafka: ApiVersions and Metadata; Redis: PING). Probed during backoff to retry as
    /// soon as the peer is back: a frozen or wedged peer still accepts TCP.
    fn probe(&mut self, timeout: Duration) -> impl Future<Output = bool> + Send;
}

/// The upstream name (channel, stream or topic) for a record kind.
pub fn name_for(names: &KindNames, kind: RecordKind) -> &str {
    match kind {
        RecordKind::Reading => &names.sensor_readings,
        RecordKind::Status => &names.device_status,
        RecordKind::Alert => &names.alerts,
        RecordKind::Alarm => &names.alarm_events,
    }
}

/// Relay mode: one message as a central feed (`redis::feed`, `kafka::feed`) read it.
#[derive(Debug)]
pub struct FeedMessage {
    /// The channel or stream it came from.
    pub source: Arc<str>,
    pub kind: RecordKind,
    /// The reference JSON, or why it was not taken (counted by the relay under that reason).
    pub body: Result<Vec<u8>, &'static str>,
    /// A stream entry's `gatewayId` and `seq` fields (a channel message has them in its JSON).
    pub origin: Option<(String, u64)>,
    /// Where a restart reads again from (kept per `source`): a stream entry id's milliseconds, a
    /// partition's next offset.
    pub position: Option<u64>,
}

/// What the feed reads and how much at once.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    pub max_message_bytes: usize,
    pub read_batch: usize,
}

/// What a sink task needs from the gateway.
pub struct SinkContext {
    pub store: Store,
    pub hub: Hub,
    pub writer: mpsc::Sender<WriteRequest>,
    pub health: Arc<SinkHealth>,
    pub stop: CancellationToken,
}

/// Runs one sink until `stop`: connect, send from the cursor, back off on failure.
pub async fn run<U: Upstream>(mut upstream: U, delivery: DeliveryConfig, ctx: SinkContext) {
    let name = ctx.health.name;
    let sink: Arc<str> = name.into();
    let mut commits = ctx.store.durable_changes();
    let mut cursor = match initial_cursor(&ctx.store, name) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(sink = name, error = %e, "cannot read the sink cursor; sink not started");
            return;
        }
    };
    ctx.health.cursor.store(cursor, Ordering::Relaxed);
    let Some(mut alarms) = lane::AlarmLane::start(&ctx.store, name, cursor) else {
        return;
    };
    let mut backoff = delivery_backoff(&delivery);
    let mut connected = false;
    let mut rate = RateWindow::new();
    let mut pacer = Pacer::new(delivery.max_records_per_sec);
    let timeout = Duration::from_millis(delivery.request_timeout_ms);
    update_lag(&ctx, cursor);
    let mut figures_at = Instant::now();

    while !ctx.stop.is_cancelled() {
        refresh_figures(&ctx, cursor, &mut rate, &mut figures_at);
        if !connected {
            if let Err(e) = connect(&mut upstream, timeout, &ctx).await {
                fail(&ctx, &e);
                update_lag(&ctx, cursor);
                let wait = backoff.next_delay();
                wait_for_retry(&mut upstream, wait, &ctx.stop).await;
                continue;
            }
            connected = true;
            backoff.reset();
        }
        // Alarm transitions first, ahead of any telemetry backlog (see `lane.rs`).
        match alarms
            .step(&mut upstream, &ctx, timeout, &mut backoff)
            .await
        {
            lane::Step::Idle => {}
            lane::Step::Sent => continue,
            lane::Step::Failed => {
                connected = false;
                continue;
            }
        }
        let Some(mut batch) = next_batch(&ctx, cursor, &delivery, &mut commits).await else {
            continue;
        };
        let next = batch.last().map_or(cursor, |r| r.seq + 1);
        // The alarm lane sends those.
        batch.retain(|r| r.kind != RecordKind::Alarm);

        let started = Instant::now();
        match send_unless_empty(&mut upstream, &batch, timeout).await {
            Ok(()) => {
                let n = batch.len() as u64;
                cursor = next;
                count_sent(&ctx, n, Some(cursor), started.elapsed());
                rate.add(n);
                if !move_cursor(&ctx, &sink, cursor).await {
                    break;
                }
                pacer.pace(n, &ctx.stop).await;
            }
            Err(e) => {
                connected = false;
                fail(&ctx, &e);
                let wait = backoff.next_delay();
                wait_for_retry(&mut upstream, wait, &ctx.stop).await;
            }
        }
    }
    tracing::debug!(sink = name, cursor, "sink stopped");
}

/// A batch left empty by the alarm lane's records costs no request.
async fn send_unless_empty<U: Upstream>(
    upstream: &mut U,
    batch: &[RawRecord],
    timeout: Duration,
) -> Result<(), SinkError> {
    if batch.is_empty() {
        return Ok(());
    }
    with_timeout("send", timeout, upstream.send(batch)).await
}

/// Lag and rate figures, every 500 ms.
fn refresh_figures(ctx: &SinkContext, cursor: u64, rate: &mut RateWindow, at: &mut Instant) {
    if at.elapsed() >= Duration::from_millis(500) {
        update_lag(ctx, cursor);
        ctx.health
            .sent_per_sec
            .store(rate.per_sec(), Ordering::Relaxed);
        *at = Instant::now();
    }
}

/// The next records from `cursor` (gaps counted as dropped); `None` after a failed read (a
/// second's pause) or when there is nothing new (waiting for the next commit, then lingering
/// so a few commits gather into one request).
async fn next_batch(
    ctx: &SinkContext,
    cursor: u64,
    delivery: &DeliveryConfig,
    commits: &mut watch::Receiver<u64>,
) -> Option<Vec<RawRecord>> {
    let batch = match read(&ctx.store, cursor, delivery.batch_max_records).await {
        Ok(b) => b,
        Err(e) => {
            let name = ctx.health.name;
            tracing::error!(sink = name, error = %e, "cannot read the store; retrying");
            sleep_or_stop(Duration::from_secs(1), &ctx.stop).await;
            return None;
        }
    };
    if batch.is_empty() {
        update_lag(ctx, cursor);
        wait_for_commit(commits, Duration::from_millis(500), &ctx.stop).await;
        sleep_or_stop(Duration::from_millis(delivery.linger_ms), &ctx.stop).await;
        return None;
    }
    count_dropped(
        ctx,
        gaps(cursor, &batch).saturating_sub(skipped(&ctx.store, cursor, &batch)),
    );
    Some(batch)
}

/// (Re)connects the upstream; announces a recovery.
async fn connect<U: Upstream>(
    upstream: &mut U,
    timeout: Duration,
    ctx: &SinkContext,
) -> Result<(), SinkError> {
    with_timeout("connect", timeout, upstream.connect()).await?;
    if ctx.health.set_connected() {
        tracing::info!(sink = ctx.health.name, "upstream connected");
        announce(
            ctx,
            Level::Warning,
            format!("{} recovered: forwarding resumes", ctx.health.service()),
        );
    }
    Ok(())
}

fn count_dropped(ctx: &SinkContext, dropped: u64) {
    if dropped == 0 {
        return;
    }
    let name = ctx.health.name;
    ctx.health
        .dropped_unsent
        .fetch_add(dropped, Ordering::Relaxed);
    metrics::counter!(t::SINK_DROPPED_UNSENT, "sink" => name).increment(dropped);
    tracing::warn!(
        sink = name,
        dropped,
        "the store evicted records before this sink sent them (byte budget or age)"
    );
}

/// Figures for a batch of `n` the upstream acknowledged, after which `cursor` (of the main
/// lane) is next.
fn count_sent(ctx: &SinkContext, n: u64, cursor: Option<u64>, took: Duration) {
    let name = ctx.health.name;
    metrics::counter!(t::SINK_SENT, "sink" => name).increment(n);
    metrics::histogram!(t::SINK_SEND_SECONDS, "sink" => name).record(took.as_secs_f64());
    ctx.health.sent.fetch_add(n, Ordering::Relaxed);
    if let Some(cursor) = cursor {
        ctx.health.cursor.store(cursor, Ordering::Relaxed);
    }
}

/// Hands the new cursor to the store writer for its next commit; `false` when the writer is
/// gone (the gateway is stopping). The cursor then stays where the store has it; what was sent
/// since is sent again after the restart.
async fn move_cursor(ctx: &SinkContext, sink: &Arc<str>, cursor: u64) -> bool {
    let moved = ctx
        .writer
        .send(WriteRequest::Cursor {
            sink: sink.clone(),
            next_seq: cursor,
        })
        .await;
    moved.is_ok()
}

/// A new sink starts at the oldest stored record: everything the gateway holds goes upstream.
fn initial_cursor(store: &Store, name: &str) -> Result<u64, StoreError> {
    if let Some(c) = store.cursor(name)? {
        return Ok(c);
    }
    Ok(match store.read_raw(0, 1)?.first() {
        Some(r) => r.seq,
        None => store.next_seq()?,
    })
}

async fn read(store: &Store, from: u64, max: usize) -> Result<Vec<RawRecord>, SinkError> {
    let store = store.clone();
    // Durable records only: a non-durable one may vanish in a crash and its seq be reused.
    tokio::task::spawn_blocking(move || store.read_raw_durable(from, max))
        .await
        .expect("store read task panicked")
        .map_err(SinkError::from)
}

/// Records missing between `cursor` and the batch (evicted before they were sent).
fn gaps(cursor: u64, batch: &[RawRecord]) -> u64 {
    let mut expected = cursor;
    let mut missing = 0;
    for r in batch {
        missing += r.seq.saturating_sub(expected);
        expected = r.seq + 1;
    }
    missing
}

/// Of those gaps, `seq`s skipped after an unclean stop: never stored, so not dropped.
fn skipped(store: &Store, cursor: u64, batch: &[RawRecord]) -> u64 {
    let Some(last) = batch.last() else { return 0 };
    if (last.seq + 1).saturating_sub(cursor) == batch.len() as u64 {
        return 0;
    }
    store.skipped_between(cursor, last.seq).unwrap_or(0)
}

fn update_lag(ctx: &SinkContext, cursor: u64) {
    let name = ctx.health.name;
    let next = ctx.store.next_seq().unwrap_or(cursor);
    let skipped = ctx.store.skipped_between(cursor, next).unwrap_or(0);
    let lag = next.saturating_sub(cursor).saturating_sub(skipped);
    let age_ms = match ctx.store.oldest_ts_from(cursor) {
        Ok(Some(ts)) => u64::try_from(now_ms() - ts).unwrap_or(0),
        _ => 0,
    };
    ctx.health.lag_records.store(lag, Ordering::Relaxed);
    ctx.health.lag_ms.store(age_ms, Ordering::Relaxed);
    metrics::gauge!(t::SINK_LAG_RECORDS, "sink" => name).set(lag as f64);
    metrics::gauge!(t::SINK_LAG_SECONDS, "sink" => name).set(age_ms as f64 / 1000.0);
    metrics::gauge!(t::SINK_CONNECTED, "sink" => name).set(if ctx.health.connected() {
        1.0
    } else {
        0.0
    });
}

fn fail(ctx: &SinkContext, e: &SinkError) {
    let name = ctx.health.name;
    ctx.health.errors.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(t::SINK_ERRORS, "sink" => name).increment(1);
    metrics::gauge!(t::SINK_CONNECTED, "sink" => name).set(0.0);
    if ctx.health.set_failed(e.to_string()) {
        tracing::error!(sink = name, error = %e, "upstream down; records wait in the store");
        announce(
            ctx,
            Level::Critical,
            format!(
                "{} down: {e}; records are kept and sent when it is back",
                ctx.health.service()
            ),
        );
    } else {
        tracing::debug!(sink = name, error = %e, "upstream still down");
    }
}

/// An `alert:system` to every dashboard (not stored: it is about the gateway itself).
fn announce(ctx: &SinkContext, severity: Level, message: String) {
    let alert = Alert::system(&ctx.health.service(), severity, message);
    ctx.hub.publish(HubEvent::System(Arc::new(alert)));
}

async fn with_timeout<T>(
    what: &'static str,
    timeout: Duration,
    f: impl Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(SinkError::Timeout {
            what,
            timeout_ms: timeout.as_millis() as u64,
        }),
    }
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Waits for the next commit (or `max`), so an idle sink costs nothing. The store's durable
/// end, not the hub: records are published on the hub before their commit.
async fn wait_for_commit(
    commits: &mut watch::Receiver<u64>,
    max: Duration,
    stop: &CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(max) => {}
        changed = commits.changed() => {
            if changed.is_err() {
                sleep_or_stop(max, stop).await;
            }
        }
    }
}

/// How often, and for how long at most, a backing-off sink probes its upstream.
const PROBE_EVERY: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sleeps `wait`, but returns early once the upstream, having failed a probe, answers one:
/// it is back, and waiting out a long backoff would only delay the catch-up (the alarm lane
/// has a second to get the outage's transitions upstream). An upstream that answers from the
/// first probe failed for another reason (a missing topic, a refused record): the backoff is
/// waited out without further probes.
async fn wait_for_retry<U: Upstream>(upstream: &mut U, wait: Duration, stop: &CancellationToken) {
    let deadline = Instant::now() + wait;
    let mut failed = false;
    loop {
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        if left.is_zero() || stop.is_cancelled() {
            return;
        }
        let answered = tokio::select! {
            _ = stop.cancelled() => return,
            answered = upstream.probe(left.min(PROBE_TIMEOUT)) => answered,
        };
        if answered && failed {
            return;
        }
        failed |= !answered;
        let next = if answered {
            deadline
        } else {
            (started + PROBE_EVERY).min(deadline)
        };
        sleep_or_stop(next.saturating_duration_since(Instant::now()), stop).await;
    }
}

/// The delivery loop's backoff: doubling from `backoff_initial_ms` up to `backoff_max_ms`, each
/// wait drawn between half the step and the step.
fn delivery_backoff(d: &DeliveryConfig) -> Backoff {
    Backoff::new(
        Duration::from_millis(d.backoff_initial_ms),
        Duration::from_millis(d.backoff_max_ms),
    )
    .with_jitter()
}

/// Records sent over the last few seconds, for `sentPerSecond`.
struct RateWindow {
    since: Instant,
    count: u64,
    last: u64,
}

impl RateWindow {
    fn new() -> RateWindow {
        RateWindow {
            since: Instant::now(),
            count: 0,
            last: 0,
        }
    }

    fn add(&mut self, n: u64) {
        self.count += n;
    }

    fn per_sec(&mut self) -> u64 {
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(2) {
            self.last = (self.count as f64 / elapsed.as_secs_f64()) as u64;
            self.count = 0;
            self.since = Instant::now();
        }
        self.last
    }
}

/// Keeps the send rate under `max_records_per_sec` (0: no cap).
struct Pacer {
    per_sec: u64,
    since: Instant,
    sent: u64,
}

impl Pacer {
    fn new(per_sec: u64) -> Pacer {
        Pacer {
            per_sec,
            since: Instant::now(),
            sent: 0,
        }
    }

    async fn pace(&mut self, n: u64, stop: &CancellationToken) {
        if self.per_sec == 0 {
            return;
        }
        if self.since.elapsed() > Duration::from_secs(1) {
            self.since = Instant::now();
            self.sent = 0;
        }
        self.sent += n;
        let due = Duration::from_secs_f64(self.sent as f64 / self.per_sec as f64);
        if let Some(wait) = due.checked_sub(self.since.elapsed()) {
            sleep_or_stop(wait, stop).await;
        }
    }
}

/// An upstream that `[sinks]` turns on, with its own section.
#[derive(Clone, Copy)]
pub enum ConfiguredSink<'a> {
    Redis(&'a crate::config::RedisSinkConfig),
    Kafka(&'a crate::config::KafkaSinkConfig),
}

impl ConfiguredSink<'_> {
    /// The metric label and the `<name>-sink` service name ([`SinkHealth::name`]).
    pub fn name(&self) -> &'static str {
        match self {
            ConfiguredSink::Redis(_) => "redis",
            ConfiguredSink::Kafka(_) => "kafka",
        }
    }
}

/// The sinks `[sinks]` turns on (a Redis host, Kafka brokers), in start order.
pub fn configured(config: &crate::config::SinksConfig) -> Vec<ConfiguredSink<'_>> {
    let mut sinks = Vec::new();
    if !config.redis.host.is_empty() {
        sinks.push(ConfiguredSink::Redis(&config.redis));
    }
    if !config.kafka.brokers.is_empty() {
        sinks.push(ConfiguredSink::Kafka(&config.kafka));
    }
    sinks
}

/// Starts one task per [`configured`] sink; `health` holds their entries in the same order.
/// The tasks end on `stop`.
pub fn spawn(
    config: &crate::config::SinksConfig,
    gateway_id: &str,
    health: &[Arc<SinkHealth>],
    store: &Store,
    hub: &Hub,
    writer: &mpsc::Sender<WriteRequest>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    configured(config)
        .into_iter()
        .zip(health)
        .map(|(sink, health)| {
            debug_assert_eq!(sink.name(), health.name);
            let ctx = SinkContext {
                store: store.clone(),
                hub: hub.clone(),
                writer: writer.clone(),
                health: health.clone(),
                stop: stop.clone(),
            };
            let id = gateway_id.to_string();
            match sink {
                ConfiguredSink::Redis(c) => tokio::spawn(run(
                    redis::RedisSink::new(c.clone(), id),
                    c.delivery.clone(),
                    ctx,
                )),
                ConfiguredSink::Kafka(c) => tokio::spawn(run(
                    kafka::KafkaSink::new(c.clone(), id),
                    c.delivery.clone(),
                    ctx,
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(seq: u64) -> RawRecord {
        RawRecord {
            seq,
            kind: RecordKind::Reading,
            ts_ms: 0,
            device_id: "d".into(),
            json: b"{}".to_vec(),
        }
    }

    #[test]
    fn gaps_count_evicted_records() {
        assert_eq!(gaps(5, &[raw(5), raw(6), raw(7)]), 0);
        assert_eq!(gaps(5, &[raw(8), raw(9)]), 3);
        assert_eq!(gaps(5, &[raw(5), raw(7), raw(10)]), 3);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = delivery_backoff(&DeliveryConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..DeliveryConfig::default()
        });
        let steps: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in steps.iter().enumerate() {
            let step = (100u64 << i).min(1000);
            assert!(
                *d >= Duration::from_millis(step / 2) && *d <= Duration::from_millis(step),
                "step {i}: {d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
