//! Metric names, the Prometheus recorder, and log set-up. Every metric the gateway exports is
//! named here so `/metrics` is documented in one place.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const READINGS_ACCEPTED: &str = "edge_gateway_readings_accepted_total";
/// Readings and status messages rejected, by `reason` (topic contract reasons, and
/// `too_many_devices` for a new device beyond `devices.max_devices`).
pub const READINGS_REJECTED: &str = "edge_gateway_readings_rejected_total";
/// Readings whose device timestamp was replaced by the receive time, by `reason`
/// (`future`: beyond `devices.max_future_skew_ms`; `past`: older than the store's retention).
pub const TIMESTAMPS_CLAMPED: &str = "edge_gateway_timestamps_clamped_total";
/// Devices forgotten by the registry (silent past `devices.forget_after_ms` or the retention).
pub const DEVICES_FORGOTTEN: &str = "edge_gateway_devices_forgotten_total";
pub const RECORDS_COMMITTED: &str = "edge_gateway_records_committed_total";
pub const COMMIT_SECONDS: &str = "edge_gateway_commit_seconds";
pub const COMMIT_BATCH_RECORDS: &str = "edge_gateway_commit_batch_records";
pub const RECEIVE_TO_COMMIT_SECONDS: &str = "edge_gateway_receive_to_commit_seconds";
pub const STORE_BYTES: &str = "edge_gateway_store_bytes";
pub const STORE_FILE_BYTES: &str = "edge_gateway_store_file_bytes";
pub const STORE_EVICTED: &str = "edge_gateway_store_evicted_total";
pub const STORE_ERRORS: &str = "edge_gateway_store_errors_total";
/// Durable (fsynced) store commits; the others are kept in memory until the next one.
pub const STORE_DURABLE_COMMITS: &str = "edge_gateway_store_durable_commits_total";
/// Bytes the process caused to be written to storage (`/proc/self/io` `write_bytes`).
pub const STORE_WRITE_BYTES: &str = "edge_gateway_store_write_bytes_total";
pub const SOCKETIO_CLIENTS: &str = "edge_gateway_socketio_clients";
pub const SOCKETIO_EMITTED: &str = "edge_gateway_socketio_events_emitted_total";
pub const SOCKETIO_REJECTED: &str = "edge_gateway_socketio_rejected_total";
pub const SOCKETIO_CATCHUP: &str = "edge_gateway_socketio_catchup_records_total";
/// Stored records replayed to clients that resumed from a `seq`.
pub const SOCKETIO_REPLAYED: &str = "edge_gateway_socketio_replayed_records_total";
/// Resumes whose `after` was older than what the store holds (or than resume_max_records).
pub const SOCKETIO_RESUME_TRUNCATED: &str = "edge_gateway_socketio_resume_truncated_total";
/// Relay mode: records from the central feed by `result` (relayed, duplicate, untracked).
pub const RELAY_RECORDS: &str = "edge_gateway_relay_records_total";
/// Relay mode: feed messages refused, by `reason` (not_json, schema, too_large, ...).
pub const RELAY_REJECTED: &str = "edge_gateway_relay_rejected_total";
/// Relay mode: per origin gateway (`gateway`), its last relayed `seq` and lag in seconds.
pub const RELAY_GATEWAY_SEQ: &str = "edge_gateway_relay_gateway_last_seq";
pub const RELAY_GATEWAY_LAG: &str = "edge_gateway_relay_gateway_lag_seconds";
/// Clients whose buffer was full for a record and were moved to a replay from the store.
pub const SOCKETIO_OVERFLOWS: &str = "edge_gateway_socketio_overflows_total";
/// What all clients' buffers hold now (`socketio.total_buffer_bytes` bounds it), and the most
/// they held at once since start.
pub const SOCKETIO_BUFFERED: &str = "edge_gateway_socketio_buffered_bytes";
pub const SOCKETIO_BUFFERED_PEAK: &str = "edge_gateway_socketio_buffered_bytes_peak";
/// Events refused to a client because all buffers together were full (the client is then
/// moved to a replay, like one whose own buffer is full).
pub const SOCKETIO_BUDGET_REFUSED: &str = "edge_gateway_socketio_budget_refused_total";
/// Events a client did not get, by reason: `replaying` (an unstored system alert while it
/// replays), `reply_buffer_full` (an ack's reply that found the client's buffer full).
pub const SOCKETIO_DROPPED: &str = "edge_gateway_socketio_events_dropped_total";
/// Events sent a second time to clients with room, after a broadcast found a full buffer the
/// probe could not find (it drained in between); clients drop them by `seq`.
pub const SOCKETIO_DUPLICATED: &str = "edge_gateway_socketio_events_duplicated_total";
pub const DEVICES_ONLINE: &str = "edge_gateway_devices_online";
pub const DEVICES_TOTAL: &str = "edge_gateway_devices_total";
pub const ALERTS_ACTIVE: &str = "edge_gateway_alerts_active";
pub const ALERTS_RAISED: &str = "edge_gateway_alerts_raised_total";
/// Alarm transitions by `kind` (raise, escalate, deescalate, clear, ack, shelve, unshelve,
/// shelve_expired, suppress, unsuppress, out_of_service, return_to_service, chatter_start,
/// chatter_end), withheld ones of chattering alarms included.
pub const ALARM_TRANSITIONS: &str = "edge_gateway_alarm_transitions_total";
/// Alarms by `state` (normal ones only while they are remembered).
pub const ALARMS: &str = "edge_gateway_alarms";
/// Stored alarm rows that did not parse at start (skipped).
pub const ALARM_ROWS_SKIPPED: &str = "edge_gateway_alarm_rows_skipped_total";
/// Operator actions on alarms by `origin` (socketio, central) and `result` (ok, refused,
/// unknown, malformed).
pub const ALARM_ACTIONS: &str = "edge_gateway_alarm_actions_total";
pub const SINK_CONNECTED: &str = "edge_gateway_sink_connected";
pub const SINK_SENT: &str = "edge_gateway_sink_sent_total";
pub const SINK_SEND_SECONDS: &str = "edge_gateway_sink_send_seconds";
pub const SINK_ERRORS: &str = "edge_gateway_sink_errors_total";
pub const SINK_DROPPED_UNSENT: &str = "edge_gateway_sink_dropped_unsent_total";
pub const SINK_LAG_RECORDS: &str = "edge_gateway_sink_lag_records";
pub const SINK_LAG_SECONDS: &str = "edge_gateway_sink_lag_seconds";
/// Modbus requests by `bus`, `device` and `result` (ok, timeout, crc, mismatch, exception, io).
pub const MODBUS_REQUESTS: &str = "edge_gateway_modbus_requests_total";
/// Round-trip time of answered Modbus requests, by `bus` and `device`.
pub const MODBUS_REQUEST_SECONDS: &str = "edge_gateway_modbus_request_seconds";
/// Time to poll every device that was due together on one bus (one poll cycle), by `bus`.
pub const MODBUS_CYCLE_SECONDS: &str = "edge_gateway_modbus_cycle_seconds";
/// Bytes thrown away on an RTU line after a timeout or a garbled reply, by `bus`.
pub const MODBUS_DISCARDED_BYTES: &str = "edge_gateway_modbus_discarded_bytes_total";
/// (Re)opened serial ports and TCP connections, by `bus`.
pub const MODBUS_CONNECTS: &str = "edge_gateway_modbus_connects_total";
/// Lines from serial line sensors by `port` and `result` (ok, bad_line, oversize).
pub const SERIAL_LINES: &str = "edge_gateway_serial_lines_total";
/// Open device connections on the MQTT listener.
pub const MQTT_CONNECTIONS: &str = "edge_gateway_mqtt_connections";
/// Device connections refused before or at CONNECT, by `reason` (bad_credentials,
/// not_authorized, rate_limited, connect_timeout, malformed, oversize, protocol_version,
/// too_many_connections, client_id).
pub const MQTT_CONNECTIONS_REJECTED: &str = "edge_gateway_mqtt_connections_rejected_total";
/// Device connections that ended after CONNACK, by `reason` (disconnect, closed_by_peer,
/// keep_alive, malformed, oversize, protocol_error, qos2_unsupported, not_authorized,
/// taken_over, io, write_timeout, shutdown).
pub const MQTT_CONNECTIONS_CLOSED: &str = "edge_gateway_mqtt_connections_closed_total";
/// Device publishes refused by the listener (not the topic contract), by `reason`
/// (not_authorized, qos2_unsupported).
pub const MQTT_PUBLISHES_REJECTED: &str = "edge_gateway_mqtt_publishes_rejected_total";
/// SUBSCRIBEs on the device port, answered with a failure (subscribers use the subscriber port).
pub const MQTT_SUBSCRIBES_REFUSED: &str = "edge_gateway_mqtt_subscribes_refused_total";
/// Last wills published on an abnormal close.
pub const MQTT_WILLS_PUBLISHED: &str = "edge_gateway_mqtt_wills_published_total";
/// QoS 1 publish received → its PUBACK encoded (after the commit).
pub const MQTT_PUBACK_SECONDS: &str = "edge_gateway_mqtt_puback_seconds";
/// Committed records not republished to the subscriber port because its router was full.
pub const MQTT_REPUBLISH_DROPPED: &str = "edge_gateway_mqtt_republish_dropped_total";
/// 1 while the site MQTT client is connected.
pub const SITE_MQTT_CONNECTED: &str = "edge_gateway_site_mqtt_connected";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process (tests start several gateways).
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let batch = [1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_RECORDS.into()), &batch)
            })
            .expect("bucket lists are non-empty");
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Someone else installed a recorder: keep a private one so rendering still works.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Logs to stderr. Under systemd (JOURNAL_STREAM set) the journal adds timestamps, so they are
/// dropped; colours only when stderr is a terminal (and `NO_COLOR` is unset), so files and
/// pipes get plain text.
pub fn init_logging(level: &str) {
    // rumqttd logs every connection and subscription at info, and every ordinary disconnect
    // at ERROR ("connection-stop", "Remote link error", "disconnected") from its per-connection
    // server code; keep it to warnings, and that module silent, unless the filter names rumqttd.
    let level = if level.contains("rumqttd") {
        level.to_string()
    } else {
        format!("{level},rumqttd=warn,rumqttd::server::broker=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = builder.with_ansi(ansi);
    let result = if journal {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        tracing::debug!("a global log subscriber was already installed");
    }
}

/// How often one kind of throttled warning may be logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line at most once per [`LOG_EVERY`]; counts what it held back.
#[derive(Default)]
pub struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) <= LOG_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}
