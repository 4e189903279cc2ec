//! What a source hands to the pipeline: one parsed and validated message, not yet stored.
//! Sources produce it, the pipeline consumes it; it lives below both.

use std::sync::Arc;
use std::time::Instant;

use crate::alarms::ThresholdRule;
use crate::record::{DeviceState, Level};

/// What a source hands over: already parsed and validated, not yet stored.
#[derive(Debug, Clone)]
pub enum Ingest {
    Reading {
        device_id: String,
        sensor_type: String,
        value: f64,
        unit: Option<String>,
        ts_ms: Option<i64>,
        status: Option<Level>,
        location: Option<String>,
        received: Instant,
        /// A rule of the device's own (a firmware profile's threshold) that replaces the
        /// `[[thresholds]]` rule of this sensor type.
        threshold: Option<Arc<ThresholdRule>>,
    },
    Status {
        device_id: String,
        status: DeviceState,
        location: Option<String>,
        received: Instant,
    },
}
