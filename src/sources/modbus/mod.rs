//! Modbus RTU/TCP devices polled with their firmware profiles.
//!
//! Every serial port has exactly one owner task ([`bus::RtuLine`] driven by [`run_link`]): an
//! RS-485 line is a shared half-duplex bus, so requests to all its slaves are serialized there,
//! with the inter-frame gap respected. Every TCP device has its own task and one connection
//! ([`tcp::TcpLink`]). Both run the same scheduler: devices due together are polled back to
//! back (one cycle); a poll reads the profile's merged blocks; a timeout ends that device's turn
//! for the cycle (it is paid once, never retried in the cycle); garbled replies are retried.
//! After `offline_after_failures` failed polls in a row a device goes offline and is
//! quarantined with exponential backoff; one good poll brings it back online.
//!
//! Readings and status changes go to the pipeline as [`Ingest`], like MQTT devices.

pub mod bus;
mod probe;
pub mod tcp;

pub use probe::{ProbeError, ProbeValue, probe};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_modbus::{Request, Response};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{ModbusConfig, ModbusDeviceConfig, SerialPortConfig};
use crate::ingest::Ingest;
use crate::record::DeviceState;
use crate::telemetry as t;

use crate::firmware_profile::{self as profile, Decoded, LoadedProfile, ProfileError, ReadBlock};

#[derive(Debug, thiserror::Error)]
pub enum ModbusSourceError {
    #[error("modbus device {device}: {source}")]
    Profile {
        device: String,
        source: ProfileError,
    },
    #[error("no modbus device `{0}` in the configuration")]
    UnknownDevice(String),
}

/// Why one request failed; `label()` is the `result` label of the request counter.
#[derive(Debug, Clone, PartialEq)]
pub enum PollError {
    /// No byte came back in time.
    Timeout,
    /// Bytes came back but no valid frame (CRC or framing error).
    BadFrame(String),
    /// A valid frame that is not the answer: another slave, function code or length.
    Mismatch(String),
    /// The slave answered with a Modbus exception.
    Exception(String),
    /// The port or connection failed (unplugged adapter, refused connection).
    Io(String),
}

impl PollError {
    pub fn label(&self) -> &'static str {
        match self {
            PollError::Timeout => "timeout",
            PollError::BadFrame(_) => "crc",
            PollError::Mismatch(_) => "mismatch",
            PollError::Exception(_) => "exception",
            PollError::Io(_) => "io",
        }
    }

    /// Worth an immediate retry: the reply was garbled, the slave is there.
    fn retryable(&self) -> bool {
        matches!(self, PollError::BadFrame(_) | PollError::Mismatch(_))
    }
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Timeout => write!(f, "timeout"),
            PollError::BadFrame(m) => write!(f, "bad frame: {m}"),
            PollError::Mismatch(m) => write!(f, "unexpected reply: {m}"),
            PollError::Exception(m) => write!(f, "exception: {m}"),
            PollError::Io(m) => write!(f, "i/o: {m}"),
        }
    }
}

/// A Modbus master on one serial line or one TCP connection.
pub trait Link: Send {
    /// The `bus` metric label: the port path, or `tcp://host:port`.
    fn label(&self) -> &str;

    /// Reads one block from slave/unit `unit`: raw words, one 0/1 word per bit for FC 1/2.
    fn read(
        &mut self,
        unit: u8,
        block: &ReadBlock,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u16>, PollError>> + Send;

    /// Called after a garbled reply was accepted on retry, or after a timed-out read was
    /// re-read: waits until the line has been quiet for `window` so that a second (late)
    /// answer cannot be taken for the next request.
    fn settle(&mut self, window: Duration) -> impl Future<Output = ()> + Send;
}

/// The request for one block.
pub(crate) fn request(block: &ReadBlock) -> Request<'static> {
    match block.function_code {
        1 => Request::ReadCoils(block.start, block.count),
        2 => Request::ReadDiscreteInputs(block.start, block.count),
        3 => Request::ReadHoldingRegisters(block.start, block.count),
        _ => Request::ReadInputRegisters(block.start, block.count),
    }
}

