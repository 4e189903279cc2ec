//! A client of the site's own MQTT broker (rumqttc): subscribes to the configured filters and
//! feeds what arrives through the same topic contract as the embedded broker, after removing
//! each subscription's `strip_prefix`. The session is clean, so every (re)connect renews the
//! subscriptions; reconnects back off exponentially up to `backoff_max_ms`.
//!
//! With `tls = true` rumqttc runs over our rustls configuration (`crate::tls`); a refused
//! certificate is logged in plain words (expired, unknown CA, name mismatch) and retried with
//! the same backoff as any outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::topic::{LogThrottle, Reject, parse};
use crate::backoff::Backoff;
use crate::config::{SiteMqttConfig, SiteSubscription};
use crate::health::Health;
use crate::ingest::Ingest;
use crate::telemetry as t;
use crate::tls::{ProblemLog, TlsProblem};

/// Does MQTT topic filter `filter` (with `+` and `#`) match `topic`?
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The topic in the gateway's contract: the prefix of the first matching subscription removed.
pub fn map_topic<'a>(subscriptions: &[SiteSubscription], topic: &'a str) -> Option<&'a str> {
    let sub = subscriptions
        .iter()
        .find(|s| filter_matches(&s.filter, topic))?;
    topic.strip_prefix(sub.strip_prefix.as_str())
}

/// Runs the client until `stop`.
pub async fn run(
    config: SiteMqttConfig,
    gateway_id: String,
    max_payload: usize,
    (tx, health): (mpsc::Sender<Ingest>, Arc<Health>),
    stop: CancellationToken,
) {
    let Some(mut opts) = options(&config, &gateway_id, max_payload) else {
        tracing::error!(endpoint = %config.endpoint, "site_mqtt.endpoint is not host:port; client off");
        return;
    };
    let Ok(problems) = use_tls(&config, &mut opts) else {
        return;
    };
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    // Our PUBACKs and PINGREQs are small writes: Nagle would hold one back for the ACK of
    // the last (40 ms with delayed ACK), and the broker's in-flight window with it.
    eventloop.network_options.set_tcp_nodelay(true);
    let filters = subscribe_filters(&config.subscriptions);
    let mut backoff = Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    );
    let mut connected = false;
    let mut throttle = LogThrottle::default();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(endpoint = %config.endpoint, "connected to the site MQTT broker");
                connected = true;
                health.site_mqtt.set_connected();
                backoff.reset();
                metrics::gauge!(t::SITE_MQTT_CONNECTED).set(1.0);
                // Clean session: the broker forgot our subscriptions; renew them. try_ because
                // the request queue is drained by this very loop.
                if let Err(e) = client.try_subscribe_many(filters.clone()) {
                    tracing::error!(error = %e, "cannot queue site MQTT subscriptions");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => warn_refused(&ack),
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let forwarded = forward(
                    &publish,
                    &config.subscriptions,
                    max_payload,
                    &tx,
                    &mut throttle,
                );
                if forwarded.await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let wait = backoff.next_delay();
                let error = failure(&config.endpoint, &e, problems.as_ref(), connected, wait);
                health.site_mqtt.set_failed(error);
                connected = false;
                metrics::gauge!(t::SITE_MQTT_CONNECTED).set(0.0);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
    metrics::gauge!(t::SITE_MQTT_CONNECTED).set(0.0);
    tracing::debug!("site MQTT client stopped");
}

/// Switches `opts` to TLS when configured; the log of refused certificates, `Err` (logged)
/// when the TLS files cannot be used.
fn use_tls(config: &SiteMqttConfig, opts: &mut MqttOptions) -> Result<Option<ProblemLog>, ()> {
    let Some(tls) = config.tls() else {
        return Ok(None);
    };
    match crate::tls::client_config(&tls) {
        Ok(setup) => {
            let tls = TlsConfiguration::Rustls(setup.config);
            opts.set_transport(Transport::tls_with_config(tls));
            Ok(Some(setup.problems))
        }
        Err(e) => {
            tracing::error!(error = %e, "site MQTT TLS set-up failed; client off");
            Err(())
        }
    }
}

