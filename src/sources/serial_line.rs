//! Line-oriented ASCII sensors on a serial port: one reading per line, either
//! `deviceId,sensorType,value[,unit]` or whatever a configured regex with named groups
//! (`value`, and optionally `device`, `sensor`, `unit`) matches. The port is reopened after it
//! fails (an unplugged USB adapter) every `reconnect_ms` until it is back.

use std::time::{Duration, Instant};

use regex::Regex;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

use super::serial_port::open_port;
use crate::backoff::Backoff;
use crate::config::SerialSensorConfig;
use crate::ids::valid_id;
use crate::ingest::Ingest;
use crate::telemetry as t;

/// Why a line was not a reading; the `result` label of the line counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    BadLine,
    BadValue,
    BadId,
}

impl LineError {
    pub fn as_str(self) -> &'static str {
        match self {
            LineError::BadLine => "bad_line",
            LineError::BadValue => "bad_value",
            LineError::BadId => "bad_id",
        }
    }
}

/// Turns lines into readings with one sensor's settings.
pub struct LineParser {
    pattern: Option<Regex>,
    device_id: String,
    sensor_type: String,
    unit: String,
    location: Option<String>,
}

impl LineParser {
    pub fn new(config: &SerialSensorConfig) -> Result<LineParser, regex::Error> {
        Ok(LineParser {
            pattern: if config.pattern.is_empty() {
                None
            } else {
                Some(Regex::new(&config.pattern)?)
            },
            device_id: config.device_id.clone(),
            sensor_type: config.sensor_type.clone(),
            unit: config.unit.clone(),
            location: Some(config.location.clone()).filter(|l| !l.is_empty()),
        })
    }

    pub fn parse(&self, line: &str, received: Instant) -> Result<Ingest, LineError> {
        let (device, sensor, value, unit) = match &self.pattern {
            None => {
                let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                match fields.as_slice() {
                    [d, s, v] => (*d, *s, *v, ""),
                    [d, s, v, u] => (*d, *s, *v, *u),
                    _ => return Err(LineError::BadLine),
                }
            }
            Some(re) => {
                let caps = re.captures(line).ok_or(LineError::BadLine)?;
                let get = |name| caps.name(name).map_or("", |m| m.as_str());
                (get("device"), get("sensor"), get("value"), get("unit"))
            }
        };
        let pick = |own: &str, default: &str| {
            if own.is_empty() {
                default.to_string()
            } else {
                own.to_string()
            }
        };
        let device_id = pick(device, &self.device_id);
        let sensor_type = pick(sensor, &self.sensor_type);
        if !valid_id(&device_id) || !valid_id(&sensor_type) {
            return Err(LineError::BadId);
        }
        let value = value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or(LineError::BadValue)?;
        let unit = pick(unit.trim(), &self.unit);
        Ok(Ingest::Reading {
            device_id,
            sensor_type,
            value,
            unit: Some(unit).filter(|u| !u.is_empty()),
            ts_ms: None,
            status: None,
            location: self.location.clone(),
            received,
            threshold: None,
        })
    }
}

/// Reads the port until `stop`, reopening it whenever it fails.
pub async fn run(config: SerialSensorConfig, tx: mpsc::Sender<Ingest>, stop: CancellationToken) {
    let parser = match LineParser::new(&config) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(port = %config.path, error = %e, "serial sensor pattern is not a regex; sensor off");
            return;
        }
    };
    let reconnect = Duration::from_millis(config.reconnect_ms);
    let mut retry = Backoff::constant(reconnect);
    let mut was_open = true;
    loop {
        match open_port(&config.port()) {
            Ok(stream) => {
                tracing::info!(port = %config.path, "serial sensor port open");
                was_open = true;
                if read_lines(stream, &config, &parser, &tx, &stop).await == Ended::Stopped {
                    return;
                }
            }
            Err(e) => {
                if was_open {
                    tracing::warn!(port = %config.path, error = %e, "cannot open serial sensor port; retrying every {} ms", reconnect.as_millis());
                    was_open = false;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry.next_delay()) => {}
        }
    }
}

/// Why [`read_lines`] returned.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// `stop`, or the pipeline is gone.
    Stopped,
    /// The port closed or failed: reopen it.
    PortFailed,
}

/// Reads lines from the open port and hands their readings to the pipeline.
async fn read_lines(
    mut stream: SerialStream,
    config: &SerialSensorConfig,
    parser: &LineParser,
    tx: &mpsc::Sender<Ingest>,
    stop: &CancellationToken,
) -> Ended {
    let mut line = LineBuffer::new(config.max_line_bytes);
    let mut buf = [0u8; 512];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            r = stream.read(&mut buf) => match r {
                Ok(0) => {
                    tracing::warn!(port = %config.path, "serial sensor port closed; reopening");
                    return Ended::PortFailed;
                }
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(port = %config.path, error = %e, "serial sensor port failed; reopening");
                    return Ended::PortFailed;
                }
            },
        };
        for &b in &buf[..n] {
            let Some(result) = line.push(b, parser) else {
                continue;
            };
            let label = match result {
                Ok(msg) => {
                    if tx.send(msg).await.is_err() {
                        return Ended::Stopped;
                    }
                    "ok"
                }
                Err(reason) => {
                    tracing::debug!(port = %config.path, reason, "serial sensor line rejected");
                    reason
                }
            };
            metrics::counter!(t::SERIAL_LINES, "port" => config.path.clone(), "result" => label)
                .increment(1);
        }
    }
}

