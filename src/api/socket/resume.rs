//! Resume from `seq`: a dashboard that reconnects with the last `seq` it saw (`auth.after`, or
//! the `after` query parameter for socket.io-client v2) first gets every stored record it
//! missed in its rooms, in order, then live events, with no gap.
//!
//! While a client resumes, the rooms it subscribes to are held back: a worker replays the
//! store from `after` to that client alone, filtered by those rooms, paced, in chunks, waiting
//! when the client's buffer is full (a slow reader slows only itself). Once it is close to
//! live it takes the emitter's gate (the emitter holds it while it emits a batch, and keeps
//! there the last `seq` it emitted), sends the few records between its cursor and that `seq`,
//! and joins the rooms: every later record reaches the client through its rooms. Records the
//! worker read before the emitter broadcast them may come twice; the client drops them by
//! `seq`. Replay starts at the first subscription, so rooms joined in the same breath (as the
//! reference client does on `connect`) are all replayed.
//!
//! Relay mode (see `relay`): records carry their origin's `gatewayId` and `seq`, which differ
//! from this replica's own `seq`, so a dashboard that fails over to another replica resumes
//! with a map `{gatewayId: seq}` of the last `seq` it saw from each gateway (`auth.after`, or
//! `after=` URL-encoded JSON in the query). The replica replays the newest
//! `resume_max_records` of its store, skipping what the map says the client has; records
//! without an origin `seq` cannot be matched and are replayed if in the window.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketioxide::SendError;
use socketioxide::SocketError;
use socketioxide::extract::SocketRef;

use super::{ApiState, Room, routes};
use crate::store::StoredRecord;
use crate::telemetry as t;

/// Records per store read, at most.
const CHUNK: usize = 500;
/// Records per store read, at least: a worker whose client filled its buffer after `n` records
/// reads `2 n` next (doubling again while they all go), so a client that takes a few at a time
/// (all buffers together full, see `socketio.total_buffer_bytes`) does not cost a read of
/// `CHUNK` records for every few it is sent.
const MIN_CHUNK: usize = 16;
/// The most records the handoff sends while the emitter waits; further behind, keep replaying.
const HANDOFF_MAX: u64 = 2_000;
/// How long a worker first waits for a full client buffer to drain (after one yield, which is
/// often enough); it doubles up to `FULL_WAIT_MAX` while the client reads nothing (a stalled
/// client costs a wake-up every 50 ms until the Engine.IO heartbeat, whose ping no longer
/// fits, closes it).
const FULL_WAIT: Duration = Duration::from_millis(1);
const FULL_WAIT_MAX: Duration = Duration::from_millis(50);

/// How many replaying clients may hold a chunk of records read from the store at once: with
/// 10,000 clients moved to a replay after an overload, a chunk each would be gigabytes. A
/// worker gives its chunk and its slot back as soon as its client's buffer is full, and reads
/// again from its cursor when the client has room, so a stalled client holds no slot.
const REPLAY_CHUNKS: usize = 4;

/// The last `seq` the emitter broadcast, under the lock it holds while it emits.
pub type LiveGate = Arc<tokio::sync::Mutex<u64>>;

/// The slots for store chunks held by replay workers (`REPLAY_CHUNKS`).
#[derive(Clone)]
pub struct ReplayChunks(Arc<tokio::sync::Semaphore>);

impl Default for ReplayChunks {
    fn default() -> Self {
        ReplayChunks(Arc::new(tokio::sync::Semaphore::new(REPLAY_CHUNKS)))
    }
}

/// A resuming client's cursor and the rooms held back until its replay caught up.
pub struct Resume {
    after: u64,
    /// Relay mode: the last origin `seq` the client saw per gateway.
    origins: Option<HashMap<String, u64>>,
    inner: Mutex<Held>,
}

/// Where a client resumes from: this store's `seq`, or per origin gateway (relay mode).
#[derive(Debug, Clone, PartialEq)]
pub enum After {
    Seq(u64),
    Origins(HashMap<String, u64>),
}

#[derive(Default)]
struct Held {
    rooms: Vec<Room>,
    started: bool,
    done: bool,
}

/// `after` from the handshake: a number, a string of digits, or an object of gateway → seq.
pub fn after_of(value: Option<&Value>) -> Option<After> {
    match value? {
        Value::Number(n) => n.as_u64().map(After::Seq),
        Value::String(s) => s.parse().ok().map(After::Seq),
        Value::Object(map) => {
            let origins: Option<HashMap<String, u64>> = map
                .iter()
                .take(MAX_ORIGINS)
                .map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect();
            origins.map(After::Origins)
        }
        _ => None,
    }
}

