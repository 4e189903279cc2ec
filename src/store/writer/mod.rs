//! The single store writer: two threads, the [stager](stager) that receives and numbers
//! records as they arrive, and the committer (this module) that turns what is staged into
//! group commits. Whatever arrives at once (a sweep that marks 300k devices offline is one
//! batch) is committed in slices of at most `store.batch_max_records`, each within the byte
//! budget.
//!
//! Every commit is durable (fsynced), and commits follow a cadence (flash wear, see
//! ARCHITECTURE.md): records are *staged* as they arrive (numbered, published on the hub and
//! readable by the catch-up reads) and committed once `store.durable_commit_interval_ms` has
//! passed since the last commit, at once for an urgent barrier (a source that cannot read on
//! until it completes), at `batch_max_records` staged records and at shutdown. A record is
//! accepted (PUBACK barriers, accepted counters, sinks) only once its commit returned.
//! Staging goes on while a commit waits for its fsync, so records reach dashboards without
//! waiting for the disk, and the next commit's records gather meanwhile.

mod pending;
mod stager;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::append::MAX_STAGED;
use super::{
    CommitOutcome, DiskPressure, Retention, StoreError, StoreLimits, StoreWriter, keep_reserve,
    release_reserve,
};
use crate::backoff::Backoff;
use crate::config::StoreConfig;
use crate::health::Health;
use crate::hub::{Hub, HubEvent};
use crate::ingest::AckToken;
use crate::record::{Alert, Level, Record, RecordKind};
use crate::telemetry as t;
use crate::time::now_ms;
use pending::{Pending, Slice};
use stager::{Queue, Stager};

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

/// The waits between attempts at a failing commit: 100 ms, doubling, at most 5 s.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Blocks the writer thread for `delay`, cut short when shutdown begins so the give-up
/// deadline starts at once.
fn wait_to_retry(delay: Duration, runtime: &Handle, stop: &CancellationToken) {
    runtime.block_on(async {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {}
        }
    });
}

/// Starts the writer's threads; the committer's handle is returned (it joins the stager).
/// `stop` is cancelled when shutdown begins: from then on a store that keeps failing is
/// retried for `limits.shutdown_retry_ms` only, so stop ends in time even while the pipeline
/// still waits to hand over records.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    writer: StoreWriter,
    rx: mpsc::Receiver<WriteRequest>,
    hub: Hub,
    config: StoreConfig,
    limits: StoreLimits,
    health: Arc<Health>,
    runtime: Handle,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let max_records = config.batch_max_records.max(1);
    let interval = Duration::from_millis(config.durable_commit_interval_ms);
    let mut committer = Committer {
        retention: retention(&config),
        linger: Duration::from_millis(config.commit_interval_ms),
        writer,
        hub,
        health,
        limits,
        runtime,
        stop,
        pressure: DiskPressure::default(),
        making_room: false,
        stopping_since: None,
        gave_up: false,
        cadence: Cadence::new(interval),
        max_records,
    };
    // The stager starts once the committer has prepared the store.
    let (start_tx, start_rx) = std::sync::mpsc::channel::<Stager>();
    let stager = std::thread::Builder::new()
        .name("store-stager".into())
        .spawn(move || {
            if let Ok(stager) = start_rx.recv() {
                stager.run(rx);
            }
        })?;
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let _runtime = committer.runtime.enter();
            let queue = Arc::new(committer.prepare_store());
            let start = Stager {
                queue: queue.clone(),
                store: committer.writer.store().clone(),
                hub: committer.hub.clone(),
                gateway_id: committer.writer.gateway_id().into(),
                publish: committer.cadence.staging,
                chunk: max_records,
            };
            if start_tx.send(start).is_ok() {
                committer.run(&queue);
            }
            if stager.join().is_err() {
                tracing::error!("store stager thread panicked");
            }
            committer.finish();
        })
}

