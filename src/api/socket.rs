//! The reference Socket.IO event API: connect checks (capacity, JWT), client events
//! (subscriptions, ping, get:history, the alarm events of `alarms.rs`), and the broadcasts of
//! committed records to rooms; `resume` replays what a reconnecting client missed.

mod resume;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use socketioxide::BroadcastError;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::socket::Socket;
/// A room name (socketioxide's `Room`).
type Room = std::borrow::Cow<'static, str>;
use socketioxide::{ProtocolVersion, SendError, SocketError, SocketIo};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::ApiState;
use super::guard::{Jwt, Window};
use crate::health::Health;
use crate::hub::HubEvent;
use crate::record::{Committed, Record, RecordKind};
use crate::telemetry as t;
use crate::time::{format_ms, now_ms};
use resume::Resume;
pub use resume::{LiveGate, ReplayChunks};

const WELCOME: &str = "Connected to IoT Monitoring System";
/// The emitter yields after this many records of one batch.
const YIELD_EVERY: usize = 128;
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
                    .as_ref()
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
            let after = match s.protocol() {
                ProtocolVersion::V4 => resume::after_in_query(s.req_parts().uri.query()),
                _ => resume::after_of(auth.as_ref().ok().and_then(|a| a.get("after"))),
            };
            if let Some(after) = after {
                s.extensions.insert(Resume::new(after));
            }
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

/// What one socket's event handlers share: the API state and the socket's own event budget
/// (RATE_LIMIT_* per socket), in one allocation per socket that each handler holds by `Arc`
/// (a copy of the state in each of the 12 handlers cost ~1 KiB per idle client).
struct Events {
    state: ApiState,
    window: Mutex<Window>,
    length: Duration,
    max: u32,
}

