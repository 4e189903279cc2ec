//! The device-facing listener: accepts connections, bounds them, and holds what connections
//! share (the pipeline sender, the in-flight byte budget, credentials, live sessions).
//!
//! `mqtt.tls_listen` adds a second accept loop whose sockets go through a TLS handshake
//! (within `connect_timeout_ms`, the certificate in force at that moment: `tls::ServerTls`)
//! before the same connection code serves them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MqttConfig;
use crate::ingest::Ingest;
use crate::telemetry as t;
use crate::tls::ServerTls;

use super::auth::Auth;
use super::connection;

/// A device connection's two halves: a TCP socket, or a TLS session on one.
pub type DeviceReader = Box<dyn AsyncRead + Send + Sync + Unpin>;
pub type DeviceWriter = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// The TLS listener and its certificate.
pub struct TlsListener {
    pub listener: TcpListener,
    pub certificate: Arc<ServerTls>,
}

/// What every connection shares.
pub struct Shared {
    pub max_payload: usize,
    /// Packets above this close the connection; MQTT 5 clients are told it in CONNACK.
    pub max_packet: usize,
    pub receive_maximum: u16,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub auth: Arc<Auth>,
    pub ingest: mpsc::Sender<Ingest>,
    /// Bytes of publishes handed to the pipeline and not yet committed, over all connections.
    pub inflight_bytes: Arc<Semaphore>,
    pub inflight_bytes_max: usize,
    pub connections: AtomicUsize,
    next_id: AtomicU64,
    /// Client id → (connection id, its stop token): a new CONNECT with the same id takes over.
    sessions: Mutex<HashMap<String, (u64, CancellationToken)>>,
    pub shutdown: CancellationToken,
}

impl Shared {
    /// Registers a session; an older connection with the same client id is closed.
    pub fn take_session(&self, client_id: &str, stop: CancellationToken) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let old = self
            .sessions
            .lock()
            .expect("sessions lock poisoned")
            .insert(client_id.to_string(), (id, stop));
        if let Some((_, old)) = old {
            old.cancel();
        }
        id
    }

    pub fn end_session(&self, client_id: &str, id: u64) {
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        if sessions
            .get(client_id)
            .is_some_and(|(owner, _)| *owner == id)
        {
            sessions.remove(client_id);
        }
    }

    pub fn next_anonymous_id(&self) -> String {
        format!(
            "edge-gw-anon-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Largest packet accepted: payloads up to `max_payload_bytes` are parsed (and above it
/// counted as `oversize` and acknowledged), with headroom so an oversize payload is a
/// counted rejection rather than a dropped connection.
pub fn max_packet(max_payload: usize) -> usize {
    max_payload.saturating_mul(4).max(64 * 1024)
}

pub fn shared(
    config: &MqttConfig,
    ingest: mpsc::Sender<Ingest>,
    shutdown: CancellationToken,
) -> Arc<Shared> {
    Arc::new(Shared {
        max_payload: config.max_payload_bytes,
        max_packet: max_packet(config.max_payload_bytes),
        receive_maximum: config.receive_maximum,
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        max_connections: config.max_connections,
        auth: Arc::new(Auth::new(config.allow_anonymous, &config.users)),
        ingest,
        inflight_bytes: Arc::new(Semaphore::new(config.inflight_bytes_max)),
        inflight_bytes_max: config.inflight_bytes_max,
        connections: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
        sessions: Mutex::new(HashMap::new()),
        shutdown,
    })
}

/// Accepts device connections (plain, and TLS when configured) until shutdown, then waits for
/// every connection to end (so the pipeline sees all senders dropped only after the last
/// publish was handed over).
pub async fn run(listener: TcpListener, tls: Option<TlsListener>, shared: Arc<Shared>) {
    let tracker = TaskTracker::new();
    if let Some(tls) = tls {
        let watch = tls.certificate.clone().watch(shared.shutdown.clone());
        tracker.spawn(watch);
        let certificate = Some(tls.certificate);
        tracker.spawn(accept_loop(
            tls.listener,
            certificate,
            shared.clone(),
            tracker.clone(),
        ));
    }
    accept_loop(listener, None, shared, tracker.clone()).await;
    tracker.close();
    tracker.wait().await;
    tracing::debug!("MQTT listener stopped");
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (socket, peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            // Counted from the accept, TLS handshake included, as the CONNECT cap expects.
            let n = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
            metrics::gauge!(t::MQTT_CONNECTIONS).set(n as f64);
            if let Some(halves) = open(socket, peer, tls, &shared).await {
                connection::serve(halves, peer, &shared).await;
            }
            let n = shared.connections.fetch_sub(1, Ordering::AcqRel) - 1;
            metrics::gauge!(t::MQTT_CONNECTIONS).set(n as f64);
        });
    }
}

/// The socket's halves, after the TLS handshake on the TLS listener (`None`: it failed or
/// did not end within `connect_timeout_ms`, counted as `tls_handshake`).
async fn open(
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    shared: &Shared,
) -> Option<(DeviceReader, DeviceWriter)> {
    let Some(tls) = tls else {
        let (rd, wr) = socket.into_split();
        return Some((Box::new(rd), Box::new(wr)));
    };
    let handshake = tls.acceptor().accept(socket);
    match tokio::time::timeout(shared.connect_timeout, handshake).await {
        Ok(Ok(stream)) => {
            let (rd, wr) = tokio::io::split(stream);
            Some((Box::new(rd), Box::new(wr)))
        }
        failed => {
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            metrics::counter!(t::MQTT_CONNECTIONS_REJECTED, "reason" => "tls_handshake")
                .increment(1);
            tracing::debug!(%peer, %error, "MQTT TLS handshake failed");
            None
        }
    }
}
