//! Commands from the centre: the gateway reads the Redis stream `gateway-commands:<gatewayId>`
//! (on the Redis sink's server, over TLS when the sink uses it) and applies each alarm command
//! as if an operator had acted locally: through the pipeline, stored, emitted to dashboards and
//! forwarded upstream on the alarm lane, so both sides agree.
//!
//! The stream is durable: a command added while the gateway is cut off or stopped is applied
//! when it is back. The id of the last entry handled is committed in the store (as the cursor
//! `central-commands`) once the command's transition is committed, and reading resumes after
//! it, so a command is applied once across reconnects and restarts. (A crash in the
//! millisecond between those two commits applies it a second time; an ack or unshelve is then
//! refused as already done, a shelve restarts its timer.) A store without that cursor (a new
//! gateway) starts with the entries added since its first start, committed at once: older
//! ones concern alarms of another store.
//!
//! For compatibility the PUBLISH channel of the same name is still subscribed (lost while the
//! gateway is unreachable). A sender using both gives the command a `commandId`: the second
//! copy seen within the last 1024 commands is counted as `duplicate` and not applied.
//!
//! An entry is `XADD gateway-commands:<gatewayId> * data <json>`; a PUBLISH payload is the
//! JSON itself:
//!
//! ```json
//! {"command": "ack", "alarmId": "press-7/temperature/threshold", "user": "ops-centre", "comment": "seen", "commandId": "c-1"}
//! {"command": "shelve", "alarmId": "…", "user": "ops-centre", "minutes": 30, "reason": "maintenance"}
//! {"command": "unshelve", "alarmId": "…", "user": "ops-centre"}
//! ```
//!
//! `user`, `comment` and `commandId` are optional; unknown fields are refused. A command that
//! does not parse, names an unknown alarm or is refused by the alarm's state is counted
//! (`edge_gateway_alarm_actions_total{origin="central",result}`) and logged, never applied.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::streams::StreamReadReply;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::RedisSink;
use crate::alarms::{Action, ActionError, Command};
use crate::backoff::Backoff;
use crate::ingest::AckCursor;
use crate::pipeline::AlarmRequest;
use crate::sinks::SinkError;
use crate::store::Store;
use crate::store::writer::WriteRequest;
use crate::telemetry as t;

/// Longest `user`, `comment`, `reason` or `commandId` kept (as from dashboards).
const MAX_TEXT: usize = 500;
/// An answer not back by then (the gateway stopping) counts as unavailable.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries per XREAD, and how long one waits for new entries on the server.
const READ_COUNT: usize = 100;
const READ_BLOCK: Duration = Duration::from_secs(5);
/// Command ids remembered to drop the second copy of a command sent both ways.
const RECENT_IDS: usize = 1024;
/// The store cursor holding the last stream entry handled.
const CURSOR: &str = "central-commands";

#[derive(Debug, Deserialize, PartialEq)]
#[serde(
    tag = "command",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
enum CentralCommand {
    Ack {
        alarm_id: String,
        user: Option<String>,
        comment: Option<String>,
        command_id: Option<String>,
    },
    Shelve {
        alarm_id: String,
        user: Option<String>,
        minutes: u64,
        reason: String,
        command_id: Option<String>,
    },
    Unshelve {
        alarm_id: String,
        user: Option<String>,
        command_id: Option<String>,
    },
}

