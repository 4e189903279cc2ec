//! Between the sources and the store: keeps the device registry (online/offline, location,
//! lastSeen) and the alarm state, and turns each source message into the records to store:
//! the reading itself, a `device:status` change, a threshold or connectivity alert.
//!
//! It is the only owner of device and alarm state, so ordering is simple: the records of one
//! message reach the writer together and in order. It stops when every source has stopped
//! (all [`Ingest`] senders dropped), after handing everything it received to the writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alarms::{Alarms, ThresholdRule};
use crate::config::DevicesConfig;
use crate::health::Health;
use crate::ingest::Ingest;
use crate::record::{Alert, AlertKind, DeviceState, DeviceStatus, Level, Reading, Record};
use crate::store::writer::{WriteBatch, WriteRequest};
use crate::telemetry as t;
use crate::time::{now_ms, parse_rfc3339_ms};

#[derive(Debug, Clone)]
struct Device {
    status: DeviceState,
    location: String,
    last_seen_ms: Option<i64>,
    /// Monotonic time of the last message, for the silence check.
    last_heard: Instant,
    connectivity_alert: bool,
}

pub struct Pipeline {
    devices: HashMap<String, Device>,
    alarms: Alarms,
    offline_after: Duration,
    /// Readings per second over the last minute, for `dataPointsPerMinute`.
    per_second: [u64; 60],
    second_index: u64,
    health: Arc<Health>,
    next_alert: u64,
}

impl Pipeline {
    pub fn new(
        config: &DevicesConfig,
        thresholds: &[ThresholdRule],
        health: Arc<Health>,
    ) -> Pipeline {
        Pipeline {
            devices: HashMap::new(),
            alarms: Alarms::new(thresholds),
            offline_after: Duration::from_millis(config.offline_after_ms),
            per_second: [0; 60],
            second_index: 0,
            health,
            next_alert: 0,
        }
    }

    /// Restores devices known from the store (their latest `device:status` JSON). Devices that
    /// were online get a fresh silence window from now.
    pub fn restore(&mut self, stored: &[serde_json::Value]) {
        let now = Instant::now();
        for s in stored {
            let (Some(id), Some(status)) = (
                s["deviceId"].as_str(),
                s["status"].as_str().and_then(DeviceState::parse),
            ) else {
                continue;
            };
            self.devices.insert(
                id.to_string(),
                Device {
                    status,
                    location: s["location"].as_str().unwrap_or_default().to_string(),
                    last_seen_ms: s["lastSeen"].as_str().and_then(parse_rfc3339_ms),
                    last_heard: now,
                    connectivity_alert: status == DeviceState::Offline,
                },
            );
        }
        self.publish_figures();
    }

    /// The records one source message produces, in order.
    pub fn process(&mut self, msg: Ingest, out: &mut Vec<Record>) {
        let now = now_ms();
        match msg {
            Ingest::Reading {
                device_id,
                sensor_type,
                value,
                unit,
                ts_ms,
                status,
                location,
                received,
                threshold,
            } => {
                self.count_reading();
                let device = self.touch(&device_id, location.as_deref(), now, received, out);
                let location = device.location.clone();
                let unit = self.unit_for(&sensor_type, unit, threshold.as_deref());
                let reading = Reading {
                    device_id,
                    sensor_type,
                    value,
                    unit,
                    ts_ms: ts_ms.unwrap_or(now),
                    status: status.unwrap_or(Level::Normal),
                    location,
                };
                self.grade(reading, threshold.as_deref(), out);
            }
            Ingest::Status {
                device_id,
                status,
                location,
                received,
            } => self.report_status(device_id, status, location, received, now, out),
            // `run` hands barriers to the writer; one that got here has nothing to wait for.
            Ingest::Ack(token) => token.complete(),
        }
    }

