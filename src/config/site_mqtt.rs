//! A client of the site's own MQTT broker.

use serde::Deserialize;

use super::{Check, ConfigError, Secret, client_tls_files, is_host_port};
use crate::tls::ClientTls;

/// One subscription on the site broker. After `strip_prefix` is removed, the topic must follow
/// the gateway's topic contract (`sensors/{deviceId}/{sensorType}`, `devices/{deviceId}/status`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteSubscription {
    pub filter: String,
    /// 0 or 1.
    pub qos: u8,
    pub strip_prefix: String,
}

impl Default for SiteSubscription {
    fn default() -> Self {
        SiteSubscription {
            filter: String::new(),
            qos: 1,
            strip_prefix: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteMqttConfig {
    /// `host:port` of the site broker; empty disables the client.
    pub endpoint: String,
    /// Empty = `edge-gateway-<gatewayId>`.
    pub client_id: String,
    pub username: String,
    pub password: Secret,
    /// TLS to the broker (the system's CA bundle plus `ca_file`).
    pub tls: bool,
    /// Extra trusted CA certificates (PEM file); empty = the system's only.
    pub ca_file: String,
    /// Our certificate chain and key (PEM files), for a broker that requires them (mTLS).
    pub client_cert_file: String,
    pub client_key_file: String,
    /// The name the server certificate must carry when it is not the host we connect to.
    pub server_name: String,
    pub keep_alive_secs: u64,
    /// Reconnect backoff, doubling up to the cap; subscriptions are renewed on every connect.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub subscriptions: Vec<SiteSubscription>,
}

impl Default for SiteMqttConfig {
    fn default() -> Self {
        let subscription = |filter: &str| SiteSubscription {
            filter: filter.into(),
            ..SiteSubscription::default()
        };
        SiteMqttConfig {
            endpoint: String::new(),
            client_id: String::new(),
            username: String::new(),
            password: Secret::default(),
            tls: false,
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            server_name: String::new(),
            keep_alive_secs: 30,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            subscriptions: vec![
                subscription("sensors/+/+"),
                subscription("devices/+/status"),
            ],
        }
    }
}

impl SiteMqttConfig {
    /// The TLS settings when `tls = true`.
    pub fn tls(&self) -> Option<ClientTls> {
        self.tls.then(|| self.tls_files())
    }

    fn tls_files(&self) -> ClientTls {
        client_tls_files(
            &self.ca_file,
            &self.client_cert_file,
            &self.client_key_file,
            &self.server_name,
        )
    }

    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        if self.endpoint.is_empty() {
            return Ok(());
        }
        if !is_host_port(&self.endpoint) {
            return Err(check.fail(
                "site_mqtt.endpoint",
                format!("`{}` is not host:port", self.endpoint),
            ));
        }
        check.positive("site_mqtt.keep_alive_secs", self.keep_alive_secs)?;
        check.client_tls("site_mqtt", self.tls, &self.tls_files())?;
        check.backoff("site_mqtt", self.backoff_initial_ms, self.backoff_max_ms)?;
        if self.subscriptions.is_empty() {
            return Err(check.fail("site_mqtt.subscriptions", "must not be empty"));
        }
        for (i, sub) in self.subscriptions.iter().enumerate() {
            if sub.filter.is_empty() {
                return Err(check.fail(
                    &format!("site_mqtt.subscriptions[{i}].filter"),
                    "must not be empty",
                ));
            }
            if sub.qos > 1 {
                return Err(check.fail(
                    &format!("site_mqtt.subscriptions[{i}].qos"),
                    "must be 0 or 1",
                ));
            }
        }
        Ok(())
    }
}
