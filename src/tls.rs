//! TLS for every link that leaves the box: the rustls configurations of the upstream clients
//! (Redis, Kafka, the site MQTT broker) and of our own listeners (dashboard, MQTT devices),
//! and what a failed handshake means in plain words.
//!
//! rustls with the `ring` provider only: ring's C and assembly build with the same cross gcc
//! the static ARM links already use, while aws-lc (rustls' default) needs cmake and nasm per
//! target. Trust: the system's CA bundle (rustls-native-certs reads the PEM files, so a static
//! binary uses the box's `/etc/ssl/certs`) plus an optional `ca_file`. No protocol lives here:
//! each client hands the [`ClientConfig`] to its own crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    ServerConfig, SignatureScheme,
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

pub use rustls;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("`{0}` is not a valid server name (a DNS name or an IP address)")]
    ServerName(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// What a client needs besides the system roots; every field is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientTls {
    /// Extra trusted CA certificates (PEM), added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Our certificate chain and key (PEM), for servers that require client certificates.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// The name the server certificate must carry, when it is not the host we connect to.
    pub server_name: Option<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Every certificate in a PEM file; an error names the file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.into(),
            message: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.into() },
        e => TlsError::File {
            path: path.into(),
            message: format!("not PEM: {e}"),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.into(),
        message: e.to_string(),
    })
}

/// The system's CA certificates; what cannot be read is logged, not fatal (a `ca_file` may
/// be all a private upstream needs).
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "cannot read a system CA certificate file");
    }
    let mut roots = RootCertStore::empty();
    let (_, skipped) = roots.add_parsable_certificates(found.certs);
    if skipped > 0 {
        tracing::debug!(skipped, "unusable system CA certificates skipped");
    }
    roots
}

/// A client configuration and where its certificate checks note their last failure.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    pub config: Arc<ClientConfig>,
    pub problems: ProblemLog,
}

/// The last server-certificate failure seen by one client configuration. Client crates
/// (rskafka) flatten a handshake error into text; the verifier tells us what it refused.
#[derive(Debug, Clone, Default)]
pub struct ProblemLog(Arc<Mutex<Option<TlsProblem>>>);

impl ProblemLog {
    /// The failure noted since the last call, if any.
    pub fn take(&self) -> Option<TlsProblem> {
        self.0.lock().expect("tls lock poisoned").take()
    }

    fn note(&self, error: &rustls::Error) {
        *self.0.lock().expect("tls lock poisoned") = Some(TlsProblem(describe(error)));
    }

    /// `stream` with its I/O errors checked for a TLS failure (an alert the server sends after
    /// the handshake, as TLS 1.3 servers do when they refuse our client certificate), for a
    /// client crate that keeps only the text of an I/O error.
    pub fn watch<S>(&self, stream: S) -> Watched<S> {
        Watched {
            inner: stream,
            problems: self.clone(),
        }
    }

    fn note_io(&self, error: &std::io::Error) {
        if let Some(problem) = TlsProblem::find(error) {
            *self.0.lock().expect("tls lock poisoned") = Some(problem);
        }
    }
}

/// A stream whose I/O errors go through [`ProblemLog::watch`].
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    problems: ProblemLog,
}

impl<S> Watched<S> {
    fn noted<T>(&self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(e)) = &r {
            self.problems.note_io(e);
        }
        r
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.noted(r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.noted(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.noted(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.noted(r)
    }
}

/// The client configuration for `tls`: system roots plus `ca_file`, client certificate when
/// given, the server name override when given. Reads and checks every file.
pub fn client_config(tls: &ClientTls) -> Result<ClientSetup, TlsError> {
    let mut roots = system_roots();
    if let Some(ca) = &tls.ca_file {
        for cert in load_certs(ca)? {
            roots.add(cert)?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "no trusted CA certificates (no system bundle found and no ca_file): every TLS upstream will fail as unknown CA"
        );
    }
    let name = match &tls.server_name {
        None => None,
        Some(name) => Some(
            ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?,
        ),
    };
    let inner = WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let problems = ProblemLog::default();
    let verifier = CheckedName {
        inner,
        name,
        problems: problems.clone(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let certs = load_certs(cert)?;
            (builder.with_client_auth_cert(certs, load_key(key)?))
                .map_err(|e| pair(e, cert, key))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(ClientSetup {
        config: Arc::new(config),
        problems,
    })
}

/// webpki's check of the server certificate, against the configured name instead of the host
/// we dialled when there is one (an upstream reached by IP or through a tunnel), noting what
/// it refused in the [`ProblemLog`].
#[derive(Debug)]
struct CheckedName {
    inner: Arc<WebPkiServerVerifier>,
    name: Option<ServerName<'static>>,
    problems: ProblemLog,
}

impl ServerCertVerifier for CheckedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(dialled);
        let result =
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now);
        if let Err(e) = &result {
            self.problems.note(e);
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server configuration from a certificate chain and its key (PEM files).
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert_file)?, load_key(key_file)?)
        .map_err(|e| pair(e, cert_file, key_file))?;
    Ok(Arc::new(config))
}

/// A certificate and key that rustls would not pair, named by their files.
fn pair(e: rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.into(),
            key: key.into(),
        },
        e => TlsError::Rustls(e),
    }
}