/// A command as the alarm command it asks for, and its `commandId`.
fn parse(payload: &[u8]) -> Result<(Command, Option<String>), String> {
    let c: CentralCommand = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let (alarm_id, user, action, id) = match c {
        CentralCommand::Ack {
            alarm_id,
            user,
            comment,
            command_id,
        } => (alarm_id, user, Action::Ack { comment }, command_id),
        CentralCommand::Shelve {
            alarm_id,
            user,
            minutes,
            reason,
            command_id,
        } => (
            alarm_id,
            user,
            Action::Shelve {
                minutes,
                reason: Some(reason),
            },
            command_id,
        ),
        CentralCommand::Unshelve {
            alarm_id,
            user,
            command_id,
        } => (alarm_id, user, Action::Unshelve, command_id),
    };
    let too_long = |t: &Option<String>| t.as_ref().is_some_and(|t| t.chars().count() > MAX_TEXT);
    let text = match &action {
        Action::Ack { comment } => comment,
        Action::Shelve { reason, .. } => reason,
        Action::Unshelve => &None,
    };
    if too_long(&user) || too_long(text) || too_long(&id) || alarm_id.len() > MAX_TEXT {
        return Err(format!(
            "alarmId, user, comment, reason and commandId are at most {MAX_TEXT} characters"
        ));
    }
    let command = Command {
        alarm_id,
        action,
        user,
    };
    Ok((command, id))
}

/// The stream key and the channel a gateway listens on.
pub fn key(gateway_id: &str) -> String {
    format!("gateway-commands:{gateway_id}")
}

/// What applying commands needs, shared by the stream reader and the channel subscriber.
pub struct Applier {
    commands: mpsc::Sender<AlarmRequest>,
    store: Store,
    writer: mpsc::Sender<WriteRequest>,
    recent: Mutex<RecentIds>,
    /// When the gateway started (ms): a new store reads commands added since.
    started_ms: u64,
}

impl Applier {
    pub fn new(
        commands: mpsc::Sender<AlarmRequest>,
        store: Store,
        writer: mpsc::Sender<WriteRequest>,
    ) -> Applier {
        Applier {
            commands,
            store,
            writer,
            recent: Mutex::new(RecentIds::default()),
            started_ms: u64::try_from(crate::time::now_ms()).unwrap_or(0),
        }
    }
}

/// Starts the stream reader and the channel subscriber when the Redis sink is on; they end
/// on `stop`.
pub fn spawn(
    config: &crate::config::SinksConfig,
    gateway_id: &str,
    applier: Applier,
    stop: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.redis.host.is_empty() {
        return None;
    }
    let sink = || RedisSink::new(config.redis.clone(), gateway_id.to_string());
    let key = key(gateway_id);
    applier.remember_fresh_start();
    let applier = Arc::new(applier);
    let stream = read_stream(sink(), key.clone(), applier.clone(), stop.clone());
    let channel = subscribe(sink(), key, applier, stop.clone());
    Some(tokio::spawn(async move {
        tokio::join!(stream, channel);
    }))
}

fn link_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).with_jitter()
}

/// After a lost link: logs it and waits the backoff; `false` once stopping.
async fn lost(
    what: &str,
    key: &str,
    e: &SinkError,
    backoff: &mut Backoff,
    stop: &CancellationToken,
) -> bool {
    tracing::warn!(%key, error = %e, "central command {what} lost; connecting again");
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(backoff.next_delay()) => true,
    }
}

/// Reads the command stream from the stored position until `stop`.
async fn read_stream(
    mut sink: RedisSink,
    key: String,
    applier: Arc<Applier>,
    stop: CancellationToken,
) {
    let mut backoff = link_backoff();
    while !stop.is_cancelled() {
        match read_entries(&mut sink, &key, &applier, &stop, &mut backoff).await {
            Ok(()) => break,
            Err(e) if !lost("stream", &key, &e, &mut backoff, &stop).await => break,
            Err(_) => {}
        }
    }
}

/// One connection: XREAD BLOCK from the last entry handled, applying each in turn.
async fn read_entries(
    sink: &mut RedisSink,
    key: &str,
    applier: &Applier,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), SinkError> {
    let timeout = Duration::from_millis(sink.config.delivery.request_timeout_ms);
    let mut conn = sink.open(timeout, Some(READ_BLOCK + timeout)).await?;
    let mut last = match applier.store.cursor(CURSOR)? {
        Some(at) => EntryId::decode(at),
        None => applier.fresh_start(),
    };
    backoff.reset();
    tracing::info!(%key, from = %last, "reading central alarm commands");
    loop {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(key)
            .arg(last.to_string());
        let read = xread.query_async::<Option<StreamReadReply>>(&mut conn);
        let reply = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            reply = read => reply?,
        };
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let payload = entry
                .map
                .get("data")
                .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok());
            applier.apply(payload.as_deref()).await;
            last = EntryId::parse(&entry.id).unwrap_or(last);
            applier.remember(last).await;
        }
    }
}

