//! Shared, lock-light state that `/health`, `/metrics` and `system:status` read: component
//! health and the figures the pipeline keeps current.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentState {
    Healthy,
    Degraded,
    Down,
    Disabled,
}

impl ComponentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Healthy => "healthy",
            ComponentState::Degraded => "degraded",
            ComponentState::Down => "down",
            ComponentState::Disabled => "disabled",
        }
    }
}

#[derive(Debug)]
pub struct Health {
    started: Instant,
    store_ok: AtomicBool,
    store_error: Mutex<Option<String>>,
    mqtt_enabled: AtomicBool,
    mqtt_ok: AtomicBool,
    /// Devices may publish without credentials (`mqtt.allow_anonymous`).
    pub mqtt_anonymous: AtomicBool,
    pub last_commit_ms: AtomicI64,
    pub store_bytes: AtomicU64,
    /// Where a damaged store file found at start was moved (a fresh store replaced it).
    pub store_recovered_from: std::sync::OnceLock<String>,
    pub devices_total: AtomicUsize,
    pub devices_online: AtomicUsize,
    pub active_alerts: AtomicUsize,
    /// Alarms waiting for an acknowledgement (active or returned to normal).
    pub alarms_unacked: AtomicUsize,
    pub readings_last_minute: AtomicU64,
    pub socket_clients: AtomicUsize,
    /// When the writer entered its current commit (ms since the epoch), 0 when not committing.
    writer_busy_since_ms: AtomicI64,
    /// One entry per configured upstream sink.
    pub sinks: Vec<Arc<SinkHealth>>,
    /// The site broker client (`site_mqtt`).
    pub site_mqtt: LinkHealth,
    /// Relay mode: the gateways heard through the central feed.
    pub relay: std::sync::OnceLock<Arc<RelayFigures>>,
}

/// Relay mode: per origin gateway, what the central feed brought (`/health`, `relay:gateways`).
#[derive(Debug, Default)]
pub struct RelayFigures {
    pub feed: LinkHealth,
    gateways: Mutex<std::collections::BTreeMap<String, GatewayFigures>>,
}

#[derive(Debug, Clone, Default)]
pub struct GatewayFigures {
    /// The highest `seq` relayed.
    pub last_seq: u64,
    /// When its last record arrived (ms since the epoch).
    pub last_heard_ms: i64,
    /// How long its last record took from the stream (entry id) or its timestamp (channel
    /// messages) to us.
    pub lag_ms: i64,
    pub relayed: u64,
    pub duplicates: u64,
}

impl RelayFigures {
    /// Notes one record of `gateway`: `seq`, new or a duplicate, and its lag.
    pub fn note(&self, gateway: &str, seq: u64, duplicate: bool, now_ms: i64, lag_ms: i64) {
        let mut gateways = self.gateways.lock().expect("health lock poisoned");
        if !gateways.contains_key(gateway) {
            gateways.insert(gateway.to_string(), GatewayFigures::default());
        }
        let g = gateways.get_mut(gateway).expect("inserted above");
        g.last_seq = g.last_seq.max(seq);
        g.last_heard_ms = now_ms;
        g.lag_ms = lag_ms;
        if duplicate {
            g.duplicates += 1;
        } else {
            g.relayed += 1;
        }
    }

