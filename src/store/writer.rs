//! The single store writer: a dedicated thread that turns queued batches into group commits.
//! A record is accepted only once its commit returned; only then is it published on the hub.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{CommitOutcome, Retention, StoreError, StoreWriter};
use crate::config::StoreConfig;
use crate::health::Health;
use crate::hub::{Hub, HubEvent};
use crate::record::{Alert, Committed, Level, Record, RecordKind};
use crate::telemetry as t;
use crate::time::now_ms;

/// Records from one source hand-off, with when the oldest of them was received.
#[derive(Debug)]
pub struct WriteBatch {
    pub records: Vec<Record>,
    pub received: Instant,
}

/// What the single writer is asked to make durable.
#[derive(Debug)]
pub enum WriteRequest {
    Records(WriteBatch),
    /// An upstream sink's new position (the next `seq` to send), once the upstream
    /// acknowledged everything before it. Committed with the next group commit.
    Cursor {
        sink: Arc<str>,
        next_seq: u64,
    },
}

/// Everything one group commit will hold.
#[derive(Default)]
struct Pending {
    records: Vec<Record>,
    cursors: BTreeMap<Arc<str>, u64>,
    oldest: Option<Instant>,
}

impl Pending {
    fn add(&mut self, request: WriteRequest) {
        match request {
            WriteRequest::Records(b) => {
                self.oldest = Some(self.oldest.map_or(b.received, |o| o.min(b.received)));
                self.records.extend(b.records);
            }
            WriteRequest::Cursor { sink, next_seq } => {
                let slot = self.cursors.entry(sink).or_insert(next_seq);
                *slot = (*slot).max(next_seq);
            }
        }
    }

    /// The records of a commit that returned, numbered from `first_seq`; the cursors it
    /// made durable are done with.
    fn take_committed(&mut self, first_seq: u64) -> Vec<Committed> {
        self.cursors.clear();
        self.records
            .drain(..)
            .zip(first_seq..)
            .map(|(record, seq)| Committed { seq, record })
            .collect()
    }

    fn clear(&mut self) {
        self.records.clear();
        self.cursors.clear();
        self.oldest = None;
    }
}

/// How long a failing store is retried after shutdown began before pending records are given
/// up (they were never acknowledged).
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);

/// The waits between attempts at a failing commit: 100 ms, doubling, at most 5 s. The one
/// place the commit retry delays live.
struct RetryDelay {
    next: Duration,
}

impl RetryDelay {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> RetryDelay {
        RetryDelay { next: Self::FIRST }
    }

    /// Blocks the writer thread for the current delay, then lengthens the next one.
    fn wait(&mut self) {
        std::thread::sleep(self.next);
        self.next = (self.next * 2).min(Self::MAX);
    }
}

pub fn spawn(
    mut writer: StoreWriter,
    mut rx: mpsc::Receiver<WriteRequest>,
    hub: Hub,
    config: StoreConfig,
    health: Arc<Health>,
    runtime: Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let retention = retention(&config);
    let linger = Duration::from_millis(config.commit_interval_ms);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let _runtime = runtime.enter();
            let mut pending = Pending::default();
            while let Some(first) = runtime.block_on(rx.recv()) {
                pending.add(first);
                gather(
                    &runtime,
                    &mut rx,
                    &mut pending,
                    linger,
                    config.batch_max_records,
                );
                commit_with_retry(&mut writer, &mut pending, retention, &hub, &health, &rx);
            }
            tracing::info!("store writer stopped: all queued records committed");
        })
}

