//! The single store writer: a dedicated thread that turns queued batches into group commits.
//! Whatever arrives at once (a sweep that marks 300k devices offline is one batch) is
//! committed in slices of at most `store.batch_max_records`, each within the byte budget.
//!
//! Two tiers of commit (flash wear, see ARCHITECTURE.md): every group commit is visible to
//! readers and published on the hub as soon as it returned, but only some are durable
//! (fsynced): one when `store.durable_commit_interval_ms` has passed since the last durable
//! one, at once for an urgent barrier (a source that cannot read on until it completes), at
//! [`MAX_UNFLUSHED`] records, under disk pressure and at shutdown. The others are kept in
//! memory by redb. A record is accepted (PUBACK barriers, accepted counters, sinks) only once
//! a durable commit holds it.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::append::MAX_UNFLUSHED;
use super::{
    CommitOutcome, DiskPressure, Retention, StoreError, StoreLimits, StoreWriter, keep_reserve,
    release_reserve,
};
use crate::backoff::Backoff;
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

/// Everything gathered for the next commits: records in arrival order (split into commits
/// of at most `store.batch_max_records`), and the newest cursor per sink.
#[derive(Default)]
struct Pending {
    records: VecDeque<Record>,
    cursors: BTreeMap<Arc<str>, u64>,
    oldest: Option<Instant>,
    /// Records added and records taken into slices so far, so each ack token goes with the
    /// slice holding the last record that arrived before it.
    added: u64,
    taken: u64,
    /// Ack tokens and the `added` count when each arrived.
    acks: VecDeque<(u64, AckToken)>,
}

impl Pending {
    fn add(&mut self, request: WriteRequest) {
        match request {
            WriteRequest::Records(b) => {
                self.oldest = Some(self.oldest.map_or(b.received, |o| o.min(b.received)));
                self.added += b.records.len() as u64;
                self.records.extend(b.records);
                let at = self.added;
                self.acks.extend(b.acks.into_iter().map(|ack| (at, ack)));
            }
            WriteRequest::Cursor { sink, next_seq } => {
                let slot = self.cursors.entry(sink).or_insert(next_seq);
                *slot = (*slot).max(next_seq);
            }
        }
    }

    /// The next commit: the first `max` records (in order, so per-device order and `seq`
    /// stay as received) and every cursor; `None` when nothing is left.
    fn next_slice(&mut self, max: usize) -> Option<Slice> {
        if self.records.is_empty() && self.cursors.is_empty() && self.acks.is_empty() {
            return None;
        }
        let n = self.records.len().min(max.max(1));
        self.taken += n as u64;
        let mut acks = Vec::new();
        while self.acks.front().is_some_and(|(at, _)| *at <= self.taken) {
            acks.extend(self.acks.pop_front().map(|(_, ack)| ack));
        }
        Some(Slice {
            records: self.records.drain(..n).collect(),
            cursors: std::mem::take(&mut self.cursors),
            oldest: self.oldest.take(),
            urgent: acks.iter().any(AckToken::is_urgent),
            acks,
            durable: false,
            replayed: 0,
        })
    }
}

/// What one commit holds.
struct Slice {
    records: Vec<Record>,
    cursors: BTreeMap<Arc<str>, u64>,
    oldest: Option<Instant>,
    /// PUBACK barriers completed once this commit is durable (see [`AckToken`]).
    acks: Vec<AckToken>,
    /// A barrier whose source waits for it: this commit is made durable.
    urgent: bool,
    /// Durable whatever the cadence says (a flush).
    durable: bool,
    /// The first `replayed` records were committed before, non-durably, and lost with a
    /// reopened handle: committed again under their old `seq`, not published again.
    replayed: usize,
}

