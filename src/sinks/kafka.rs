//! The Kafka sink (rskafka, pure Rust): produce to the reference topics (`sensors-data`,
//! `device-status`, `alerts`) with acks=all. The record key is the device id and the partition
//! is Kafka's default for that key (murmur2), so every device stays on one partition and its
//! records stay in order; headers `gateway-id` and `seq` carry the de-duplication key.
//!
//! TLS is rskafka's own transport fed with our rustls configuration (`crate::tls`); SASL
//! PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 are rskafka's (rsasl). rskafka turns a handshake error
//! into text, so a certificate problem is taken from our verifier's [`ProblemLog`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::BackoffConfig;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use tokio::task::JoinSet;

pub mod feed;

use super::{SinkError, Upstream, name_for};
use crate::config::{KafkaCompression, KafkaSasl, KafkaSinkConfig};
use crate::store::RawRecord;
use crate::tls::ClientSetup;

/// The config key of the alarm topic, the one topic a link may lack.
const ALARM_KEY: &str = "alarm_events";

fn missing(topic: &str, key: &str) -> SinkError {
    SinkError::MissingTopic {
        topic: topic.to_string(),
        key: format!("sinks.kafka.topics.{key}"),
    }
}

pub struct KafkaSink {
    config: KafkaSinkConfig,
    gateway_id: String,
    link: Option<Link>,
    /// Built at the first connect with `tls = true` (reads the system CA bundle once).
    tls: Option<ClientSetup>,
}

/// A connected client and one partition client per partition of each topic.
struct Link {
    client: Client,
    partitions: HashMap<String, Vec<Arc<PartitionClient>>>,
    loaded_at: Instant,
}

impl KafkaSink {
    pub fn new(config: KafkaSinkConfig, gateway_id: String) -> KafkaSink {
        KafkaSink {
            config,
            gateway_id,
            link: None,
            tls: None,
        }
    }

    fn tls(&mut self) -> Result<Option<ClientSetup>, SinkError> {
        let Some(tls) = self.config.tls() else {
            return Ok(None);
        };
        if self.tls.is_none() {
            let setup = crate::tls::client_config(&tls)
                .map_err(|e| SinkError::Tls(format!("TLS set-up: {e}")))?;
            self.tls = Some(setup);
        }
        Ok(self.tls.clone())
    }

    fn sasl(&self) -> Option<SaslConfig> {
        let c = &self.config;
        let credentials = || Credentials::new(c.username.clone(), c.password.expose().to_string());
        match c.sasl_mechanism {
            KafkaSasl::None => None,
            KafkaSasl::Plain => Some(SaslConfig::Plain(credentials())),
            KafkaSasl::ScramSha256 => Some(SaslConfig::ScramSha256(credentials())),
            KafkaSasl::ScramSha512 => Some(SaslConfig::ScramSha512(credentials())),
        }
    }

    /// The bootstrap client: TLS and SASL when configured; a certificate problem in plain words.
    async fn client(&mut self, backoff: BackoffConfig) -> Result<Client, SinkError> {
        let tls = self.tls()?;
        let mut builder = ClientBuilder::new(self.config.brokers.clone())
            .client_id(self.config.client_id.as_str())
            .backoff_config(backoff);
        if let Some(setup) = &tls {
            setup.problems.take();
            builder = builder.tls_config(setup.config.clone());
        }
        if let Some(sasl) = self.sasl() {
            builder = builder.sasl_config(sasl);
        }
        builder
            .build()
            .await
            .map_err(|e| match tls.as_ref().and_then(|s| s.problems.take()) {
                Some(problem) => SinkError::Tls(problem.to_string()),
                None => SinkError::tls_aware(e, SinkError::Kafka),
            })
    }