    /// The reading's own unit, else its threshold rule's, else the sensor type's default.
    fn unit_for(
        &self,
        sensor_type: &str,
        unit: Option<String>,
        threshold: Option<&ThresholdRule>,
    ) -> String {
        unit.or_else(|| threshold.map(|r| r.unit.clone()).filter(|u| !u.is_empty()))
            .or_else(|| self.alarms.default_unit(sensor_type).map(str::to_string))
            .unwrap_or_default()
    }

    /// Grades the reading against its threshold rule: the reading, then any alert it raises.
    fn grade(
        &mut self,
        mut reading: Reading,
        threshold: Option<&ThresholdRule>,
        out: &mut Vec<Record>,
    ) {
        let alert = self.alarms.evaluate(&mut reading, threshold);
        out.push(Record::Reading(reading));
        if let Some(alert) = alert {
            metrics::counter!(t::ALERTS_RAISED, "type" => "threshold").increment(1);
            out.push(Record::Alert(alert));
        }
    }

    /// A device's own status report: emits the change, with a connectivity alert the first
    /// time it reports offline.
    fn report_status(
        &mut self,
        device_id: String,
        status: DeviceState,
        location: Option<String>,
        received: Instant,
        now: i64,
        out: &mut Vec<Record>,
    ) {
        let known = self.devices.contains_key(&device_id);
        let device = self
            .devices
            .entry(device_id.clone())
            .or_insert_with(|| Device {
                status,
                location: String::new(),
                last_seen_ms: None,
                last_heard: received,
                connectivity_alert: false,
            });
        let moved = location.as_ref().is_some_and(|l| *l != device.location);
        if let Some(l) = location {
            device.location = l;
        }
        device.last_heard = received;
        let changed = !known || device.status != status || moved;
        device.status = status;
        if status != DeviceState::Offline {
            device.last_seen_ms = Some(now);
            device.connectivity_alert = false;
        }
        if !changed {
            return;
        }
        let device = device.clone();
        out.push(status_record(&device_id, &device, now));
        if status == DeviceState::Offline && !device.connectivity_alert {
            self.devices
                .get_mut(&device_id)
                .expect("inserted above")
                .connectivity_alert = true;
            let msg = format!("Device {device_id} reported offline");
            out.push(Record::Alert(self.connectivity_alert(&device_id, msg, now)));
        }
    }

    /// Marks the device heard from now; emits `online` if it was unknown or offline.
    fn touch(
        &mut self,
        device_id: &str,
        location: Option<&str>,
        now: i64,
        received: Instant,
        out: &mut Vec<Record>,
    ) -> &Device {
        let known = self.devices.contains_key(device_id);
        let device = self
            .devices
            .entry(device_id.to_string())
            .or_insert_with(|| Device {
                status: DeviceState::Online,
                location: String::new(),
                last_seen_ms: None,
                last_heard: received,
                connectivity_alert: false,
            });
        let mut changed = !known;
        if let Some(l) = location
            && l != device.location
        {
            device.location = l.to_string();
            changed = true;
        }
        if device.status == DeviceState::Offline {
            device.status = DeviceState::Online;
            device.connectivity_alert = false;
            changed = true;
        }
        device.last_seen_ms = Some(now);
        device.last_heard = received;
        if changed {
            out.push(status_record(device_id, device, now));
        }
        device
    }

