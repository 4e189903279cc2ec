//! The single store writer: a dedicated thread that turns queued batches into group commits.
//! A record is accepted only once its commit returned; only then is it published on the hub.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{Retention, StoreError, StoreWriter};
use crate::config::StoreConfig;
use crate::health::Health;
use crate::hub::{Hub, HubEvent};
use crate::ingest::AckToken;
use crate::record::{Alert, Committed, Level, Record, RecordKind};
use crate::telemetry as t;
use crate::time::now_ms;

/// Records from one source hand-off, with when the oldest of them was received.
#[derive(Debug)]
pub struct WriteBatch {
    pub records: Vec<Record>,
    pub received: Instant,
    /// Completed once the commit holding these records (and everything before) returned.
    pub acks: Vec<AckToken>,
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
    acks: Vec<AckToken>,
}

impl Pending {
    fn add(&mut self, request: WriteRequest) {
        match request {
            WriteRequest::Records(b) => {
                self.oldest = Some(self.oldest.map_or(b.received, |o| o.min(b.received)));
                self.records.extend(b.records);
                self.acks.extend(b.acks);
            }
            WriteRequest::Cursor { sink, next_seq } => {
                let slot = self.cursors.entry(sink).or_insert(next_seq);
                *slot = (*slot).max(next_seq);
            }
        }
    }
}

/// How long a failing store is retried after shutdown began before pending records are given
/// up (they were never acknowledged).
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);

pub fn spawn(
    mut writer: StoreWriter,
    mut rx: mpsc::Receiver<WriteRequest>,
    hub: Hub,
    config: StoreConfig,
    health: Arc<Health>,
    runtime: Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let retention = Retention {
        max_age_ms: i64::try_from(config.retention_max_age_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        byte_budget: config.byte_budget_bytes,
        max_evictions_per_commit: config.batch_max_records.max(1000) * 4,
    };
    let linger = Duration::from_millis(config.commit_interval_ms);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let _runtime = runtime.enter();
            let mut pending = Pending::default();
            while let Some(first) = runtime.block_on(rx.recv()) {
                pending.add(first);
                let deadline = Instant::now() + linger;
                while pending.records.len() < config.batch_max_records {
                    match rx.try_recv() {
                        Ok(r) => pending.add(r),
                        Err(mpsc::error::TryRecvError::Empty) => {
                            let now = Instant::now();
                            if now >= deadline {
                                break;
                            }
                            match runtime.block_on(tokio::time::timeout(deadline - now, rx.recv()))
                            {
                                Ok(Some(r)) => pending.add(r),
                                Ok(None) | Err(_) => break,
                            }
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                }
                commit_with_retry(&mut writer, &mut pending, retention, &hub, &health, &rx);
            }
            tracing::info!("store writer stopped: all queued records committed");
        })
}

fn commit_with_retry(
    writer: &mut StoreWriter,
    pending: &mut Pending,
    retention: Retention,
    hub: &Hub,
    health: &Health,
    rx: &mpsc::Receiver<WriteRequest>,
) {
    if pending.records.is_empty() && pending.cursors.is_empty() {
        // Only barriers: everything queued before them is committed already.
        pending.oldest = None;
        pending.acks.drain(..).for_each(AckToken::complete);
        return;
    }
    let cursors: Vec<(&str, u64)> = pending
        .cursors
        .iter()
        .map(|(sink, next)| (&**sink, *next))
        .collect();
    let mut backoff = Duration::from_millis(100);
    let mut closed_since: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let count = pending.records.len();
        health.writer_entered_commit();
        let result = writer.append(&pending.records, &cursors, now_ms(), retention);
        health.writer_left_commit();
        match result {
            Ok(outcome) => {
                let elapsed = started.elapsed();
                metrics::histogram!(t::COMMIT_SECONDS).record(elapsed.as_secs_f64());
                metrics::histogram!(t::COMMIT_BATCH_RECORDS).record(count as f64);
                if let Some(oldest) = pending.oldest.take() {
                    metrics::histogram!(t::RECEIVE_TO_COMMIT_SECONDS)
                        .record(oldest.elapsed().as_secs_f64());
                }
                drop(cursors);
                pending.cursors.clear();
                let committed: Vec<Committed> = pending
                    .records
                    .drain(..)
                    .zip(outcome.first_seq..)
                    .map(|(record, seq)| Committed { seq, record })
                    .collect();
                let mut readings = 0u64;
                for c in &committed {
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
                if outcome.evicted_age > 0 {
                    metrics::counter!(t::STORE_EVICTED, "reason" => "age")
                        .increment(outcome.evicted_age);
                }
                if outcome.evicted_budget > 0 {
                    metrics::counter!(t::STORE_EVICTED, "reason" => "budget")
                        .increment(outcome.evicted_budget);
                }
                metrics::gauge!(t::STORE_BYTES).set(outcome.logical_bytes as f64);
                health
                    .store_bytes
                    .store(outcome.logical_bytes, std::sync::atomic::Ordering::Relaxed);
                health
                    .store_records_committed
                    .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
                health
                    .last_commit_ms
                    .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
                if health.set_store_ok() {
                    tracing::info!("store recovered: commits succeed again");
                    hub.publish(HubEvent::System(Arc::new(Alert::system(
                        "store",
                        Level::Warning,
                        "Store recovered: readings are being stored again".into(),
                    ))));
                }
                pending.acks.drain(..).for_each(AckToken::complete);
                if !committed.is_empty() {
                    hub.publish(HubEvent::Committed(committed.into()));
                }
                return;
            }
            Err(err) => {
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
                if is_fatal(&err) {
                    tracing::error!(error = %err, "store error is not retryable");
                }
                if err.needs_reopen() {
                    // redb poisons its handle after an I/O error; a fresh one writes again
                    // once the cause (e.g. a full disk) is gone.
                    if let Err(e) = writer.store().reopen() {
                        tracing::debug!(error = %e, "store reopen failed; will retry");
                    }
                }
                if rx.is_closed() {
                    let since = *closed_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > SHUTDOWN_RETRY {
                        tracing::error!(
                            records = count,
                            "giving up on unacknowledged records at shutdown: the store keeps failing"
                        );
                        pending.records.clear();
                        pending.cursors.clear();
                        pending.oldest = None;
                        pending.acks.clear();
                        return;
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn is_fatal(err: &StoreError) -> bool {
    matches!(err, StoreError::Corrupt { .. })
}