/// A listener's certificate, swapped for a new one when its files change (`reload_if_changed`,
/// polled by the listener and called on SIGHUP). A bad new pair is logged and the old one kept.
#[derive(Debug)]
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<ServerConfig>, Stamp)>,
}

/// Modification times and sizes of the two files: what tells a reload is due.
type Stamp = [(Option<SystemTime>, u64); 2];

impl ServerTls {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerTls, TlsError> {
        let stamp = stamp(cert_file, key_file);
        let config = server_config(cert_file, key_file)?;
        Ok(ServerTls {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            current: RwLock::new((config, stamp)),
        })
    }

    /// The acceptor for the next connection (the certificate in force now).
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().expect("tls lock poisoned");
        TlsAcceptor::from(current.0.clone())
    }

    /// Reloads when the files changed since the last load (or always, with `force`). Returns
    /// whether a new certificate is in force.
    pub fn reload_if_changed(&self, force: bool) -> bool {
        let now = stamp(&self.cert_file, &self.key_file);
        if !force && self.current.read().expect("tls lock poisoned").1 == now {
            return false;
        }
        match server_config(&self.cert_file, &self.key_file) {
            Ok(config) => {
                *self.current.write().expect("tls lock poisoned") = (config, now);
                tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Noted as seen, so a half-written pair is retried once it changes again.
                self.current.write().expect("tls lock poisoned").1 = now;
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays");
                false
            }
        }
    }
}

impl ServerTls {
    /// Reloads on SIGHUP and when the files change (checked every [`RELOAD_POLL`]) until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; TLS certificates reload on file changes only");
                None
            }
        };
        let mut poll = tokio::time::interval(RELOAD_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = stop.cancelled() => return,
                _ = poll.tick() => false,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
            };
            self.reload_if_changed(force);
        }
    }
}

/// How often a listener's certificate files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

fn stamp(cert_file: &Path, key_file: &Path) -> Stamp {
    [cert_file, key_file].map(|p| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    })
}

/// A TLS failure found in an error's chain, in plain words: what went wrong with the peer's
/// certificate (or ours), for logs and `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProblem(String);

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TlsProblem {
    /// Looks through `error` and its sources (and the errors inside `io::Error`s) for a
    /// rustls error.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<TlsProblem> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(r) = e.downcast_ref::<rustls::Error>() {
                return Some(TlsProblem(describe(r)));
            }
            let inner = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref());
            if let Some(p) = inner.and_then(|inner| TlsProblem::find(inner)) {
                return Some(p);
            }
            next = e.source();
        }
        None
    }
}

/// rustls' error in words an operator acts on.
pub fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(c) => {
            format!("TLS: the server's certificate {}", certificate(c))
        }
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied => format!(
                "TLS: the server refused our client certificate ({alert:?}): check client_cert_file and client_key_file"
            ),
            other => format!("TLS: the server ended the handshake ({other:?})"),
        },
        rustls::Error::NoCertificatesPresented => "TLS: the server presented no certificate".into(),
        other => format!("TLS: {other}"),
    }
}

fn certificate(c: &CertificateError) -> String {
    match c {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "has expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "is not valid yet (check this box's clock)".into()
        }
        CertificateError::UnknownIssuer => {
            "is signed by an unknown CA (add the issuing CA with ca_file)".into()
        }
        CertificateError::NotValidForName => {
            "does not name this host (set server_name to the name it carries)".into()
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            // webpki renders the names as `DnsName("…")`; the name itself is what to copy.
            let presented: Vec<&str> = presented
                .iter()
                .map(|p| {
                    p.strip_prefix("DnsName(\"")
                        .and_then(|p| p.strip_suffix("\")"))
                        .unwrap_or(p)
                })
                .collect();
            format!(
                "is not valid for {} but for {} (set server_name to the name it carries)",
                expected.to_str(),
                presented.join(", ")
            )
        }
        CertificateError::Revoked => "has been revoked".into(),
        CertificateError::BadSignature => "has a bad signature".into(),
        other => format!("is not accepted: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_found_inside_io_errors_and_named_plainly() {
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, expired);
        let found = TlsProblem::find(&io).expect("found");
        assert_eq!(
            found.to_string(),
            "TLS: the server's certificate has expired"
        );
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(describe(&unknown).contains("unknown CA"));
        let refused = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(describe(&refused).contains("refused our client certificate"));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(TlsProblem::find(&plain), None);
    }

    #[test]
    fn file_problems_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(
            load_certs(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.pem")
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        assert!(matches!(
            load_certs(&junk),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(load_key(&junk), Err(TlsError::NoKey { .. })));
        let tls = ClientTls {
            server_name: Some("not a name!".into()),
            ..ClientTls::default()
        };
        assert!(matches!(client_config(&tls), Err(TlsError::ServerName(_))));
    }
}
