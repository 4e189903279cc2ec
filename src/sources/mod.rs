//! Where readings come from. Every source parses into [`crate::ingest::Ingest`] and knows
//! nothing of the store, the API or the sinks.

pub mod modbus;
pub mod mqtt;
pub mod serial_line;
pub mod serial_port;
pub mod simulator;
pub mod site_mqtt;
pub mod topic;