/// Collects bytes up to `\n`, keeping at most `max` of a line.
struct LineBuffer {
    line: Vec<u8>,
    overlong: bool,
    max: usize,
}

impl LineBuffer {
    fn new(max: usize) -> LineBuffer {
        LineBuffer {
            line: Vec::with_capacity(max),
            overlong: false,
            max,
        }
    }

    /// Takes one byte; at the end of a non-blank line, its reading or the `result` label of
    /// its rejection.
    fn push(&mut self, b: u8, parser: &LineParser) -> Option<Result<Ingest, &'static str>> {
        if b != b'\n' {
            if self.line.len() < self.max {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
            return None;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim();
        let result = if self.overlong {
            Some(Err("oversize"))
        } else if text.is_empty() {
            None
        } else {
            Some(
                parser
                    .parse(text, Instant::now())
                    .map_err(LineError::as_str),
            )
        };
        self.line.clear();
        self.overlong = false;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(pattern: &str, device: &str, sensor: &str, unit: &str) -> LineParser {
        LineParser::new(&SerialSensorConfig {
            pattern: pattern.into(),
            device_id: device.into(),
            sensor_type: sensor.into(),
            unit: unit.into(),
            location: "Hall 1".into(),
            ..SerialSensorConfig::default()
        })
        .unwrap()
    }

    fn fields(
        r: Result<Ingest, LineError>,
    ) -> Result<(String, String, f64, Option<String>), LineError> {
        r.map(|m| match m {
            Ingest::Reading {
                device_id,
                sensor_type,
                value,
                unit,
                ..
            } => (device_id, sensor_type, value, unit),
            Ingest::Status { .. } | Ingest::Ack(_) => unreachable!(),
        })
    }

    #[test]
    fn csv_lines() {
        let p = parser("", "", "", "");
        assert_eq!(
            fields(p.parse("scale-1, weight, 12.5, kg", Instant::now())),
            Ok(("scale-1".into(), "weight".into(), 12.5, Some("kg".into())))
        );
        assert_eq!(
            fields(p.parse("scale-1,weight,-3", Instant::now())),
            Ok(("scale-1".into(), "weight".into(), -3.0, None))
        );
        assert_eq!(
            fields(p.parse("scale-1,weight", Instant::now())),
            Err(LineError::BadLine)
        );
        assert_eq!(
            fields(p.parse("scale-1,weight,heavy", Instant::now())),
            Err(LineError::BadValue)
        );
        assert_eq!(
            fields(p.parse(",weight,1", Instant::now())),
            Err(LineError::BadId)
        );
        assert_eq!(
            fields(p.parse("a#,weight,1", Instant::now())),
            Err(LineError::BadId)
        );
    }

    #[test]
    fn regex_lines_with_defaults() {
        let p = parser(
            r"^T=(?P<value>-?\d+(\.\d+)?)C$",
            "probe-7",
            "temperature",
            "°C",
        );
        assert_eq!(
            fields(p.parse("T=21.25C", Instant::now())),
            Ok((
                "probe-7".into(),
                "temperature".into(),
                21.25,
                Some("°C".into())
            ))
        );
        assert_eq!(
            fields(p.parse("T=?C", Instant::now())),
            Err(LineError::BadLine)
        );
        let p = parser(
            r"^(?P<device>\S+) (?P<sensor>\w+)=(?P<value>\S+)$",
            "",
            "",
            "",
        );
        assert_eq!(
            fields(p.parse("m-1 flow=3.5", Instant::now())),
            Ok(("m-1".into(), "flow".into(), 3.5, None))
        );
    }

    #[test]
    fn line_buffer_cuts_lines_and_flags_overlong_ones() {
        let p = parser("", "", "", "");
        let mut buffer = LineBuffer::new(8);
        let lines: Vec<Result<String, &str>> = b"a,t,1\r\n\n  \nlonglonglong,t,1\nb,t,2\n"
            .iter()
            .filter_map(|&b| buffer.push(b, &p))
            .map(|r| {
                r.map(|m| match m {
                    Ingest::Reading { device_id, .. } => device_id,
                    Ingest::Status { .. } | Ingest::Ack(_) => unreachable!(),
                })
            })
            .collect();
        assert_eq!(lines, vec![Ok("a".into()), Err("oversize"), Ok("b".into())]);
    }
}
