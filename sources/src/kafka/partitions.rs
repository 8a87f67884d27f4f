//! What the subscribed topics hold: their partitions, each partition's first
//! and next offsets, where the query's first batch starts, and the exact
//! ranges a batch reads, with Spark's `fail_on_data_loss` rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use sluice_engine::checkpoint::CheckpointDir;
use sluice_engine::{Result, SluiceError};
use tokio::sync::OnceCell;
use tracing::warn;

use super::offsets::{PartitionOffsets, TopicPartition};
use super::options::{KafkaSourceOptions, StartingOffsets, Subscription};
use super::read::PartitionRange;

/// The name of the first offsets in the source's checkpoint metadata.
const INITIAL: &str = "initial-offsets.json";

/// Partition discovery and offsets of one source, over a metadata consumer.
pub struct Partitions {
    source: String,
    options: Arc<KafkaSourceOptions>,
    consumer: super::SourceConsumer,
    metadata: CheckpointDir,
    initial: OnceCell<PartitionOffsets>,
}

impl std::fmt::Debug for Partitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partitions").field("source", &self.source).field("initial", &self.initial.get()).finish()
    }
}

impl Partitions {
    /// Discovery for `options`; the first offsets are kept in `metadata`.
    pub fn new(
        source: String,
        options: Arc<KafkaSourceOptions>,
        consumer: super::SourceConsumer,
        metadata: CheckpointDir,
    ) -> Self {
        Self { source, options, consumer, metadata, initial: OnceCell::new() }
    }

    fn fail(&self, reason: String) -> SluiceError {
        SluiceError::Source { source_name: self.source.clone(), reason }
    }

    fn timeout(&self) -> Duration {
        self.options.poll_timeout
    }