/// The raw words of a response, checked against the request: function code and length.
pub(crate) fn words(block: &ReadBlock, response: Response) -> Result<Vec<u16>, PollError> {
    let count = usize::from(block.count);
    let (fc, mut words): (u8, Vec<u16>) = match response {
        Response::ReadCoils(bits) => (1, bits.into_iter().map(u16::from).collect()),
        Response::ReadDiscreteInputs(bits) => (2, bits.into_iter().map(u16::from).collect()),
        Response::ReadHoldingRegisters(w) => (3, w),
        Response::ReadInputRegisters(w) => (4, w),
        other => return Err(PollError::Mismatch(format!("{other:?}"))),
    };
    if fc != block.function_code {
        return Err(PollError::Mismatch(format!(
            "function code {fc}, expected {}",
            block.function_code
        )));
    }
    // Bits come padded to whole bytes; registers must match exactly.
    let ok = if fc <= 2 {
        words.len() >= count && words.len() < count + 8
    } else {
        words.len() == count
    };
    if !ok {
        return Err(PollError::Mismatch(format!(
            "{} values for a read of {count}",
            words.len()
        )));
    }
    words.truncate(count);
    Ok(words)
}

/// One configured device with its profile.
#[derive(Debug, Clone)]
pub struct Device {
    pub config: ModbusDeviceConfig,
    pub profile: Arc<LoadedProfile>,
}

impl Device {
    fn unit(&self) -> u8 {
        if self.config.is_rtu() {
            self.config.slave_id
        } else {
            self.config.unit_id
        }
    }
}

/// Loads every device's profile (each file once).
pub fn devices(config: &ModbusConfig) -> Result<Vec<Device>, ModbusSourceError> {
    let mut loaded: HashMap<&str, Arc<LoadedProfile>> = HashMap::new();
    let mut out = Vec::new();
    for d in &config.devices {
        let profile = match loaded.get(d.profile.as_str()) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(profile::load(&config.profiles_dir, &d.profile).map_err(
                    |source| ModbusSourceError::Profile {
                        device: d.device_id.clone(),
                        source,
                    },
                )?);
                loaded.insert(&d.profile, p.clone());
                p
            }
        };
        out.push(Device {
            config: d.clone(),
            profile,
        });
    }
    Ok(out)
}

/// The line settings of `path`: its `[[modbus.serial_ports]]` entry or the defaults.
pub fn port_settings(config: &ModbusConfig, path: &str) -> SerialPortConfig {
    config
        .serial_ports
        .iter()
        .find(|p| p.path == path)
        .cloned()
        .unwrap_or_else(|| SerialPortConfig {
            path: path.into(),
            ..SerialPortConfig::default()
        })
}

