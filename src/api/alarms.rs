//! The alarm events of the Socket.IO API: `alarm:ack`, `alarm:shelve`, `alarm:unshelve` (sent
//! to the pipeline, which owns alarm state, through its bounded command channel) and
//! `get:alarms` (read from the store's `alarms` table with the `seq` it is current at).
//! Answers come through the ack callback: `{success: true, ...}` or the reference's
//! `{success: false, message, error}`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::alarms::state::AlarmState;
use crate::alarms::{Action, ActionError, AlarmKey, Command};
use crate::ingest::AckCursor;
use crate::pipeline::AlarmRequest;
use crate::telemetry as t;

/// Longest `comment` or `reason` kept with a transition.
const MAX_TEXT_CHARS: usize = 500;
/// `get:alarms` answers at most this many alarms (and 100 without a `limit`).
const MAX_LIST: u64 = 1_000;
const DEFAULT_LIST: u64 = 100;
/// An action not answered by then (the pipeline stopping) is reported as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which client event an action came from.
#[derive(Debug, Clone, Copy)]
pub enum ActionEvent {
    Ack,
    Shelve,
    Unshelve,
}

impl ActionEvent {
    fn done(self) -> &'static str {
        match self {
            ActionEvent::Ack => "Alarm acknowledged",
            ActionEvent::Shelve => "Alarm shelved",
            ActionEvent::Unshelve => "Alarm unshelved",
        }
    }
}

fn refuse(message: &str, error: impl std::fmt::Display) -> Value {
    json!({"success": false, "message": message, "error": error.to_string()})
}

/// The params of an action event as a [`Command`], or the reply refusing them.
pub fn parse_action(
    event: ActionEvent,
    params: Option<&Value>,
    user: Option<String>,
) -> Result<Command, String> {
    let p = params
        .and_then(Value::as_object)
        .ok_or("params must be an object")?;
    let alarm_id = p
        .get("alarmId")
        .and_then(Value::as_str)
        .ok_or("alarmId must be a string")?;
    if AlarmKey::parse(alarm_id).is_none() {
        return Err("alarmId must be `{deviceId}/{sensorType}/{rule}`".into());
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match p.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= MAX_TEXT_CHARS => Ok(Some(s.clone())),
            Some(_) => Err(format!(
                "{key} must be a string of at most {MAX_TEXT_CHARS} characters"
            )),
        }
    };
    let action = match event {
        ActionEvent::Ack => Action::Ack {
            comment: text("comment")?,
        },
        ActionEvent::Shelve => Action::Shelve {
            minutes: p
                .get("minutes")
                .and_then(Value::as_u64)
                .filter(|m| *m > 0)
                .ok_or("minutes must be a positive integer")?,
            reason: Some(
                text("reason")?
                    .filter(|r| !r.is_empty())
                    .ok_or("reason is required")?,
            ),
        },
        ActionEvent::Unshelve => Action::Unshelve,
    };
    Ok(Command {
        alarm_id: alarm_id.to_string(),
        action,
        user,
    })
}

/// Hands `command` to the pipeline and waits until its transition is committed (or refused);
/// `origin` labels the metric.
pub async fn act(
    commands: &mpsc::Sender<AlarmRequest>,
    command: Command,
    origin: &'static str,
) -> Result<(), (&'static str, String)> {
    let (reply, answer) = oneshot::channel();
    let request = AlarmRequest { command, reply };
    let result = match commands.try_send(request) {
        Ok(()) => match tokio::time::timeout(REPLY_TIMEOUT, committed(answer)).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e @ ActionError::Unknown(_)))) => Err(("unknown", e.to_string())),
            Ok(Ok(Err(e))) => Err(("refused", e.to_string())),
            Ok(Err(_)) | Err(_) => Err(("unavailable", "the gateway is stopping".into())),
        },
        Err(mpsc::error::TrySendError::Full(_)) => {
            Err(("busy", "too many alarm actions waiting; try again".into()))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            Err(("unavailable", "the gateway is stopping".into()))
        }
    };
    let label = result.as_ref().map_or_else(|(why, _)| *why, |()| "ok");
    metrics::counter!(t::ALARM_ACTIONS, "origin" => origin, "result" => label).increment(1);
    result
}

/// The pipeline's answer, once the transition it made is committed.
async fn committed(
    answer: oneshot::Receiver<Result<std::sync::Arc<AckCursor>, ActionError>>,
) -> Result<Result<(), ActionError>, oneshot::error::RecvError> {
    let cursor = match answer.await? {
        Ok(cursor) => cursor,
        Err(e) => return Ok(Err(e)),
    };
    while cursor.committed() < 1 {
        cursor.changed().await;
    }
    Ok(Ok(()))
}