impl Slice {
    /// The records of a commit that returned, numbered from `first_seq`.
    fn into_committed(self, first_seq: u64) -> Vec<Committed> {
        self.records
            .into_iter()
            .zip(first_seq..)
            .map(|(record, seq)| Committed { seq, record })
            .collect()
    }
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

/// Starts the writer thread. `stop` is cancelled when shutdown begins: from then on a store
/// that keeps failing is retried for `limits.shutdown_retry_ms` only, so stop ends in time
/// even while the pipeline still waits to hand over records.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    writer: StoreWriter,
    mut rx: mpsc::Receiver<WriteRequest>,
    hub: Hub,
    config: StoreConfig,
    limits: StoreLimits,
    health: Arc<Health>,
    runtime: Handle,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let linger = Duration::from_millis(config.commit_interval_ms);
    let max_records = config.batch_max_records.max(1);
    let durable_interval = Duration::from_millis(config.durable_commit_interval_ms);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let _runtime = runtime.enter();
            let mut committer = Committer {
                retention: retention(&config),
                writer,
                hub,
                health,
                limits,
                runtime: runtime.clone(),
                stop,
                pressure: DiskPressure::default(),
                making_room: false,
                stopping_since: None,
                gave_up: false,
                tiers: Tiers::new(durable_interval),
            };
            committer.report_recovery();
            committer.start_tiers();
            let mut pending = Pending::default();
            while let Some(first) = committer.next_request(&mut rx) {
                pending.add(first);
                gather(&runtime, &mut rx, &mut pending, linger, max_records);
                while let Some(slice) = pending.next_slice(max_records) {
                    committer.commit_with_retry(slice, &rx);
                }
            }
            committer.make_durable(&rx);
            if committer.gave_up {
                tracing::warn!("store writer stopped; records were given up at shutdown");
            } else {
                committer.writer.store().close_cleanly();
                tracing::info!("store writer stopped: all queued records committed");
            }
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

/// The writer thread's state between commits.
struct Committer {
    writer: StoreWriter,
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
    tiers: Tiers,
}

/// The durable tier: what non-durable commits hold until the next durable one.
struct Tiers {
    /// `store.durable_commit_interval_ms`; zero: every commit is durable.
    interval: Duration,
    last_durable: Instant,
    /// Records of the non-durable commits since the last durable one, to be committed again
    /// if the handle is reopened (which loses them), and counted as accepted once durable.
    unflushed: Vec<Record>,
    /// Barriers of those commits, completed by the next durable commit.
    waiting: Vec<AckToken>,
    /// Unflushed records lost with a reopened handle, committed again (durably) first.
    replay: Vec<Record>,
    /// The writer's state must be read back from the file before the next commit.
    reload: bool,
    /// When `edge_gateway_store_write_bytes_total` was last updated.
    write_bytes_at: Option<Instant>,
}

impl Tiers {
    fn new(interval: Duration) -> Tiers {
        Tiers {
            interval,
            last_durable: Instant::now(),
            unflushed: Vec::new(),
            waiting: Vec::new(),
            replay: Vec::new(),
            reload: false,
            write_bytes_at: None,
        }
    }

    /// Nothing waits for a durable commit.
    fn all_durable(&self) -> bool {
        self.unflushed.is_empty() && self.waiting.is_empty() && self.replay.is_empty()
    }

    fn due(&self) -> bool {
        self.last_durable.elapsed() >= self.interval
    }

    /// How long the writer may wait for work before the cadence's durable commit is due.
    fn due_in(&self) -> Option<Duration> {
        (!self.all_durable())
            .then(|| (self.last_durable + self.interval).saturating_duration_since(Instant::now()))
    }
}

impl Committer {
    /// Notes in the store that non-durable commits may follow; without that note (the store
    /// fails) every commit stays durable.
    fn start_tiers(&mut self) {
        if self.tiers.interval.is_zero() {
            return;
        }
        if let Err(e) = self.writer.allow_non_durable() {
            tracing::warn!(error = %e, "cannot prepare the store for non-durable commits; every commit is durable");
            self.tiers.interval = Duration::ZERO;
        }
    }

    /// The next request, or `None` once every sender is gone. While non-durable commits wait,
    /// it waits only until the cadence's durable commit is due, and makes it.
    fn next_request(&mut self, rx: &mut mpsc::Receiver<WriteRequest>) -> Option<WriteRequest> {
        loop {
            let Some(wait) = self.tiers.due_in() else {
                return self.runtime.block_on(rx.recv());
            };
            match self.runtime.block_on(tokio::time::timeout(wait, rx.recv())) {
                Ok(request) => return request,
                Err(_) => self.make_durable(rx),
            }
        }
    }

