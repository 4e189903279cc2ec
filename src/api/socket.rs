//! The reference Socket.IO event API: connect checks (capacity, JWT), client events
//! (subscriptions, ping, get:history, the alarm events of `alarms.rs`), and the broadcasts of
//! committed records to rooms.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::socket::Socket;
use socketioxide::{ProtocolVersion, SocketIo};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::ApiState;
use super::guard::{Jwt, Window};
use crate::health::Health;
use crate::hub::HubEvent;
use crate::record::{Committed, Record, RecordKind};
use crate::telemetry as t;
use crate::time::{format_ms, now_ms};

const WELCOME: &str = "Connected to IoT Monitoring System";
/// How many stored records one catch-up read fetches.
const CATCHUP_CHUNK: usize = 2_000;

#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Serializes as no arguments at all: `socket.emit('pong')` in the reference.
const NO_ARGS: [u8; 0] = [];

/// One of SOCKET_IO_MAX_CLIENTS, held in the socket's extensions from admission: given back
/// on disconnect, or when socketioxide drops a socket whose disconnect handler never ran (a
/// session closed before the connect handler registered it), so the count cannot leak.
struct Slot(Arc<Health>);

impl Drop for Slot {
    fn drop(&mut self) {
        let clients = self.0.socket_clients.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(t::SOCKETIO_CLIENTS).set(clients as f64);
    }
}

/// Who the connection's token names (`sub`, else `name`); recorded with its alarm actions.
#[derive(Clone)]
struct User(Option<String>);

/// Whether the client asked for an ack (`AckSender` does not say).
struct WantsAck(bool);

impl<A: Adapter> FromMessageParts<A> for WantsAck {
    type Error = std::convert::Infallible;
    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(WantsAck(ack_id.is_some()))
    }
}

pub fn register(io: &SocketIo, state: ApiState) {
    let jwt = Jwt::from_config(&state.config).map(Arc::new);
    let check_state = state.clone();
    let admit = move |s: SocketRef, TryData(auth): TryData<Value>| {
        let state = check_state.clone();
        let jwt = jwt.clone();
        async move {
            let mut user = None;
            if let Some(jwt) = jwt {
                // Only socket.io-client v2 (EIO3), which has no auth payload, may put the
                // token in the URL, where proxies log it.
                let from_query = query_token(s.req_parts().uri.query());
                let token = auth
                    .ok()
                    .and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_string))
                    .or(from_query
                        .clone()
                        .filter(|_| s.protocol() == ProtocolVersion::V4));
                let Some(token) = token else {
                    metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "auth").increment(1);
                    if from_query.is_some() {
                        return Err(Refused(
                            "authentication failed: send the token in auth.token, not the URL query",
                        ));
                    }
                    return Err(Refused("authentication required: token missing"));
                };
                match jwt.check(&token) {
                    Ok(named) => user = named,
                    Err(e) => {
                        tracing::debug!(error = %e, "handshake token refused");
                        metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "auth").increment(1);
                        return Err(Refused("authentication failed: invalid token"));
                    }
                }
            }
            // Reserve the slot here, atomically: the client may see CONNECT before the connect
            // handler runs, and a check-then-count there lets a burst of handshakes through.
            let max = state.config.socketio.max_clients;
            let reserved =
                state
                    .health
                    .socket_clients
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < max).then_some(n + 1)
                    });
            if reserved.is_err() {
                metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "max_clients").increment(1);
                return Err(Refused("server full: SOCKET_IO_MAX_CLIENTS reached"));
            }
            s.extensions.insert(Arc::new(Slot(state.health.clone())));
            s.extensions.insert(User(user));
            // Event handlers are registered here, before CONNECT goes out: socketioxide sends
            // CONNECT and then runs the connect handler in a task of its own, so a client that
            // emits `subscribe-*` as soon as it is connected (as the reference client does)
            // could beat handlers registered there, and its subscription would be dropped.
            register_handlers(&s, &state);
            Ok(())
        }
    };
    let on_connect = move |s: SocketRef| {
        let state = state.clone();
        async move { connected(s, state) }
    };
    io.ns("/", on_connect.with(admit));
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let v = kv.strip_prefix("token=")?;
        // A query string is form-encoded: `+` is a space (`%2B` a plus).
        let v = v.replace('+', " ");
        Some(percent_decode_str(&v).decode_utf8_lossy().into_owned())
    })
}

