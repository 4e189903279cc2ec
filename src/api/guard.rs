//! HTTP-level protection in front of Socket.IO: the Origin header against CORS_ORIGINS (so a
//! foreign page cannot open a WebSocket, which CORS alone does not stop) and a fixed-window
//! handshake limit per client IP from RATE_LIMIT_*. Also the per-socket event limiter.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::telemetry as t;

#[derive(Clone)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    any_origin: bool,
    origins: Vec<String>,
    socket_path: String,
    window: Duration,
    max_handshakes: u32,
    handshakes: Mutex<HashMap<IpAddr, Window>>,
}

/// A fixed counting window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    started: Instant,
    count: u32,
}

impl Window {
    pub fn new() -> Window {
        Window {
            started: Instant::now(),
            count: 0,
        }
    }

    /// Counts one request; false when it is over `max` in the current window.
    pub fn allow(&mut self, window: Duration, max: u32) -> bool {
        if self.started.elapsed() >= window {
            *self = Window::new();
        }
        self.count = self.count.saturating_add(1);
        self.count <= max
    }
}

impl Default for Window {
    fn default() -> Self {
        Window::new()
    }
}

impl Guard {
    pub fn new(config: &Config) -> Guard {
        Guard {
            inner: Arc::new(GuardInner {
                any_origin: config.server.cors_origins.iter().any(|o| o == "*"),
                origins: config.server.cors_origins.clone(),
                socket_path: config.socketio.path.trim_end_matches('/').to_string(),
                window: Duration::from_millis(config.rate_limit.window_ms),
                max_handshakes: config.rate_limit.max_requests,
                handshakes: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn origin_allowed(&self, req: &Request) -> bool {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return true;
        };
        if self.inner.any_origin {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self
            .inner
            .origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        // Same origin (a page served by this gateway) is always allowed.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        match (host, origin.split_once("://")) {
            (Some(host), Some((_, rest))) => rest.eq_ignore_ascii_case(host),
            _ => false,
        }
    }

    fn handshake_allowed(&self, ip: IpAddr) -> bool {
        let mut map = self
            .inner
            .handshakes
            .lock()
            .expect("rate limit lock poisoned");
        if map.len() > 10_000 {
            let window = self.inner.window;
            map.retain(|_, w| w.started.elapsed() < window);
        }
        map.entry(ip)
            .or_default()
            .allow(self.inner.window, self.inner.max_handshakes)
    }

    fn is_handshake(&self, req: &Request) -> bool {
        let path = req.uri().path().trim_end_matches('/');
        path == self.inner.socket_path
            && !req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .any(|kv| kv.starts_with("sid="))
    }
}

pub async fn check(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if !guard.origin_allowed(&req) {
        metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "origin").increment(1);
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if guard.is_handshake(&req) {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if !guard.handshake_allowed(ip) {
            metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "handshake_rate").increment(1);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connection attempts\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_and_resets() {
        let mut w = Window::new();
        let d = Duration::from_millis(50);
        assert!(w.allow(d, 2));
        assert!(w.allow(d, 2));
        assert!(!w.allow(d, 2));
        std::thread::sleep(Duration::from_millis(60));
        assert!(w.allow(d, 2));
    }
}