    /// Our topics with their config keys, each once; a name shared with a telemetry topic is
    /// required.
    fn topics(&self) -> Vec<(&str, &'static str)> {
        let t = &self.config.topics;
        let mut out = vec![
            (t.sensor_readings.as_str(), "sensor_readings"),
            (t.device_status.as_str(), "device_status"),
            (t.alerts.as_str(), "alerts"),
            (t.alarm_events.as_str(), ALARM_KEY),
        ];
        out.sort_by_key(|(name, key)| (*name, *key == ALARM_KEY));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    fn compression(&self) -> Compression {
        match self.config.compression {
            KafkaCompression::None => Compression::NoCompression,
            KafkaCompression::Gzip => Compression::Gzip,
            KafkaCompression::Snappy => Compression::Snappy,
        }
    }

    /// Reads the partition counts of our topics and opens a client for each partition's
    /// leader. A missing telemetry topic is an error that names it; a missing alarm topic is
    /// left out (telemetry flows; the alarm lane reports it when it sends).
    async fn load_partitions(
        &self,
        client: &Client,
    ) -> Result<HashMap<String, Vec<Arc<PartitionClient>>>, SinkError> {
        let listed = client.list_topics().await?;
        let mut out = HashMap::new();
        for (topic, key) in self.topics() {
            let Some(found) = listed.iter().find(|t| t.name == topic) else {
                if key == ALARM_KEY {
                    continue;
                }
                return Err(missing(topic, key));
            };
            let mut clients = Vec::with_capacity(found.partitions.len());
            // Partitions are numbered 0..n; the default partitioner relies on that.
            for p in 0..found.partitions.len() as i32 {
                let pc = client
                    .partition_client(topic, p, UnknownTopicHandling::Error)
                    .await?;
                clients.push(Arc::new(pc));
            }
            out.insert(topic.to_string(), clients);
        }
        Ok(out)
    }

    /// Reloads the partitions every `metadata_refresh_ms`, and at once when the batch names a
    /// topic the link does not have (the alarm topic, created since); that topic still missing
    /// is an error naming it. A failed reload drops the link.
    async fn refresh(&mut self, batch: &[RawRecord]) -> Result<(), SinkError> {
        let Some(link) = self.link.as_ref() else {
            return Ok(());
        };
        let every = Duration::from_millis(self.config.metadata_refresh_ms);
        let topics = &self.config.topics;
        let absent = |link: &Link| {
            batch
                .iter()
                .map(|r| name_for(topics, r.kind))
                .find(|t| !link.partitions.contains_key(*t))
                .map(str::to_string)
        };
        if link.loaded_at.elapsed() > every || absent(link).is_some() {
            match self.load_partitions(&link.client).await {
                Ok(p) => {
                    let link = self.link.as_mut().expect("checked above");
                    link.partitions = p;
                    link.loaded_at = Instant::now();
                }
                Err(e) => {
                    self.link = None;
                    return Err(e);
                }
            }
        }
        let link = self.link.as_ref().expect("checked above");
        match absent(link) {
            Some(topic) => Err(missing(&topic, ALARM_KEY)),
            None => Ok(()),
        }
    }

    fn to_kafka(&self, r: &RawRecord) -> Record {
        let key = if r.device_id.is_empty() {
            self.gateway_id.as_bytes()
        } else {
            r.device_id.as_bytes()
        };
        Record {
            key: Some(key.to_vec()),
            value: Some(r.json.clone()),
            headers: BTreeMap::from([
                (
                    "gateway-id".to_string(),
                    self.gateway_id.as_bytes().to_vec(),
                ),
                ("seq".to_string(), r.seq.to_string().into_bytes()),
            ]),
            timestamp: chrono::DateTime::from_timestamp_millis(r.ts_ms).unwrap_or_default(),
        }
    }
}

impl Upstream for KafkaSink {
    async fn connect(&mut self) -> Result<(), SinkError> {
        self.link = None;
        let timeout = Duration::from_millis(self.config.delivery.request_timeout_ms);
        // rskafka retries internally; bound it so an outage surfaces here and the sink's
        // own backoff, health and alerts take over.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(timeout),
        };
        let client = self.client(backoff).await?;
        let partitions = self.load_partitions(&client).await?;
        self.link = Some(Link {
            client,
            partitions,
            loaded_at: Instant::now(),
        });
        Ok(())
    }

    async fn send(&mut self, batch: &[RawRecord]) -> Result<(), SinkError> {
        self.refresh(batch).await?;
        let Some(link) = self.link.as_ref() else {
            return Err(SinkError::Timeout {
                what: "kafka link (not connected)",
                timeout_ms: 0,
            });
        };

        // One produce request per partition, in seq order within it; all in flight at once.
        let mut groups: BTreeMap<(&str, usize), Vec<Record>> = BTreeMap::new();
        for r in batch {
            let topic = name_for(&self.config.topics, r.kind);
            let parts = &link.partitions[topic];
            let key = if r.device_id.is_empty() {
                self.gateway_id.as_bytes()
            } else {
                r.device_id.as_bytes()
            };
            let p = partition_for(key, parts.len());
            groups.entry((topic, p)).or_default().push(self.to_kafka(r));
        }
        let compression = self.compression();
        let mut inflight = JoinSet::new();
        for ((topic, p), records) in groups {
            let pc = link.partitions[topic][p].clone();
            inflight.spawn(async move { pc.produce(records, compression).await });
        }
        let mut result = Ok(());
        while let Some(done) = inflight.join_next().await {
            match done.expect("produce task panicked") {
                Ok(_offsets) => {}
                Err(e) if result.is_ok() => result = Err(SinkError::Kafka(e)),
                Err(_) => {}
            }
        }
        if result.is_err() {
            self.link = None;
        }
        result
    }

    async fn probe(&mut self, timeout: Duration) -> bool {
        // A bootstrap client: TCP, TLS and SASL when configured, ApiVersions, Metadata.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            base: 2.0,
            deadline: Some(timeout),
        };
        let client = self.client(backoff);
        matches!(tokio::time::timeout(timeout, client).await, Ok(Ok(_)))
    }
}

/// Kafka's default partitioner for keyed records: `toPositive(murmur2(key)) % partitions`,
/// so Java and librdkafka (`murmur2_random`) producers put a device on the same partition.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    if partitions == 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) as usize % partitions
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()) as i32, expected, "{input}");
        }
    }

    #[test]
    fn a_device_always_maps_to_one_partition() {
        let p = partition_for(b"device-001", 6);
        assert!(p < 6);
        for _ in 0..10 {
            assert_eq!(partition_for(b"device-001", 6), p);
        }
        assert_eq!(partition_for(b"anything", 1), 0);
    }
}