impl Applier {
    /// Where a store without a position starts: entries added from this start on.
    fn fresh_start(&self) -> EntryId {
        let start = EntryId {
            ms: self.started_ms.saturating_sub(1),
            n: u64::MAX,
        };
        EntryId::decode(start.encode())
    }

    /// A new store remembers its fresh start at once, with the next commit: a first run that
    /// never reaches Redis must not move the start of the next run past commands added since.
    fn remember_fresh_start(&self) {
        if !matches!(self.store.cursor(CURSOR), Ok(None)) {
            return;
        }
        let request = WriteRequest::Cursor {
            sink: CURSOR.into(),
            next_seq: self.fresh_start().encode(),
        };
        if let Err(e) = self.writer.try_send(request) {
            tracing::warn!(error = %e, "cannot record where central commands start; retried at the next start");
        }
    }
}

/// Subscribes to the channel (and again after a failure) until `stop`.
async fn subscribe(
    mut sink: RedisSink,
    channel: String,
    applier: Arc<Applier>,
    stop: CancellationToken,
) {
    let mut backoff = link_backoff();
    while !stop.is_cancelled() {
        match listen(&mut sink, &channel, &applier, &stop, &mut backoff).await {
            Ok(()) => break,
            Err(e) if !lost("channel", &channel, &e, &mut backoff, &stop).await => break,
            Err(_) => {}
        }
    }
}

/// One subscription: applies each message until `stop` (`Ok`) or the link fails.
async fn listen(
    sink: &mut RedisSink,
    channel: &str,
    applier: &Applier,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), SinkError> {
    let mut pubsub = sink.pubsub().await?;
    pubsub.subscribe(channel).await?;
    backoff.reset();
    tracing::info!(%channel, "listening for central alarm commands");
    let mut messages = pubsub.on_message();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            msg = messages.next() => msg,
        };
        let Some(msg) = msg else {
            let closed = (redis::ErrorKind::Io, "subscription closed");
            return Err(redis::RedisError::from(closed).into());
        };
        applier.apply(Some(msg.get_payload_bytes())).await;
    }
}

impl Applier {
    /// Parses and applies one command (`None`: an entry without `data`); every outcome is
    /// counted, failures logged.
    async fn apply(&self, payload: Option<&[u8]>) {
        let parsed = payload
            .ok_or_else(|| "a stream entry without a `data` field".to_string())
            .and_then(parse);
        let result = match parsed {
            Ok((_, Some(id))) if !self.first_time(&id) => {
                tracing::debug!(command_id = %id, "central alarm command seen twice; applied once");
                "duplicate"
            }
            Ok((command, _)) => {
                let alarm = command.alarm_id.clone();
                let outcome = act(command, &self.commands).await;
                if let Err((_, why)) = &outcome {
                    tracing::warn!(%alarm, error = %why, "central alarm command not applied");
                }
                outcome.map_or_else(|(label, _)| label, |()| "ok")
            }
            Err(e) => {
                let payload = payload.unwrap_or_default();
                let shown = String::from_utf8_lossy(&payload[..payload.len().min(200)]);
                tracing::warn!(error = %e, message = %shown, "malformed central alarm command ignored");
                "malformed"
            }
        };
        metrics::counter!(t::ALARM_ACTIONS, "origin" => "central", "result" => result).increment(1);
    }

    /// True the first time `id` is seen (among the last [`RECENT_IDS`]).
    fn first_time(&self, id: &str) -> bool {
        self.recent.lock().expect("recent ids lock").insert(id)
    }

