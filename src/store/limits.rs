//! The writer's bounds: how much one commit may evict when it only works off a backlog, and
//! the free space it keeps on the store's file system.
//!
//! The byte budget bounds what the store holds; the watermark bounds what it may take from a
//! disk it shares with the OS, logs and other services. Below the watermark (or on a full
//! disk) for longer than the grace period, each commit first evicts so the store stops
//! growing, in the byte budget's order: telemetry, then status changes, alerts last.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::StoreConfig;

/// Bounds for the store writer, with documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreLimits {
    /// Most records one eviction-only commit removes while the store works off a backlog
    /// (a store over its budget at start, or making room on a full disk). Commits that add
    /// records evict whatever keeps them within the budget: they add at most
    /// `store.batch_max_records`, so that is bounded too.
    pub max_commit_evictions: usize,
    /// Free space kept on the store's file system. The effective watermark is the smaller
    /// of this and `min_free_percent` of the file system, so small partitions are not
    /// permanently "full".
    pub min_free_bytes: u64,
    pub min_free_percent: u8,
    /// How long free space may stay under the watermark (or the disk full) before the store
    /// evicts to make room: a disk filled for a moment by something else should not cost
    /// buffered telemetry. Ingest is held back (nothing acknowledged) while commits fail.
    pub disk_full_grace_ms: u64,
    /// Size of the reserve file (`edge-gateway.reserve`) kept next to the store, at most
    /// `min_free_percent` of the file system: redb needs free pages even to delete (copy on
    /// write), so on a disk already full the writer deletes the reserve, then evicts into
    /// the room it made. Recreated after the next commit that succeeds (see `reserve_size`).
    pub reserve_bytes: u64,
    /// Once shutdown began, how long a failing store is retried before unacknowledged
    /// records are given up; later batches get one attempt each, so stop ends in time.
    pub shutdown_retry_ms: u64,
}

impl From<&StoreConfig> for StoreLimits {
    fn from(c: &StoreConfig) -> StoreLimits {
        StoreLimits {
            max_commit_evictions: c.max_commit_evictions,
            min_free_bytes: c.min_free_bytes,
            min_free_percent: c.min_free_percent,
            disk_full_grace_ms: c.disk_full_grace_ms,
            reserve_bytes: c.reserve_bytes,
            shutdown_retry_ms: c.shutdown_retry_ms,
        }
    }
}

impl Default for StoreLimits {
    fn default() -> StoreLimits {
        StoreLimits::from(&StoreConfig::default())
    }
}

impl StoreLimits {
    pub(super) fn grace(&self) -> Duration {
        Duration::from_millis(self.disk_full_grace_ms)
    }

    /// What one round of making room on a full disk evicts from a log of `logical_bytes`: a
    /// quarter of the reserve, at least 64 KiB, and never more than a sixteenth of the log
    /// (a store under 1 MiB gives up a little at a time rather than most of itself).
    pub(super) fn room_step(&self, logical_bytes: u64) -> u64 {
        (self.reserve_bytes / 4)
            .max(64 * 1024)
            .min(logical_bytes / 16 + 1)
    }

    /// The free bytes to keep on a file system of `total` bytes.
    pub(super) fn watermark(&self, total: u64) -> u64 {
        let share = total / 100 * u64::from(self.min_free_percent.min(100));
        self.min_free_bytes.min(share)
    }
}

/// File name of the reserve inside the data directory.
pub const RESERVE_FILE: &str = "edge-gateway.reserve";

/// Free and total bytes of `dir`'s file system (free as an unprivileged user sees it).
fn space(dir: &Path) -> Option<(u64, u64)> {
    match rustix::fs::statvfs(dir) {
        Ok(s) => Some((
            s.f_bavail.saturating_mul(s.f_frsize),
            s.f_blocks.saturating_mul(s.f_frsize),
        )),
        Err(e) => {
            tracing::debug!(error = %e, dir = %dir.display(), "cannot read free space");
            None
        }
    }
}

/// The smallest reserve worth keeping: room for an eviction-only commit and a slice after it.
const MIN_RESERVE: u64 = 64 * 1024;

/// How big a reserve to create with `free` of `total` bytes free: the configured size (at most
/// the watermark) where that leaves the watermark free; on a disk already under it, half of
/// what is free. A full disk wedges a store without one for good: redb's file is sparse, its
/// free pages are mostly holes that need new blocks to be written, so not even an eviction
/// commits. The other half is left to the store file's own copy-on-write.
pub(super) fn reserve_size(limits: &StoreLimits, free: u64, total: u64) -> u64 {
    let size = limits.reserve_bytes.min(limits.watermark(total));
    let size = if free >= size + limits.watermark(total) {
        size
    } else {
        size.min(free / 2)
    };
    if size < MIN_RESERVE.min(limits.reserve_bytes) || size == 0 {
        0
    } else {
        size
    }
}