    /// The partitions this process reads now, in order, and the named
    /// topics (`topic`, `topics`) that do not exist.
    pub fn discover(&self) -> Result<(Vec<TopicPartition>, Vec<String>)> {
        let unreachable = |e: rdkafka::error::KafkaError| {
            self.fail(format!(
                "cannot read the topics of the Kafka cluster at {} within {} ms: {e}; is the broker running and \
                 bootstrap_servers right? (poll_timeout_ms raises the wait)",
                self.options.bootstrap_servers,
                self.timeout().as_millis()
            ))
        };
        let mut out = vec![];
        let mut missing = vec![];
        match &self.options.subscription {
            Subscription::Topics(topics) => {
                for topic in topics {
                    let md = self.consumer.fetch_metadata(Some(topic), self.timeout()).map_err(unreachable)?;
                    match md.topics().iter().find(|t| t.name() == topic) {
                        Some(t)
                            if t.error() != Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                                && !t.partitions().is_empty() =>
                        {
                            out.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())))
                        }
                        _ => missing.push(topic.clone()),
                    }
                }
            }
            Subscription::Pattern(_) => {
                let md = self.consumer.fetch_metadata(None, self.timeout()).map_err(unreachable)?;
                for t in md.topics() {
                    if self.options.subscription.matches(t.name()) && t.error().is_none() {
                        out.extend(t.partitions().iter().map(|p| (t.name().to_string(), p.id())));
                    }
                }
            }
        }
        out.retain(|(_, p)| self.options.assignment.contains(*p));
        out.sort();
        Ok((out, missing))
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(topic, partition, self.timeout())
            .map_err(|e| self.fail(format!("cannot read the offsets of topic '{topic}' partition {partition}: {e}")))
    }

    /// Where the query's first batch starts: resolved once from
    /// `starting_offsets` and kept in the checkpoint, so a replayed first
    /// batch reads the same records.
    pub async fn initial(self: &Arc<Self>) -> Result<PartitionOffsets> {
        self.initial
            .get_or_try_init(|| async {
                if let Some(stored) = self.metadata.read_json::<serde_json::Value>(INITIAL).await? {
                    return PartitionOffsets::from_json(&self.source, &stored);
                }
                let this = Arc::clone(self);
                let resolved =
                    tokio::task::spawn_blocking(move || this.resolve(&this.options.starting, "starting_offsets"))
                        .await
                        .map_err(|e| self.fail(format!("resolving the starting offsets failed: {e}")))??;
                if !self.metadata.create_json(INITIAL, &resolved.to_json()).await? {
                    // Another run wrote it first: use that one.
                    if let Some(stored) = self.metadata.read_json::<serde_json::Value>(INITIAL).await? {
                        return PartitionOffsets::from_json(&self.source, &stored);
                    }
                }
                Ok(resolved)
            })
            .await
            .cloned()
    }

    /// The range a batch query reads: from `starting_offsets` (default
    /// earliest, as in Spark) to `ending_offsets` (default latest).
    pub fn batch_bounds(&self) -> Result<(PartitionOffsets, PartitionOffsets)> {
        let starting = match self.options.starting_given {
            true => self.options.starting.clone(),
            false => StartingOffsets::Earliest,
        };
        let start = self.resolve(&starting, "starting_offsets")?;
        let end = match &self.options.ending {
            Some(json) => self.resolve(&StartingOffsets::Specific(json.clone()), "ending_offsets")?,
            None => self.resolve(&StartingOffsets::Latest, "ending_offsets")?,
        };
        Ok((start, end))
    }

    /// Offsets of every partition read now, as `how` says (`option` names
    /// it in errors).
    fn resolve(&self, how: &StartingOffsets, option: &str) -> Result<PartitionOffsets> {
        let (partitions, missing) = self.discover()?;
        if let Some(topic) = missing.first() {
            return Err(self.fail(format!(
                "topic '{topic}' does not exist on the Kafka cluster at {}; create it first (for example \
                 `scripts/kafka.sh topic-create {topic} 1`) or fix the topic option",
                self.options.bootstrap_servers
            )));
        }
        let mut out = BTreeMap::new();
        match how {
            StartingOffsets::Earliest | StartingOffsets::Latest => {
                for (t, p) in partitions {
                    let (low, high) = self.watermarks(&t, p)?;
                    let o = if *how == StartingOffsets::Earliest { low } else { high };
                    out.insert((t, p), o);
                }
            }
            StartingOffsets::Specific(json) => {
                let mut missing = vec![];
                for (t, p) in partitions {
                    match json.get(&t).and_then(|m| m.get(p.to_string())).and_then(|o| o.as_i64()) {
                        Some(-2) => out.insert((t.clone(), p), self.watermarks(&t, p)?.0),
                        Some(-1) => out.insert((t.clone(), p), self.watermarks(&t, p)?.1),
                        Some(o) => out.insert((t.clone(), p), o),
                        None => {
                            missing.push(format!("{t}/{p}"));
                            None
                        }
                    };
                }
                if !missing.is_empty() {
                    return Err(SluiceError::InvalidOption {
                        option: option.into(),
                        value: json.to_string(),
                        reason: format!(
                            "it gives no offset for partition(s) {}; with specific offsets every partition needs \
                             one (-2 for the earliest, -1 for the latest)",
                            missing.join(", ")
                        ),
                    });
                }
            }
            StartingOffsets::Timestamp(ts) => {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &partitions {
                    tpl.add_partition_offset(t, *p, Offset::Offset(*ts))
                        .map_err(|e| self.fail(format!("topic '{t}' partition {p}: {e}")))?;
                }
                let found = self
                    .consumer
                    .offsets_for_times(tpl, self.timeout())
                    .map_err(|e| self.fail(format!("cannot look up the offsets at starting_timestamp {ts}: {e}")))?;
                for (t, p) in partitions {
                    let o = match found.find_partition(&t, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        // No record at or after the time: the partition's end.
                        _ => self.watermarks(&t, p)?.1,
                    };
                    out.insert((t, p), o);
                }
            }
        }
        Ok(PartitionOffsets(out))
    }

    /// The next offset of every partition read now (what a batch can read up
    /// to). A partition of `start` that is gone, or whose end moved back
    /// behind `start`, is data loss.
    pub fn available(&self, start: &PartitionOffsets) -> Result<PartitionOffsets> {
        let (now, _) = self.discover()?;
        for (t, p) in start.0.keys() {
            if !now.iter().any(|(nt, np)| nt == t && np == p) && self.options.assignment.contains(*p) {
                self.data_loss(format!(
                    "topic '{t}' partition {p} is gone (the topic was deleted?); records after offset {} may be \
                     lost",
                    start.0[&(t.clone(), *p)]
                ))?;
            }
        }
        let mut out = BTreeMap::new();
        for (t, p) in now {
            let (_, high) = self.watermarks(&t, p)?;
            if let Some(from) = start.get(&t, p) {
                if high < from {
                    self.data_loss(format!(
                        "topic '{t}' partition {p} now ends at offset {high}, before offset {from} the query \
                         had reached (the topic was deleted and created again?)"
                    ))?;
                }
            }
            out.insert((t, p), high);
        }
        Ok(PartitionOffsets(out))
    }

    /// `frozen` (an available-now target), never behind `start`.
    pub fn clamp_to(&self, start: &PartitionOffsets, frozen: &PartitionOffsets) -> PartitionOffsets {
        PartitionOffsets(
            frozen.0.iter().map(|(tp, f)| (tp.clone(), (*f).max(start.0.get(tp).copied().unwrap_or(0)))).collect(),
        )
    }

    /// The ranges a batch `(start, end]` reads. A partition new since
    /// `start` is read from its beginning (offset 0); records before a
    /// partition's first offset are gone (data loss).
    pub fn ranges(&self, start: &PartitionOffsets, end: &PartitionOffsets) -> Result<Vec<PartitionRange>> {
        let mut out = vec![];
        for ((t, p), until) in &end.0 {
            let mut from = start.get(t, *p).unwrap_or(0);
            if *until <= from {
                continue;
            }
            let (low, _) = self.watermarks(t, *p)?;
            if from < low {
                self.data_loss(format!(
                    "records {from}..{low} of topic '{t}' partition {p} are gone (retention or deleted records) \
                     before the query read them"
                ))?;
                from = low;
            }
            if from < *until {
                out.push(PartitionRange { topic: t.clone(), partition: *p, from, until: *until });
            }
        }
        Ok(out)
    }

    fn data_loss(&self, what: String) -> Result<()> {
        if self.options.fail_on_data_loss {
            return Err(self.fail(format!(
                "{what}. Set fail_on_data_loss = 'false' to go on from the records that remain (Spark's \
                 failOnDataLoss)"
            )));
        }
        warn!(source = %self.source, "{what}; going on (fail_on_data_loss = 'false')");
        Ok(())
    }
}
