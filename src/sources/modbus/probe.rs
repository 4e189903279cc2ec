//! `edge-gateway probe`: one poll of one device with its profile, for commissioning on site.

use std::sync::Arc;
use std::time::Duration;

use super::{Device, ModbusSourceError, PollError, bus, poll, port_settings, tcp};
use crate::config::ModbusConfig;
use crate::firmware_profile as profile;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Config(#[from] ModbusSourceError),
    #[error("device {device} did not answer: {error}")]
    Device { device: String, error: PollError },
}

/// One decoded point for `edge-gateway probe`.
#[derive(Debug, Clone)]
pub struct ProbeValue {
    pub sensor_type: String,
    pub value: f64,
    pub unit: String,
    pub function_code: u8,
    pub address: u16,
}

/// Reads `device_id` once with its profile (commissioning on site).
pub async fn probe(config: &ModbusConfig, device_id: &str) -> Result<Vec<ProbeValue>, ProbeError> {
    let Some(device) = devices_matching(config, device_id)? else {
        return Err(ModbusSourceError::UnknownDevice(device_id.into()).into());
    };
    let backoff = Duration::from_millis(config.backoff_initial_ms);
    let outcome = if device.config.is_rtu() {
        let mut line =
            bus::RtuLine::new(port_settings(config, &device.config.port), backoff, backoff);
        poll(&mut line, &device, None).await
    } else {
        let mut link = tcp::TcpLink::new(
            &device.config.endpoint,
            Duration::from_millis(device.config.timeout_ms),
            backoff,
            backoff,
        );
        poll(&mut link, &device, None).await
    };
    let values = outcome.result.map_err(|error| ProbeError::Device {
        device: device_id.into(),
        error,
    })?;
    Ok(values
        .into_iter()
        .map(|d| {
            let p = &device.profile.profile.points[d.point];
            ProbeValue {
                sensor_type: p.sensor_type.clone(),
                value: d.value,
                unit: p.unit.clone(),
                function_code: p.function_code,
                address: p.address,
            }
        })
        .collect())
}

fn devices_matching(
    config: &ModbusConfig,
    device_id: &str,
) -> Result<Option<Device>, ModbusSourceError> {
    let Some(d) = config.devices.iter().find(|d| d.device_id == device_id) else {
        return Ok(None);
    };
    let profile = profile::load(&config.profiles_dir, &d.profile).map_err(|source| {
        ModbusSourceError::Profile {
            device: d.device_id.clone(),
            source,
        }
    })?;
    Ok(Some(Device {
        config: d.clone(),
        profile: Arc::new(profile),
    }))
}