/// The reply to one action event.
pub async fn handle_action(
    commands: &mpsc::Sender<AlarmRequest>,
    event: ActionEvent,
    params: Option<&Value>,
    user: Option<String>,
) -> Value {
    let command = match parse_action(event, params, user) {
        Ok(c) => c,
        Err(e) => {
            metrics::counter!(t::ALARM_ACTIONS, "origin" => "socketio", "result" => "malformed")
                .increment(1);
            return refuse("Invalid alarm parameters", e);
        }
    };
    let alarm_id = command.alarm_id.clone();
    match act(commands, command, "socketio").await {
        Ok(()) => json!({"success": true, "message": event.done(), "alarmId": alarm_id}),
        Err(("unknown", e)) => refuse("Unknown alarm", e),
        Err(("refused", e)) => refuse("Alarm action refused", e),
        Err((_, e)) => refuse("Alarm action failed", e),
    }
}

/// What `get:alarms` asks for.
#[derive(Debug, Default, PartialEq)]
pub struct AlarmQuery {
    pub state: Option<&'static str>,
    pub device_id: Option<String>,
    pub limit: usize,
}

pub fn parse_query(params: Option<&Value>) -> Result<AlarmQuery, String> {
    let empty = serde_json::Map::new();
    let p = match params {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err("params must be an object".into()),
    };
    let state = match p.get("state") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(AlarmState::parse)
                .map(AlarmState::as_str)
                .ok_or("state must be one of normal, active_unacked, active_acked, rtn_unacked, shelved, suppressed, out_of_service")?,
        ),
    };
    let device_id = match p.get("deviceId") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => {
            crate::ids::check_id(d).map_err(|e| format!("deviceId {e}"))?;
            Some(d.clone())
        }
        Some(_) => return Err("deviceId must be a string".into()),
    };
    let limit = match p.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIST,
        Some(v) => v
            .as_u64()
            .filter(|l| (1..=MAX_LIST).contains(l))
            .ok_or(format!("limit must be 1 to {MAX_LIST}"))?,
    };
    Ok(AlarmQuery {
        state,
        device_id,
        limit: limit as usize,
    })
}

/// The reply to `get:alarms`.
pub async fn list(store: &crate::store::Store, params: Option<&Value>) -> Value {
    let q = match parse_query(params) {
        Ok(q) => q,
        Err(e) => return refuse("Invalid alarm parameters", e),
    };
    let store = store.clone();
    let read = tokio::task::spawn_blocking(move || {
        store.current_alarms(
            |a| {
                q.state.is_none_or(|s| a["state"] == s)
                    && q.device_id.as_deref().is_none_or(|d| a["deviceId"] == d)
            },
            q.limit,
        )
    })
    .await;
    match read {
        Ok(Ok(current)) => json!({
            "success": true,
            "message": "Current alarms",
            "data": current.alarms,
            "seq": current.seq,
        }),
        Ok(Err(e)) => refuse("Failed to retrieve alarms", e),
        Err(e) => refuse("Failed to retrieve alarms", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_params_are_checked() {
        let ok = json!({"alarmId": "d/t/threshold", "minutes": 5, "reason": "calibration"});
        let c = parse_action(ActionEvent::Shelve, Some(&ok), Some("ann".into())).unwrap();
        assert_eq!(
            c.action,
            Action::Shelve {
                minutes: 5,
                reason: Some("calibration".into())
            }
        );
        for (event, bad) in [
            (ActionEvent::Ack, json!("d/t/threshold")),
            (ActionEvent::Ack, json!({"alarmId": "d/t"})),
            (
                ActionEvent::Ack,
                json!({"alarmId": "d/t/threshold", "comment": 5}),
            ),
            (
                ActionEvent::Shelve,
                json!({"alarmId": "d/t/threshold", "minutes": 0, "reason": "x"}),
            ),
            (
                ActionEvent::Shelve,
                json!({"alarmId": "d/t/threshold", "minutes": 5}),
            ),
        ] {
            assert!(parse_action(event, Some(&bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_params_are_checked() {
        assert_eq!(parse_query(None).unwrap().limit, 100);
        let q = parse_query(Some(
            &json!({"state": "shelved", "deviceId": "d", "limit": 3}),
        ));
        assert_eq!(
            q.unwrap(),
            AlarmQuery {
                state: Some("shelved"),
                device_id: Some("d".into()),
                limit: 3
            }
        );
        for bad in [
            json!({"state": "x"}),
            json!({"deviceId": "a/b"}),
            json!({"limit": 0}),
        ] {
            assert!(parse_query(Some(&bad)).is_err(), "{bad}");
        }
    }
}