    /// A durable commit, if any non-durable one waits for it.
    fn make_durable(&mut self, rx: &mpsc::Receiver<WriteRequest>) {
        if !self.tiers.all_durable() {
            self.commit_with_retry(Slice::flush(), rx);
        }
    }

    /// Whether `slice` is committed durably (see the module doc).
    fn durable(&self, slice: &Slice, rx: &mpsc::Receiver<WriteRequest>) -> bool {
        let unflushed = self.tiers.unflushed.len() + slice.records.len();
        slice.durable
            || slice.urgent
            || self.tiers.interval.is_zero()
            || self.tiers.due()
            || !self.tiers.replay.is_empty()
            || unflushed as u64 >= MAX_UNFLUSHED
            || self.making_room
            || self.pressure.is_full()
            || rx.is_closed()
            || self.stop.is_cancelled()
    }

    /// Barriers with nothing new to commit: completed at once when everything before them is
    /// durable, else with the next durable commit (made now when urgent or due).
    fn barriers_only(&mut self, slice: Slice, rx: &mpsc::Receiver<WriteRequest>) {
        if self.tiers.all_durable() {
            self.complete(slice.acks);
            return;
        }
        let now = slice.urgent || self.durable(&slice, rx);
        self.tiers.waiting.extend(slice.acks);
        if now {
            self.make_durable(rx);
        }
    }

    /// After a failed commit: an I/O error poisons redb's handle, and reopening it loses the
    /// non-durable commits, so their records are committed again (under the same `seq`s, from
    /// the state read back from the file) before anything else.
    fn after_failure(&mut self, err: &StoreError) {
        if err.needs_reopen() && !self.tiers.unflushed.is_empty() {
            let mut lost = std::mem::take(&mut self.tiers.unflushed);
            lost.append(&mut self.tiers.replay);
            self.tiers.replay = lost;
            self.tiers.reload = true;
        }
    }

    /// Puts records to replay in front of `slice`; reads the writer's state back first.
    fn prepare_replay(&mut self, slice: &mut Slice) -> Result<(), StoreError> {
        if self.tiers.reload {
            self.writer.reload()?;
            self.tiers.reload = false;
        }
        if !self.tiers.replay.is_empty() {
            let replay = std::mem::take(&mut self.tiers.replay);
            slice.replayed += replay.len();
            slice.records.splice(0..0, replay);
        }
        Ok(())
    }

