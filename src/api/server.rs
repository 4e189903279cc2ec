//! The HTTP accept loop in place of `axum::serve`, which has no knob for what a hostile client
//! can hold: every connection gets `TCP_NODELAY`, a per-IP cap counted at accept, a header-read
//! timeout and an idle keep-alive timeout. Served with hyper's HTTP/1 connection `with_upgrades`
//! so Socket.IO websockets still upgrade.
//!
//! The timeouts are ours, not hyper's `header_read_timeout`: hyper starts that timer whenever it
//! waits for a request head, idle keep-alive included, so it cannot tell a slow header from an
//! idle connection. Here a connection is watched in three states: a request in flight (no
//! limit: a long-poll waits up to the ping interval, and the engine.io heartbeat ends dead
//! sessions), a request head begun (`header_read_timeout_ms` from its first byte), and idle
//! (`idle_timeout_ms` since the last response). An upgraded websocket leaves the watch (its
//! connection future ends) but keeps its per-IP slot until the socket closes.
//!
//! HTTPS/WSS when `server.tls_cert_file`/`tls_key_file` are set: the TLS handshake runs after
//! the per-IP cap, within `header_read_timeout_ms` (a stalled handshake is a slowloris too),
//! with the certificate in force at that moment (`tls::ServerTls`, reloaded on SIGHUP or when
//! the files change).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use socketioxide::SocketIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::telemetry as t;
use crate::tls::{ServerTls, TlsError};

/// The dashboard port's certificate when `server.tls_cert_file` and `tls_key_file` are set.
pub fn server_tls(c: &ServerConfig) -> Result<Option<Arc<ServerTls>>, TlsError> {
    match c.tls_files() {
        None => Ok(None),
        Some((cert, key)) => Ok(Some(Arc::new(ServerTls::load(&cert, &key)?))),
    }
}

/// What one connection may hold, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_per_ip: usize,
}

impl ConnLimits {
    pub fn new(c: &ServerConfig) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_millis(c.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            max_per_ip: c.max_connections_per_ip,
        }
    }
}

/// Open connections per client IP.
#[derive(Clone, Default)]
struct PerIp {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    fn acquire(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.open.lock().expect("per-IP lock poisoned");
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

/// One open connection of an IP; given back when the socket is dropped (after an upgrade too).
struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("per-IP lock poisoned");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What the watch of one connection sees; times in ms since `epoch`.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// First byte of a request head not yet handed to the service (0: none).
    head_started_ms: AtomicU64,
    /// The last response (or the accept).
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started_ms: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Never 0, so 0 can mean "none".
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let now = self.now_ms();
            let _ =
                self.head_started_ms
                    .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_started_ms.store(0, Ordering::SeqCst);
    }

    fn request_done(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ConnLimits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let now = self.now_ms();
        let head = self.head_started_ms.load(Ordering::SeqCst);
        if head != 0 {
            return (now - head >= limits.header_read_timeout.as_millis() as u64)
                .then_some("header_timeout");
        }
        let idle = self.idle_since_ms.load(Ordering::SeqCst);
        (now.saturating_sub(idle) >= limits.idle_timeout.as_millis() as u64)
            .then_some("idle_timeout")
    }
}

/// The accepted socket, noting reads for the watch and holding the IP's slot.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    _slot: IpSlot,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts a request in flight until its response is ready.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.request_started();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// Serves until `shutdown`, then disconnects every Socket.IO client, lets the connections
/// finish their requests and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    io: SocketIo,
    limits: ConnLimits,
    tls: Option<Arc<ServerTls>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let per_ip = PerIp::default();
    let connections = TaskTracker::new();
    if let Some(tls) = &tls {
        connections.spawn(tls.clone().watch(shutdown.clone()));
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = per_ip.acquire(peer.ip(), limits.max_per_ip) else {
            metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "connections_per_ip").increment(1);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let watched = Watched {
            stream,
            activity: Arc::new(Activity::new()),
            _slot: slot,
        };
        let conn = Conn {
            peer,
            router: router.clone(),
            limits,
            shutdown: shutdown.clone(),
        };
        connections.spawn(accept(watched, tls.clone(), conn));
    }
    drop(listener);
    io.close().await;
    connections.close();
    connections.wait().await;
    Ok(())
}

/// What serving one connection needs besides its socket.
struct Conn {
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
}

/// Serves the socket in the clear, or after a TLS handshake that must end within the
/// header-read timeout.
async fn accept(socket: Watched, tls: Option<Arc<ServerTls>>, conn: Conn) {
    let activity = socket.activity.clone();
    let Some(tls) = tls else {
        return serve_connection(TokioIo::new(socket), activity, conn).await;
    };
    let handshake = tls.acceptor().accept(socket);
    match tokio::time::timeout(conn.limits.header_read_timeout, handshake).await {
        Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), activity, conn).await,
        Ok(Err(e)) => {
            metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "tls_handshake").increment(1);
            tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "header_timeout").increment(1);
            tracing::debug!(peer = %conn.peer, "TLS handshake not done in time");
        }
    }
}

/// An Engine.IO request's head with its own copies of the URI and headers. hyper parses them
/// as slices of the connection's 8 KiB read buffer, and socketioxide keeps a session's
/// handshake head for the session's life: with it that buffer, a third of what an idle
/// websocket client costs. The copies are a few hundred bytes.
fn detach_head<B>(req: &mut hyper::Request<B>) {
    if !req.uri().query().is_some_and(|q| q.contains("EIO=")) {
        return;
    }
    if let Ok(uri) = req.uri().to_string().parse() {
        *req.uri_mut() = uri;
    }
    let shared = std::mem::take(req.headers_mut());
    let owned = req.headers_mut();
    owned.reserve(shared.len());
    for (name, value) in &shared {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            owned.append(name, value);
        }
    }
}

async fn serve_connection<I>(io: TokioIo<I>, activity: Arc<Activity>, conn: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        router,
        limits,
        shutdown,
    } = conn;
    let watch = activity.clone();
    let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(&watch);
        req.extensions_mut().insert(ConnectInfo(peer));
        detach_head(&mut req);
        let router = router.clone();
        async move {
            let response = router.oneshot(req.map(Body::new)).await;
            drop(in_flight);
            response
        }
    });
    // hyper's own header timer stays off (see the module doc).
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    let period = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if let Some(reason) = activity.expired(&limits) {
                    if reason == "header_timeout" {
                        metrics::counter!(t::SOCKETIO_REJECTED, "reason" => reason).increment(1);
                    }
                    tracing::debug!(%peer, reason, "connection closed");
                    return;
                }
            }
        }
    }
}