/// Most gateways in a resume map (a client cannot make us hold an unbounded one).
const MAX_ORIGINS: usize = 1_024;

/// The `after` query parameter (socket.io-client v2 has no auth payload): digits, or a
/// URL-encoded JSON object of gateway → seq.
pub fn after_in_query(query: Option<&str>) -> Option<After> {
    let raw = query?.split('&').find_map(|kv| kv.strip_prefix("after="))?;
    if let Ok(seq) = raw.parse() {
        return Some(After::Seq(seq));
    }
    let text = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    after_of(Some(&value)).filter(|a| matches!(a, After::Origins(_)))
}

impl Resume {
    pub fn new(after: After) -> Arc<Resume> {
        let (after, origins) = match after {
            After::Seq(seq) => (seq, None),
            After::Origins(map) => (0, Some(map)),
        };
        Arc::new(Resume {
            after,
            origins,
            inner: Mutex::new(Held::default()),
        })
    }

    /// Whether the client still lacks `r` (always, unless its origin map says it has it).
    fn lacks(&self, r: &StoredRecord) -> bool {
        let Some(origins) = &self.origins else {
            return true;
        };
        let gateway = r.json.get("gatewayId").and_then(Value::as_str);
        let seq = r.json.get("seq").and_then(Value::as_u64);
        match (gateway.and_then(|g| origins.get(g)), seq) {
            (Some(&seen), Some(seq)) => seq > seen,
            _ => true,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.lock().expect("resume lock poisoned")
    }

    /// Holds `room` back if the replay has not handed over yet; true when held. The first held
    /// room starts the worker.
    pub fn hold(self: &Arc<Self>, s: &SocketRef, state: &ApiState, room: Room) -> bool {
        let mut held = self.held();
        if held.done {
            return false;
        }
        if !held.rooms.contains(&room) {
            held.rooms.push(room);
        }
        if !held.started {
            held.started = true;
            tokio::spawn(replay(s.clone(), state.clone(), self.clone()));
        }
        true
    }

    /// Forgets a held room (`unsubscribe` during the replay).
    pub fn release(&self, room: &str) {
        self.held().rooms.retain(|r| r != room);
    }

    fn rooms(&self) -> HashSet<Room> {
        self.held().rooms.iter().cloned().collect()
    }

    /// Ends holding: the rooms to join now; later subscriptions join directly.
    fn finish(&self) -> Vec<Room> {
        let mut held = self.held();
        held.done = true;
        std::mem::take(&mut held.rooms)
    }
}

/// A client whose buffer was full for record `seq`: it leaves its rooms, so nothing more
/// queues up for it, and is replayed from `seq` as it reads again, like a client that
/// reconnected with `after = seq - 1` (it loses nothing the store still holds). A client
/// already replaying only misses events sent to everyone that are not stored (counted).
pub fn overflowed(s: &SocketRef, state: &ApiState, seq: u64) {
    if let Some(r) = s.extensions.get::<Arc<Resume>>()
        && !r.held().done
    {
        metrics::counter!(t::SOCKETIO_DROPPED, "reason" => "replaying").increment(1);
        return;
    }
    metrics::counter!(t::SOCKETIO_OVERFLOWS).increment(1);
    let resume = Resume::new(After::Seq(seq.saturating_sub(1)));
    {
        let mut held = resume.held();
        held.rooms = s.rooms();
        held.started = true;
    }
    s.leave_all();
    s.extensions.insert(resume.clone());
    tracing::debug!(sid = %s.id, seq, "client buffer full; replaying to it from the store");
    tokio::spawn(replay(s.clone(), state.clone(), resume));
}

enum Handoff {
    Done,
    Behind(u64),
}

struct Closed;

async fn replay(s: SocketRef, state: ApiState, resume: Arc<Resume>) {
    let started = Instant::now();
    match replay_until_live(&s, &state, &resume).await {
        Ok((cursor, sent)) => {
            let _ = s.emit("resume:done", &json!({"seq": cursor}));
            tracing::debug!(sid = %s.id, after = resume.after, sent, elapsed = ?started.elapsed(), "resume done");
        }
        Err(Closed) => tracing::debug!(sid = %s.id, "client left during its replay"),
    }
}

/// Replays until handed over; (the cursor at handoff, records sent).
async fn replay_until_live(
    s: &SocketRef,
    state: &ApiState,
    resume: &Resume,
) -> Result<(u64, u64), Closed> {
    let config = &state.config.socketio;
    let mut cursor = start_cursor(state, resume).await?;
    let mut pace = Pace::new(config.resume_records_per_sec);
    let mut sent = 0u64;
    let mut first = true;
    let mut want = CHUNK;
    loop {
        let slot = state.replay_chunks.0.acquire().await.map_err(|_| Closed)?;
        let chunk = read(state, cursor + 1, want).await?;
        if first && resume.origins.is_none() {
            tell_truncated(s, resume.after, chunk.first().map(|r| r.seq))?;
        }
        first = false;
        let n = chunk.len();
        let (records, events) = send_chunk(s, chunk, slot, resume).await?;
        sent += events;
        if let Some(&last) = records.last() {
            cursor = last;
        }
        metrics::counter!(t::SOCKETIO_REPLAYED).increment(records.len() as u64);
        pace.wait(records.len() as u64).await;
        let asked = want;
        want = next_chunk(want, n, records.len());
        if records.len() == n && n < asked {
            match handoff(s, state, resume, cursor).await? {
                Handoff::Done => return Ok((cursor, sent)),
                Handoff::Behind(c) => cursor = c,
            }
        }
    }
}

/// The size of the next store read after `went` of the `read` records went to the client
/// (all, or until its buffer filled) from a read of `want`: see `MIN_CHUNK`.
fn next_chunk(want: usize, read: usize, went: usize) -> usize {
    let base = if went < read { went } else { want };
    (base * 2).clamp(MIN_CHUNK, CHUNK)
}

/// Sends a chunk until the client's buffer is full; then gives the chunk and its slot back,
/// waits until the record at hand is sent and stops there (the caller reads on from it).
/// (the `seq`s sent, events sent)
async fn send_chunk(
    s: &SocketRef,
    chunk: Vec<StoredRecord>,
    slot: tokio::sync::SemaphorePermit<'_>,
    resume: &Resume,
) -> Result<(Vec<u64>, u64), Closed> {
    let rooms = &resume.rooms();
    let mut seqs = Vec::with_capacity(chunk.len());
    let mut events = 0;
    let mut chunk = chunk.into_iter();
    for r in chunk.by_ref() {
        if !resume.lacks(&r) {
            seqs.push(r.seq);
            continue;
        }
        let (n, full) = send_now(s, &r, rooms)?;
        events += n;
        if full {
            drop(chunk);
            drop(slot);
            events += send(s, &r, rooms, n as usize).await?;
            seqs.push(r.seq);
            return Ok((seqs, events));
        }
        seqs.push(r.seq);
    }
    Ok((seqs, events))
}

/// `after`, unless more than `resume_max_records` records follow it (then only the newest
/// that many are replayed) or it lies beyond what this store ever held (a store recreated
/// after damage): then from the oldest of the newest `resume_max_records`.
/// A client resuming by origin map starts at the oldest of the newest `resume_max_records`.
async fn start_cursor(state: &ApiState, resume: &Resume) -> Result<u64, Closed> {
    let after = resume.after;
    let store = state.store.clone();
    let next = tokio::task::spawn_blocking(move || store.live_next_seq())
        .await
        .map_err(|_| Closed)?
        .map_err(|e| {
            tracing::warn!(error = %e, "resume: cannot read the store");
            Closed
        })?;
    let newest = next.saturating_sub(1);
    let max = state.config.socketio.resume_max_records;
    if after > newest || newest - after > max || resume.origins.is_some() {
        return Ok(newest.saturating_sub(max));
    }
    Ok(after)
}

/// Tells the client that records after its `after` are no longer held (or never were).
fn tell_truncated(s: &SocketRef, after: u64, first: Option<u64>) -> Result<(), Closed> {
    let Some(oldest) = first.filter(|&f| f != after + 1) else {
        return Ok(());
    };
    metrics::counter!(t::SOCKETIO_RESUME_TRUNCATED).increment(1);
    s.emit(
        "resume:truncated",
        &json!({"after": after, "oldestSeq": oldest}),
    )
    .map_err(|_| Closed)
}

async fn read(state: &ApiState, from: u64, max: usize) -> Result<Vec<StoredRecord>, Closed> {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.read_from(from, max)).await {
        Ok(Ok(records)) => Ok(records),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "resume: store read failed; the client resumes live only");
            Err(Closed)
        }
        Err(_) => Err(Closed),
    }
}