fn retention(config: &StoreConfig) -> Retention {
    Retention {
        max_age_ms: i64::try_from(config.retention_max_age_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        byte_budget: config.byte_budget_bytes,
        max_evictions_per_commit: config.batch_max_records.max(1000) * 4,
        hold_budget: true,
    }
}

/// The writer thread's state between commits.
struct Committer {
    writer: StoreWriter,
    /// `store.commit_interval_ms`: how long a commit due for a barrier or the cadence waits
    /// for companions of its first record.
    linger: Duration,
    hub: Hub,
    health: Arc<Health>,
    /// As configured; the byte budget may be tightened per commit under disk pressure.
    retention: Retention,
    limits: StoreLimits,
    runtime: Handle,
    stop: CancellationToken,
    pressure: DiskPressure,
    /// Evicting to keep free space (announced once per episode).
    making_room: bool,
    /// When the writer first saw shutdown while a commit failed.
    stopping_since: Option<Instant>,
    /// Records were given up at shutdown: later ones get one attempt each.
    gave_up: bool,
    cadence: Cadence,
    max_records: usize,
}

/// Whether a commit is due.
enum Due {
    Now,
    /// Due after this wait, unless something changes first.
    After(Duration),
    /// Nothing waits.
    Idle,
}

/// When commits are made, and whether records are published before theirs.
struct Cadence {
    /// `store.durable_commit_interval_ms`; zero: every gathered batch is committed at once.
    interval: Duration,
    /// When the last commit began.
    last_commit: Instant,
    /// Records are published when staged (else once committed): the store has noted that a
    /// crash may leave `seq`s shown but never stored.
    staging: bool,
    /// When `edge_gateway_store_write_bytes_total` was last updated.
    write_bytes_at: Option<Instant>,
}

impl Cadence {
    fn new(interval: Duration) -> Cadence {
        Cadence {
            interval,
            last_commit: Instant::now(),
            staging: false,
            write_bytes_at: None,
        }
    }

    /// How long the writer may wait for work before the cadence's commit of `pending` is due.
    fn due_in(&self, pending: &Pending) -> Option<Duration> {
        (!pending.is_empty())
            .then(|| (self.last_commit + self.interval).saturating_duration_since(Instant::now()))
    }
}

impl Committer {
    /// Notes in the store that records may be shown before their commit; without that note
    /// (the store fails) records are published once committed.
    fn start_staging(&mut self) {
        if self.cadence.interval.is_zero() {
            return;
        }
        match self.writer.allow_staging() {
            Ok(()) => self.cadence.staging = true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot prepare the store for staging; records are published once committed")
            }
        }
    }

    /// Before the first record: a recovery notice, staging allowed, the disk reserve. Returns
    /// the queue the stager numbers from.
    fn prepare_store(&mut self) -> Queue {
        self.report_recovery();
        self.start_staging();
        // Written once, before records arrive, not by the first commit: 8 MiB of a store's
        // life, not of its first readings' wear figures.
        keep_reserve(self.dir(), &self.limits);
        Queue::new(self.writer.next_seq())
    }

    /// Commits as the cadence says until the stager closed the queue, then what is left.
    fn run(&mut self, queue: &Queue) {
        while self.wait_until_due(queue) {
            self.commit_all(queue);
        }
        self.commit_all(queue);
    }

    /// After the last commit: a clean close, unless records were given up.
    fn finish(&self) {
        if self.gave_up {
            tracing::warn!("store writer stopped; records were given up at shutdown");
        } else {
            self.writer.store().close_cleanly();
            tracing::info!("store writer stopped: all queued records committed");
        }
    }

    /// Waits until a commit is due (true) or the queue is closed (false). Meanwhile it
    /// completes the barriers whose records were committed before they arrived.
    fn wait_until_due(&mut self, queue: &Queue) -> bool {
        let mut state = queue.lock();
        loop {
            let settled = state.pending.settled_acks();
            if !settled.is_empty() {
                drop(state);
                self.complete(settled);
                state = queue.lock();
                continue;
            }
            if state.closed {
                return false;
            }
            let wait = match self.commit_due(&state.pending) {
                Due::Now => return true,
                Due::After(wait) => Some(wait),
                Due::Idle => None,
            };
            state = queue.wait(state, wait);
        }
    }

    /// Whether `pending` is committed now (see the module doc); a commit due for a barrier
    /// or the cadence first waits out `linger` after its oldest record.
    fn commit_due(&self, pending: &Pending) -> Due {
        let Some(wait) = self.cadence.due_in(pending) else {
            return Due::Idle;
        };
        if pending.len() >= self.max_records.min(MAX_STAGED as usize) || self.stop.is_cancelled() {
            return Due::Now;
        }
        if !wait.is_zero() && !pending.urgent() {
            return Due::After(wait);
        }
        let companions = pending.oldest().map_or(Duration::ZERO, |at| {
            self.linger.saturating_sub(at.elapsed())
        });
        if companions.is_zero() {
            Due::Now
        } else {
            Due::After(companions)
        }
    }

    /// Commits what is staged now, in slices (records staged meanwhile wait for the next
    /// commit: one commit per cadence, not one per record that arrives during an fsync).
    fn commit_all(&mut self, queue: &Queue) {
        self.cadence.last_commit = Instant::now();
        let mut left = None;
        loop {
            let slice = {
                let mut state = queue.lock();
                let left = *left.get_or_insert(state.pending.staged_len());
                state.pending.next_slice(self.max_records.min(left).max(1))
            };
            queue.notify();
            let Some(slice) = slice else { break };
            left = left.map(|l| l - slice.len());
            self.commit_with_retry(slice, queue);
            if left == Some(0) {
                break;
            }
        }
        let settled = queue.lock().pending.settled_acks();
        self.complete(settled);
    }

    /// After a commit: the write-bytes counter, read at most once a second.
    fn after_commit(&mut self) {
        metrics::counter!(t::STORE_DURABLE_COMMITS).increment(1);
        let stale = self
            .cadence
            .write_bytes_at
            .is_none_or(|at| at.elapsed() >= WRITE_BYTES_EVERY);
        if stale || self.stop.is_cancelled() {
            self.cadence.write_bytes_at = Some(Instant::now());
            if let Some(bytes) = process_write_bytes() {
                metrics::counter!(t::STORE_WRITE_BYTES).absolute(bytes);
            }
        }
    }

    /// A damaged file found at open: said once on the hub (health has it from the start).
    fn report_recovery(&self) {
        if let Some(aside) = self.writer.store().recovered_from() {
            let aside = aside.display();
            self.hub.publish(HubEvent::System(Arc::new(Alert::system(
                "store",
                Level::Critical,
                format!("Store file was damaged; moved it to {aside} and started an empty store"),
            ))));
        }
    }

    /// Commits `slice`, retrying until it succeeds or, once shutdown began, until
    /// `limits.shutdown_retry_ms` has passed. Nothing is acknowledged before its commit
    /// returned.
    fn commit_with_retry(&mut self, slice: Slice, queue: &Queue) {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            let retention = self.prepare();
            let started = Instant::now();
            match self.attempt(&slice, retention) {
                Ok(outcome) => {
                    self.pressure.set_full(false);
                    self.on_committed(slice, &outcome, started);
                    return;
                }
                Err(err) => {
                    if err.is_disk_full() {
                        self.pressure.set_full(true);
                    }
                    on_failed(&self.writer, &err, slice.len(), &self.hub, &self.health);
                    if self.give_up_at_shutdown(queue, slice.len()) {
                        let next_free = queue.lock().next_free;
                        self.writer.store().unstage(next_free);
                        return;
                    }
                    wait_to_retry(backoff.next_delay(), &self.runtime, &self.stop);
                }
            }
        }
    }

    fn dir(&self) -> &Path {
        self.writer
            .store()
            .path()
            .parent()
            .unwrap_or(Path::new("."))
    }

    /// Before a commit of records: works off a backlog over the byte budget, and under disk
    /// pressure makes room. Returns the retention for the commit itself.
    fn prepare(&mut self) -> Retention {
        let mut retention = self.retention;
        if self.writer.logical_bytes() > retention.byte_budget {
            self.evict_down_to(retention.byte_budget);
        }
        let dir = self
            .writer
            .store()
            .path()
            .parent()
            .unwrap_or(Path::new("."));
        let make_room = self.pressure.must_make_room(dir, &self.limits);
        if !self.pressure.is_full() {
            // Also while making room: the next full disk needs one to release.
            keep_reserve(dir, &self.limits);
        }
        if make_room != self.making_room {
            self.making_room = make_room;
            self.announce_pressure(make_room);
        }
        if make_room {
            if self.pressure.is_full() {
                // redb copies on write, so even deleting needs free pages: give up the
                // reserve, shrink in a commit of its own, and the records then fit into
                // the pages it freed.
                if release_reserve(dir) {
                    tracing::warn!("disk full: released the store's disk reserve to make room");
                }
                let now = self.writer.logical_bytes();
                self.evict_down_to(now.saturating_sub(self.limits.room_step(now)));
            }
            // New data replaces old: the store stops growing.
            retention.byte_budget = retention.byte_budget.min(self.writer.logical_bytes());
        }
        retention
    }

    fn announce_pressure(&self, making_room: bool) {
        if making_room {
            tracing::warn!(
                min_free_bytes = self.limits.min_free_bytes,
                "disk space low: the store evicts its oldest records to keep free space"
            );
            self.hub.publish(HubEvent::System(Arc::new(Alert::system(
                "store",
                Level::Warning,
                "Disk space low: evicting the oldest readings to keep free space".into(),
            ))));
        } else {
            tracing::info!("disk space back above the watermark: the store may grow again");
        }
    }

    /// Eviction-only commits of at most `limits.max_commit_evictions` each, until the log
    /// fits `target` or nothing more can go. A failure is left to the commit that follows.
    fn evict_down_to(&mut self, target: u64) {
        while self.writer.logical_bytes() > target {
            let retention = Retention {
                byte_budget: target,
                max_evictions_per_commit: self.limits.max_commit_evictions.max(1),
                hold_budget: false,
                ..self.retention
            };
            let started = Instant::now();
            match self.attempt(&Slice::empty(), retention) {
                Ok(outcome) => {
                    self.on_committed(Slice::empty(), &outcome, started);
                    if outcome.evicted_age + outcome.evicted_budget == 0 {
                        return;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "eviction-only commit failed");
                    if err.is_disk_full() {
                        self.pressure.set_full(true);
                    }
                    if err.needs_reopen()
                        && let Err(e) = self.writer.store().reopen()
                    {
                        tracing::debug!(error = %e, "store reopen failed; will retry");
                    }
                    return;
                }
            }
        }
    }

    /// One commit, marked in health so the watchdog sees a wedged writer. The records keep
    /// the `seq`s they were staged with.
    fn attempt(
        &mut self,
        slice: &Slice,
        retention: Retention,
    ) -> Result<CommitOutcome, StoreError> {
        let cursors: Vec<(&str, u64)> = slice
            .cursors
            .iter()
            .map(|(sink, next)| (&**sink, *next))
            .collect();
        let first = slice.first_seq().unwrap_or(self.writer.next_seq());
        self.health.writer_entered_commit();
        let result = self
            .writer
            .append_at(first, slice.records(), &cursors, now_ms(), retention);
        self.health.writer_left_commit();
        debug_assert!(result.as_ref().is_ok_and(|o| o.first_seq == first) || result.is_err());
        result
    }

    /// After the commit returned: its barriers, its figures, a recovery notice if the store
    /// had failed, then its records on the hub (unless they were published when staged).
    fn on_committed(&mut self, slice: Slice, outcome: &CommitOutcome, started: Instant) {
        let elapsed = started.elapsed();
        let count = slice.len();
        metrics::histogram!(t::COMMIT_SECONDS).record(elapsed.as_secs_f64());
        metrics::histogram!(t::COMMIT_BATCH_RECORDS).record(count as f64);
        if let Some(oldest) = slice.oldest {
            metrics::histogram!(t::RECEIVE_TO_COMMIT_SECONDS)
                .record(oldest.elapsed().as_secs_f64());
        }
        count_accepted(slice.records());
        self.after_commit();
        self.complete(slice.acks);
        let budget_reason = if self.making_room { "disk" } else { "budget" };
        record_store_figures(outcome, budget_reason, &self.health);
        if self.health.set_store_ok() {
            tracing::info!("store recovered: commits succeed again");
            self.hub.publish(HubEvent::System(Arc::new(Alert::system(
                "store",
                Level::Warning,
                "Store recovered: readings are being stored again".into(),
            ))));
        }
        if self.cadence.staging {
            self.writer.store().unstage(self.writer.next_seq());
        } else {
            for batch in slice.batches {
                self.hub.publish(HubEvent::Committed(batch));
            }
        }
    }

    /// Completes ack tokens after their commit, unless records were given up at shutdown:
    /// a later token would acknowledge (its source counts messages, not records) the lost
    /// ones too, so from then on none is completed and nothing more is acknowledged.
    fn complete(&self, acks: Vec<AckToken>) {
        if !self.gave_up {
            acks.into_iter().for_each(AckToken::complete);
        }
    }

    /// Once shutdown began, a store that keeps failing for `limits.shutdown_retry_ms` makes
    /// the writer drop what it holds (never acknowledged), and everything after it gets one
    /// attempt, so the pipeline can hand over its last batches and stop; true when it did.
    fn give_up_at_shutdown(&mut self, queue: &Queue, count: usize) -> bool {
        if !self.stop.is_cancelled() && !queue.lock().closed {
            return false;
        }
        let since = *self.stopping_since.get_or_insert_with(Instant::now);
        if !self.gave_up && since.elapsed() <= Duration::from_millis(self.limits.shutdown_retry_ms)
        {
            return false;
        }
        self.gave_up = true;
        tracing::error!(
            records = count,
            "giving up on unacknowledged records at shutdown: the store keeps failing"
        );
        true
    }
}