impl Events {
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

/// Sends an ack's reply. One that finds the client's buffer full (or all clients' buffers
/// together, `socketio.total_buffer_bytes`) is dropped, counted: the client's call times out.
fn answer<T: Serialize + ?Sized>(ack: AckSender, reply: &T) {
    if let Err(SendError::Socket(SocketError::InternalChannelFull)) = ack.send(reply) {
        metrics::counter!(t::SOCKETIO_DROPPED, "reason" => "reply_buffer_full").increment(1);
    }
}

fn rate_limited(ack: AckSender) {
    answer(
        ack,
        &json!({
            "success": false,
            "message": "Rate limit exceeded",
            "error": "too many events: RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW",
        }),
    );
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
        answer(ack, &reply);
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

/// The client events, with the socket's own event budget: one fallback handler that
/// dispatches by name (a handler per event cost socketioxide a map entry and a boxed closure
/// each, ~1 KiB per idle client). Events of other names are ignored, as before.
fn register_handlers(s: &SocketRef, state: &ApiState) {
    let ev = Arc::new(Events {
        state: state.clone(),
        window: Mutex::new(Window::new()),
        length: Duration::from_millis(state.config.rate_limit.window_ms),
        max: state.config.rate_limit.max_requests,
    });
    on_disconnect(s, ev.clone());
    s.on_fallback(
        move |s: SocketRef,
              Event(name): Event,
              TryData(data): TryData<Value>,
              WantsAck(wants_ack): WantsAck,
              ack: AckSender| {
            let ev = ev.clone();
            async move {
                let call = Call {
                    s,
                    data: data.ok(),
                    wants_ack,
                    ack,
                };
                ev.dispatch(&name, call).await
            }
        },
    );
}

/// One client event: its socket, its first argument, and how to answer it.
struct Call {
    s: SocketRef,
    data: Option<Value>,
    wants_ack: bool,
    ack: AckSender,
}

/// The client events this API answers.
const EVENTS: [&str; 11] = [
    "subscribe:device",
    "unsubscribe:device",
    "subscribe-all-devices",
    "subscribe-system",
    "subscribe-alerts",
    "ping",
    "get:history",
    "alarm:ack",
    "alarm:shelve",
    "alarm:unshelve",
    "get:alarms",
];

impl Events {
    async fn dispatch(&self, name: &str, call: Call) {
        use super::alarms::ActionEvent;
        if !EVENTS.contains(&name) {
            return;
        }
        if !self.allow() {
            return rate_limited(call.ack);
        }
        match name {
            "subscribe:device" => self.room_event("device:", true, call),
            "unsubscribe:device" => self.room_event("device:", false, call),
            "subscribe-all-devices" => {
                join_room(&call.s, &self.state, Room::Borrowed("all-devices"))
            }
            "subscribe-system" => join_room(&call.s, &self.state, Room::Borrowed("system-status")),
            "subscribe-alerts" => join_room(&call.s, &self.state, Room::Borrowed("alerts")),
            "ping" => {
                let _ = call.s.emit("pong", &NO_ARGS);
            }
            "get:history" => {
                answer(call.ack, &history(&self.state, call.data).await);
            }
            "alarm:ack" => self.alarm_action(ActionEvent::Ack, call).await,
            "alarm:shelve" => self.alarm_action(ActionEvent::Shelve, call).await,
            "alarm:unshelve" => self.alarm_action(ActionEvent::Unshelve, call).await,
            "get:alarms" => {
                let reply = super::alarms::list(&self.state.store, call.data.as_ref()).await;
                answer(call.ack, &reply);
            }
            _ => {}
        }
    }

    /// `subscribe:device` / `unsubscribe:device` with a device id.
    fn room_event(&self, prefix: &str, join: bool, call: Call) {
        let Call {
            s,
            data,
            wants_ack,
            ack,
        } = call;
        let id = match data {
            Some(Value::String(id)) => id,
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "bad_event").increment(1);
                return refuse_device_id(&s, wants_ack, ack, "must be a string");
            }
        };
        if let Err(e) = crate::ids::check_id(&id) {
            metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "bad_device_id").increment(1);
            return refuse_device_id(&s, wants_ack, ack, &e.to_string());
        }
        let room = Room::Owned(format!("{prefix}{id}"));
        if join {
            join_room(&s, &self.state, room)
        } else {
            leave_room(&s, room)
        }
        answer(ack, &json!({"success": true, "deviceId": id}));
    }

    /// `alarm:ack`, `alarm:shelve`, `alarm:unshelve` (see `alarms.rs`).
    async fn alarm_action(&self, event: super::alarms::ActionEvent, call: Call) {
        let user = call.s.extensions.get::<User>().and_then(|u| u.0);
        let alarms = &self.state.alarms;
        let reply = super::alarms::handle_action(alarms, event, call.data.as_ref(), user).await;
        answer(call.ack, &reply);
    }
}

/// Joins `room`, unless the client is resuming: then the room is held until its replay
/// caught up (see `resume`).
fn join_room(s: &SocketRef, state: &ApiState, room: Room) {
    if let Some(resume) = s.extensions.get::<Arc<Resume>>()
        && resume.hold(s, state, room.clone())
    {
        return;
    }
    s.join(room);
}

fn leave_room(s: &SocketRef, room: Room) {
    if let Some(resume) = s.extensions.get::<Arc<Resume>>() {
        resume.release(&room);
    }
    s.leave(room);
}

