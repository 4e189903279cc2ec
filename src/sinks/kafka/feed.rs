//! The central feed from Kafka (relay mode, `relay.kafka`): reads the topics of
//! `[sinks.kafka]`, every partition, from the offset the caller kept for it (else the
//! earliest), as the reference's "direct message consumption". No consumer group, on purpose:
//! rskafka has none, and none is wanted: every replica serves its own dashboards and needs every
//! record, so each reads all partitions from offsets it keeps in its own store. A record's
//! `gateway-id` / `seq` headers (what our Kafka sink writes) are its origin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::KafkaSink;
use crate::backoff::Backoff;
use crate::config::KafkaSinkConfig;
use crate::health::RelayFigures;
use crate::record::RecordKind;
use crate::sinks::{FeedMessage, FeedSettings};

/// How long one fetch waits on the broker for new records.
const FETCH_WAIT_MS: i32 = 500;

/// Starts reading; `positions` are kept next offsets by `<topic>/<partition>`.
pub fn spawn(
    config: &KafkaSinkConfig,
    settings: FeedSettings,
    positions: HashMap<Arc<str>, u64>,
    tx: mpsc::Sender<FeedMessage>,
    figures: Arc<RelayFigures>,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let sink = KafkaSink::new(config.clone(), String::new());
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut sink = sink;
        let mut backoff =
            Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).with_jitter();
        while !stop.is_cancelled() {
            match read(&mut sink, &settings, &positions, &tx, &figures, &stop).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "central Kafka feed lost; reading again");
                    figures.feed.set_failed(format!("kafka: {e}"));
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    })
}

/// The kind each topic carries.
fn kinds(config: &KafkaSinkConfig) -> Vec<(String, RecordKind)> {
    let t = &config.topics;
    vec![
        (t.sensor_readings.clone(), RecordKind::Reading),
        (t.device_status.clone(), RecordKind::Status),
        (t.alerts.clone(), RecordKind::Alert),
        (t.alarm_events.clone(), RecordKind::Alarm),
    ]
}

/// One session: a reader per partition until `stop` (`Ok`) or one fails (`Err`; the others
/// are dropped and all start again from the positions kept at start: at least once, dedup
/// drops what comes again).
async fn read(
    sink: &mut KafkaSink,
    settings: &FeedSettings,
    positions: &HashMap<Arc<str>, u64>,
    tx: &mpsc::Sender<FeedMessage>,
    figures: &RelayFigures,
    stop: &CancellationToken,
) -> Result<(), String> {
    let client = sink
        .client(BackoffConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let partitions = sink
        .load_partitions(&client)
        .await
        .map_err(|e| e.to_string())?;
    figures.feed.set_connected();
    let mut readers = JoinSet::new();
    for (topic, kind) in kinds(&sink.config) {
        for (p, pc) in partitions.get(&topic).into_iter().flatten().enumerate() {
            let source: Arc<str> = format!("{topic}/{p}").into();
            let from = positions.get(&source).copied();
            let reader = Partition {
                pc: pc.clone(),
                source,
                kind,
                max_bytes: settings.max_message_bytes,
                tx: tx.clone(),
            };
            readers.spawn(reader.run(from));
        }
    }
    tracing::info!(
        partitions = readers.len(),
        "relay reading the central Kafka topics"
    );
    let result = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        Some(done) = readers.join_next() => match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        },
    };
    readers.abort_all();
    result
}

struct Partition {
    pc: Arc<PartitionClient>,
    source: Arc<str>,
    kind: RecordKind,
    max_bytes: usize,
    tx: mpsc::Sender<FeedMessage>,
}

impl Partition {
    async fn run(self, from: Option<u64>) -> Result<(), String> {
        let mut offset = match from {
            Some(o) => o as i64,
            None => self
                .pc
                .get_offset(OffsetAt::Earliest)
                .await
                .map_err(|e| e.to_string())?,
        };
        let fetch_max = (self.max_bytes as i32).saturating_mul(64).max(1 << 20);
        loop {
            let (records, _high) = self
                .pc
                .fetch_records(offset, 1..fetch_max, FETCH_WAIT_MS)
                .await
                .map_err(|e| e.to_string())?;
            for r in records {
                if r.offset < offset {
                    continue; // a compressed batch starts before the offset asked for
                }
                offset = r.offset + 1;
                if self.tx.send(self.message(r, offset as u64)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    fn message(&self, r: RecordAndOffset, next: u64) -> FeedMessage {
        let header = |k: &str| {
            r.record
                .headers
                .get(k)
                .and_then(|v| std::str::from_utf8(v).ok().map(str::to_string))
        };
        let origin = header("gateway-id").zip(header("seq").and_then(|s| s.parse().ok()));
        let body = match r.record.value {
            None => Err("missing_data"),
            Some(v) if v.len() > self.max_bytes => Err("too_large"),
            Some(v) => Ok(v),
        };
        FeedMessage {
            source: self.source.clone(),
            kind: self.kind,
            body,
            origin,
            position: Some(next),
        }
    }
}
