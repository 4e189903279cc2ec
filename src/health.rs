//! Shared, lock-light state that `/health`, `/metrics` and `system:status` read: component
//! health and the figures the pipeline keeps current.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
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
    pub last_commit_ms: AtomicI64,
    pub store_bytes: AtomicU64,
    pub store_records_committed: AtomicU64,
    pub devices_total: AtomicUsize,
    pub devices_online: AtomicUsize,
    pub active_alerts: AtomicUsize,
    pub readings_last_minute: AtomicU64,
    pub socket_clients: AtomicUsize,
}

impl Health {
    pub fn new(mqtt_enabled: bool) -> Health {
        Health {
            started: Instant::now(),
            store_ok: AtomicBool::new(true),
            store_error: Mutex::new(None),
            mqtt_enabled: AtomicBool::new(mqtt_enabled),
            mqtt_ok: AtomicBool::new(mqtt_enabled),
            last_commit_ms: AtomicI64::new(0),
            store_bytes: AtomicU64::new(0),
            store_records_committed: AtomicU64::new(0),
            devices_total: AtomicUsize::new(0),
            devices_online: AtomicUsize::new(0),
            active_alerts: AtomicUsize::new(0),
            readings_last_minute: AtomicU64::new(0),
            socket_clients: AtomicUsize::new(0),
        }
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
    /// is down, healthy otherwise.
    pub fn overall(&self) -> ComponentState {
        match (self.store_state(), self.mqtt_state()) {
            (ComponentState::Down, _) => ComponentState::Down,
            (_, ComponentState::Down) => ComponentState::Degraded,
            _ => ComponentState::Healthy,
        }
    }
}