    /// Marks devices silent for longer than `offline_after` offline, with a connectivity alert.
    pub fn check_silence(&mut self, out: &mut Vec<Record>) {
        let now = now_ms();
        let mut gone = Vec::new();
        for (id, d) in &mut self.devices {
            if d.status == DeviceState::Online && d.last_heard.elapsed() >= self.offline_after {
                d.status = DeviceState::Offline;
                d.connectivity_alert = true;
                gone.push((id.clone(), d.clone()));
            }
        }
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, d) in gone {
            out.push(status_record(&id, &d, now));
            let msg = format!(
                "Device {id} offline: no data for {} s",
                self.offline_after.as_millis() / 1000
            );
            out.push(Record::Alert(self.connectivity_alert(&id, msg, now)));
        }
        self.roll_second();
        self.publish_figures();
    }

    fn connectivity_alert(&mut self, device_id: &str, message: String, now: i64) -> Alert {
        self.next_alert += 1;
        metrics::counter!(t::ALERTS_RAISED, "type" => "connectivity").increment(1);
        Alert {
            alert_id: format!("alert-{now}-c{}", self.next_alert),
            device_id: Some(device_id.to_string()),
            severity: Level::Warning,
            kind: AlertKind::Connectivity,
            message,
            ts_ms: now,
            sensor_type: None,
            threshold: None,
            affected_services: vec![],
        }
    }

    fn count_reading(&mut self) {
        self.per_second[(self.second_index % 60) as usize] += 1;
    }

    fn roll_second(&mut self) {
        // Called about once per check interval; advance by whole seconds of wall time.
        let now_s = (now_ms() / 1000) as u64;
        while self.second_index < now_s {
            self.second_index = if self.second_index == 0 {
                now_s
            } else {
                self.second_index + 1
            };
            self.per_second[(self.second_index % 60) as usize] = 0;
        }
    }

    fn publish_figures(&self) {
        let online = self
            .devices
            .values()
            .filter(|d| d.status == DeviceState::Online)
            .count();
        let connectivity = self
            .devices
            .values()
            .filter(|d| d.connectivity_alert)
            .count();
        let h = &self.health;
        h.devices_total.store(self.devices.len(), Ordering::Relaxed);
        h.devices_online.store(online, Ordering::Relaxed);
        h.active_alerts
            .store(self.alarms.active() + connectivity, Ordering::Relaxed);
        h.readings_last_minute
            .store(self.per_second.iter().sum(), Ordering::Relaxed);
        metrics::gauge!(t::DEVICES_ONLINE).set(online as f64);
        metrics::gauge!(t::DEVICES_TOTAL).set(self.devices.len() as f64);
        metrics::gauge!(t::ALERTS_ACTIVE).set((self.alarms.active() + connectivity) as f64);
    }
}

fn status_record(device_id: &str, d: &Device, now: i64) -> Record {
    Record::Status(DeviceStatus {
        device_id: device_id.to_string(),
        status: d.status,
        ts_ms: now,
        location: d.location.clone(),
        last_seen_ms: d.last_seen_ms,
    })
}

/// Source messages taken per wake-up: one write request for all of them lets the writer
/// group-commit a burst, and 1024 bounds the records one request carries.
const INBOX_MESSAGES: usize = 1024;

/// Starts the pipeline with the devices the store knows (their latest `device:status` JSON).
/// It ends when every source has stopped, after handing everything to the writer.
pub fn spawn(
    config: &DevicesConfig,
    thresholds: &[ThresholdRule],
    stored_devices: &[serde_json::Value],
    health: Arc<Health>,
    rx: mpsc::Receiver<Ingest>,
    tx: mpsc::Sender<WriteRequest>,
) -> JoinHandle<()> {
    let mut pipeline = Pipeline::new(config, thresholds, health);
    pipeline.restore(stored_devices);
    let check_interval = Duration::from_millis(config.check_interval_ms);
    tokio::spawn(run(pipeline, rx, tx, check_interval))
}

