//! Serial lines: the settings of one port (shared by Modbus RTU lines and ASCII sensors) and
//! the line-protocol sensors.

use std::time::Duration;

use serde::Deserialize;

use super::{Check, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// Line settings of one serial port (RS-485 Modbus line or ASCII sensor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialPortConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
    pub path: String,
    pub baud_rate: u32,
    /// 7 or 8.
    pub data_bits: u8,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Silence between Modbus RTU frames; 0 = 3.5 character times at `baud_rate` (1750 µs
    /// above 19200 baud, as the Modbus serial line spec says).
    pub inter_frame_gap_us: u64,
}

impl Default for SerialPortConfig {
    fn default() -> Self {
        SerialPortConfig {
            path: String::new(),
            baud_rate: 9_600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            inter_frame_gap_us: 0,
        }
    }
}

impl SerialPortConfig {
    /// Bits on the wire per character: start, data, parity, stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// The RTU inter-frame gap (t3.5).
    pub fn inter_frame_gap(&self) -> Duration {
        if self.inter_frame_gap_us > 0 {
            return Duration::from_micros(self.inter_frame_gap_us);
        }
        if self.baud_rate > 19_200 {
            return Duration::from_micros(1_750);
        }
        let us = 3_500_000 * u64::from(self.bits_per_char()) / u64::from(self.baud_rate.max(1));
        Duration::from_micros(us)
    }

    /// Checks the line settings; `prefix` is the key of this port's table.
    pub(super) fn validate(&self, prefix: &str, check: &Check) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if self.baud_rate == 0 {
            return Err(check.fail(&key("baud_rate"), "must be greater than 0"));
        }
        if !(7..=8).contains(&self.data_bits) {
            return Err(check.fail(&key("data_bits"), "must be 7 or 8"));
        }
        if !(1..=2).contains(&self.stop_bits) {
            return Err(check.fail(&key("stop_bits"), "must be 1 or 2"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialSensorConfig {
    /// Device path of the adapter; reopened after it disappears (unplugged) and comes back.
    pub path: String,
    pub baud_rate: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    /// A regex with named groups `value` (required), `device`, `sensor` and `unit`
    /// (optional: the keys below fill in). Empty = `deviceId,sensorType,value[,unit]`.
    pub pattern: String,
    /// Used when a line carries no device id / sensor type / unit.
    pub device_id: String,
    pub sensor_type: String,
    pub unit: String,
    pub location: String,
    /// Longer lines are discarded (counted as `oversize`).
    pub max_line_bytes: usize,
    /// Wait between attempts to reopen the port.
    pub reconnect_ms: u64,
}

impl Default for SerialSensorConfig {
    fn default() -> Self {
        SerialSensorConfig {
            path: String::new(),
            baud_rate: 9_600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            pattern: String::new(),
            device_id: String::new(),
            sensor_type: String::new(),
            unit: String::new(),
            location: String::new(),
            max_line_bytes: 256,
            reconnect_ms: 1_000,
        }
    }
}

impl SerialSensorConfig {
    pub fn port(&self) -> SerialPortConfig {
        SerialPortConfig {
            path: self.path.clone(),
            baud_rate: self.baud_rate,
            data_bits: self.data_bits,
            parity: self.parity,
            stop_bits: self.stop_bits,
            inter_frame_gap_us: 0,
        }
    }

    /// Checks `serial_sensors[index]`.
    pub(super) fn validate(&self, index: usize, check: &Check) -> Result<(), ConfigError> {
        let prefix = format!("serial_sensors[{index}]");
        let key = |k: &str| format!("{prefix}.{k}");
        if self.path.is_empty() {
            return Err(check.fail(&key("path"), "must name the serial port"));
        }
        self.port().validate(&prefix, check)?;
        if self.pattern.is_empty() {
            return Ok(());
        }
        let re = regex::Regex::new(&self.pattern)
            .map_err(|e| check.fail(&key("pattern"), format!("not a regex: {e}")))?;
        let groups: Vec<&str> = re.capture_names().flatten().collect();
        if !groups.contains(&"value") {
            return Err(check.fail(&key("pattern"), "needs a named group `value`"));
        }
        if !groups.contains(&"device") && self.device_id.is_empty() {
            return Err(check.fail(
                &key("device_id"),
                "needed: the pattern has no `device` group",
            ));
        }
        if !groups.contains(&"sensor") && self.sensor_type.is_empty() {
            return Err(check.fail(
                &key("sensor_type"),
                "needed: the pattern has no `sensor` group",
            ));
        }
        check.positive(&key("max_line_bytes"), self.max_line_bytes as u64)?;
        check.positive(&key("reconnect_ms"), self.reconnect_ms)
    }
}
