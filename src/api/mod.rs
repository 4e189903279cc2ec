//! The dashboard-facing API on one port: Socket.IO (socketioxide) at `socketio.path`,
//! `GET /health`, `GET /metrics` and the built-in dashboard at `/`. Nothing outside this module
//! knows Socket.IO.
//!
//! Layers, outermost first: Origin check (403) → per-IP handshake rate limit (429) → CORS →
//! embedded files (dashboard, socket.io client) → Socket.IO → routes.

mod alarms;
mod dashboard;
mod guard;
mod history;
mod probes;
mod server;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method};
use axum::routing::get;
use socketioxide::SocketIo;
use tower::ServiceBuilder;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::health::Health;
use crate::hub::Hub;
use crate::store::Store;

pub use server::{ConnLimits, server_tls};
use socket::{LiveGate, ReplayChunks};
pub use socket::{run_emitter, run_system_status};

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<Config>,
    pub gateway_id: Arc<str>,
    pub store: Store,
    pub health: Arc<Health>,
    pub hub: Hub,
    /// Operator actions on alarms, to the pipeline that owns them.
    pub alarms: tokio::sync::mpsc::Sender<crate::pipeline::AlarmRequest>,
    /// The last `seq` the emitter broadcast, locked while it emits (resume hands over there).
    live: LiveGate,
    /// Store chunks that replaying clients may hold at once (see `socket::resume`).
    replay_chunks: ReplayChunks,
}

impl ApiState {
    pub fn new(
        config: Arc<Config>,
        gateway_id: Arc<str>,
        store: Store,
        health: Arc<Health>,
        hub: Hub,
        alarms: tokio::sync::mpsc::Sender<crate::pipeline::AlarmRequest>,
    ) -> ApiState {
        ApiState {
            config,
            gateway_id,
            store,
            health,
            hub,
            alarms,
            live: LiveGate::default(),
            replay_chunks: ReplayChunks::default(),
        }
    }
}

/// Each websocket's read buffer, allocated when it opens: dashboards send a few small events,
/// and a bigger message grows it only while it is read (tungstenite reserves its length).
/// 4 KiB is socketioxide's default; 256 bytes saves ~0.8 KiB per idle client against 1 KiB.
const WS_READ_BUFFER: usize = 256;

/// Events a client may always hold while all buffers together are full: its acks and a few
/// events still reach it (see `socketio.total_buffer_bytes`).
const BUFFER_FLOOR_PACKETS: usize = 8;

/// Builds the router and the Socket.IO handle (used to broadcast).
pub fn app(state: ApiState) -> (Router, SocketIo) {
    let c = &state.config.socketio;
    // Process-wide: socketioxide builds engineioxide's configuration itself.
    engineioxide::budget::set_queue_budget(c.total_buffer_bytes, BUFFER_FLOOR_PACKETS);
    let (layer, io) = SocketIo::builder()
        .req_path(c.path.clone())
        .ping_interval(Duration::from_millis(c.ping_interval_ms))
        .ping_timeout(Duration::from_millis(c.ping_timeout_ms))
        .max_buffer_size(c.client_buffer_packets)
        .max_payload(c.max_payload_bytes)
        .ws_max_message_size(c.max_payload_bytes as usize)
        .ws_max_frame_size(c.max_payload_bytes as usize)
        .ws_read_buffer_size(WS_READ_BUFFER)
        .build_layer();
    socket::register(&io, state.clone());

    let guard = guard::Guard::new(&state.config);
    let dashboard = dashboard::Dashboard::new(&state.config);
    let routes = Router::new()
        .route("/health", get(probes::health))
        .route("/metrics", get(probes::metrics))
        .with_state(state.clone());
    let router = routes.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(guard, guard::check))
            .layer(cors(&state.config))
            .layer(axum::middleware::from_fn_with_state(
                dashboard,
                dashboard::serve,
            ))
            .layer(layer),
    );
    (router, io)
}

fn cors(config: &Config) -> CorsLayer {
    let origins = &config.server.cors_origins;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
}

/// Serves until `shutdown`, then disconnects every client and returns (see `server`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    io: SocketIo,
    limits: ConnLimits,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    server::serve(listener, router, io, limits, tls, shutdown).await
}
