//! Modbus RTU/TCP devices polled with their firmware profiles.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Check, ConfigError, SerialPortConfig, is_host_port};
use crate::ids::check_id;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// Where firmware profiles live (`<profile>.toml`). A relative path is resolved against
    /// the config file's directory (or the working directory without a file).
    pub profiles_dir: PathBuf,
    /// Consecutive failed polls before a device goes offline (hysteresis); one good poll
    /// brings it back online.
    pub offline_after_failures: u32,
    /// An offline device is quarantined: polled again after this, doubling up to the cap, so
    /// a dead slave costs its bus at most one timeout per backoff period.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Line settings per RTU port; a port used by a device but not listed here gets the
    /// defaults (9600 baud, 8N1).
    pub serial_ports: Vec<SerialPortConfig>,
    pub devices: Vec<ModbusDeviceConfig>,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig {
            profiles_dir: PathBuf::from("firmware-profiles"),
            offline_after_failures: 3,
            backoff_initial_ms: 5_000,
            backoff_max_ms: 60_000,
            serial_ports: Vec::new(),
            devices: Vec::new(),
        }
    }
}

impl ModbusConfig {
    pub(super) fn validate(&self, check: &Check) -> Result<(), ConfigError> {
        check.positive(
            "modbus.offline_after_failures",
            u64::from(self.offline_after_failures),
        )?;
        check.backoff("modbus", self.backoff_initial_ms, self.backoff_max_ms)?;
        let mut paths = HashSet::new();
        for (i, p) in self.serial_ports.iter().enumerate() {
            let prefix = format!("modbus.serial_ports[{i}]");
            let key = format!("{prefix}.path");
            if p.path.is_empty() {
                return Err(check.fail(&key, "must name the serial port"));
            }
            if !paths.insert(p.path.as_str()) {
                return Err(check.fail(&key, format!("`{}` is listed twice", p.path)));
            }
            p.validate(&prefix, check)?;
        }
        let mut taken = Taken::default();
        for (i, d) in self.devices.iter().enumerate() {
            let prefix = format!("modbus.devices[{i}]");
            d.validate(&prefix, &mut taken, &self.profiles_dir, check)?;
        }
        Ok(())
    }
}

/// One Modbus device: RTU when `port` is set, TCP when `endpoint` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    pub device_id: String,
    pub location: String,
    /// Firmware profile name: `<profiles_dir>/<profile>.toml`.
    pub profile: String,
    /// RTU: the serial port of the RS-485 line, and the slave address on it (1-247).
    pub port: String,
    pub slave_id: u8,
    /// TCP: `host:port` of the device or of its Modbus TCP gateway, and the unit id.
    pub endpoint: String,
    pub unit_id: u8,
    pub poll_interval_ms: u64,
    /// A request not answered within this counts as a timeout.
    pub timeout_ms: u64,
    /// Immediate retries of a request after a garbled reply (bad CRC, wrong slave or length).
    /// A timeout is not retried within the cycle: it is paid once.
    pub retries: u32,
}

impl Default for ModbusDeviceConfig {
    fn default() -> Self {
        ModbusDeviceConfig {
            device_id: String::new(),
            location: String::new(),
            profile: String::new(),
            port: String::new(),
            slave_id: 1,
            endpoint: String::new(),
            unit_id: 1,
            poll_interval_ms: 1_000,
            timeout_ms: 500,
            retries: 1,
        }
    }
}

/// What the devices checked so far took: device ids, and slave addresses per RTU port.
#[derive(Default)]
struct Taken<'a> {
    ids: HashSet<&'a str>,
    slaves: HashSet<(&'a str, u8)>,
}

impl ModbusDeviceConfig {
    pub fn is_rtu(&self) -> bool {
        !self.port.is_empty()
    }

    fn validate<'a>(
        &'a self,
        prefix: &str,
        taken: &mut Taken<'a>,
        profiles_dir: &Path,
        check: &Check,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        check_id(&self.device_id).map_err(|e| check.fail(&key("device_id"), e.to_string()))?;
        if !taken.ids.insert(self.device_id.as_str()) {
            return Err(check.fail(
                &key("device_id"),
                format!("`{}` is configured twice", self.device_id),
            ));
        }
        self.validate_transport(&key, taken, check)?;
        check.positive(&key("poll_interval_ms"), self.poll_interval_ms)?;
        check.positive(&key("timeout_ms"), self.timeout_ms)?;
        if self.profile.is_empty() || self.profile.contains(['/', '\\']) {
            return Err(check.fail(
                &key("profile"),
                "must name a profile file in modbus.profiles_dir (without `.toml`)",
            ));
        }
        crate::firmware_profile::load(profiles_dir, &self.profile)
            .map_err(|e| check.fail(&key("profile"), e.to_string()))?;
        Ok(())
    }

    /// Exactly one of RTU (`port`, a free slave address on it) or TCP (`endpoint`).
    fn validate_transport<'a>(
        &'a self,
        key: &dyn Fn(&str) -> String,
        taken: &mut Taken<'a>,
        check: &Check,
    ) -> Result<(), ConfigError> {
        match (self.port.is_empty(), self.endpoint.is_empty()) {
            (false, true) => {
                if !(1..=247).contains(&self.slave_id) {
                    return Err(check.fail(&key("slave_id"), "must be 1-247"));
                }
                if !taken.slaves.insert((self.port.as_str(), self.slave_id)) {
                    return Err(check.fail(
                        &key("slave_id"),
                        format!("slave {} is already on {}", self.slave_id, self.port),
                    ));
                }
                Ok(())
            }
            (true, false) if !is_host_port(&self.endpoint) => Err(check.fail(
                &key("endpoint"),
                format!("`{}` is not host:port", self.endpoint),
            )),
            (true, false) => Ok(()),
            _ => Err(check.fail(&key("port"), "set either `port` (RTU) or `endpoint` (TCP)")),
        }
    }
}
