//! The relay's one intake task: checks each feed message, drops duplicates, hands the rest to
//! the store writer in batches, and keeps stream positions and dedup floors in the store once
//! the records before them are durable (so a restart reads again from there, at least once).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::dedup::{Dedup, Verdict};
use super::parse::{Parsed, parse};
use super::view::View;
use super::{AlarmOwners, FLOOR_PREFIX, MAX_ALARM_OWNERS, POSITION_PREFIX};
use crate::health::{Health, RelayFigures};
use crate::ingest::AckCursor;
use crate::record::{Record, RecordKind};
use crate::sinks::FeedMessage;
use crate::store::writer::{WriteBatch, WriteRequest};
use crate::telemetry as t;
use crate::time::now_ms;

/// How often kept positions are written while the feed is quiet.
const KEEP_INTERVAL: Duration = Duration::from_millis(250);

pub(super) struct Intake {
    pub rx: mpsc::Receiver<FeedMessage>,
    pub writer: mpsc::Sender<WriteRequest>,
    pub dedup: Dedup,
    pub figures: Arc<RelayFigures>,
    pub owners: AlarmOwners,
    /// Devices, alarms and readings counted for `system:status`, published to `health`.
    pub view: View,
    pub health: Arc<Health>,
    pub read_batch: usize,
    /// Timestamps outside [now − .0, now + .1] are replaced by the receive time.
    pub window: (i64, i64),
}

/// Cursors to write once batch `.0` is durable.
type Keep = (u64, Vec<(String, u64)>);

impl Intake {
    pub async fn run(mut self) {
        let acks = Arc::new(AckCursor::default());
        let mut sent = 0u64;
        let mut keep: VecDeque<Keep> = VecDeque::new();
        let mut buf = Vec::with_capacity(self.read_batch);
        loop {
            let n = tokio::select! {
                n = self.rx.recv_many(&mut buf, self.read_batch) => n,
                _ = tokio::time::sleep(KEEP_INTERVAL) => {
                    self.view.publish(&self.health, now_ms());
                    if !self.flush_kept(&acks, &mut keep).await { break; }
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            let (records, cursors) = self.take(buf.drain(..));
            if !records.is_empty() {
                sent += 1;
                let batch = WriteBatch {
                    records,
                    received: Instant::now(),
                    acks: vec![acks.token(sent, None, false)],
                };
                if self
                    .writer
                    .send(WriteRequest::Records(batch))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            keep.push_back((sent, cursors));
            if !self.flush_kept(&acks, &mut keep).await {
                break;
            }
        }
    }

    /// Writes the cursors of every batch that is durable by now; false once the writer is gone.
    async fn flush_kept(&self, acks: &AckCursor, keep: &mut VecDeque<Keep>) -> bool {
        let mut latest: HashMap<String, u64> = HashMap::new();
        while keep.front().is_some_and(|(n, _)| *n <= acks.committed()) {
            let (_, cursors) = keep.pop_front().expect("front checked");
            latest.extend(cursors);
        }
        for (sink, next_seq) in latest {
            let request = WriteRequest::Cursor {
                sink: sink.into(),
                next_seq,
            };
            if self.writer.send(request).await.is_err() {
                return false;
            }
        }
        true
    }

    /// The records to store from `messages`, and the cursors they move.
    fn take(
        &mut self,
        messages: impl Iterator<Item = FeedMessage>,
    ) -> (Vec<Record>, Vec<(String, u64)>) {
        let mut records = Vec::new();
        let mut cursors: HashMap<String, u64> = HashMap::new();
        let now = now_ms();
        for m in messages {
            if let Some(ms) = m.position {
                cursors.insert(format!("{POSITION_PREFIX}{}", m.source), ms);
            }
            let parsed = m
                .body
                .and_then(|body| parse(m.kind, &body, m.origin, now, self.window));
            match parsed {
                Ok(p) => {
                    if let Some(record) = self.admit(p, now, m.position, &mut cursors) {
                        self.view.note(&record, now);
                        records.push(record);
                    }
                }
                Err(reason) => {
                    metrics::counter!(t::RELAY_REJECTED, "reason" => reason).increment(1);
                    tracing::debug!(source = %m.source, reason, "central feed message refused");
                }
            }
        }
        self.view.publish(&self.health, now);
        (records, cursors.into_iter().collect())
    }

    /// Notes which gateway an alarm belongs to, for actions on it from central dashboards.
    fn note_owner(&self, json: &str, gateway: &str) {
        #[derive(serde::Deserialize)]
        struct Id {
            #[serde(rename = "alarmId")]
            alarm_id: String,
        }
        let Ok(Id { alarm_id }) = serde_json::from_str::<Id>(json) else {
            return;
        };
        let mut owners = self.owners.lock().expect("owners lock poisoned");
        if owners.len() < MAX_ALARM_OWNERS || owners.contains_key(&alarm_id) {
            owners.insert(alarm_id, gateway.to_string());
        }
    }

    fn admit(
        &mut self,
        p: Parsed,
        now: i64,
        position: Option<u64>,
        cursors: &mut HashMap<String, u64>,
    ) -> Option<Record> {
        if p.record.kind == RecordKind::Alarm
            && let Some((gateway, _)) = &p.origin
        {
            self.note_owner(p.record.json.get(), gateway);
        }
        let record = Record::Relayed(Box::new(p.record));
        let Some((gateway, seq)) = p.origin else {
            metrics::counter!(t::RELAY_RECORDS, "result" => "relayed").increment(1);
            return Some(record);
        };
        let verdict = self.dedup.admit(&gateway, seq);
        let lag = position.map_or(now - record.ts_ms(), |ms| now - ms as i64);
        self.figures
            .note(&gateway, seq, verdict == Verdict::Duplicate, now, lag);
        metrics::gauge!(t::RELAY_GATEWAY_LAG, "gateway" => gateway.clone()).set(lag as f64 / 1e3);
        let result = match verdict {
            Verdict::Duplicate => {
                metrics::counter!(t::RELAY_RECORDS, "result" => "duplicate").increment(1);
                return None;
            }
            Verdict::New => "relayed",
            Verdict::Untracked => "untracked",
        };
        metrics::counter!(t::RELAY_RECORDS, "result" => result).increment(1);
        metrics::gauge!(t::RELAY_GATEWAY_SEQ, "gateway" => gateway.clone()).set(seq as f64);
        if let Some(floor) = self.dedup.floor(&gateway) {
            cursors.insert(format!("{FLOOR_PREFIX}{gateway}"), floor);
        }
        Some(record)
    }
}