fn on_disconnect(s: &SocketRef, ev: Arc<Events>) {
    s.on_disconnect(move |s: SocketRef| {
        drop(s.extensions.remove::<Arc<Slot>>());
        let clients = ev.state.health.socket_clients.load(Ordering::SeqCst);
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

/// Where one event of a record goes.
#[derive(Clone, Copy)]
enum To {
    Device,
    AllDevices,
    Alerts,
    /// Once per socket in `alerts`, the device's room or both.
    AlertsOrDevice,
    Everyone,
}

impl To {
    /// The rooms; empty for every client.
    fn rooms(self, device: Option<&str>) -> Vec<Room> {
        let device_room = || device.map(|d| Room::Owned(format!("device:{d}")));
        match self {
            To::Device => device_room().into_iter().collect(),
            To::AllDevices => vec![Room::Borrowed("all-devices")],
            To::Alerts => vec![Room::Borrowed("alerts")],
            To::AlertsOrDevice => std::iter::once(Room::Borrowed("alerts"))
                .chain(device_room())
                .collect(),
            To::Everyone => Vec::new(),
        }
    }

    /// The sockets it reaches now.
    fn sockets(self, io: &SocketIo, device: Option<&str>) -> Vec<SocketRef> {
        // `io.to` panics once socketioxide removed the namespace at shutdown; `of` does not.
        let Some(everyone) = io.of("/") else {
            return Vec::new();
        };
        match self {
            To::Everyone => everyone.sockets(),
            _ => everyone.to(self.rooms(device)).sockets(),
        }
    }

    /// Whether a client in `rooms` gets it.
    fn reaches(self, device: Option<&str>, rooms: &std::collections::HashSet<Room>) -> bool {
        match self {
            To::Everyone => true,
            _ => self.rooms(device).iter().any(|r| rooms.contains(r)),
        }
    }
}

/// The reference events of a record and where each goes, in the order they are emitted.
fn routes(kind: RecordKind, device: Option<&str>) -> &'static [(To, &'static str)] {
    match (kind, device.is_some()) {
        (RecordKind::Reading, true) => &[
            (To::Device, "sensor:reading"),
            (To::AllDevices, "sensor:all"),
        ],
        (RecordKind::Status, true) => &[
            (To::Device, "device:status"),
            (To::AllDevices, "device:all"),
        ],
        (RecordKind::Alert, true) => &[
            (To::Alerts, "alert"),
            (To::Device, "alert:device"),
            (To::Everyone, "alert:system"),
        ],
        (RecordKind::Alert, false) => &[(To::Alerts, "alert"), (To::Everyone, "alert:system")],
        (RecordKind::Alarm, true) => &[(To::AlertsOrDevice, "alarm:state")],
        _ => &[],
    }
}

/// Emits one record to its rooms with the reference event names, one broadcast per event: the
/// packet is encoded once and every client's queue holds a clone of the same bytes. A client
/// whose buffer is full does not lose the record silently but is moved to a replay from the
/// store (see `resume::overflowed`), so its buffer stays bounded and it misses nothing.
async fn emit_record(
    io: &SocketIo,
    state: &ApiState,
    kind: RecordKind,
    device: Option<&str>,
    seq: u64,
    payload: &RawValue,
) {
    for &(to, event) in routes(kind, device) {
        let full = broadcast(io, to, device, event, payload).await;
        if full > 0 {
            overflowed_among(io, state, (to, event), device, seq, payload, full);
        }
        metrics::counter!(t::SOCKETIO_EMITTED, "event" => event).increment(1);
    }
}

/// One broadcast of `event`; how many of its clients had a full buffer (socketioxide counts
/// them but does not say which).
async fn broadcast(
    io: &SocketIo,
    to: To,
    device: Option<&str>,
    event: &str,
    payload: &RawValue,
) -> usize {
    let Some(everyone) = io.of("/") else {
        return 0; // closing: socketioxide removed the namespace
    };
    let sent = match to {
        To::Everyone => everyone.emit(event, payload).await,
        _ => everyone.to(to.rooms(device)).emit(event, payload).await,
    };
    match sent {
        Ok(()) => 0,
        Err(BroadcastError::Socket(errors)) => errors
            .iter()
            .filter(|e| matches!(e, SocketError::InternalChannelFull))
            .count(),
        Err(e) => {
            tracing::error!(error = %e, event, "a broadcast failed");
            0
        }
    }
}

/// Serializes to an error: `emit` of it takes a slot in the client's buffer (socketioxide
/// reserves before it serializes) and gives it back, so it tells whether the buffer is full
/// without sending anything.
struct Probe;

impl Serialize for Probe {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("buffer probe"))
    }
}