/// The record's events for this client's rooms while its buffer has room: (how many were
/// sent, whether it filled before the last).
fn send_now(s: &SocketRef, r: &StoredRecord, rooms: &HashSet<Room>) -> Result<(u64, bool), Closed> {
    let mut n = 0;
    for event in mine(r, rooms) {
        match s.emit(event, &r.json) {
            Ok(()) => n += 1,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => return Ok((n, true)),
            Err(_) => return Err(Closed),
        }
    }
    Ok((n, false))
}

/// The record's events for this client's rooms after the first `skip`, waiting while its
/// buffer is full; how many.
async fn send(
    s: &SocketRef,
    r: &StoredRecord,
    rooms: &HashSet<Room>,
    skip: usize,
) -> Result<u64, Closed> {
    let mut n = 0;
    for event in mine(r, rooms).skip(skip) {
        let mut wait = Duration::ZERO;
        loop {
            match s.emit(event, &r.json) {
                Ok(()) => break,
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    if wait.is_zero() {
                        tokio::task::yield_now().await;
                        wait = FULL_WAIT;
                    } else {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(FULL_WAIT_MAX);
                    }
                }
                Err(_) => return Err(Closed),
            }
        }
        n += 1;
    }
    Ok(n)
}

/// The events of `r` this client would have had live in `rooms`.
fn mine<'a>(
    r: &'a StoredRecord,
    rooms: &'a HashSet<Room>,
) -> impl Iterator<Item = &'static str> + 'a {
    routes(r.kind, r.device_id.as_deref())
        .iter()
        .filter(move |(to, _)| to.reaches(r.device_id.as_deref(), rooms))
        .map(|&(_, event)| event)
}