/// Per-socket event budget (RATE_LIMIT_* per socket).
#[derive(Clone)]
struct EventLimit {
    window: Arc<Mutex<Window>>,
    length: Duration,
    max: u32,
}

impl EventLimit {
    fn allow(&self) -> bool {
        let ok = self
            .window
            .lock()
            .expect("event limit lock poisoned")
            .allow(self.length, self.max);
        if !ok {
            metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "event_rate").increment(1);
        }
        ok
    }
}

fn rate_limited(ack: AckSender) {
    let _ = ack.send(&json!({
        "success": false,
        "message": "Rate limit exceeded",
        "error": "too many events: RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW",
    }));
}

/// The reference answers bad input through the ack (`{success: false, message, error}`); a
/// client that gave no ack gets the same payload as an `error` event.
fn refuse_device_id(s: &SocketRef, wants_ack: bool, ack: AckSender, why: &str) {
    let reply = json!({
        "success": false,
        "message": "Invalid device id",
        "error": format!("deviceId {why}"),
    });
    if wants_ack {
        let _ = ack.send(&reply);
    } else {
        let _ = s.emit("error", &reply);
    }
}

fn connected(s: SocketRef, state: ApiState) {
    // Counted when admitted (see `register`).
    let clients = state.health.socket_clients.load(Ordering::SeqCst);
    metrics::gauge!(t::SOCKETIO_CLIENTS).set(clients as f64);
    tracing::debug!(sid = %s.id, clients, "client connected");
    let _ = s.emit(
        "welcome",
        &json!({"message": WELCOME, "timestamp": format_ms(now_ms())}),
    );
}

/// The client events, with the socket's own event budget.
fn register_handlers(s: &SocketRef, state: &ApiState) {
    let limit = EventLimit {
        window: Arc::new(Mutex::new(Window::new())),
        length: Duration::from_millis(state.config.rate_limit.window_ms),
        max: state.config.rate_limit.max_requests,
    };

    on_room_events(s, &limit);
    on_ping(s, limit.clone());
    on_history(s, limit.clone(), state.clone());
    on_alarm_events(s, &limit, state);
    on_disconnect(s, state.clone());
}

/// `subscribe:device` / `unsubscribe:device` with a device id, and the fixed rooms.
fn on_room_events(s: &SocketRef, limit: &EventLimit) {
    let room_event = |prefix: &'static str, join: bool, limit: EventLimit| {
        move |s: SocketRef,
              TryData(id): TryData<Value>,
              WantsAck(wants_ack): WantsAck,
              ack: AckSender| {
            let limit = limit.clone();
            async move {
                if !limit.allow() {
                    return rate_limited(ack);
                }
                let id = match id {
                    Ok(Value::String(id)) => id,
                    Ok(Value::Number(n)) => n.to_string(),
                    _ => {
                        metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "bad_event")
                            .increment(1);
                        return refuse_device_id(&s, wants_ack, ack, "must be a string");
                    }
                };
                if let Err(e) = crate::ids::check_id(&id) {
                    metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "bad_device_id")
                        .increment(1);
                    return refuse_device_id(&s, wants_ack, ack, &e.to_string());
                }
                let room = format!("{prefix}{id}");
                if join {
                    s.join(room)
                } else {
                    s.leave(room)
                }
                let _ = ack.send(&json!({"success": true, "deviceId": id}));
            }
        }
    };
    s.on(
        "subscribe:device",
        room_event("device:", true, limit.clone()),
    );
    s.on(
        "unsubscribe:device",
        room_event("device:", false, limit.clone()),
    );

    let fixed_room = |room: &'static str, limit: EventLimit| {
        move |s: SocketRef, ack: AckSender| {
            let limit = limit.clone();
            async move {
                if !limit.allow() {
                    return rate_limited(ack);
                }
                s.join(room);
            }
        }
    };
    s.on(
        "subscribe-all-devices",
        fixed_room("all-devices", limit.clone()),
    );
    s.on(
        "subscribe-system",
        fixed_room("system-status", limit.clone()),
    );
    s.on("subscribe-alerts", fixed_room("alerts", limit.clone()));
}

fn on_ping(s: &SocketRef, limit: EventLimit) {
    s.on("ping", move |s: SocketRef, ack: AckSender| {
        let limit = limit.clone();
        async move {
            if !limit.allow() {
                return rate_limited(ack);
            }
            let _ = s.emit("pong", &NO_ARGS);
        }
    });
}