/// After a broadcast that found `full` buffers full: finds those clients and moves them to a
/// replay from `seq`. Only a buffer that drained in the instant between the broadcast and the
/// probe escapes the probe; then the record goes again to every client with room (a
/// duplicate, dropped by `seq` like those of a resume; counted) rather than be lost unseen.
fn overflowed_among(
    io: &SocketIo,
    state: &ApiState,
    (to, event): (To, &str),
    device: Option<&str>,
    seq: u64,
    payload: &RawValue,
    full: usize,
) {
    let mut found = 0;
    let mut with_room = Vec::new();
    for s in to.sockets(io, device) {
        match s.emit(event, &Probe) {
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                resume::overflowed(&s, state, seq);
                found += 1;
            }
            Err(SendError::Serialize(_)) => with_room.push(s),
            _ => {}
        }
    }
    if found >= full {
        return;
    }
    metrics::counter!(t::SOCKETIO_DUPLICATED).increment(with_room.len() as u64);
    for s in with_room {
        if let Err(SendError::Socket(SocketError::InternalChannelFull)) = s.emit(event, payload) {
            resume::overflowed(&s, state, seq);
        }
    }
}

/// The record's reference JSON, rendered once for every client.
fn raw<T: Serialize + ?Sized>(payload: &T) -> Option<Box<RawValue>> {
    match serde_json::value::to_raw_value(payload) {
        Ok(raw) => Some(raw),
        Err(e) => {
            tracing::error!(error = %e, "a record could not be rendered");
            None
        }
    }
}

async fn emit_committed(io: &SocketIo, state: &ApiState, c: &Committed) {
    if let Some(payload) = raw(&c.record.to_wire(&state.gateway_id, Some(c.seq))) {
        emit_record(
            io,
            state,
            c.record.kind(),
            c.record.device_id(),
            c.seq,
            &payload,
        )
        .await;
    }
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
                // Held while emitting: a resuming client joins its rooms between batches.
                let mut emitted = state.live.lock().await;
                for (i, c) in batch.iter().enumerate() {
                    if c.seq > last_seq {
                        emit_committed(&io, &state, c).await;
                        last_seq = c.seq;
                    }
                    // Let the clients' writers drain a big batch as it goes.
                    if i % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
                *emitted = last_seq;
            }
            Ok(HubEvent::System(alert)) => {
                let record = Record::Alert((*alert).clone());
                let wire = record.to_wire(&state.gateway_id, None);
                if let Some(everyone) = io.of("/") {
                    let _ = everyone.emit("alert:system", &wire).await;
                }
                metrics::counter!(t::SOCKETIO_EMITTED, "event" => "alert:system").increment(1);
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed_commits = missed,
                    from_seq = last_seq + 1,
                    "broadcast lagged; replaying from the store"
                );
                let mut emitted = state.live.lock().await;
                last_seq = catch_up(&io, &state, last_seq).await;
                *emitted = last_seq;
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
        for (i, r) in chunk.into_iter().enumerate() {
            if let Some(payload) = raw(&r.json) {
                emit_record(io, state, r.kind, r.device_id.as_deref(), r.seq, &payload).await;
            }
            last_seq = r.seq;
            if i % YIELD_EVERY == YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
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
        if let Some(everyone) = io.of("/") {
            let _ = everyone
                .to("system-status")
                .emit("system:status", &status)
                .await;
        }
        metrics::counter!(t::SOCKETIO_EMITTED, "event" => "system:status").increment(1);
        if let Some(relay) = state.health.relay.get() {
            let gateways = relay.to_json(state.config.relay.gateway_silence_ms);
            let _ = io
                .to("system-status")
                .emit("relay:gateways", &gateways)
                .await;
        }
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