/// Under the emitter's gate: the records up to what it broadcast, then the rooms. A client
/// whose buffer fills meanwhile is not waited for (the emitter is paused): it gets `Behind`.
async fn handoff(
    s: &SocketRef,
    state: &ApiState,
    resume: &Resume,
    mut cursor: u64,
) -> Result<Handoff, Closed> {
    let emitted = state.live.lock().await;
    if *emitted > cursor + HANDOFF_MAX {
        return Ok(Handoff::Behind(cursor));
    }
    if *emitted > cursor {
        let rooms = resume.rooms();
        let rest = read(state, cursor + 1, (*emitted - cursor) as usize).await?;
        for r in rest.iter().take_while(|r| r.seq <= *emitted) {
            for event in mine(r, &rooms).filter(|_| resume.lacks(r)) {
                match s.emit(event, &r.json) {
                    Ok(()) => {}
                    Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                        return Ok(Handoff::Behind(cursor));
                    }
                    Err(_) => return Err(Closed),
                }
            }
            cursor = r.seq;
        }
    }
    for room in resume.finish() {
        s.join(room);
    }
    drop(emitted);
    Ok(Handoff::Done)
}

/// Keeps a replay under `per_sec` records per second.
struct Pace {
    per_sec: u64,
    start: Instant,
    count: u64,
}

impl Pace {
    fn new(per_sec: u64) -> Pace {
        Pace {
            per_sec,
            start: Instant::now(),
            count: 0,
        }
    }

    async fn wait(&mut self, n: u64) {
        self.count += n;
        if self.per_sec == 0 {
            tokio::task::yield_now().await;
            return;
        }
        let due = self.start + Duration::from_secs_f64(self.count as f64 / self.per_sec as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_takes_a_few_at_a_time_is_read_a_few_at_a_time() {
        assert_eq!(next_chunk(CHUNK, CHUNK, CHUNK), CHUNK);
        assert_eq!(next_chunk(CHUNK, CHUNK, 9), 18);
        assert_eq!(next_chunk(18, 18, 18), 36);
        assert_eq!(
            next_chunk(36, 20, 20),
            72,
            "a short read (the store's end) keeps growing"
        );
        assert_eq!(next_chunk(16, 16, 1), MIN_CHUNK);
        assert_eq!(next_chunk(400, 400, 400), CHUNK);
    }

    #[test]
    fn after_from_auth_and_query() {
        assert_eq!(after_of(Some(&json!(42))), Some(After::Seq(42)));
        assert_eq!(after_of(Some(&json!("42"))), Some(After::Seq(42)));
        assert_eq!(after_of(Some(&json!(-1))), None);
        assert_eq!(after_of(Some(&json!("x"))), None);
        assert_eq!(after_of(None), None);
        assert_eq!(
            after_in_query(Some("EIO=3&after=7&t=x")),
            Some(After::Seq(7))
        );
        assert_eq!(after_in_query(Some("EIO=3&after=")), None);
        assert_eq!(after_in_query(None), None);
        let map = HashMap::from([("gw-a".to_string(), 5), ("gw-b".to_string(), 9)]);
        assert_eq!(
            after_of(Some(&json!({"gw-a": 5, "gw-b": 9}))),
            Some(After::Origins(map.clone()))
        );
        assert_eq!(after_of(Some(&json!({"gw-a": "x"}))), None);
        assert_eq!(
            after_in_query(Some("EIO=3&after=%7B%22gw-a%22%3A5%2C%22gw-b%22%3A9%7D")),
            Some(After::Origins(map))
        );
    }
}