/// Starts one task per serial port and one per TCP device; they end on `stop`.
pub fn spawn(
    config: &ModbusConfig,
    tx: mpsc::Sender<Ingest>,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, ModbusSourceError> {
    let mut by_port: Vec<(String, Vec<Device>)> = Vec::new();
    let mut tasks = Vec::new();
    for device in devices(config)? {
        if device.config.is_rtu() {
            match by_port.iter_mut().find(|(p, _)| *p == device.config.port) {
                Some((_, list)) => list.push(device),
                None => by_port.push((device.config.port.clone(), vec![device])),
            }
        } else {
            let link = tcp::TcpLink::new(
                &device.config.endpoint,
                Duration::from_millis(device.config.timeout_ms),
                Duration::from_millis(config.backoff_initial_ms),
                Duration::from_millis(config.backoff_max_ms),
            );
            tasks.push(tokio::spawn(run_link(
                link,
                vec![device],
                config.clone(),
                tx.clone(),
                stop.clone(),
            )));
        }
    }
    for (path, list) in by_port {
        let line = bus::RtuLine::new(
            port_settings(config, &path),
            Duration::from_millis(config.backoff_initial_ms),
            Duration::from_millis(config.backoff_max_ms),
        );
        tasks.push(tokio::spawn(run_link(
            line,
            list,
            config.clone(),
            tx.clone(),
            stop.clone(),
        )));
    }
    Ok(tasks)
}

/// The outcome of one poll of one device.
#[derive(Debug)]
pub struct PollOutcome {
    pub result: Result<Vec<Decoded>, PollError>,
    /// The block that failed, for the resync read at the next poll.
    pub failed_block: Option<usize>,
}

/// Reads every block of `device`. After a failed poll, `resync` is the block that failed: it is
/// read first, so that a late answer to it can only be taken for the same registers, and the
/// line is let settle before the next block. Stops at the first block that fails after its
/// retries.
pub async fn poll<L: Link>(link: &mut L, device: &Device, resync: Option<usize>) -> PollOutcome {
    let blocks = &device.profile.blocks;
    let timeout = Duration::from_millis(device.config.timeout_ms);
    let unit = device.unit();
    let mut values = Vec::new();
    let n = blocks.len();
    let first = resync.unwrap_or(0) % n;
    for k in 0..n {
        let index = (first + k) % n;
        let block = &blocks[index];
        let mut attempt = 0;
        let raw = loop {
            let started = Instant::now();
            let result = link.read(unit, block, timeout).await;
            let labels = [
                ("bus", link.label().to_string()),
                ("device", device.config.device_id.clone()),
            ];
            match &result {
                Ok(_) => {
                    metrics::histogram!(t::MODBUS_REQUEST_SECONDS, &labels)
                        .record(started.elapsed().as_secs_f64());
                }
                Err(e) => tracing::debug!(
                    device = %device.config.device_id,
                    bus = link.label(),
                    block = index,
                    error = %e,
                    "modbus request failed"
                ),
            }
            let result_label = match &result {
                Ok(_) => "ok",
                Err(e) => e.label(),
            };
            metrics::counter!(
                t::MODBUS_REQUESTS,
                "bus" => link.label().to_string(),
                "device" => device.config.device_id.clone(),
                "result" => result_label
            )
            .increment(1);
            match result {
                Ok(raw) => {
                    if attempt > 0 || (k == 0 && resync.is_some()) {
                        // A garbled or late earlier answer may still be followed by another.
                        link.settle(timeout).await;
                    }
                    break raw;
                }
                Err(e) if e.retryable() && attempt < device.config.retries => attempt += 1,
                Err(e) => {
                    return PollOutcome {
                        result: Err(e),
                        failed_block: Some(index),
                    };
                }
            }
        };
        values.extend(profile::decode_block(&device.profile.profile, block, &raw));
    }
    values.sort_by_key(|d| d.point);
    PollOutcome {
        result: Ok(values),
        failed_block: None,
    }
}

/// Online/offline hysteresis and quarantine of one device.
#[derive(Debug)]
struct Schedule {
    device: Device,
    interval: Duration,
    next_due: Instant,
    failures: u32,
    online: Option<bool>,
    /// The quarantine period of an offline device.
    backoff: Backoff,
    resync: Option<usize>,
}

/// The configured backoff: reconnects, reopens and the quarantine of offline devices.
fn backoff(config: &ModbusConfig) -> Backoff {
    Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    )
}

/// Polls `devices` over `link` until `stop`; the single owner of the link.
pub async fn run_link<L: Link>(
    mut link: L,
    devices: Vec<Device>,
    config: ModbusConfig,
    tx: mpsc::Sender<Ingest>,
    stop: CancellationToken,
) {
    let now = Instant::now();
    let mut schedules: Vec<Schedule> = devices
        .into_iter()
        .map(|device| Schedule {
            interval: Duration::from_millis(device.config.poll_interval_ms),
            device,
            next_due: now,
            failures: 0,
            online: None,
            backoff: backoff(&config),
            resync: None,
        })
        .collect();
    let bus = link.label().to_string();
    tracing::info!(bus = %bus, devices = schedules.len(), "modbus polling started");
    'outer: loop {
        let due = schedules
            .iter()
            .map(|s| s.next_due)
            .min()
            .expect("a link has at least one device");
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        let cycle_start = Instant::now();
        let mut polled = 0;
        for s in schedules.iter_mut() {
            if s.next_due > cycle_start {
                continue;
            }
            polled += 1;
            let outcome = tokio::select! {
                _ = stop.cancelled() => break 'outer,
                o = poll(&mut link, &s.device, s.resync) => o,
            };
            let mut out = Vec::new();
            apply(s, outcome, config.offline_after_failures, &bus, &mut out);
            for msg in out {
                if tx.send(msg).await.is_err() {
                    break 'outer;
                }
            }
        }
        if polled > 0 {
            metrics::histogram!(t::MODBUS_CYCLE_SECONDS, "bus" => bus.clone())
                .record(cycle_start.elapsed().as_secs_f64());
        }
    }
    tracing::debug!(bus = %bus, "modbus polling stopped");
}

