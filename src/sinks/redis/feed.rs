//! The central feed (relay mode): reads back what gateways write with a Redis sink of the same
//! `[sinks.redis]` section. `mode = "publish"`: SUBSCRIBE to the four channels (what the
//! reference websocket service does; Redis drops what arrives while we are not subscribed).
//! `mode = "stream"`: XREAD the four streams from the positions the caller kept, so a restart
//! misses nothing the streams still hold. The feed knows Redis only: checking, dedup and
//! storing are the relay's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RedisSink;
use crate::backoff::Backoff;
use crate::config::{KindNames, RedisMode, RedisSinkConfig};
use crate::health::RelayFigures;
use crate::record::RecordKind;
use crate::sinks::Upstream;

/// How long one XREAD blocks waiting for entries.
const XREAD_BLOCK: Duration = Duration::from_secs(1);

/// One message as the feed read it.
#[derive(Debug)]
pub struct FeedMessage {
    /// The channel or stream it came from.
    pub source: Arc<str>,
    pub kind: RecordKind,
    /// The reference JSON, or why it was not taken (counted by the relay under that reason).
    pub body: Result<Vec<u8>, &'static str>,
    /// A stream entry's `gatewayId` and `seq` fields (a channel message has them in its JSON).
    pub origin: Option<(String, u64)>,
    /// A stream entry's id, milliseconds part: where a restart reads again from.
    pub position: Option<u64>,
}

/// What the feed reads and how much at once.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    pub max_message_bytes: usize,
    pub read_batch: usize,
}

/// The channel or stream names of every kind, with their kind.
fn names(config: &RedisSinkConfig) -> Vec<(Arc<str>, RecordKind)> {
    let names: &KindNames = match config.mode {
        RedisMode::Publish => &config.channels,
        RedisMode::Stream => &config.streams,
    };
    [
        (&names.sensor_readings, RecordKind::Reading),
        (&names.device_status, RecordKind::Status),
        (&names.alerts, RecordKind::Alert),
        (&names.alarm_events, RecordKind::Alarm),
    ]
    .into_iter()
    .map(|(n, k)| (Arc::from(n.as_str()), k))
    .collect()
}

/// The stream names read in stream mode (empty in publish mode): whose positions to keep.
pub fn stream_names(config: &RedisSinkConfig) -> Vec<Arc<str>> {
    match config.mode {
        RedisMode::Publish => Vec::new(),
        RedisMode::Stream => names(config).into_iter().map(|(n, _)| n).collect(),
    }
}

/// Starts reading; `positions` are the kept stream positions (ms of the last entry taken).
/// Reconnects with backoff until `stop`.
pub fn spawn(
    config: &RedisSinkConfig,
    settings: FeedSettings,
    positions: HashMap<Arc<str>, u64>,
    tx: mpsc::Sender<FeedMessage>,
    figures: Arc<RelayFigures>,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    figures.feed.enable();
    let sink = RedisSink::new(config.clone(), String::new());
    let feed = Feed {
        names: names(config),
        mode: config.mode,
        sink,
        settings,
        tx,
        figures,
    };
    tokio::spawn(feed.run(positions, stop.clone()))
}

struct Feed {
    names: Vec<(Arc<str>, RecordKind)>,
    mode: RedisMode,
    sink: RedisSink,
    settings: FeedSettings,
    tx: mpsc::Sender<FeedMessage>,
    /// `feed` is shown in `/health`.
    figures: Arc<RelayFigures>,
}

/// The stream id to read after: every entry of millisecond `ms` again (dedup drops repeats).
fn read_after(ms: u64) -> String {
    match ms {
        0 => "0-0".into(),
        ms => format!("{}-{}", ms - 1, u64::MAX),
    }
}

impl Feed {
    async fn run(self, positions: HashMap<Arc<str>, u64>, stop: CancellationToken) {
        let mut ids: Vec<String> = self
            .names
            .iter()
            .map(|(n, _)| read_after(positions.get(n).copied().unwrap_or(0)))
            .collect();
        let mut backoff =
            Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).with_jitter();
        let endpoint = self.sink.endpoints().join(",");
        while !stop.is_cancelled() {
            let result = match self.mode {
                RedisMode::Publish => self.subscribe(&stop, &mut backoff).await,
                RedisMode::Stream => self.read_streams(&mut ids, &stop, &mut backoff).await,
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "central feed lost; reading again");
                    self.figures.feed.set_failed(e);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    fn body(&self, payload: Option<Vec<u8>>) -> Result<Vec<u8>, &'static str> {
        match payload {
            None => Err("missing_data"),
            Some(p) if p.len() > self.settings.max_message_bytes => Err("too_large"),
            Some(p) => Ok(p),
        }
    }

    /// Publish mode: one subscription to every channel until `stop` (`Ok`) or the link fails.
    async fn subscribe(
        &self,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), String> {
        let client = self.sink.client().map_err(|e| e.to_string())?;
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        let channels: Vec<&str> = self.names.iter().map(|(n, _)| &**n).collect();
        pubsub
            .subscribe(&channels)
            .await
            .map_err(|e| e.to_string())?;
        backoff.reset();
        self.figures.feed.set_connected();
        tracing::info!(?channels, "relay subscribed to the central channels");
        let mut messages = pubsub.on_message();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                msg = messages.next() => msg.ok_or("subscription closed")?,
            };
            let Some((source, kind)) = self
                .names
                .iter()
                .find(|(n, _)| **n == *msg.get_channel_name())
            else {
                continue;
            };
            let bytes = msg.get_payload_bytes();
            let body = if bytes.len() > self.settings.max_message_bytes {
                Err("too_large")
            } else {
                Ok(bytes.to_vec())
            };
            let message = FeedMessage {
                source: source.clone(),
                kind: *kind,
                body,
                origin: None,
                position: None,
            };
            if self.tx.send(message).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Stream mode: XREAD from `ids` (moved on as entries are handed over) until `stop`.
    async fn read_streams(
        &self,
        ids: &mut [String],
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), String> {
        let timeout = XREAD_BLOCK + Duration::from_secs(10);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let client = self.sink.client().map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        backoff.reset();
        self.figures.feed.set_connected();
        let keys: Vec<&str> = self.names.iter().map(|(n, _)| &**n).collect();
        tracing::info!(streams = ?keys, "relay reading the central streams");
        let options = StreamReadOptions::default()
            .count(self.settings.read_batch)
            .block(XREAD_BLOCK.as_millis() as usize);
        loop {
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = conn.xread_options(&keys, ids, &options) => r.map_err(|e| e.to_string())?,
            };
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                let Some(i) = keys.iter().position(|k| *k == stream.key) else {
                    continue;
                };
                for entry in stream.ids {
                    ids[i] = entry.id.clone();
                    if self.tx.send(self.entry(i, entry)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn entry(&self, i: usize, entry: StreamId) -> FeedMessage {
        let (source, kind) = &self.names[i];
        let gateway: Option<String> = entry.get("gatewayId");
        let seq: Option<u64> = entry.get("seq");
        let ms = entry.id.split_once('-').and_then(|(ms, _)| ms.parse().ok());
        FeedMessage {
            source: source.clone(),
            kind: *kind,
            body: self.body(entry.get("data")),
            origin: gateway.zip(seq),
            position: ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_reads_its_last_millisecond_again() {
        assert_eq!(read_after(0), "0-0");
        assert_eq!(read_after(1700), format!("1699-{}", u64::MAX));
    }
}
