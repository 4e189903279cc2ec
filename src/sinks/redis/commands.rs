//! Commands from the centre: the gateway subscribes to the Redis channel
//! `gateway-commands:<gatewayId>` (on the Redis sink's server) and applies each alarm command
//! as if an operator had acted locally: through the pipeline, stored, emitted to dashboards and
//! forwarded upstream on the alarm lane, so both sides agree. Message format (JSON):
//!
//! ```json
//! {"command": "ack", "alarmId": "press-7/temperature/threshold", "user": "ops-centre", "comment": "seen"}
//! {"command": "shelve", "alarmId": "…", "user": "ops-centre", "minutes": 30, "reason": "maintenance"}
//! {"command": "unshelve", "alarmId": "…", "user": "ops-centre"}
//! ```
//!
//! `user` is optional; unknown fields are refused. A message that does not parse, names an
//! unknown alarm or is refused by the alarm's state is counted
//! (`edge_gateway_alarm_actions_total{origin="central",result}`) and logged, never applied.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::RedisSink;
use crate::alarms::{Action, ActionError, Command};
use crate::backoff::Backoff;
use crate::ingest::AckCursor;
use crate::pipeline::AlarmRequest;
use crate::telemetry as t;

/// Longest `user`, `comment` or `reason` kept with a transition (as from dashboards).
const MAX_TEXT: usize = 500;
/// An answer not back by then (the gateway stopping) counts as unavailable.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

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
    },
    Shelve {
        alarm_id: String,
        user: Option<String>,
        minutes: u64,
        reason: String,
    },
    Unshelve {
        alarm_id: String,
        user: Option<String>,
    },
}

/// A message on the command channel as the alarm command it asks for.
fn parse(payload: &[u8]) -> Result<Command, String> {
    let c: CentralCommand = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let (alarm_id, user, action) = match c {
        CentralCommand::Ack {
            alarm_id,
            user,
            comment,
        } => (alarm_id, user, Action::Ack { comment }),
        CentralCommand::Shelve {
            alarm_id,
            user,
            minutes,
            reason,
        } => (
            alarm_id,
            user,
            Action::Shelve {
                minutes,
                reason: Some(reason),
            },
        ),
        CentralCommand::Unshelve { alarm_id, user } => (alarm_id, user, Action::Unshelve),
    };
    let too_long = |t: &Option<String>| t.as_ref().is_some_and(|t| t.chars().count() > MAX_TEXT);
    let text = match &action {
        Action::Ack { comment } => comment,
        Action::Shelve { reason, .. } => reason,
        Action::Unshelve => &None,
    };
    if too_long(&user) || too_long(text) || alarm_id.len() > MAX_TEXT {
        return Err(format!(
            "alarmId, user, comment and reason are at most {MAX_TEXT} characters"
        ));
    }
    Ok(Command {
        alarm_id,
        action,
        user,
    })
}

/// The channel a gateway listens on.
pub fn channel(gateway_id: &str) -> String {
    format!("gateway-commands:{gateway_id}")
}

/// Starts the command listener when the Redis sink is on; it ends on `stop`.
pub fn spawn(
    config: &crate::config::SinksConfig,
    gateway_id: &str,
    commands: mpsc::Sender<AlarmRequest>,
    stop: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.redis.host.is_empty() {
        return None;
    }
    let sink = RedisSink::new(config.redis.clone(), gateway_id.to_string());
    Some(tokio::spawn(run(
        sink,
        gateway_id.into(),
        commands,
        stop.clone(),
    )))
}

/// Subscribes (and re-subscribes after a failure, with backoff) until `stop`.
async fn run(
    sink: RedisSink,
    gateway_id: Arc<str>,
    commands: mpsc::Sender<AlarmRequest>,
    stop: CancellationToken,
) {
    let channel = channel(&gateway_id);
    let mut backoff =
        Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).with_jitter();
    while !stop.is_cancelled() {
        match listen(&sink, &channel, &commands, &stop, &mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "command channel lost; subscribing again");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// One subscription: applies each message until `stop` (`Ok`) or the link fails.
async fn listen(
    sink: &RedisSink,
    channel: &str,
    commands: &mpsc::Sender<AlarmRequest>,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let client = sink.client().map_err(|e| e.to_string())?;
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
    backoff.reset();
    tracing::info!(%channel, "listening for central alarm commands");
    let mut messages = pubsub.on_message();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            msg = messages.next() => msg.ok_or("subscription closed")?,
        };
        apply(msg.get_payload_bytes(), commands).await;
    }
}

/// Parses and applies one message; every outcome is counted, failures logged.
async fn apply(payload: &[u8], commands: &mpsc::Sender<AlarmRequest>) {
    let result = match parse(payload) {
        Ok(command) => {
            let alarm = command.alarm_id.clone();
            let outcome = act(command, commands).await;
            if let Err((_, why)) = &outcome {
                tracing::warn!(%alarm, error = %why, "central alarm command not applied");
            }
            outcome.map_or_else(|(label, _)| label, |()| "ok")
        }
        Err(e) => {
            let shown = String::from_utf8_lossy(&payload[..payload.len().min(200)]).into_owned();
            tracing::warn!(error = %e, message = %shown, "malformed central alarm command ignored");
            "malformed"
        }
    };
    metrics::counter!(t::ALARM_ACTIONS, "origin" => "central", "result" => result).increment(1);
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
        let c = parse(br#"{"command":"shelve","alarmId":"d/t/threshold","minutes":30,"reason":"pm","user":"ops"}"#)
            .unwrap();
        assert_eq!(
            c,
            Command {
                alarm_id: "d/t/threshold".into(),
                action: Action::Shelve {
                    minutes: 30,
                    reason: Some("pm".into())
                },
                user: Some("ops".into()),
            }
        );
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
}
