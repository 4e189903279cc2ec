//! A minimal Socket.IO v4 client over a raw websocket (EIO4 framing: open `0`, connect `40`,
//! events `42[...]`, ping `2` / pong `3`): cheap enough for a bench to run 1000 of next to the
//! gateway. Conformance with real socket.io clients is tested in tests/conformance and
//! tests/python.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a websocket to the gateway's Socket.IO endpoint, completes the Engine.IO open and the
/// Socket.IO connect, then emits each event without arguments (e.g. `subscribe-all-devices`).
pub async fn connect(http: SocketAddr, emits: &[&str]) -> Ws {
    let url = format!("ws://{http}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    socketio_connect(ws, emits).await
}

/// `connect` over a socket whose receive buffer is `rcvbuf` bytes (no autotuning): a client
/// that stops reading then backs up into the gateway after kilobytes, not megabytes.
pub async fn connect_small_window(http: SocketAddr, emits: &[&str], rcvbuf: u32) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(rcvbuf).unwrap();
    let stream = socket.connect(http).await.expect("tcp connects");
    let url = format!("ws://{http}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
    socketio_connect(ws, emits).await
}

/// `connect` with a Socket.IO CONNECT payload (`auth`, e.g. `{"after": 0}` to resume).
pub async fn connect_with_auth(http: SocketAddr, auth: &str, emits: &[&str]) -> Ws {
    let url = format!("ws://{http}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    socketio_connect_as(ws, auth, emits).await
}

async fn socketio_connect(ws: Ws, emits: &[&str]) -> Ws {
    socketio_connect_as(ws, "", emits).await
}

async fn socketio_connect_as(mut ws: Ws, auth: &str, emits: &[&str]) -> Ws {
    let open = ws.next().await.expect("engine.io open").expect("websocket");
    assert!(
        open.to_text().unwrap_or("").starts_with('0'),
        "engine.io open: {open:?}"
    );
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    loop {
        let m = ws
            .next()
            .await
            .expect("socket.io connect")
            .expect("websocket");
        let text = m.to_text().unwrap_or("");
        if text.starts_with("40") {
            break;
        }
        // socketioxide pings once at the open: unanswered, the socket closes after ping_timeout.
        if text == "2" {
            ws.send(Message::text("3")).await.unwrap();
        }
    }
    for e in emits {
        ws.send(Message::text(format!("42[\"{e}\"]")))
            .await
            .unwrap();
    }
    ws
}

/// The next event frame (`42[...]`, whole), answering pings meanwhile; None once the socket
/// closes or fails.
pub async fn next_event(ws: &mut Ws) -> Option<Utf8Bytes> {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        if text.as_str() == "2" {
            let _ = ws.send(Message::text("3")).await;
        } else if text.as_str().starts_with("42") {
            return Some(text);
        }
    }
    None
}

/// Calls `on_event` with each event frame until it returns false, the socket closes, or
/// `stopped()` holds (checked at least every 200 ms); answers pings meanwhile.
pub async fn read_events(
    ws: &mut Ws,
    stopped: impl Fn() -> bool,
    mut on_event: impl FnMut(&str) -> bool,
) {
    while !stopped() {
        match tokio::time::timeout(Duration::from_millis(200), next_event(ws)).await {
            Ok(Some(frame)) if !on_event(frame.as_str()) => return,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return,
        }
    }
}

/// An event frame as (name, first argument).
pub fn parse_event(frame: &str) -> Option<(String, serde_json::Value)> {
    let body = frame.strip_prefix("42")?;
    let serde_json::Value::Array(mut parts) = serde_json::from_str(body).ok()? else {
        return None;
    };
    if parts.is_empty() {
        return None;
    }
    let name = parts.remove(0).as_str().unwrap_or_default().to_string();
    let arg = parts.into_iter().next().unwrap_or(serde_json::Value::Null);
    Some((name, arg))
}

/// Records every event a client receives as (name, first argument).
pub struct SocketIoEvents {
    events: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SocketIoEvents {
    pub async fn connect(addr: SocketAddr) -> SocketIoEvents {
        SocketIoEvents::connect_and_emit(addr, &[]).await
    }

    /// Connects, then emits each event (no arguments), e.g. `subscribe-all-devices`.
    pub async fn connect_and_emit(addr: SocketAddr, emits: &[&str]) -> SocketIoEvents {
        let mut ws = tokio::time::timeout(Duration::from_secs(10), connect(addr, emits))
            .await
            .expect("socket.io connect in time");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(frame) = next_event(&mut ws).await {
                sink.lock().unwrap().extend(parse_event(frame.as_str()));
            }
        });
        SocketIoEvents { events, task }
    }

    /// Every payload of `event` received so far.
    pub fn of(&self, event: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| name == event)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Drop for SocketIoEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}