/// Logs one failed connect or lost connection and returns what /health shows: a TLS
/// refusal in plain words (always logged as an error), else the client's error.
fn failure(
    endpoint: &str,
    e: &rumqttc::ConnectionError,
    problems: Option<&ProblemLog>,
    connected: bool,
    wait: Duration,
) -> String {
    let retry_in_ms = wait.as_millis() as u64;
    let tls = problems.and_then(ProblemLog::take);
    if let Some(problem) = tls.or_else(|| TlsProblem::find(e)) {
        tracing::error!(endpoint, %problem, retry_in_ms, "site MQTT broker refused by TLS");
        return problem.to_string();
    }
    if connected {
        tracing::warn!(endpoint, error = %e, "site MQTT connection lost; reconnecting");
    } else {
        tracing::debug!(endpoint, error = %e, retry_in_ms, "site MQTT connect failed");
    }
    e.to_string()
}

/// The client options, or `None` when the endpoint is not `host:port`.
fn options(config: &SiteMqttConfig, gateway_id: &str, max_payload: usize) -> Option<MqttOptions> {
    let (host, port) = config
        .endpoint
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))?;
    let client_id = if config.client_id.is_empty() {
        format!("edge-gateway-{gateway_id}")
    } else {
        config.client_id.clone()
    };
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(5)));
    opts.set_clean_session(true);
    // Our own cap (counted as `oversize`) is lower; a bigger packet would end the connection.
    let max_packet = max_payload.saturating_mul(4).max(64 * 1024);
    opts.set_max_packet_size(max_packet, max_packet);
    if !config.username.is_empty() {
        opts.set_credentials(config.username.clone(), config.password.expose());
    }
    Some(opts)
}

fn subscribe_filters(subscriptions: &[SiteSubscription]) -> Vec<SubscribeFilter> {
    subscriptions
        .iter()
        .map(|s| {
            let qos = if s.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            SubscribeFilter::new(s.filter.clone(), qos)
        })
        .collect()
}

fn warn_refused(ack: &rumqttc::SubAck) {
    let refused = ack
        .return_codes
        .iter()
        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
        .count();
    if refused > 0 {
        tracing::warn!(refused, "the site MQTT broker refused subscriptions");
    }
}

/// Hands one publish to the pipeline through the topic contract, or counts its rejection.
/// `Err` when the pipeline is gone.
async fn forward(
    publish: &rumqttc::Publish,
    subscriptions: &[SiteSubscription],
    max_payload: usize,
    tx: &mpsc::Sender<Ingest>,
    throttle: &mut LogThrottle,
) -> Result<(), mpsc::error::SendError<Ingest>> {
    let received = Instant::now();
    let result = map_topic(subscriptions, &publish.topic)
        .ok_or(Reject::BadTopic)
        .and_then(|topic| parse(topic.as_bytes(), &publish.payload, max_payload, received));
    match result {
        Ok(msg) => tx.send(msg).await?,
        Err(reason) => {
            metrics::counter!(t::READINGS_REJECTED, "reason" => reason.as_str()).increment(1);
            throttle.warn(reason, publish.topic.as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_prefixes() {
        assert!(filter_matches("sensors/+/+", "sensors/d/t"));
        assert!(!filter_matches("sensors/+/+", "sensors/d/t/x"));
        assert!(!filter_matches("sensors/+/+", "sensors/d"));
        assert!(filter_matches("plant/#", "plant/sensors/d/t"));
        assert!(filter_matches("#", "a"));
        let subs = vec![
            SiteSubscription {
                filter: "plant/hall3/#".into(),
                qos: 1,
                strip_prefix: "plant/hall3/".into(),
            },
            SiteSubscription {
                filter: "sensors/+/+".into(),
                ..SiteSubscription::default()
            },
        ];
        assert_eq!(
            map_topic(&subs, "plant/hall3/sensors/d/t"),
            Some("sensors/d/t")
        );
        assert_eq!(map_topic(&subs, "sensors/d/t"), Some("sensors/d/t"));
        assert_eq!(map_topic(&subs, "other/d/t"), None);
    }
}
