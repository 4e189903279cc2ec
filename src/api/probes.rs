//! `GET /health` (JSON; 503 when the store cannot commit) and `GET /metrics` (Prometheus text,
//! when METRICS_ENABLED).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiState;
use crate::health::ComponentState;
use crate::telemetry as t;
use crate::time::{format_ms, now_ms};

pub async fn health(State(state): State<ApiState>) -> Response {
    let h = &state.health;
    let store_state = h.store_state();
    let last_commit = h.last_commit_ms.load(Ordering::Relaxed);
    let sinks: serde_json::Map<String, serde_json::Value> = h
        .sinks
        .iter()
        .map(|s| {
            let v = json!({
                "status": s.state().as_str(),
                "connected": s.connected(),
                "error": s.last_error(),
                "cursor": s.cursor.load(Ordering::Relaxed),
                "lagRecords": s.lag_records.load(Ordering::Relaxed),
                "lagSeconds": s.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                "sent": s.sent.load(Ordering::Relaxed),
                "sentPerSecond": s.sent_per_sec.load(Ordering::Relaxed),
                "errors": s.errors.load(Ordering::Relaxed),
                "droppedUnsent": s.dropped_unsent.load(Ordering::Relaxed),
                "alarmLaneError": s.alarm_lane_error(),
            });
            (s.name.to_string(), v)
        })
        .collect();
    let mut body = json!({
        "status": h.overall().as_str(),
        "timestamp": format_ms(now_ms()),
        "uptime": h.uptime_secs(),
        "gatewayId": &*state.gateway_id,
        "components": {
            "store": {
                "status": store_state.as_str(),
                "error": h.store_error(),
                "bytes": h.store_bytes.load(Ordering::Relaxed),
                "lastCommit": (last_commit > 0).then(|| format_ms(last_commit)),
                "recoveredFromCorruption": h.store_recovered_from.get(),
            },
            "mqtt": {
                "status": h.mqtt_state().as_str(),
                "anonymous": h.mqtt_anonymous.load(Ordering::Relaxed),
            },
            "siteMqtt": {
                "status": h.site_mqtt.state().as_str(),
                "connected": h.site_mqtt.connected(),
                "error": h.site_mqtt.last_error(),
            },
            "socketio": {
                "status": "healthy",
                "clients": h.socket_clients.load(Ordering::Relaxed),
            },
            "sinks": sinks,
        },
        "devices": {
            "online": h.devices_online.load(Ordering::Relaxed),
            "total": h.devices_total.load(Ordering::Relaxed),
        },
        "alarms": {
            "active": h.active_alerts.load(Ordering::Relaxed),
            "unacknowledged": h.alarms_unacked.load(Ordering::Relaxed),
        },
    });
    if let Some(relay) = h.relay.get() {
        body["relay"] = relay.to_json(state.config.relay.gateway_silence_ms);
    }
    let code = if store_state == ComponentState::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(body)).into_response()
}

pub async fn metrics(State(state): State<ApiState>) -> Response {
    if !state.config.metrics.enabled {
        return (
            StatusCode::NOT_FOUND,
            "metrics are disabled (METRICS_ENABLED=false)\n",
        )
            .into_response();
    }
    let file_bytes = std::fs::metadata(state.store.path())
        .map(|m| m.len())
        .unwrap_or(0);
    metrics::gauge!(t::STORE_FILE_BYTES).set(file_bytes as f64);
    metrics::gauge!(t::SOCKETIO_CLIENTS)
        .set(state.health.socket_clients.load(Ordering::Relaxed) as f64);
    metrics::gauge!(t::SOCKETIO_BUFFERED).set(engineioxide::budget::queued_bytes() as f64);
    metrics::gauge!(t::SOCKETIO_BUFFERED_PEAK)
        .set(engineioxide::budget::peak_queued_bytes() as f64);
    metrics::counter!(t::SOCKETIO_BUDGET_REFUSED).absolute(engineioxide::budget::refused());
    let handle = t::prometheus();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
