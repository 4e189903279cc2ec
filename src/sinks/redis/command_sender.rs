//! Relay mode: alarm actions of central dashboards go down to the gateway that owns the alarm
//! as an entry of its command stream, `XADD gateway-commands:<gatewayId> * data <json>`, in the
//! format of README "Alarms" (with a `commandId`, so a gateway that also hears the channel
//! applies it once). The stream is durable: a gateway that is cut off applies it when back.
//! The gateway then stores the transition and sends it upstream, and the relay shows it like
//! any other `alarm:state`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::RedisSink;
use crate::alarms::{Action, Command};
use crate::config::RedisSinkConfig;

/// Entries a command stream keeps (MAXLEN ~): commands are few, a gateway away for long
/// still finds the recent ones.
const STREAM_MAXLEN: usize = 10_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One command to send, answered once Redis took it (or with why not).
pub struct Outgoing {
    pub gateway_id: String,
    pub command: Command,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// The command as its JSON entry; `command_id` unique per sender.
pub fn render(command: &Command, command_id: &str) -> String {
    let mut v = json!({
        "alarmId": command.alarm_id,
        "commandId": command_id,
    });
    if let Some(user) = &command.user {
        v["user"] = json!(user);
    }
    match &command.action {
        Action::Ack { comment } => {
            v["command"] = json!("ack");
            if let Some(c) = comment {
                v["comment"] = json!(c);
            }
        }
        Action::Shelve { minutes, reason } => {
            v["command"] = json!("shelve");
            v["minutes"] = json!(minutes);
            v["reason"] = json!(reason.clone().unwrap_or_default());
        }
        Action::Unshelve => v["command"] = json!("unshelve"),
    }
    v.to_string()
}

/// The stream a gateway reads its commands from.
pub fn stream(gateway_id: &str) -> String {
    format!("gateway-commands:{gateway_id}")
}

/// Sends commands until `stop`; `sender` names this replica in command ids.
pub fn spawn(
    config: &RedisSinkConfig,
    sender: String,
    mut rx: mpsc::Receiver<Outgoing>,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let sink = RedisSink::new(config.clone(), sender.clone());
    let stop = stop.clone();
    let counter = AtomicU64::new(0);
    tokio::spawn(async move {
        let mut conn = None;
        loop {
            let out = tokio::select! {
                _ = stop.cancelled() => break,
                o = rx.recv() => match o { Some(o) => o, None => break },
            };
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let id = format!("{sender}-{}-{n}", crate::time::now_ms());
            let entry = render(&out.command, &id);
            let result = tokio::time::timeout(
                REQUEST_TIMEOUT,
                xadd(&sink, &mut conn, &stream(&out.gateway_id), &entry),
            )
            .await
            .unwrap_or_else(|_| Err("the central Redis did not answer in time".into()));
            if result.is_err() {
                conn = None;
            }
            let _ = out.reply.send(result);
        }
    })
}

async fn xadd(
    sink: &RedisSink,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    key: &str,
    entry: &str,
) -> Result<(), String> {
    if conn.is_none() {
        let client = sink.client().map_err(|e| e.to_string())?;
        let c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connected above");
    redis::cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(STREAM_MAXLEN)
        .arg("*")
        .arg("data")
        .arg(entry)
        .query_async::<String>(c)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_render_in_the_documented_format() {
        let c = Command {
            alarm_id: "press-7/temperature/threshold".into(),
            action: Action::Shelve {
                minutes: 30,
                reason: Some("maintenance".into()),
            },
            user: Some("ops".into()),
        };
        let v: serde_json::Value = serde_json::from_str(&render(&c, "r-1")).unwrap();
        assert_eq!(
            v,
            json!({"command": "shelve", "alarmId": "press-7/temperature/threshold",
                   "commandId": "r-1", "user": "ops", "minutes": 30, "reason": "maintenance"})
        );
        let ack = Command {
            action: Action::Ack { comment: None },
            user: None,
            ..c
        };
        let v: serde_json::Value = serde_json::from_str(&render(&ack, "r-2")).unwrap();
        assert_eq!(
            v,
            json!({"command": "ack", "alarmId": "press-7/temperature/threshold", "commandId": "r-2"})
        );
    }
}
