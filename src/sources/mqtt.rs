//! MQTT ingest: the embedded rumqttd broker, consumed in-process through a broker link (no
//! loopback client); messages are parsed against the topic contract ([`super::topic`]).
//! rumqttd acknowledges QoS 1 publishes (PUBACK) when its router accepts them, before our
//! commit: that window is measured as `edge_gateway_receive_to_commit_seconds`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, ConnectionSettings, Notification, RouterConfig, ServerSettings};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::ingest::Ingest;
use crate::telemetry as t;

use super::topic::{LogThrottle, parse};

#[derive(Debug, thiserror::Error)]
pub enum MqttSourceError {
    #[error("mqtt.listen {addr}: cannot listen: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create broker link: {0}")]
    Link(String),
    #[error("cannot start broker thread: {0}")]
    Thread(std::io::Error),
}

/// A started embedded broker and the links the gateway uses on it.
pub struct EmbeddedBroker {
    pub ingest: (LinkTx, LinkRx),
    /// A link for the simulator, which publishes through the broker like a device would.
    pub simulator: Option<LinkTx>,
}

/// Starts rumqttd on its own thread (it has no stop API; it ends with the process).
pub fn start_broker(
    config: &MqttConfig,
    with_simulator: bool,
) -> Result<EmbeddedBroker, MqttSourceError> {
    // rumqttd reports a failed bind only in its own thread's log: check it here first.
    TcpListener::bind(config.listen).map_err(|source| MqttSourceError::Listen {
        addr: config.listen,
        source,
    })?;
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        // Our own cap (counted as `oversize`) is lower; above this rumqttd drops the client.
        max_payload_size: config.max_payload_bytes.saturating_mul(4).max(64 * 1024),
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let mut v4 = HashMap::new();
    v4.insert(
        "v4".to_string(),
        ServerSettings {
            name: "v4".into(),
            listen: config.listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections,
        },
    );
    let broker_config = rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: config.max_connections + 4,
            max_outgoing_packet_count: 1000,
            // In-memory commit log per filter: bounded, small.
            max_segment_size: 1024 * 1024,
            max_segment_count: 8,
            ..Default::default()
        },
        v4: Some(v4),
        ..Default::default()
    };
    let mut broker = Broker::new(broker_config);
    let ingest = broker
        .link("edge-gateway-ingest")
        .map_err(|e| MqttSourceError::Link(e.to_string()))?;
    let simulator = if with_simulator {
        Some(
            broker
                .link("edge-gateway-simulator")
                .map_err(|e| MqttSourceError::Link(e.to_string()))?
                .0,
        )
    } else {
        None
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(MqttSourceError::Thread)?;
    Ok(EmbeddedBroker { ingest, simulator })
}

/// Consumes the broker link until shutdown, handing parsed messages to the pipeline.
pub async fn run_ingest(
    (mut link_tx, mut link_rx): (LinkTx, LinkRx),
    max_payload: usize,
    tx: mpsc::Sender<Ingest>,
    shutdown: CancellationToken,
) {
    if let Err(e) = link_tx.subscribe("#") {
        tracing::error!(error = %e, "cannot subscribe the ingest link; MQTT ingest is off");
        return;
    }
    let mut throttle = LogThrottle::default();
    loop {
        let notification = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = link_rx.next() => n,
        };
        let publish = match notification {
            Ok(Some(Notification::Forward(forward))) => forward.publish,
            // The router paused us because our outgoing buffer filled up; without a wake-up it
            // never schedules this link again and keeps accepting (and acking) publishes.
            Ok(Some(Notification::Unschedule)) => {
                if let Err(e) = link_rx.wake().await {
                    tracing::error!(error = %e, "MQTT broker link closed; MQTT ingest stopped");
                    break;
                }
                continue;
            }
            Ok(Some(_)) | Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "MQTT broker link closed; MQTT ingest stopped");
                break;
            }
        };
        let received = Instant::now();
        match parse(&publish.topic, &publish.payload, max_payload, received) {
            Ok(msg) => {
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            Err(reason) => {
                metrics::counter!(t::READINGS_REJECTED, "reason" => reason.as_str()).increment(1);
                throttle.warn(reason, &publish.topic);
            }
        }
    }
    tracing::debug!("MQTT ingest stopped");
}
