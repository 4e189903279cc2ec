//! Between the sources and the store: keeps the device registry (online/offline, location,
//! lastSeen) and the alarm state, and turns each source message into the records to store:
//! the reading itself, a `device:status` change, a threshold or connectivity alert.
//!
//! It is the only owner of device and alarm state, so ordering is simple: the records of one
//! message reach the writer together and in order. It stops when every source has stopped
//! (all [`Ingest`] senders dropped), after handing everything it received to the writer.

mod registry;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use self::registry::{Device, Registry};
use crate::alarms::{ActionError, Alarms, Command, ThresholdRule};
use crate::config::{AlarmsConfig, DevicesConfig};
use crate::health::Health;
use crate::ingest::{AckCursor, Ingest};
use crate::record::{Alert, AlertKind, DeviceState, DeviceStatus, Level, Reading, Record};
use crate::store::writer::{WriteBatch, WriteRequest};
use crate::store::{Store, StoreError, StoredDevice};
use crate::telemetry as t;
use crate::time::now_ms;

pub struct Pipeline {
    registry: Registry,
    alarms: Alarms,
    offline_after: Duration,
    /// Device timestamps beyond now + this are replaced by the receive time.
    max_future_skew_ms: i64,
    /// Device timestamps older than the store keeps are replaced by the receive time.
    store_max_age_ms: i64,
    /// Readings per second over the last minute, for `dataPointsPerMinute`.
    per_second: [u64; 60],
    second_index: u64,
    health: Arc<Health>,
    next_alert: u64,
    rejected_log: t::Throttle,
    clamped_log: t::Throttle,
}

impl Pipeline {
    /// `store_max_age` is the store's age retention (`store.retention_max_age_secs`).
    pub fn new(
        config: &DevicesConfig,
        store_max_age: Duration,
        thresholds: &[ThresholdRule],
        alarms: &AlarmsConfig,
        health: Arc<Health>,
    ) -> Pipeline {
        Pipeline {
            registry: Registry::new(config, store_max_age),
            alarms: Alarms::new(thresholds, alarms.chatter_transitions_per_minute),
            offline_after: Duration::from_millis(config.offline_after_ms),
            max_future_skew_ms: i64::try_from(config.max_future_skew_ms).unwrap_or(i64::MAX),
            store_max_age_ms: i64::try_from(store_max_age.as_millis()).unwrap_or(i64::MAX),
            per_second: [0; 60],
            second_index: 0,
            health,
            next_alert: 0,
            rejected_log: t::Throttle::default(),
            clamped_log: t::Throttle::default(),
        }
    }

    /// Restores devices known from the store (most recent first, at most
    /// `devices.max_devices`). Devices that were online get a fresh silence window from now.
    pub fn restore(&mut self, stored: Vec<StoredDevice>) {
        self.registry.restore(stored);
        self.publish_figures();
    }

