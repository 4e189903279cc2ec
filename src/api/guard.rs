//! HTTP-level protection in front of Socket.IO: the Origin header against CORS_ORIGINS (so a
//! foreign page cannot open a WebSocket, which CORS alone does not stop), a fixed-window
//! handshake limit per client IP from RATE_LIMIT_* (429 with `Retry-After`), and, with
//! `auth.protect_probes`, a bearer token on /health and /metrics. Also the per-socket event
//! limiter and the JWT rule the Socket.IO handshake shares.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

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
    /// Set when /health and /metrics need a bearer token.
    probe_auth: Option<Arc<Jwt>>,
}

/// How a token is checked: HS256, `exp` required, `nbf` checked when present, leeway from
/// `auth.jwt_leeway_secs` (0 by default: jsonwebtoken's own default is 60 s).
pub struct Jwt {
    key: DecodingKey,
    validation: Validation,
}

impl Jwt {
    /// None when `auth.jwt_secret` is empty (authentication off).
    pub fn from_config(config: &Config) -> Option<Jwt> {
        let secret = &config.auth.jwt_secret;
        if secret.is_empty() {
            return None;
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        validation.leeway = config.auth.jwt_leeway_secs;
        Some(Jwt {
            key: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        })
    }

    /// Checks the token; returns who it names (its `sub`, else its `name` claim), recorded
    /// with the alarm actions made on this connection.
    pub fn check(&self, token: &str) -> Result<Option<String>, jsonwebtoken::errors::Error> {
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)?;
        let claim = |name: &str| data.claims.get(name)?.as_str().map(str::to_string);
        Ok(claim("sub").or_else(|| claim("name")))
    }
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

    /// Whole seconds until the window resets (at least 1): the `Retry-After` of a refusal.
    pub fn retry_after_secs(&self, window: Duration) -> u64 {
        window
            .saturating_sub(self.started.elapsed())
            .as_secs_f64()
            .ceil()
            .max(1.0) as u64
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
                probe_auth: config
                    .auth
                    .protect_probes
                    .then(|| Jwt::from_config(config))
                    .flatten()
                    .map(Arc::new),
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

    /// Err carries the seconds until this IP may try again.
    fn handshake_allowed(&self, ip: IpAddr) -> Result<(), u64> {
        let mut map = self
            .inner
            .handshakes
            .lock()
            .expect("rate limit lock poisoned");
        let window = self.inner.window;
        if map.len() > 10_000 {
            map.retain(|_, w| w.started.elapsed() < window);
        }
        let w = map.entry(ip).or_default();
        if w.allow(window, self.inner.max_handshakes) {
            Ok(())
        } else {
            Err(w.retry_after_secs(window))
        }
    }

    /// False when probes need a token and the request has no valid `Authorization: Bearer`.
    fn probe_allowed(&self, req: &Request) -> bool {
        let Some(jwt) = &self.inner.probe_auth else {
            return true;
        };
        if !matches!(req.uri().path(), "/health" | "/metrics") {
            return true;
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        token.is_some_and(|t| jwt.check(t.trim()).is_ok())
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
        if let Err(retry_after) = guard.handshake_allowed(ip) {
            metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "handshake_rate").increment(1);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, HeaderValue::from(retry_after))],
                "too many connection attempts\n",
            )
                .into_response();
        }
    }
    if !guard.probe_allowed(&req) {
        metrics::counter!(t::SOCKETIO_REJECTED, "reason" => "probe_auth").increment(1);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "authentication required: Authorization: Bearer <JWT>\n",
        )
            .into_response();
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

    #[test]
    fn retry_after_is_what_is_left_of_the_window_rounded_up() {
        let w = Window::new();
        assert_eq!(w.retry_after_secs(Duration::from_secs(60)), 60);
        assert_eq!(w.retry_after_secs(Duration::from_millis(10)), 1);
    }
}
