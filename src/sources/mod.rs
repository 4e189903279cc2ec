//! Where readings come from. Every source parses into [`crate::pipeline::Ingest`] and knows
//! nothing of the store, the API or the sinks.

pub mod modbus;
pub mod mqtt;
pub mod serial_line;
pub mod simulator;
pub mod site_mqtt;