/// Runs until every source has stopped, then returns (dropping the writer's sender).
async fn run(
    mut pipeline: Pipeline,
    mut rx: mpsc::Receiver<Ingest>,
    tx: mpsc::Sender<WriteRequest>,
    check_interval: Duration,
) {
    let mut tick = tokio::time::interval(check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbox = Vec::with_capacity(INBOX_MESSAGES);
    loop {
        let mut records = Vec::new();
        let mut acks = Vec::new();
        let received;
        tokio::select! {
            n = rx.recv_many(&mut inbox, INBOX_MESSAGES) => {
                if n == 0 {
                    break;
                }
                received = inbox.iter().filter_map(|m| match m {
                    Ingest::Reading { received, .. } | Ingest::Status { received, .. } => Some(*received),
                    Ingest::Ack(_) => None,
                }).min().unwrap_or_else(Instant::now);
                for msg in inbox.drain(..) {
                    match msg {
                        Ingest::Ack(token) => acks.push(token),
                        msg => pipeline.process(msg, &mut records),
                    }
                }
            }
            _ = tick.tick() => {
                received = Instant::now();
                pipeline.check_silence(&mut records);
            }
        }
        if !(records.is_empty() && acks.is_empty())
            && tx
                .send(WriteRequest::Records(WriteBatch {
                    records,
                    received,
                    acks,
                }))
                .await
                .is_err()
        {
            tracing::error!("store writer is gone; pipeline stopping");
            break;
        }
    }
    tracing::debug!("pipeline stopped: all sources closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn reading(dev: &str, value: f64) -> Ingest {
        Ingest::Reading {
            device_id: dev.into(),
            sensor_type: "temperature".into(),
            value,
            unit: None,
            ts_ms: None,
            status: None,
            location: Some("Line 1".into()),
            received: Instant::now(),
            threshold: None,
        }
    }

    fn pipeline(offline_after_ms: u64) -> Pipeline {
        let mut c = Config::default();
        c.devices.offline_after_ms = offline_after_ms;
        Pipeline::new(&c.devices, &c.thresholds, Arc::new(Health::new(true, &[])))
    }

    fn kinds(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match r {
                Record::Reading(r) => format!("reading:{}:{}", r.value, r.status.as_str()),
                Record::Status(s) => format!("status:{}", s.status.as_str()),
                Record::Alert(a) => format!("alert:{:?}:{}", a.kind, a.severity.as_str()),
            })
            .collect()
    }

    #[test]
    fn first_reading_brings_device_online_and_thresholds_alert() {
        let mut p = pipeline(60_000);
        let mut out = vec![];
        p.process(reading("d1", 20.0), &mut out);
        p.process(reading("d1", 50.0), &mut out);
        assert_eq!(
            kinds(&out),
            vec![
                "status:online",
                "reading:20:normal",
                "reading:50:critical",
                "alert:Threshold:critical"
            ]
        );
        let Record::Reading(r) = &out[1] else {
            panic!()
        };
        assert_eq!(r.unit, "°C");
        assert_eq!(r.location, "Line 1");
    }

    #[test]
    fn silence_marks_offline_once_and_data_brings_back() {
        let mut p = pipeline(0);
        let mut out = vec![];
        p.process(reading("d1", 20.0), &mut out);
        out.clear();
        p.check_silence(&mut out);
        assert_eq!(
            kinds(&out),
            vec!["status:offline", "alert:Connectivity:warning"]
        );
        out.clear();
        p.check_silence(&mut out);
        assert!(out.is_empty());
        assert_eq!(p.health.active_alerts.load(Ordering::Relaxed), 1);
        p.process(reading("d1", 21.0), &mut out);
        assert_eq!(kinds(&out), vec!["status:online", "reading:21:normal"]);
    }

    #[test]
    fn status_topic_sets_state_and_offline_alerts() {
        let mut p = pipeline(60_000);
        let mut out = vec![];
        let status = |s| Ingest::Status {
            device_id: "d1".into(),
            status: s,
            location: None,
            received: Instant::now(),
        };
        p.process(status(DeviceState::Maintenance), &mut out);
        p.process(status(DeviceState::Maintenance), &mut out);
        p.process(status(DeviceState::Offline), &mut out);
        assert_eq!(
            kinds(&out),
            vec![
                "status:maintenance",
                "status:offline",
                "alert:Connectivity:warning"
            ]
        );
    }
}