/// How often at most `edge_gateway_store_write_bytes_total` is read from the kernel.
const WRITE_BYTES_EVERY: Duration = Duration::from_secs(1);

/// Bytes this process caused to be written to storage (`write_bytes` of `/proc/self/io`:
/// counted when a page cache page is first dirtied, so rewriting a dirty page costs nothing,
/// as it costs the flash nothing). The store is the only file the gateway writes besides its
/// small reserve and clean-close mark. `None` where the kernel does not say.
fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Records that became durable: accepted (counted per kind, one registry update each).
fn count_accepted<'a>(records: impl IntoIterator<Item = &'a Record>) {
    let mut counts = [0u64; 4];
    for record in records {
        counts[match record.kind() {
            RecordKind::Reading => 0,
            RecordKind::Status => 1,
            RecordKind::Alert => 2,
            RecordKind::Alarm => 3,
        }] += 1;
    }
    for (kind, n) in ["reading", "status", "alert", "alarm"]
        .into_iter()
        .zip(counts)
    {
        if n > 0 {
            metrics::counter!(t::RECORDS_COMMITTED, "kind" => kind).increment(n);
        }
    }
    metrics::counter!(t::READINGS_ACCEPTED).increment(counts[0]);
}

/// `budget_reason` labels the budget's evictions: `budget`, or `disk` when the budget was
/// tightened to keep free space.
fn record_store_figures(outcome: &CommitOutcome, budget_reason: &'static str, health: &Health) {
    if outcome.evicted_age > 0 {
        metrics::counter!(t::STORE_EVICTED, "reason" => "age").increment(outcome.evicted_age);
    }
    if outcome.evicted_budget > 0 {
        metrics::counter!(t::STORE_EVICTED, "reason" => budget_reason)
            .increment(outcome.evicted_budget);
    }
    metrics::gauge!(t::STORE_BYTES).set(outcome.logical_bytes as f64);
    health
        .store_bytes
        .store(outcome.logical_bytes, Ordering::Relaxed);
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

fn is_fatal(err: &StoreError) -> bool {
    matches!(err, StoreError::Corrupt { .. })
}