fn apply(
    s: &mut Schedule,
    outcome: PollOutcome,
    offline_after: u32,
    bus: &str,
    out: &mut Vec<Ingest>,
) {
    let now = Instant::now();
    let received = std::time::Instant::now();
    let id = &s.device.config.device_id;
    let location = Some(s.device.config.location.clone()).filter(|l| !l.is_empty());
    s.resync = outcome.failed_block;
    match outcome.result {
        Ok(values) => {
            if s.online != Some(true) {
                tracing::info!(device = %id, bus, "modbus device online");
                out.push(Ingest::Status {
                    device_id: id.clone(),
                    status: DeviceState::Online,
                    location: location.clone(),
                    received,
                });
            }
            s.online = Some(true);
            s.failures = 0;
            s.backoff.reset();
            let profile = &s.device.profile;
            for d in values {
                let point = &profile.profile.points[d.point];
                out.push(Ingest::Reading {
                    device_id: id.clone(),
                    sensor_type: point.sensor_type.clone(),
                    value: d.value,
                    unit: Some(point.unit.clone()).filter(|u| !u.is_empty()),
                    ts_ms: None,
                    status: None,
                    location: location.clone(),
                    received,
                    threshold: profile.rules[d.point].clone(),
                });
            }
            s.next_due = advance(s.next_due, s.interval, now);
        }
        Err(e) => {
            s.failures = s.failures.saturating_add(1);
            if s.failures >= offline_after {
                if s.online != Some(false) {
                    tracing::warn!(device = %id, bus, error = %e, failures = s.failures, "modbus device offline");
                    out.push(Ingest::Status {
                        device_id: id.clone(),
                        status: DeviceState::Offline,
                        location,
                        received,
                    });
                    s.online = Some(false);
                    s.backoff.reset();
                }
                // Quarantine: an offline device costs its bus one timeout per backoff period.
                s.next_due = now + s.backoff.next_delay().max(s.interval);
            } else {
                tracing::debug!(device = %id, bus, error = %e, failures = s.failures, "modbus poll failed");
                s.next_due = advance(s.next_due, s.interval, now);
            }
        }
    }
}

/// The next due time on the device's grid, skipping missed slots.
fn advance(due: Instant, interval: Duration, now: Instant) -> Instant {
    let mut next = due + interval;
    if next <= now {
        let behind = now.duration_since(next).as_nanos() / interval.as_nanos().max(1);
        next += interval * (behind as u32 + 1);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_keeps_the_grid_and_skips_missed_slots() {
        let t0 = Instant::now();
        let i = Duration::from_millis(100);
        assert_eq!(advance(t0, i, t0 + Duration::from_millis(10)), t0 + i);
        assert_eq!(
            advance(t0, i, t0 + Duration::from_millis(350)),
            t0 + Duration::from_millis(400)
        );
    }

    #[test]
    fn responses_are_checked_against_the_request() {
        let block = ReadBlock {
            function_code: 3,
            start: 0,
            count: 2,
            points: vec![],
        };
        assert_eq!(
            words(&block, Response::ReadHoldingRegisters(vec![1, 2])),
            Ok(vec![1, 2])
        );
        assert!(matches!(
            words(&block, Response::ReadHoldingRegisters(vec![1, 2, 3])),
            Err(PollError::Mismatch(_))
        ));
        assert!(matches!(
            words(&block, Response::ReadInputRegisters(vec![1, 2])),
            Err(PollError::Mismatch(_))
        ));
        let coils = ReadBlock {
            function_code: 1,
            start: 0,
            count: 3,
            points: vec![],
        };
        assert_eq!(
            words(
                &coils,
                Response::ReadCoils(vec![true, false, true, false, false, false, false, false])
            ),
            Ok(vec![1, 0, 1])
        );
    }
}