fn on_history(s: &SocketRef, limit: EventLimit, state: ApiState) {
    s.on(
        "get:history",
        move |TryData(params): TryData<Value>, ack: AckSender| {
            let state = state.clone();
            let limit = limit.clone();
            async move {
                if !limit.allow() {
                    return rate_limited(ack);
                }
                let reply = history(&state, params.ok()).await;
                let _ = ack.send(&reply);
            }
        },
    );
}

/// `alarm:ack`, `alarm:shelve`, `alarm:unshelve` and `get:alarms` (see `alarms.rs`).
fn on_alarm_events(s: &SocketRef, limit: &EventLimit, state: &ApiState) {
    use super::alarms::{ActionEvent, handle_action, list};
    let action = |event: ActionEvent, limit: EventLimit, state: ApiState| {
        move |s: SocketRef, TryData(params): TryData<Value>, ack: AckSender| {
            let (limit, state) = (limit.clone(), state.clone());
            async move {
                if !limit.allow() {
                    return rate_limited(ack);
                }
                let user = s.extensions.get::<User>().and_then(|u| u.0);
                let reply = handle_action(&state.alarms, event, params.ok().as_ref(), user).await;
                let _ = ack.send(&reply);
            }
        }
    };
    for (name, event) in [
        ("alarm:ack", ActionEvent::Ack),
        ("alarm:shelve", ActionEvent::Shelve),
        ("alarm:unshelve", ActionEvent::Unshelve),
    ] {
        s.on(name, action(event, limit.clone(), state.clone()));
    }
    let (limit, state) = (limit.clone(), state.clone());
    s.on(
        "get:alarms",
        move |TryData(params): TryData<Value>, ack: AckSender| {
            let (limit, state) = (limit.clone(), state.clone());
            async move {
                if !limit.allow() {
                    return rate_limited(ack);
                }
                let _ = ack.send(&list(&state.store, params.ok().as_ref()).await);
            }
        },
    );
}

fn on_disconnect(s: &SocketRef, state: ApiState) {
    s.on_disconnect(move |s: SocketRef| {
        drop(s.extensions.remove::<Arc<Slot>>());
        let clients = state.health.socket_clients.load(Ordering::SeqCst);
        tracing::debug!(sid = %s.id, clients, "client disconnected");
        async {}
    });
}

async fn history(state: &ApiState, params: Option<Value>) -> Value {
    let query = match super::history::parse(params.as_ref(), &state.config.socketio) {
        Ok(q) => q,
        Err(error) => {
            return json!({"success": false, "message": "Invalid history parameters", "error": error});
        }
    };
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.history(&query)).await {
        Ok(Ok(data)) => json!({
            "success": true,
            "message": "Historical data retrieved",
            "data": data,
        }),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "history query failed");
            json!({"success": false, "message": "Failed to retrieve historical data", "error": e.to_string()})
        }
        Err(e) => {
            json!({"success": false, "message": "Failed to retrieve historical data", "error": e.to_string()})
        }
    }
}

