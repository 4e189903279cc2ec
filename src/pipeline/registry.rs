//! The device registry: the devices the gateway knows, at most `devices.max_devices` of them.
//! The silence sweep and forgetting work in bounded slices per check interval, so neither a
//! mass silence nor a mass expiry turns into one unbounded batch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::DevicesConfig;
use crate::record::DeviceState;
use crate::store::StoredDevice;

/// Devices marked offline per check interval at most: after a mass silence each tick emits at
/// most this many status changes (and as many alerts), never one commit for every device.
pub(super) const SWEEP_SLICE: usize = 1000;

/// Devices forgotten per check interval at most (one small registry transaction per tick).
pub(super) const FORGET_SLICE: usize = 1000;

#[derive(Debug, Clone)]
pub(super) struct Device {
    pub status: DeviceState,
    pub location: String,
    pub last_seen_ms: Option<i64>,
    /// Monotonic time of the last message, for the silence check.
    pub last_heard: Instant,
    /// Wall time the device was last heard of (restored from the store at start), for
    /// forgetting: days, across restarts.
    pub last_known_ms: i64,
    pub connectivity_alert: bool,
}

impl Device {
    pub fn new(status: DeviceState, received: Instant, now_ms: i64) -> Device {
        Device {
            status,
            location: String::new(),
            last_seen_ms: None,
            last_heard: received,
            last_known_ms: now_ms,
            connectivity_alert: false,
        }
    }
}

pub(super) struct Registry {
    pub devices: HashMap<String, Device>,
    max_devices: usize,
    offline_after: Duration,
    /// Silence after which a device is forgotten: `devices.forget_after_ms`, or the store's
    /// retention if that is shorter (by then its data has aged out).
    forget_after_ms: i64,
}

impl Registry {
    pub fn new(config: &DevicesConfig, store_max_age: Duration) -> Registry {
        let retention_ms = i64::try_from(store_max_age.as_millis()).unwrap_or(i64::MAX);
        let forget_after_ms = match i64::try_from(config.forget_after_ms) {
            Ok(0) => retention_ms,
            Ok(ms) => ms.min(retention_ms),
            Err(_) => retention_ms,
        };
        Registry {
            devices: HashMap::new(),
            max_devices: config.max_devices,
            offline_after: Duration::from_millis(config.offline_after_ms),
            forget_after_ms,
        }
    }

    /// Devices last heard of before this are forgotten (and not restored).
    pub fn forget_before_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.forget_after_ms)
    }

    pub fn max_devices(&self) -> usize {
        self.max_devices
    }

    /// Restores devices known from the store. Devices that were online get a fresh silence
    /// window from now.
    pub fn restore(&mut self, stored: Vec<StoredDevice>) {
        let now = Instant::now();
        for d in stored.into_iter().take(self.max_devices) {
            let last_known_ms = d.last_known_ms();
            self.devices.insert(
                d.device_id,
                Device {
                    status: d.status,
                    location: d.location,
                    last_seen_ms: d.last_seen_ms,
                    last_heard: now,
                    last_known_ms,
                    connectivity_alert: d.status == DeviceState::Offline,
                },
            );
        }
    }

    /// Whether a message of `device_id` may enter: a known device always, a new one while
    /// the registry has room.
    pub fn admits(&self, device_id: &str) -> bool {
        self.devices.len() < self.max_devices || self.devices.contains_key(device_id)
    }

    /// Marks up to [`SWEEP_SLICE`] online devices silent past `offline_after` offline (with
    /// their connectivity alert flagged); the rest wait for the next tick. Sorted by id.
    pub fn mark_silent(&mut self) -> Vec<(String, Device)> {
        let mut gone = Vec::new();
        for (id, d) in &mut self.devices {
            if gone.len() >= SWEEP_SLICE {
                break;
            }
            if d.status == DeviceState::Online && d.last_heard.elapsed() >= self.offline_after {
                d.status = DeviceState::Offline;
                d.connectivity_alert = true;
                gone.push((id.clone(), d.clone()));
            }
        }
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        gone
    }

    /// Removes up to [`FORGET_SLICE`] devices not heard of for `forget_after`; returns their ids.
    pub fn forget_due(&mut self, now_ms: i64) -> Vec<String> {
        let before = self.forget_before_ms(now_ms);
        let due: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, d)| d.last_known_ms < before)
            .take(FORGET_SLICE)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            self.devices.remove(id);
        }
        due
    }

    /// (online, with an open connectivity alert).
    pub fn counts(&self) -> (usize, usize) {
        self.devices.values().fold((0, 0), |(online, alerts), d| {
            (
                online + usize::from(d.status == DeviceState::Online),
                alerts + usize::from(d.connectivity_alert),
            )
        })
    }
}