    /// The records one source message produces, in order.
    pub fn process(&mut self, msg: Ingest, out: &mut Vec<Record>) {
        let now = now_ms();
        // `run` hands barriers to the writer; one that got here has nothing to wait for.
        if let Ingest::Ack(token) = msg {
            token.complete();
            return;
        }
        let (Ingest::Reading { device_id, .. } | Ingest::Status { device_id, .. }) = &msg else {
            unreachable!("barriers returned above")
        };
        if !self.registry.admits(device_id) {
            self.reject_new_device(device_id);
            return;
        }
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
                let came_back = self
                    .registry
                    .devices
                    .get(&device_id)
                    .is_some_and(|d| d.status == DeviceState::Offline);
                let device = self.touch(&device_id, location.as_deref(), now, received, out);
                let location = device.location.clone();
                let unit = self.unit_for(&sensor_type, unit, threshold.as_deref());
                let reading = Reading {
                    device_id,
                    sensor_type,
                    value,
                    unit,
                    ts_ms: self.stamp(ts_ms, now),
                    status: status.unwrap_or(Level::Normal),
                    location,
                };
                if came_back {
                    out.extend(self.alarms.set_available(&reading.device_id, true, now));
                }
                self.grade(reading, threshold.as_ref(), now, out);
            }
            Ingest::Status {
                device_id,
                status,
                location,
                received,
            } => self.report_status(device_id, status, location, received, now, out),
            Ingest::Ack(_) => unreachable!("barriers returned above"),
        }
    }

    /// A new device while the registry is full: counted and logged (throttled), not stored.
    fn reject_new_device(&mut self, device_id: &str) {
        metrics::counter!(t::READINGS_REJECTED, "reason" => "too_many_devices").increment(1);
        if let Some(suppressed) = self.rejected_log.ready() {
            tracing::warn!(
                reason = "too_many_devices",
                device = ?device_id,
                max_devices = self.registry.max_devices(),
                suppressed,
                "rejected a message of a new device: the device registry is full (devices.max_devices)"
            );
        }
    }

    /// The time a reading is stored under: its own, unless missing, further ahead than
    /// `max_future_skew_ms` or older than the store keeps, where the receive time replaces it.
    /// Retention and history then never depend on a device's clock.
    fn stamp(&mut self, ts_ms: Option<i64>, now: i64) -> i64 {
        let Some(ts) = ts_ms else { return now };
        let reason = if ts > now.saturating_add(self.max_future_skew_ms) {
            "future"
        } else if ts < now.saturating_sub(self.store_max_age_ms) {
            "past"
        } else {
            return ts;
        };
        metrics::counter!(t::TIMESTAMPS_CLAMPED, "reason" => reason).increment(1);
        if let Some(suppressed) = self.clamped_log.ready() {
            tracing::warn!(
                reason,
                device_ts = %crate::time::format_ms(ts),
                suppressed,
                "device timestamp replaced by the receive time"
            );
        }
        now
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

    /// Grades the reading against its threshold rule: the reading, then the alarm
    /// transitions (and alerts) it causes.
    fn grade(
        &mut self,
        mut reading: Reading,
        threshold: Option<&Arc<ThresholdRule>>,
        now: i64,
        out: &mut Vec<Record>,
    ) {
        let alarms = self.alarms.evaluate(&mut reading, threshold, now);
        out.push(Record::Reading(reading));
        out.extend(alarms);
    }

    /// An operator action (dashboard or central): the records it makes, or why not.
    pub fn act(&mut self, cmd: Command) -> Result<Vec<Record>, ActionError> {
        let out = self.alarms.act(cmd, now_ms());
        self.publish_figures();
        out
    }

    /// Restores the alarms stored in the `alarms` table, of the devices the registry restored
    /// (a forgotten device's alarms are forgotten with it).
    pub fn restore_alarms(&mut self, rows: &[serde_json::Value]) {
        let known: Vec<serde_json::Value> = rows
            .iter()
            .filter(|r| {
                r["deviceId"]
                    .as_str()
                    .is_some_and(|d| self.registry.devices.contains_key(d))
            })
            .cloned()
            .collect();
        self.alarms.restore(&known);
        self.publish_figures();
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
        let known = self.registry.devices.contains_key(&device_id);
        let device = self
            .registry
            .devices
            .entry(device_id.clone())
            .or_insert_with(|| Device::new(status, received, now));
        let moved = location.as_ref().is_some_and(|l| *l != device.location);
        if let Some(l) = location {
            device.location = l;
        }
        device.last_heard = received;
        device.last_known_ms = now;
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
        let available = status == DeviceState::Online;
        out.extend(self.alarms.set_available(&device_id, available, now));
        if status == DeviceState::Offline && !device.connectivity_alert {
            self.registry
                .devices
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
        let known = self.registry.devices.contains_key(device_id);
        let device = self
            .registry
            .devices
            .entry(device_id.to_string())
            .or_insert_with(|| Device::new(DeviceState::Online, received, now));
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
        device.last_known_ms = now;
        if changed {
            out.push(status_record(device_id, device, now));
        }
        device
    }

    /// Marks devices silent for longer than `offline_after` offline, with a connectivity
    /// alert: at most [`registry::SWEEP_SLICE`] per call, the rest on the next ticks.
    pub fn check_silence(&mut self, out: &mut Vec<Record>) {
        let now = now_ms();
        for (id, d) in self.registry.mark_silent() {
            out.push(status_record(&id, &d, now));
            let msg = format!(
                "Device {id} offline: no data for {} s",
                self.offline_after.as_millis() / 1000
            );
            out.push(Record::Alert(self.connectivity_alert(&id, msg, now)));
            out.extend(self.alarms.set_available(&id, false, now));
        }
        out.extend(self.alarms.tick(now));
        self.roll_second();
        self.publish_figures();
    }

    /// Forgets up to [`registry::FORGET_SLICE`] devices not heard of for
    /// `devices.forget_after_ms` (or the store's retention): their registry entry and alarm
    /// state. Returns them with the cut-off for deleting their stored row.
    pub fn forget_due(&mut self) -> Vec<(String, i64)> {
        let now = now_ms();
        let gone = self.registry.forget_due(now);
        if gone.is_empty() {
            return Vec::new();
        }
        metrics::counter!(t::DEVICES_FORGOTTEN).increment(gone.len() as u64);
        let set: HashSet<String> = gone.iter().cloned().collect();
        self.alarms.forget_devices(&set);
        self.publish_figures();
        gone.into_iter().map(|id| (id, now)).collect()
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
        let (online, connectivity) = self.registry.counts();
        let total = self.registry.devices.len();
        let alarms = self.alarms.counts();
        let h = &self.health;
        h.devices_total.store(total, Ordering::Relaxed);
        h.devices_online.store(online, Ordering::Relaxed);
        // Threshold alarms active and not shelved, plus devices with an open connectivity alert.
        let active = alarms.active + connectivity;
        h.active_alerts.store(active, Ordering::Relaxed);
        h.alarms_unacked.store(alarms.unacked, Ordering::Relaxed);
        h.readings_last_minute
            .store(self.per_second.iter().sum(), Ordering::Relaxed);
        metrics::gauge!(t::DEVICES_ONLINE).set(online as f64);
        metrics::gauge!(t::DEVICES_TOTAL).set(total as f64);
        metrics::gauge!(t::ALERTS_ACTIVE).set(active as f64);
        for (state, n) in crate::alarms::state_names()
            .into_iter()
            .zip(alarms.by_state)
        {
            metrics::gauge!(t::ALARMS, "state" => state).set(n as f64);
        }
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

/// The pipeline's own config sections.
pub struct Sections<'a> {
    pub devices: &'a DevicesConfig,
    /// The store's age retention (`store.retention_max_age_secs`).
    pub store_max_age: Duration,
    pub thresholds: &'a [ThresholdRule],
    pub alarms: &'a AlarmsConfig,
}

/// An operator action on an alarm (from a dashboard or the central side) and where to answer:
/// `Ok` with a commit position that reaches 1 once its transition is committed, or why it was
/// refused.
pub struct AlarmRequest {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Arc<AckCursor>, ActionError>>,
}

/// Starts the pipeline with the devices and alarms the store knows: devices streamed from its
/// registry, the most recent `devices.max_devices` of them, after dropping those due to be
/// forgotten. It ends when every source has stopped (`ingest` closed), after handing
/// everything to the writer; `commands` are served until then.
pub fn spawn(
    sections: Sections<'_>,
    store: &Store,
    health: Arc<Health>,
    (ingest, commands): (mpsc::Receiver<Ingest>, mpsc::Receiver<AlarmRequest>),
    tx: mpsc::Sender<WriteRequest>,
) -> Result<JoinHandle<()>, StoreError> {
    let Sections {
        devices,
        store_max_age,
        thresholds,
        alarms,
    } = sections;
    let mut pipeline = Pipeline::new(devices, store_max_age, thresholds, alarms, health);
    let forget_before = pipeline.registry.forget_before_ms(now_ms());
    pipeline.restore(store.restore_devices(devices.max_devices, forget_before)?);
    pipeline.restore_alarms(&store.restore_alarms()?);
    let check_interval = Duration::from_millis(devices.check_interval_ms);
    let io = Io {
        ingest,
        commands,
        tx,
    };
    Ok(tokio::spawn(run(
        pipeline,
        store.clone(),
        io,
        check_interval,
    )))
}

/// The pipeline's channels.
struct Io {
    ingest: mpsc::Receiver<Ingest>,
    commands: mpsc::Receiver<AlarmRequest>,
    tx: mpsc::Sender<WriteRequest>,
}

/// Runs until every source has stopped, then returns (dropping the writer's sender).
async fn run(mut pipeline: Pipeline, store: Store, mut io: Io, check_interval: Duration) {
    let mut tick = tokio::time::interval(check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbox = Vec::with_capacity(INBOX_MESSAGES);
    loop {
        let mut batch = WriteBatch {
            records: Vec::new(),
            received: Instant::now(),
            acks: Vec::new(),
        };
        let mut forgotten = Vec::new();
        let mut replies = Vec::new();
        tokio::select! {
            n = io.ingest.recv_many(&mut inbox, INBOX_MESSAGES) => {
                if n == 0 {
                    break;
                }
                pipeline.take_inbox(&mut inbox, &mut batch);
            }
            Some(request) = io.commands.recv() => {
                let answer = pipeline.act(request.command).map(|records| {
                    batch.records = records;
                    let committed = Arc::new(AckCursor::default());
                    // Urgent: an operator waits for the answer; make it durable at once.
                    batch.acks.push(committed.token(1, None, true));
                    committed
                });
                replies.push((request.reply, answer));
            }
            _ = tick.tick() => {
                // Forget first: a device due for both is not marked offline on its way out.
                forgotten = pipeline.forget_due();
                pipeline.check_silence(&mut batch.records);
            }
        }
        if !(batch.records.is_empty() && batch.acks.is_empty())
            && io.tx.send(WriteRequest::Records(batch)).await.is_err()
        {
            tracing::error!("store writer is gone; pipeline stopping");
            break;
        }
        for (reply, answer) in replies {
            let _ = reply.send(answer);
        }
        if !forgotten.is_empty() {
            forget_stored(&store, forgotten).await;
        }
    }
    tracing::debug!("pipeline stopped: all sources closed");
}

impl Pipeline {
    /// Turns one wake-up's source messages into `batch`: their records, their barriers, and
    /// the earliest receive time among them.
    fn take_inbox(&mut self, inbox: &mut Vec<Ingest>, batch: &mut WriteBatch) {
        batch.received = inbox
            .iter()
            .filter_map(|m| match m {
                Ingest::Reading { received, .. } | Ingest::Status { received, .. } => {
                    Some(*received)
                }
                Ingest::Ack(_) => None,
            })
            .min()
            .unwrap_or_else(Instant::now);
        for msg in inbox.drain(..) {
            match msg {
                Ingest::Ack(token) => batch.acks.push(token),
                msg => self.process(msg, &mut batch.records),
            }
        }
    }
}

/// Deletes forgotten devices' registry rows (one bounded slice). On failure they stay until
/// the next start, which prunes the registry again.
async fn forget_stored(store: &Store, forgotten: Vec<(String, i64)>) {
    let store = store.clone();
    let count = forgotten.len();
    match tokio::task::spawn_blocking(move || store.forget_devices(&forgotten)).await {
        Ok(Ok(removed)) => tracing::debug!(count, removed, "forgot silent devices"),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            count,
            "cannot delete forgotten devices from the store registry; the next start prunes them"
        ),
        Err(e) => tracing::warn!(error = %e, "registry pruning task failed"),
    }
}

#[cfg(test)]
mod tests;
