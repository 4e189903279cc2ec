//! Where readings come from. Every source parses into [`crate::ingest::Ingest`] and knows
//! nothing of the store, the API or the sinks.

pub mod modbus;
pub mod mqtt;
pub mod serial_line;
pub mod serial_port;
pub mod simulator;
pub mod site_mqtt;
pub mod topic;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{
    ModbusConfig, MqttConfig, SerialSensorConfig, SimulatorConfig, SiteMqttConfig,
};
use crate::health::Health;
use crate::ingest::Ingest;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttSourceError),
    #[error(transparent)]
    Modbus(#[from] modbus::ModbusSourceError),
}

/// The configuration sections of the sources; each source is handed only its own.
#[derive(Clone, Copy)]
pub struct SourceSections<'a> {
    pub mqtt: &'a MqttConfig,
    pub modbus: &'a ModbusConfig,
    pub serial_sensors: &'a [SerialSensorConfig],
    pub site_mqtt: &'a SiteMqttConfig,
    pub simulator: &'a SimulatorConfig,
}

/// Starts every configured source: Modbus lines and TCP devices, serial line sensors, the
/// site broker client, the device MQTT listener and `simulated_devices` simulated devices.
/// They all send to `tx` and end on `stop`; the pipeline ends once every one of them has
/// dropped its sender.
pub async fn spawn(
    config: SourceSections<'_>,
    simulated_devices: usize,
    gateway_id: &str,
    health: &Arc<Health>,
    tx: mpsc::Sender<Ingest>,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, SourceError> {
    let mut sources = modbus::spawn(config.modbus, tx.clone(), stop.clone())?;
    sources.extend(spawn_serial_sensors(config.serial_sensors, &tx, stop));
    sources.extend(spawn_site_mqtt(
        config.site_mqtt,
        gateway_id,
        config.mqtt.max_payload_bytes,
        (&tx, health),
        stop,
    ));
    if config.mqtt.enabled {
        if simulated_devices > 0 {
            sources.push(tokio::spawn(simulator::run(
                tx.clone(),
                simulated_devices,
                Duration::from_millis(config.simulator.interval_ms),
                stop.clone(),
            )));
        }
        let listener = mqtt::DeviceListener::bind(config.mqtt, tx, stop.clone()).await?;
        health
            .mqtt_anonymous
            .store(config.mqtt.allow_anonymous, Ordering::Relaxed);
        sources.push(tokio::spawn(listener.run()));
        tracing::info!(listen = %config.mqtt.listen, "MQTT device listener ready");
    }
    Ok(sources)
}

/// One task per line-protocol serial sensor.
fn spawn_serial_sensors(
    sensors: &[SerialSensorConfig],
    tx: &mpsc::Sender<Ingest>,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    sensors
        .iter()
        .map(|sensor| tokio::spawn(serial_line::run(sensor.clone(), tx.clone(), stop.clone())))
        .collect()
}

/// The site broker client, when `site_mqtt.endpoint` is set.
fn spawn_site_mqtt(
    config: &SiteMqttConfig,
    gateway_id: &str,
    max_payload: usize,
    (tx, health): (&mpsc::Sender<Ingest>, &Arc<Health>),
    stop: &CancellationToken,
) -> Option<JoinHandle<()>> {
    if config.endpoint.is_empty() {
        return None;
    }
    health.site_mqtt.enable();
    Some(tokio::spawn(site_mqtt::run(
        config.clone(),
        gateway_id.to_string(),
        max_payload,
        (tx.clone(), health.clone()),
        stop.clone(),
    )))
}