    pub fn gateways(&self) -> Vec<(String, GatewayFigures)> {
        let gateways = self.gateways.lock().expect("health lock poisoned");
        gateways
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A client link that is not a sink (the site broker): up or not, and why not in plain words
/// (a TLS problem says which).
#[derive(Debug, Default)]
pub struct LinkHealth {
    enabled: AtomicBool,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl LinkHealth {
    /// Marks the link configured (it shows as down until it first connects).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
        *self.last_error.lock().expect("health lock poisoned") = Some("not connected yet".into());
    }

    pub fn set_connected(&self) {
        *self.last_error.lock().expect("health lock poisoned") = None;
        self.connected.store(true, Ordering::SeqCst);
    }

    pub fn set_failed(&self, error: String) {
        *self.last_error.lock().expect("health lock poisoned") = Some(error);
        self.connected.store(false, Ordering::SeqCst);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .expect("health lock poisoned")
            .clone()
    }

    pub fn state(&self) -> ComponentState {
        if !self.enabled.load(Ordering::SeqCst) {
            ComponentState::Disabled
        } else if self.connected() {
            ComponentState::Healthy
        } else {
            ComponentState::Down
        }
    }
}

/// One upstream sink's state and figures, kept current by its task.
#[derive(Debug)]
pub struct SinkHealth {
    /// `redis` or `kafka`: the metric label and the `<name>-sink` service name.
    pub name: &'static str,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// The next `seq` to send.
    pub cursor: AtomicU64,
    /// Records stored but not yet acknowledged upstream.
    pub lag_records: AtomicU64,
    /// Age of the oldest unsent record, in milliseconds (0 when caught up).
    pub lag_ms: AtomicU64,
    pub sent: AtomicU64,
    pub sent_per_sec: AtomicU64,
    pub errors: AtomicU64,
    /// Records the store evicted before this sink sent them.
    pub dropped_unsent: AtomicU64,
}

impl SinkHealth {
    pub fn new(name: &'static str) -> SinkHealth {
        SinkHealth {
            name,
            connected: AtomicBool::new(false),
            last_error: Mutex::new(Some("not connected yet".into())),
            cursor: AtomicU64::new(0),
            lag_records: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            sent_per_sec: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped_unsent: AtomicU64::new(0),
        }
    }

    /// Returns true when this call changed the state (so callers alert once per transition).
    pub fn set_connected(&self) -> bool {
        *self.last_error.lock().expect("health lock poisoned") = None;
        !self.connected.swap(true, Ordering::SeqCst)
    }

    pub fn set_failed(&self, error: String) -> bool {
        *self.last_error.lock().expect("health lock poisoned") = Some(error);
        self.connected.swap(false, Ordering::SeqCst)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .expect("health lock poisoned")
            .clone()
    }

    pub fn state(&self) -> ComponentState {
        if self.connected() {
            ComponentState::Healthy
        } else {
            ComponentState::Down
        }
    }

    /// The name in `system:status` services and in system alerts.
    pub fn service(&self) -> String {
        format!("{}-sink", self.name)
    }
}

impl Health {
    pub fn new(mqtt_enabled: bool, sinks: &[&'static str]) -> Health {
        Health {
            started: Instant::now(),
            store_ok: AtomicBool::new(true),
            store_error: Mutex::new(None),
            mqtt_enabled: AtomicBool::new(mqtt_enabled),
            mqtt_ok: AtomicBool::new(mqtt_enabled),
            mqtt_anonymous: AtomicBool::new(false),
            last_commit_ms: AtomicI64::new(0),
            store_bytes: AtomicU64::new(0),
            store_recovered_from: std::sync::OnceLock::new(),
            devices_total: AtomicUsize::new(0),
            devices_online: AtomicUsize::new(0),
            active_alerts: AtomicUsize::new(0),
            alarms_unacked: AtomicUsize::new(0),
            readings_last_minute: AtomicU64::new(0),
            socket_clients: AtomicUsize::new(0),
            writer_busy_since_ms: AtomicI64::new(0),
            sinks: sinks
                .iter()
                .map(|name| Arc::new(SinkHealth::new(name)))
                .collect(),
            site_mqtt: LinkHealth::default(),
            relay: std::sync::OnceLock::new(),
        }
    }

    pub fn writer_entered_commit(&self) {
        self.writer_busy_since_ms
            .store(crate::time::now_ms().max(1), Ordering::SeqCst);
    }

    pub fn writer_left_commit(&self) {
        self.writer_busy_since_ms.store(0, Ordering::SeqCst);
    }

    /// True when one commit has been running for longer than `limit`.
    pub fn writer_wedged(&self, limit: std::time::Duration) -> bool {
        let since = self.writer_busy_since_ms.load(Ordering::SeqCst);
        since > 0 && crate::time::now_ms() - since > limit.as_millis() as i64
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Returns true when this call changed the state (so callers alert once per transition).
    pub fn set_store_ok(&self) -> bool {
        *self.store_error.lock().expect("health lock poisoned") = None;
        !self.store_ok.swap(true, Ordering::SeqCst)
    }

    pub fn set_store_failed(&self, error: String) -> bool {
        *self.store_error.lock().expect("health lock poisoned") = Some(error);
        self.store_ok.swap(false, Ordering::SeqCst)
    }

    pub fn store_error(&self) -> Option<String> {
        self.store_error
            .lock()
            .expect("health lock poisoned")
            .clone()
    }

    pub fn store_state(&self) -> ComponentState {
        if self.store_ok.load(Ordering::SeqCst) {
            ComponentState::Healthy
        } else {
            ComponentState::Down
        }
    }

    pub fn set_mqtt_ok(&self, ok: bool) {
        self.mqtt_ok.store(ok, Ordering::SeqCst);
    }

    pub fn mqtt_state(&self) -> ComponentState {
        if !self.mqtt_enabled.load(Ordering::SeqCst) {
            ComponentState::Disabled
        } else if self.mqtt_ok.load(Ordering::SeqCst) {
            ComponentState::Healthy
        } else {
            ComponentState::Down
        }
    }

    /// Overall: down without the store (nothing can be accepted), degraded if an ingest path
    /// (device listener, site broker) or an upstream sink is down (records wait in the
    /// store), healthy otherwise.
    pub fn overall(&self) -> ComponentState {
        let sink_down = self.sinks.iter().any(|s| !s.connected())
            || self.site_mqtt.state() == ComponentState::Down;
        match (self.store_state(), self.mqtt_state()) {
            (ComponentState::Down, _) => ComponentState::Down,
            (_, ComponentState::Down) => ComponentState::Degraded,
            _ if sink_down => ComponentState::Degraded,
            _ => ComponentState::Healthy,
        }
    }
}
