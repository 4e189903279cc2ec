//! The built-in dashboard: one page at `/` and its assets under `/dashboard/`, plus the
//! socket.io browser client at `socketio.path` + `/socket.io.js` and `/socket.io.min.js` (what
//! the reference Node server serves by default, so pages that load the client from the server
//! keep working). Every file is embedded in the binary (`dashboard/`, the vendored libraries
//! under `dashboard/vendor/` with their licences), gzip-compressed once, on its first request
//! (flate2's pure-Rust backend, on the blocking pool: a gateway nobody browses never pays for
//! it), and served with a strong ETag, `If-None-Match` → 304 and `Cache-Control: no-cache`
//! (revalidate: a gateway upgrade must never leave a stale page).
//!
//! Served from a middleware in front of the Socket.IO layer: socketioxide takes every path under
//! `socketio.path`, so `/socket.io/socket.io.js` would never reach a route behind it.
//!
//! This module knows files and HTTP caching, not what the page does: the page is a client of
//! the public Socket.IO API like any other dashboard.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::config::Config;

/// `(path, content type, bytes)`; the page's `__SOCKETIO_PATH__` is filled in at start.
const PAGE: [(&str, &str, &[u8]); 5] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../dashboard/index.html"),
    ),
    (
        "/dashboard/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/app.js"),
    ),
    (
        "/dashboard/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/app.css"),
    ),
    (
        "/dashboard/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "/dashboard/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uPlot.min.css"),
    ),
];

/// The socket.io v4 browser client, served under `socketio.path`.
const CLIENT: [(&str, &[u8]); 2] = [
    (
        "/socket.io.js",
        include_bytes!("../../dashboard/vendor/socket.io.js"),
    ),
    (
        "/socket.io.min.js",
        include_bytes!("../../dashboard/vendor/socket.io.min.js"),
    ),
];

/// One file ready to serve: both encodings and their validators.
struct Asset {
    content_type: HeaderValue,
    identity: Bytes,
    gzip: OnceLock<Bytes>,
    etag: HeaderValue,
    etag_gzip: HeaderValue,
}

impl Asset {
    fn new(content_type: &str, bytes: Vec<u8>) -> Asset {
        let mut hasher = std::hash::DefaultHasher::new();
        bytes.hash(&mut hasher);
        let tag = format!("{:016x}", hasher.finish());
        Asset {
            content_type: HeaderValue::from_str(content_type).expect("static content type"),
            gzip: OnceLock::new(),
            identity: Bytes::from(bytes),
            etag: HeaderValue::from_str(&format!("\"{tag}\"")).expect("hex etag"),
            etag_gzip: HeaderValue::from_str(&format!("\"{tag}-gz\"")).expect("hex etag"),
        }
    }
}

impl Asset {
    fn gzip(&self) -> &Bytes {
        self.gzip.get_or_init(|| gzip(&self.identity))
    }
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).expect("gzip into memory");
    Bytes::from(enc.finish().expect("gzip into memory"))
}

/// Every embedded file by request path.
#[derive(Clone)]
pub struct Dashboard {
    assets: Arc<HashMap<String, Arc<Asset>>>,
}

impl Dashboard {
    /// The socket.io client always; the page only with `dashboard.enabled`.
    pub fn new(config: &Config) -> Dashboard {
        let socket_path = config.socketio.path.trim_end_matches('/');
        let mut assets = HashMap::new();
        for (name, bytes) in CLIENT {
            let asset = Asset::new("text/javascript; charset=utf-8", bytes.to_vec());
            assets.insert(format!("{socket_path}{name}"), Arc::new(asset));
        }
        if config.dashboard.enabled {
            for (path, content_type, bytes) in PAGE {
                let bytes = if path == "/" {
                    fill_page(bytes, socket_path)
                } else {
                    bytes.to_vec()
                };
                assets.insert(path.to_string(), Arc::new(Asset::new(content_type, bytes)));
            }
        }
        Dashboard {
            assets: Arc::new(assets),
        }
    }

    /// Compressed bytes of every page file (the page weight a browser downloads).
    #[cfg(test)]
    fn page_weight(&self) -> usize {
        self.assets
            .iter()
            .filter(|(path, _)| !path.ends_with("/socket.io.js"))
            .map(|(_, a)| a.gzip().len())
            .sum()
    }
}

/// The index with the configured Socket.IO path (HTML-escaped; the config check already
/// requires it to start with `/`).
fn fill_page(page: &[u8], socket_path: &str) -> Vec<u8> {
    let escaped = socket_path
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    String::from_utf8_lossy(page)
        .replace("__SOCKETIO_PATH__", &escaped)
        .into_bytes()
}

/// Serves an embedded file for GET/HEAD of its path; every other request goes on.
pub async fn serve(State(dashboard): State<Dashboard>, req: Request, next: Next) -> Response {
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    let Some(asset) = dashboard.assets.get(req.uri().path()).filter(|_| is_read) else {
        return next.run(req).await;
    };
    let gzip = accepts_gzip(req.headers());
    if gzip && asset.gzip.get().is_none() {
        let asset = asset.clone();
        // Compressing the largest file takes milliseconds: not on a runtime worker.
        let _ = tokio::task::spawn_blocking(move || {
            asset.gzip();
        })
        .await;
    }
    respond(asset, req.headers(), gzip, req.method() == Method::HEAD)
}

fn respond(asset: &Asset, headers: &HeaderMap, gzip: bool, head: bool) -> Response {
    let (body, etag) = if gzip {
        (asset.gzip(), &asset.etag_gzip)
    } else {
        (&asset.identity, &asset.etag)
    };
    let mut res = if matches_etag(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut res = Response::new(if head {
            Body::empty()
        } else {
            Body::from(body.clone())
        });
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, asset.content_type.clone());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        res
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// `Accept-Encoding` lists gzip (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `If-None-Match` holds `etag` (weak comparison, as RFC 9110 asks for this header) or `*`.
fn matches_etag(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn gzip_is_negotiated() {
        assert!(accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "*")])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip;q=0, br"
        )])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "br")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etags_match_weakly_and_in_lists() {
        let tag = HeaderValue::from_static("\"abc-gz\"");
        let inm = |v: &str| headers(&[(header::IF_NONE_MATCH, v)]);
        assert!(matches_etag(&inm("\"abc-gz\""), &tag));
        assert!(matches_etag(&inm("\"x\", W/\"abc-gz\""), &tag));
        assert!(matches_etag(&inm("*"), &tag));
        assert!(!matches_etag(&inm("\"abc\""), &tag));
        assert!(!matches_etag(&HeaderMap::new(), &tag));
    }

    #[test]
    fn page_follows_the_config() {
        let mut config = Config::default();
        config.socketio.path = "/rt\"x".into();
        let d = Dashboard::new(&config);
        let page = String::from_utf8(d.assets["/"].identity.to_vec()).unwrap();
        assert!(page.contains("/rt&quot;x/socket.io.min.js") && !page.contains("__SOCKETIO"));
        assert!(d.assets.contains_key("/rt\"x/socket.io.js"));
        config.dashboard.enabled = false;
        let d = Dashboard::new(&config);
        assert!(!d.assets.contains_key("/") && d.assets.len() == CLIENT.len());
    }

    #[test]
    fn page_weight_is_within_budget() {
        let weight = Dashboard::new(&Config::default()).page_weight();
        assert!(weight <= 150 * 1024, "page weight {weight} bytes gzip");
    }
}