fn retention(config: &StoreConfig) -> Retention {
    Retention {
        max_age_ms: i64::try_from(config.retention_max_age_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        byte_budget: config.byte_budget_bytes,
        max_evictions_per_commit: config.batch_max_records.max(1000) * 4,
    }
}

/// Group commit: adds to `pending` what arrives within `linger`, up to `max_records`.
fn gather(
    runtime: &Handle,
    rx: &mut mpsc::Receiver<WriteRequest>,
    pending: &mut Pending,
    linger: Duration,
    max_records: usize,
) {
    let deadline = Instant::now() + linger;
    while pending.records.len() < max_records {
        match rx.try_recv() {
            Ok(r) => pending.add(r),
            Err(mpsc::error::TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match runtime.block_on(tokio::time::timeout(deadline - now, rx.recv())) {
                    Ok(Some(r)) => pending.add(r),
                    Ok(None) | Err(_) => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        }
    }
}

/// Commits `pending`, retrying until it succeeds or, once the channel closed, until
/// [`SHUTDOWN_RETRY`] has passed. Nothing is acknowledged before its commit returned.
fn commit_with_retry(
    writer: &mut StoreWriter,
    pending: &mut Pending,
    retention: Retention,
    hub: &Hub,
    health: &Health,
    rx: &mpsc::Receiver<WriteRequest>,
) {
    let mut delay = RetryDelay::new();
    let mut closed_since: Option<Instant> = None;
    loop {
        let started = Instant::now();
        match attempt(writer, pending, retention, health) {
            Ok(outcome) => {
                on_committed(pending, &outcome, started, hub, health);
                return;
            }
            Err(err) => {
                on_failed(writer, &err, pending.records.len(), hub, health);
                if give_up_at_shutdown(rx, &mut closed_since, pending) {
                    return;
                }
                delay.wait();
            }
        }
    }
}

/// One commit of everything pending, marked in health so the watchdog sees a wedged writer.
fn attempt(
    writer: &mut StoreWriter,
    pending: &Pending,
    retention: Retention,
    health: &Health,
) -> Result<CommitOutcome, StoreError> {
    let cursors: Vec<(&str, u64)> = pending
        .cursors
        .iter()
        .map(|(sink, next)| (&**sink, *next))
        .collect();
    health.writer_entered_commit();
    let result = writer.append(&pending.records, &cursors, now_ms(), retention);
    health.writer_left_commit();
    result
}

/// After the commit returned: its figures, a recovery notice if the store had failed, then
/// the committed records on the hub.
fn on_committed(
    pending: &mut Pending,
    outcome: &CommitOutcome,
    started: Instant,
    hub: &Hub,
    health: &Health,
) {
    let elapsed = started.elapsed();
    let count = pending.records.len();
    metrics::histogram!(t::COMMIT_SECONDS).record(elapsed.as_secs_f64());
    metrics::histogram!(t::COMMIT_BATCH_RECORDS).record(count as f64);
    if let Some(oldest) = pending.oldest.take() {
        metrics::histogram!(t::RECEIVE_TO_COMMIT_SECONDS).record(oldest.elapsed().as_secs_f64());
    }
    let committed = pending.take_committed(outcome.first_seq);
    count_committed(&committed);
    record_store_figures(outcome, count, health);
    if health.set_store_ok() {
        tracing::info!("store recovered: commits succeed again");
        hub.publish(HubEvent::System(Arc::new(Alert::system(
            "store",
            Level::Warning,
            "Store recovered: readings are being stored again".into(),
        ))));
    }
    if !committed.is_empty() {
        hub.publish(HubEvent::Committed(committed.into()));
    }
}

fn count_committed(committed: &[Committed]) {
    let mut readings = 0u64;
    for c in committed {
        let kind = match c.record.kind() {
            RecordKind::Reading => {
                readings += 1;
                "reading"
            }
            RecordKind::Status => "status",
            RecordKind::Alert => "alert",
        };
        metrics::counter!(t::RECORDS_COMMITTED, "kind" => kind).increment(1);
    }
    metrics::counter!(t::READINGS_ACCEPTED).increment(readings);
}

fn record_store_figures(outcome: &CommitOutcome, count: usize, health: &Health) {
    if outcome.evicted_age > 0 {
        metrics::counter!(t::STORE_EVICTED, "reason" => "age").increment(outcome.evicted_age);
    }
    if outcome.evicted_budget > 0 {
        metrics::counter!(t::STORE_EVICTED, "reason" => "budget").increment(outcome.evicted_budget);
    }
    metrics::gauge!(t::STORE_BYTES).set(outcome.logical_bytes as f64);
    health
        .store_bytes
        .store(outcome.logical_bytes, Ordering::Relaxed);
    health
        .store_records_committed
        .fetch_add(count as u64, Ordering::Relaxed);
    health.last_commit_ms.store(now_ms(), Ordering::Relaxed);
}

/// Reports a failed commit (loudly the first time, with an alert) and reopens the database
/// if the error poisoned the handle.
fn on_failed(writer: &StoreWriter, err: &StoreError, count: usize, hub: &Hub, health: &Health) {
    metrics::counter!(t::STORE_ERRORS).increment(1);
    let first_failure = health.set_store_failed(err.to_string());
    if first_failure {
        tracing::error!(error = %err, records = count, "store commit failed; retrying, nothing is acknowledged meanwhile");
        hub.publish(HubEvent::System(Arc::new(Alert::system(
            "store",
            Level::Critical,
            format!("Store commit failed: {err}"),
        ))));
    } else {
        tracing::debug!(error = %err, "store commit still failing");
    }
    if is_fatal(err) {
        tracing::error!(error = %err, "store error is not retryable");
    }
    if err.needs_reopen() {
        // redb poisons its handle after an I/O error; a fresh one writes again
        // once the cause (e.g. a full disk) is gone.
        if let Err(e) = writer.store().reopen() {
            tracing::debug!(error = %e, "store reopen failed; will retry");
        }
    }
}

/// Once the channel is closed (shutdown), a store that keeps failing for [`SHUTDOWN_RETRY`]
/// makes the writer drop what it holds; true when it did.
fn give_up_at_shutdown(
    rx: &mpsc::Receiver<WriteRequest>,
    closed_since: &mut Option<Instant>,
    pending: &mut Pending,
) -> bool {
    if !rx.is_closed() {
        return false;
    }
    let since = *closed_since.get_or_insert_with(Instant::now);
    if since.elapsed() <= SHUTDOWN_RETRY {
        return false;
    }
    tracing::error!(
        records = pending.records.len(),
        "giving up on unacknowledged records at shutdown: the store keeps failing"
    );
    pending.clear();
    true
}

fn is_fatal(err: &StoreError) -> bool {
    matches!(err, StoreError::Corrupt { .. })
}