/// Creates the reserve file if it is missing (see [`reserve_size`]); the writer deletes it on
/// a full disk and calls this again once a commit succeeded. Written with real bytes so it
/// holds blocks.
pub(super) fn keep_reserve(dir: &Path, limits: &StoreLimits) {
    use std::io::Write;
    let path = dir.join(RESERVE_FILE);
    if path.exists() {
        return;
    }
    let Some((free, total)) = space(dir) else {
        return;
    };
    let size = reserve_size(limits, free, total);
    if size == 0 {
        return;
    }
    let written = std::fs::File::create(&path).and_then(|mut f| {
        let chunk = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    });
    if let Err(e) = written {
        tracing::debug!(error = %e, "cannot write the store's disk reserve");
        let _ = std::fs::remove_file(&path);
    }
}

/// Deletes the reserve file; true when there was one.
pub(super) fn release_reserve(dir: &Path) -> bool {
    std::fs::remove_file(dir.join(RESERVE_FILE)).is_ok()
}

/// Tracks disk pressure on the store's file system: since when free space has been under the
/// watermark, or commits failed for lack of space.
#[derive(Debug, Default)]
pub(super) struct DiskPressure {
    since: Option<Instant>,
    /// A commit failed with "no space left"; cleared by the next successful commit only (the
    /// errors in between, on a reopened handle, no longer say why).
    full: bool,
}

impl DiskPressure {
    /// Looks at free space on `dir`'s file system; true when the store has to make room now
    /// (under pressure for longer than the grace period).
    pub fn must_make_room(&mut self, dir: &Path, limits: &StoreLimits) -> bool {
        let low = self.full || under_watermark(dir, limits);
        if !low {
            self.since = None;
            return false;
        }
        self.since.get_or_insert_with(Instant::now).elapsed() >= limits.grace()
    }

    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// True when `dir`'s file system has less free space (for unprivileged users) than the
/// watermark. An unreadable file system counts as fine: the commit's own error will say.
fn under_watermark(dir: &Path, limits: &StoreLimits) -> bool {
    space(dir).is_some_and(|(free, total)| free < limits.watermark(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_the_smaller_of_bytes_and_share() {
        let l = StoreLimits::default();
        assert_eq!(l.watermark(32 << 30), 64 << 20);
        assert_eq!(l.watermark(100 << 20), 5 << 20);
        assert_eq!(l.watermark(0), 0);
    }

    #[test]
    fn a_reserve_is_kept_on_a_disk_under_the_watermark_too() {
        let l = StoreLimits::default();
        let gib = 1u64 << 30;
        assert_eq!(
            reserve_size(&l, 10 * gib, 32 * gib),
            8 << 20,
            "plenty of room"
        );
        // Under watermark + reserve (64 + 8 MiB free here): half of what is free.
        assert_eq!(reserve_size(&l, 20 << 20, 32 * gib), 8 << 20);
        assert_eq!(reserve_size(&l, 6 << 20, 32 * gib), 3 << 20);
        // A 24 MiB disk the store filled itself: the reserve it released, less what it used.
        assert_eq!(reserve_size(&l, 1_241_088, 24 << 20), 620_544);
        assert_eq!(
            reserve_size(&l, 100 * 1024, 24 << 20),
            0,
            "too little to help"
        );
        let none = StoreLimits {
            reserve_bytes: 0,
            ..l.clone()
        };
        assert_eq!(
            reserve_size(&none, 10 * gib, 32 * gib),
            0,
            "reserve_bytes = 0: none"
        );
        let small = StoreLimits {
            reserve_bytes: 16 * 1024,
            ..l
        };
        assert_eq!(
            reserve_size(&small, 10 * gib, 32 * gib),
            16 * 1024,
            "as configured"
        );
    }

    #[test]
    fn a_room_step_fits_any_log_size() {
        let l = StoreLimits::default();
        assert_eq!(
            l.room_step(256 << 20),
            2 << 20,
            "a quarter of the 8 MiB reserve"
        );
        assert_eq!(
            l.room_step(16 << 20),
            (1 << 20) + 1,
            "a sixteenth of the log"
        );
        // Under 1 MiB the sixteenth is below the 64 KiB floor (this used to panic).
        assert_eq!(l.room_step(100_000), 6_251);
        assert_eq!(l.room_step(0), 1);
        let none = StoreLimits {
            reserve_bytes: 0,
            ..l
        };
        assert_eq!(none.room_step(256 << 20), 64 * 1024);
    }
}