    /// Hands the last entry handled to the store writer (committed after the command's own
    /// transition, which `apply` waited for). A stopping writer: read again after restart.
    async fn remember(&self, at: EntryId) {
        let request = WriteRequest::Cursor {
            sink: CURSOR.into(),
            next_seq: at.encode(),
        };
        let _ = self.writer.send(request).await;
    }
}

/// The most recent command ids, oldest first out.
#[derive(Default)]
struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentIds {
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }
}

/// A stream entry id `<ms>-<n>`, kept in one store cursor as `ms << 20 | n` (`n` saturates
/// at 2^20 - 1: a million entries in one millisecond).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct EntryId {
    ms: u64,
    n: u64,
}

const N_BITS: u32 = 20;

impl EntryId {
    fn parse(id: &str) -> Option<EntryId> {
        let (ms, n) = id.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            n: n.parse().ok()?,
        })
    }

    fn encode(self) -> u64 {
        (self.ms << N_BITS) | self.n.min((1 << N_BITS) - 1)
    }

    fn decode(v: u64) -> EntryId {
        EntryId {
            ms: v >> N_BITS,
            n: v & ((1 << N_BITS) - 1),
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.n)
    }
}

async fn act(
    command: Command,
    commands: &mpsc::Sender<AlarmRequest>,
) -> Result<(), (&'static str, String)> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(AlarmRequest { command, reply })
        .await
        .map_err(|_| ("unavailable", "the gateway is stopping".to_string()))?;
    let answer = tokio::time::timeout(REPLY_TIMEOUT, answer).await;
    let cursor: Arc<AckCursor> = match answer {
        Ok(Ok(Ok(cursor))) => cursor,
        Ok(Ok(Err(e @ ActionError::Unknown(_)))) => return Err(("unknown", e.to_string())),
        Ok(Ok(Err(e))) => return Err(("refused", e.to_string())),
        _ => return Err(("unavailable", "no answer from the pipeline".into())),
    };
    while cursor.committed() < 1 {
        cursor.changed().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_junk_is_refused() {
        let c = parse(br#"{"command":"shelve","alarmId":"d/t/threshold","minutes":30,"reason":"pm","user":"ops","commandId":"c-9"}"#)
            .unwrap();
        assert_eq!(
            c.0,
            Command {
                alarm_id: "d/t/threshold".into(),
                action: Action::Shelve {
                    minutes: 30,
                    reason: Some("pm".into())
                },
                user: Some("ops".into()),
            }
        );
        assert_eq!(c.1.as_deref(), Some("c-9"));
        let (_, id) = parse(br#"{"command":"unshelve","alarmId":"x"}"#).unwrap();
        assert_eq!(id, None);
        for bad in [
            &br#"{"command":"delete","alarmId":"x"}"#[..],
            br#"{"command":"ack"}"#,
            br#"{"command":"ack","alarmId":"x","extra":1}"#,
            br#"{"command":"shelve","alarmId":"x","minutes":-1,"reason":"r"}"#,
            b"not json",
            format!(
                r#"{{"command":"ack","alarmId":"x","user":"{}"}}"#,
                "u".repeat(501)
            )
            .as_bytes(),
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn entry_ids_survive_the_store_cursor() {
        for id in [
            "0-0",
            "1732590000123-0",
            "1732590000123-7",
            "4102444800000-1048575",
        ] {
            let e = EntryId::parse(id).unwrap();
            assert_eq!(EntryId::decode(e.encode()).to_string(), id);
        }
        let a = EntryId::parse("1732590000123-9").unwrap().encode();
        let b = EntryId::parse("1732590000124-0").unwrap().encode();
        assert!(
            a < b,
            "later entries encode higher (the writer keeps the newest)"
        );
        assert_eq!(EntryId::parse("junk"), None);
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut r = RecentIds::default();
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        for i in 0..RECENT_IDS {
            assert!(r.insert(&i.to_string()));
        }
        assert!(r.insert("a"), "forgotten after {RECENT_IDS} others");
    }
}