/// Emits one record to its rooms with the reference event names.
async fn emit_record<T: Serialize + ?Sized>(
    io: &SocketIo,
    kind: RecordKind,
    device: Option<&str>,
    payload: &T,
) {
    let mut emitted: [(&'static str, bool); 3] = [("", false); 3];
    match (kind, device) {
        (RecordKind::Reading, Some(d)) => {
            let _ = io
                .to(format!("device:{d}"))
                .emit("sensor:reading", payload)
                .await;
            let _ = io.to("all-devices").emit("sensor:all", payload).await;
            emitted[0] = ("sensor:reading", true);
            emitted[1] = ("sensor:all", true);
        }
        (RecordKind::Status, Some(d)) => {
            let _ = io
                .to(format!("device:{d}"))
                .emit("device:status", payload)
                .await;
            let _ = io.to("all-devices").emit("device:all", payload).await;
            emitted[0] = ("device:status", true);
            emitted[1] = ("device:all", true);
        }
        (RecordKind::Alert, device) => {
            let _ = io.to("alerts").emit("alert", payload).await;
            if let Some(d) = device {
                let _ = io
                    .to(format!("device:{d}"))
                    .emit("alert:device", payload)
                    .await;
                emitted[1] = ("alert:device", true);
            }
            let _ = io.emit("alert:system", payload).await;
            emitted[0] = ("alert", true);
            emitted[2] = ("alert:system", true);
        }
        (RecordKind::Alarm, Some(d)) => {
            // Once per socket, whether it is in `alerts`, the device's room or both.
            let _ = io
                .to("alerts")
                .to(format!("device:{d}"))
                .emit("alarm:state", payload)
                .await;
            emitted[0] = ("alarm:state", true);
        }
        _ => {}
    }
    for (event, done) in emitted {
        if done {
            metrics::counter!(t::SOCKETIO_EMITTED, "event" => event).increment(1);
        }
    }
}

async fn emit_committed(io: &SocketIo, gateway_id: &str, c: &Committed) {
    let wire = c.record.to_wire(gateway_id, Some(c.seq));
    emit_record(io, c.record.kind(), c.record.device_id(), &wire).await;
}

/// Forwards committed records to the rooms until shutdown. If it falls behind the hub, it
/// replays the gap from the store so dashboards miss nothing.
pub async fn run_emitter(io: SocketIo, state: ApiState, shutdown: CancellationToken) {
    let mut rx = state.hub.subscribe();
    let mut last_seq = 0u64;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = rx.recv() => e,
        };
        match event {
            Ok(HubEvent::Committed(batch)) => {
                for c in batch.iter() {
                    if c.seq > last_seq {
                        emit_committed(&io, &state.gateway_id, c).await;
                        last_seq = c.seq;
                    }
                }
            }
            Ok(HubEvent::System(alert)) => {
                let record = Record::Alert((*alert).clone());
                let wire = record.to_wire(&state.gateway_id, None);
                let _ = io.emit("alert:system", &wire).await;
                metrics::counter!(t::SOCKETIO_EMITTED, "event" => "alert:system").increment(1);
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed_commits = missed,
                    from_seq = last_seq + 1,
                    "broadcast lagged; replaying from the store"
                );
                last_seq = catch_up(&io, &state, last_seq).await;
            }
            Err(RecvError::Closed) => break,
        }
    }
}

async fn catch_up(io: &SocketIo, state: &ApiState, mut last_seq: u64) -> u64 {
    loop {
        let store = state.store.clone();
        let from = last_seq + 1;
        let chunk = match tokio::task::spawn_blocking(move || store.read_from(from, CATCHUP_CHUNK))
            .await
        {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "catch-up read failed; some live events were skipped");
                return last_seq;
            }
            Err(e) => {
                tracing::error!(error = %e, "catch-up task failed");
                return last_seq;
            }
        };
        let n = chunk.len();
        for r in chunk {
            emit_record(io, r.kind, r.device_id.as_deref(), &r.json).await;
            last_seq = r.seq;
        }
        metrics::counter!(t::SOCKETIO_CATCHUP).increment(n as u64);
        if n < CATCHUP_CHUNK {
            return last_seq;
        }
    }
}

/// `system:status` to the `system-status` room every interval.
pub async fn run_system_status(io: SocketIo, state: ApiState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        state.config.socketio.system_status_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let status = system_status(&state);
        let _ = io.to("system-status").emit("system:status", &status).await;
        metrics::counter!(t::SOCKETIO_EMITTED, "event" => "system:status").increment(1);
    }
}

pub fn system_status(state: &ApiState) -> Value {
    let h = &state.health;
    let mut services = json!({
        "mqtt": h.mqtt_state().as_str(),
        "store": h.store_state().as_str(),
        "websocket-service": "healthy",
    });
    for sink in &h.sinks {
        services[sink.service()] = json!(sink.state().as_str());
    }
    json!({
        "status": h.overall().as_str(),
        "timestamp": format_ms(now_ms()),
        "uptime": h.uptime_secs(),
        "services": services,
        "metrics": {
            "activeDevices": h.devices_online.load(Ordering::Relaxed),
            "totalDevices": h.devices_total.load(Ordering::Relaxed),
            "dataPointsPerMinute": h.readings_last_minute.load(Ordering::Relaxed),
            "activeAlerts": h.active_alerts.load(Ordering::Relaxed),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_query() {
        assert_eq!(
            query_token(Some("EIO=3&transport=polling&token=a.b%2Dc")),
            Some("a.b-c".into())
        );
        assert_eq!(
            query_token(Some("token=a+b%2Bc%zz%4")),
            Some("a b+c%zz%4".into())
        );
        assert_eq!(
            query_token(Some("token=%C3%A9%FF")),
            Some("é\u{FFFD}".into())
        );
        assert_eq!(query_token(Some("token")), None);
        assert_eq!(query_token(Some("EIO=3")), None);
        assert_eq!(query_token(None), None);
    }
}
