//! The redb store: group commit, queueing and retention.

use serde::Deserialize;

use super::{Check, ConfigError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Most records in one redb commit.
    pub batch_max_records: usize,
    /// Longest a record waits for companions before its commit starts.
    pub commit_interval_ms: u64,
    /// Records queued for the writer before ingest applies back-pressure.
    pub queue_capacity: usize,
    /// Records older than this are evicted.
    pub retention_max_age_secs: u64,
    /// Logical bytes the store may hold before the oldest records are evicted.
    pub byte_budget_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            batch_max_records: 4_000,
            commit_interval_ms: 2,
            queue_capacity: 16_384,
            retention_max_age_secs: 30 * 24 * 3600,
            byte_budget_bytes: 256 * 1024 * 1024,
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.batch_max_records) {
            return Err(check.fail("store.batch_max_records", "must be between 1 and 100000"));
        }
        check.positive("store.queue_capacity", self.queue_capacity as u64)?;
        check.positive("store.retention_max_age_secs", self.retention_max_age_secs)?;
        if self.byte_budget_bytes < 1024 * 1024 {
            return Err(check.fail(
                "store.byte_budget_bytes",
                "must be at least 1 MiB (1048576)",
            ));
        }
        Ok(())
    }
}
