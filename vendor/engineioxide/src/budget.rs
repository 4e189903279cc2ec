//! A bound on what all sessions hold together, queued or written but not yet sent (patched, see
//! PATCHES.md).
//!
//! Every entry of a session's internal channel is charged its size: its slot, plus its payload
//! when the entry is the payload's only holder (a packet encoded for this session alone). A
//! payload shared by many sessions (one broadcast) is one copy in memory and is not charged
//! per session. The websocket writer also charges what it has handed to the websocket and not
//! yet seen flushed. A charge is given back when the entry leaves the channel (sent, or dropped
//! with the session) or the write is flushed.
//!
//! Once the total reaches the limit, [`Socket::reserve`](crate::Socket::reserve) refuses a
//! session that already holds [`floor`](set_queue_budget) entries, exactly as if its own
//! channel were full (socketioxide reports `InternalChannelFull`), and websocket writers flush
//! every few kilobytes instead of letting the websocket buffer grow. The limit is process-wide:
//! socketioxide builds its engine configuration itself, so it cannot be a configuration field.
//! It is off (unlimited) until [`set_queue_budget`] is called.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static FLOOR: AtomicUsize = AtomicUsize::new(0);
static USED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Bounds what all sessions hold together to `limit_bytes` (see the module documentation); a
/// session holding fewer than `floor` entries is never refused, so every session can still
/// receive its acks and a few events while others hold the budget.
pub fn set_queue_budget(limit_bytes: usize, floor: usize) {
    LIMIT.store(limit_bytes, Relaxed);
    FLOOR.store(floor, Relaxed);
}

/// Bytes charged now.
pub fn queued_bytes() -> usize {
    USED.load(Relaxed)
}

/// The most bytes charged at once since the process started.
pub fn peak_queued_bytes() -> usize {
    PEAK.load(Relaxed)
}

/// How many reservations were refused because the budget was spent.
pub fn refused() -> u64 {
    REFUSED.load(Relaxed)
}

/// Whether the budget is spent.
pub(crate) fn spent() -> bool {
    USED.load(Relaxed) >= LIMIT.load(Relaxed)
}

/// Whether a session holding `held` entries may queue one more; counts a refusal.
pub(crate) fn admits(held: usize) -> bool {
    if held < FLOOR.load(Relaxed) || !spent() {
        return true;
    }
    REFUSED.fetch_add(1, Relaxed);
    false
}

pub(crate) fn charge(bytes: usize) {
    let now = USED.fetch_add(bytes, Relaxed) + bytes;
    if now > PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

pub(crate) fn discharge(bytes: usize) {
    USED.fetch_sub(bytes, Relaxed);
}

/// A charge held by a queued entry, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Charge(u32);

impl Charge {
    pub(crate) fn new(bytes: usize) -> Charge {
        let bytes = bytes.min(u32::MAX as usize);
        charge(bytes);
        Charge(bytes as u32)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        discharge(self.0 as usize);
    }
}
