//! The subscriber port: an embedded rumqttd that site clients (dashboards, `mosquitto_sub`)
//! subscribe to. It carries only what the gateway committed, republished from the hub by
//! the gateway; devices publish on the device listener and never reach it.
//!
//! rumqttd keeps an in-memory log per filter; the filters are created up front
//! (`sensors/#`, `devices/#`) and by subscriptions, and publishes from site clients create
//! none (`dynamic_filters` off), so its memory is bounded by the subscriptions. It still
//! accepts publishes (and retained ones) from whoever connects: bind it where only trusted
//! site clients reach it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::local::LinkTx;
use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};

use crate::record::{Committed, Record};
use crate::telemetry as t;

use super::MqttSourceError;

/// The gateway's link into the subscriber broker.
pub struct SubscriberPort {
    link: LinkTx,
}

impl SubscriberPort {
    /// Starts rumqttd on its own thread (it has no stop API; it ends with the process).
    pub fn start(listen: SocketAddr, max_connections: usize) -> Result<Self, MqttSourceError> {
        // rumqttd reports a failed bind only in its own thread's log: check it here first.
        TcpListener::bind(listen).map_err(|source| MqttSourceError::SubscriberListen {
            addr: listen,
            source,
        })?;
        let connections = ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 64 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
        };
        let mut v4 = HashMap::new();
        v4.insert(
            "subscribers".to_string(),
            ServerSettings {
                name: "subscribers".into(),
                listen,
                tls: None,
                next_connection_delay_ms: 1,
                connections,
            },
        );
        let config = rumqttd::Config {
            id: 0,
            router: RouterConfig {
                max_connections: max_connections + 4,
                max_outgoing_packet_count: 1000,
                max_segment_size: 1024 * 1024,
                max_segment_count: 8,
                initialized_filters: Some(vec!["sensors/#".into(), "devices/#".into()]),
                ..Default::default()
            },
            v4: Some(v4),
            ..Default::default()
        };
        let mut broker = Broker::new(config);
        let (link, _rx) = broker
            .link("edge-gateway-republisher")
            .map_err(|e| MqttSourceError::Link(e.to_string()))?;
        std::thread::Builder::new()
            .name("mqtt-subscribers".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "subscriber MQTT broker stopped");
                }
            })
            .map_err(MqttSourceError::Thread)?;
        wait_listening(listen);
        tracing::info!(%listen, "MQTT subscriber port listening (committed readings and device status)");
        Ok(SubscriberPort { link })
    }

    /// Republishes one group commit: readings on `sensors/{deviceId}/{sensorType}`, status
    /// changes on `devices/{deviceId}/status`, as the reference JSON (which the topic
    /// contract parses again). Never blocks: when the router is full the rest is dropped
    /// and counted (the store has it).
    pub fn publish_committed(&mut self, batch: &[Committed], gateway_id: &str) {
        for c in batch {
            let topic = match &c.record {
                Record::Reading(r) => format!("sensors/{}/{}", r.device_id, r.sensor_type),
                Record::Status(s) => format!("devices/{}/status", s.device_id),
                Record::Alert(_) | Record::Alarm(_) | Record::Relayed(_) => continue,
            };
            let payload = match serde_json::to_vec(&c.record.to_wire(gateway_id, Some(c.seq))) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot render a record for the subscriber port");
                    continue;
                }
            };
            if self.link.try_publish(topic, payload).is_err() {
                metrics::counter!(t::MQTT_REPUBLISH_DROPPED).increment(1);
            }
        }
    }
}

/// How long start waits for rumqttd's thread to bind the subscriber port.
const BIND_WAIT: Duration = Duration::from_secs(5);

/// Waits until rumqttd (which binds in its own thread and says nothing when it did) accepts
/// connections, so a site client started once the gateway is ready is not refused. A
/// connection opened and closed before CONNECT costs rumqttd nothing.
fn wait_listening(listen: SocketAddr) {
    if listen.port() == 0 {
        return;
    }
    let mut to = listen;
    if to.ip().is_unspecified() {
        to.set_ip(match to.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let deadline = Instant::now() + BIND_WAIT;
    while TcpStream::connect_timeout(&to, Duration::from_millis(100)).is_err() {
        if Instant::now() >= deadline {
            tracing::warn!(%listen, "MQTT subscriber port: rumqttd is not accepting connections yet");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
