//! MQTT ingest: the gateway's own device-facing listener (MQTT 3.1.1 and 5 on tokio, framed
//! by rumqttd's codec), and an embedded rumqttd on a second port where site clients
//! subscribe to what was committed.
//!
//! What our listener does that a broker would not: a QoS 1 publish is acknowledged (PUBACK)
//! only after the redb commit holding it returned, in packet order per connection; nothing
//! is buffered that was acknowledged, so a full pipeline stops the sockets being read
//! (back-pressure) instead of dropping. Devices authenticate with `[[mqtt.users]]` and may
//! publish only for their own devices.
//!
//! What it deliberately does not do: QoS 2 (refused: MQTT 5 DISCONNECT 0x9B, 3.1.1 close),
//! subscriptions (SUBACK failure: 0x80, MQTT 5 0x87 with a pointer to the subscriber port),
//! retained messages (a retained publish is stored as a reading and not retained: the store
//! is the gateway's memory), topic aliases (Topic Alias Maximum 0), exactly-once
//! de-duplication (a re-sent publish with DUP is stored again and acknowledged after its
//! commit: at-least-once). Untrusted device traffic never reaches rumqttd, which bounds its
//! memory to the subscriber port's own filters.

mod auth;
mod codec;
mod connection;
mod listener;
mod subscriber;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::ingest::Ingest;

pub use auth::hash_password;
pub use subscriber::SubscriberPort;

#[derive(Debug, thiserror::Error)]
pub enum MqttSourceError {
    #[error("mqtt.listen {addr}: cannot listen: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mqtt.subscriber_listen {addr}: cannot listen: {source}")]
    SubscriberListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mqtt.tls_listen {addr}: cannot listen: {source}")]
    TlsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mqtt.tls_cert_file / mqtt.tls_key_file: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot create broker link: {0}")]
    Link(String),
    #[error("cannot start broker thread: {0}")]
    Thread(std::io::Error),
}

/// The bound device listener, not yet serving.
pub struct DeviceListener {
    listener: TcpListener,
    tls: Option<listener::TlsListener>,
    shared: Arc<listener::Shared>,
}

impl DeviceListener {
    /// Binds `mqtt.listen`. Publishes go to `ingest`; the listener stops accepting on
    /// `shutdown`, and [`DeviceListener::run`] returns once every connection has ended.
    pub async fn bind(
        config: &MqttConfig,
        ingest: mpsc::Sender<Ingest>,
        shutdown: CancellationToken,
    ) -> Result<DeviceListener, MqttSourceError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| MqttSourceError::Listen {
                    addr: config.listen,
                    source,
                })?;
        if config.allow_anonymous {
            tracing::warn!(listen = %config.listen, "MQTT: anonymous devices may publish for any device (mqtt.allow_anonymous = true)");
        }
        Ok(DeviceListener {
            listener,
            tls: bind_tls(config).await?,
            shared: listener::shared(config, ingest, shutdown),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self) {
        listener::run(self.listener, self.tls, self.shared).await;
    }
}

/// Binds `mqtt.tls_listen` with its certificate, when set.
async fn bind_tls(config: &MqttConfig) -> Result<Option<listener::TlsListener>, MqttSourceError> {
    let Some((addr, cert, key)) = config.tls() else {
        return Ok(None);
    };
    let certificate = Arc::new(crate::tls::ServerTls::load(&cert, &key)?);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MqttSourceError::TlsListen { addr, source })?;
    Ok(Some(listener::TlsListener {
        listener,
        certificate,
    }))
}