    /// After a durable commit: everything before it is accepted.
    fn on_durable(&mut self) {
        self.tiers.last_durable = Instant::now();
        metrics::counter!(t::STORE_DURABLE_COMMITS).increment(1);
        count_accepted(&self.tiers.unflushed);
        self.tiers.unflushed.clear();
        let waiting = std::mem::take(&mut self.tiers.waiting);
        self.complete(waiting);
        let stale = self
            .tiers
            .write_bytes_at
            .is_none_or(|at| at.elapsed() >= WRITE_BYTES_EVERY);
        if stale || self.stop.is_cancelled() {
            self.tiers.write_bytes_at = Some(Instant::now());
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
    fn commit_with_retry(&mut self, mut slice: Slice, rx: &mpsc::Receiver<WriteRequest>) {
        if slice.is_only_barriers() && self.tiers.replay.is_empty() {
            self.barriers_only(slice, rx);
            return;
        }
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            let retention = self.prepare();
            let started = Instant::now();
            let result = self
                .prepare_replay(&mut slice)
                .and_then(|()| self.attempt(&slice, retention, self.durable(&slice, rx)));
            match result {
                Ok((outcome, durable)) => {
                    self.pressure.set_full(false);
                    self.on_committed(slice, &outcome, started, durable);
                    return;
                }
                Err(err) => {
                    if err.is_disk_full() {
                        self.pressure.set_full(true);
                    }
                    self.after_failure(&err);
                    on_failed(
                        &self.writer,
                        &err,
                        slice.records.len(),
                        &self.hub,
                        &self.health,
                    );
                    if self.give_up_at_shutdown(rx, slice.records.len()) {
                        return;
                    }
                    wait_to_retry(backoff.next_delay(), &self.runtime, &self.stop);
                }
            }
        }
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
        if !make_room {
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
                let step = (self.limits.reserve_bytes / 4).clamp(64 * 1024, now / 16 + 1);
                self.evict_down_to(now.saturating_sub(step));
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
            if !self.tiers.replay.is_empty() {
                // Lost records go back first, in the commit that follows.
                return;
            }
            // Durable: a non-durable commit cannot reuse the pages it frees.
            let result = self
                .prepare_replay(&mut Slice::empty())
                .and_then(|()| self.attempt(&Slice::empty(), retention, true));
            match result {
                Ok((outcome, durable)) => {
                    self.on_committed(Slice::empty(), &outcome, started, durable);
                    if outcome.evicted_age + outcome.evicted_budget == 0 {
                        return;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "eviction-only commit failed");
                    if err.is_disk_full() {
                        self.pressure.set_full(true);
                    }
                    self.after_failure(&err);
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

    /// One commit, marked in health so the watchdog sees a wedged writer; with whether it was
    /// durable.
    fn attempt(
        &mut self,
        slice: &Slice,
        retention: Retention,
        durable: bool,
    ) -> Result<(CommitOutcome, bool), StoreError> {
        let cursors: Vec<(&str, u64)> = slice
            .cursors
            .iter()
            .map(|(sink, next)| (&**sink, *next))
            .collect();
        self.health.writer_entered_commit();
        let result =
            self.writer
                .append_with(&slice.records, &cursors, now_ms(), retention, durable);
        self.health.writer_left_commit();
        result.map(|outcome| (outcome, durable))
    }

    /// After the commit returned: its barriers (completed if it is durable), its figures, a
    /// recovery notice if the store had failed, then the committed records on the hub.
    fn on_committed(
        &mut self,
        mut slice: Slice,
        outcome: &CommitOutcome,
        started: Instant,
        durable: bool,
    ) {
        self.tiers.waiting.extend(std::mem::take(&mut slice.acks));
        let replayed = slice.replayed;
        let elapsed = started.elapsed();
        let count = slice.records.len();
        metrics::histogram!(t::COMMIT_SECONDS).record(elapsed.as_secs_f64());
        metrics::histogram!(t::COMMIT_BATCH_RECORDS).record(count as f64);
        if let Some(oldest) = slice.oldest {
            metrics::histogram!(t::RECEIVE_TO_COMMIT_SECONDS)
                .record(oldest.elapsed().as_secs_f64());
        }
        let committed = slice.into_committed(outcome.first_seq);
        if durable {
            count_accepted(committed.iter().map(|c| &c.record));
            self.on_durable();
        } else {
            self.tiers
                .unflushed
                .extend(committed.iter().map(|c| c.record.clone()));
        }
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
        if committed.len() > replayed {
            let fresh: Vec<Committed> = committed.into_iter().skip(replayed).collect();
            self.hub.publish(HubEvent::Committed(fresh.into()));
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
    fn give_up_at_shutdown(&mut self, rx: &mpsc::Receiver<WriteRequest>, count: usize) -> bool {
        if !rx.is_closed() && !self.stop.is_cancelled() {
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

impl Slice {
    fn empty() -> Slice {
        Slice {
            records: Vec::new(),
            cursors: BTreeMap::new(),
            oldest: None,
            acks: Vec::new(),
            urgent: false,
            durable: false,
            replayed: 0,
        }
    }

    /// An empty durable commit: makes the non-durable ones before it durable.
    fn flush() -> Slice {
        Slice {
            durable: true,
            ..Slice::empty()
        }
    }

    fn is_only_barriers(&self) -> bool {
        self.records.is_empty() && self.cursors.is_empty() && !self.durable
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

/// Records that became durable: accepted.
fn count_accepted<'a>(records: impl IntoIterator<Item = &'a Record>) {
    let mut readings = 0u64;
    for record in records {
        let kind = match record.kind() {
            RecordKind::Reading => {
                readings += 1;
                "reading"
            }
            RecordKind::Status => "status",
            RecordKind::Alert => "alert",
            RecordKind::Alarm => "alarm",
        };
        metrics::counter!(t::RECORDS_COMMITTED, "kind" => kind).increment(1);
    }
    metrics::counter!(t::READINGS_ACCEPTED).increment(readings);
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
