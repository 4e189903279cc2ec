//! The redb store: group commit, queueing and retention.

use serde::Deserialize;

use super::{Check, ConfigError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Most records in one redb commit.
    pub batch_max_records: usize,
    /// Longest a record waits for companions before the writer takes it (stages it, or
    /// commits it when commits are due).
    pub commit_interval_ms: u64,
    /// Least time between (durable, fsynced) commits while records arrive: records are shown
    /// at once (dashboards, the subscriber port), but PUBACKs, accepted counters, sinks and
    /// history wait for their commit. Fewer commits write less to flash. 0: every gathered
    /// batch is committed at once. A device at its in-flight cap makes the commit come at once.
    pub durable_commit_interval_ms: u64,
    /// Records queued for the writer before ingest applies back-pressure.
    pub queue_capacity: usize,
    /// Records older than this are evicted.
    pub retention_max_age_secs: u64,
    /// Logical bytes the store may hold before the oldest records are evicted.
    pub byte_budget_bytes: u64,
    /// Free space kept on the store's file system (the smaller of this and
    /// `min_free_percent`): below it the store evicts instead of filling the disk.
    pub min_free_bytes: u64,
    pub min_free_percent: u8,
    /// How long low or no disk space lasts before the store evicts to make room.
    pub disk_full_grace_ms: u64,
    /// A reserve file deleted on a full disk so redb has pages to evict with; 0 = none.
    pub reserve_bytes: u64,
    /// Most records one eviction-only commit removes while working off a backlog.
    pub max_commit_evictions: usize,
    /// After stop begins, how long a failing store is retried before unacknowledged records
    /// are given up (the unit's `TimeoutStopSec` is 30 s).
    pub shutdown_retry_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            batch_max_records: 4_000,
            commit_interval_ms: 2,
            durable_commit_interval_ms: 400,
            queue_capacity: 16_384,
            retention_max_age_secs: 30 * 24 * 3600,
            byte_budget_bytes: 256 * 1024 * 1024,
            min_free_bytes: 64 * 1024 * 1024,
            min_free_percent: 5,
            disk_full_grace_ms: 3_000,
            reserve_bytes: 8 * 1024 * 1024,
            max_commit_evictions: 16_000,
            shutdown_retry_ms: 5_000,
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.batch_max_records) {
            return Err(check.fail("store.batch_max_records", "must be between 1 and 100000"));
        }
        check.positive("store.queue_capacity", self.queue_capacity as u64)?;
        if self.durable_commit_interval_ms > 10_000 {
            return Err(check.fail(
                "store.durable_commit_interval_ms",
                "must be at most 10000 (PUBACKs wait for it)",
            ));
        }
        check.positive("store.retention_max_age_secs", self.retention_max_age_secs)?;
        if self.byte_budget_bytes < 1024 * 1024 {
            return Err(check.fail(
                "store.byte_budget_bytes",
                "must be at least 1 MiB (1048576)",
            ));
        }
        if self.min_free_percent > 100 {
            return Err(check.fail("store.min_free_percent", "must be from 0 to 100"));
        }
        check.positive(
            "store.max_commit_evictions",
            self.max_commit_evictions as u64,
        )?;
        if self.shutdown_retry_ms > 20_000 {
            return Err(check.fail(
                "store.shutdown_retry_ms",
                "must be at most 20000 (stop must end within systemd's TimeoutStopSec=30)",
            ));
        }
        Ok(())
    }
}
