//! The `kafka` source: records of Kafka topics, read in exact offset ranges
//! (Spark's `KafkaSource`).
//!
//! - The offset of a batch is the next offset to read of every partition,
//!   in Spark's JSON (`{"topic":{"0":23}}`). A restart resumes exactly
//!   there, whatever the consumer group says: Sluice never commits offsets
//!   to Kafka.
//! - Where the first batch starts (`starting_offsets`, `starting_timestamp`)
//!   is resolved once and kept in the source's checkpoint metadata, so a
//!   replayed first batch reads the same records.
//! - Partitions added while the query runs are read from their start; a
//!   topic matching `topic_pattern` that appears is picked up too.
//! - Records that are gone (retention, deleted records, a deleted topic)
//!   fail the query, naming them, unless `fail_on_data_loss = 'false'`.
//! - Rows are Kafka's columns (`key`, `value`, `topic`, `partition`,
//!   `offset`, `timestamp`, `timestamp_type`, and `headers` with
//!   `include_headers`), or, with `format = 'json' | 'csv' | 'text'`, the
//!   declared columns decoded from the value, malformed values handled by
//!   `mode` as the files source does.

mod offsets;
mod options;
mod partitions;
mod read;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::consumer::BaseConsumer;
use sluice_engine::checkpoint::CheckpointDir;
use sluice_engine::clock::ClockRef;
use sluice_engine::{
    Options, Result, SluiceError, Source, SourceContext, SourceDefinition, SourceFactory, SourceOffset,
};
use tracing::{info_span, Instrument};

pub use offsets::{rate_limit, PartitionOffsets};
pub use options::{bootstrap_servers, Assignment, KafkaSourceOptions, StartingOffsets, Subscription, SOURCE_OPTIONS};
pub use read::{kafka_schema, PartitionRange};

use partitions::Partitions;

/// Factory of the `kafka` source connector.
#[derive(Debug, Clone, Default)]
pub struct KafkaSourceFactory;

fn check_schema(def: &SourceDefinition, options: &KafkaSourceOptions) -> Result<()> {
    if let Some(format) = options.format {
        return crate::files::check_format_schema(format, &def.schema).map_err(|reason| {
            SluiceError::plan(format!("source '{}' (kafka connector, format = {format:?}): {reason}", def.name))
        });
    }
    let kafka = kafka_schema(true);
    for f in def.schema.fields() {
        let Ok(k) = kafka.field_with_name(f.name()) else {
            return Err(SluiceError::plan(format!(
                "source '{}' (kafka connector): column '{}' is not a Kafka column (key, value, topic, partition, \
                 offset, timestamp, timestamp_type, headers); to decode the message value into the declared \
                 columns, set format = 'json' or 'csv'",
                def.name,
                f.name()
            )));
        };
        if k.name() == "headers" && !options.include_headers {
            return Err(SluiceError::plan(format!(
                "source '{}' (kafka connector): the headers column needs include_headers = 'true'",
                def.name
            )));
        }
        if !arrow::compute::can_cast_types(k.data_type(), f.data_type()) {
            return Err(SluiceError::plan(format!(
                "source '{}' (kafka connector): column '{}' is {} in Kafka and cannot be read as {}",
                def.name,
                f.name(),
                k.data_type(),
                f.data_type()
            )));
        }
    }
    Ok(())
}

impl SourceFactory for KafkaSourceFactory {
    fn name(&self) -> &str {
        "kafka"
    }

    fn valid_options(&self) -> &[&'static str] {
        SOURCE_OPTIONS
    }

    fn validate(&self, definition: &SourceDefinition) -> Result<()> {
        let options = KafkaSourceOptions::parse(&definition.options)?;
        check_schema(definition, &options)
    }

    fn default_schema(&self, options: &Options) -> Option<SchemaRef> {
        // Decoding a value needs declared columns.
        if options.get("format").is_some() {
            return None;
        }
        Some(kafka_schema(options.bool("include_headers", false).unwrap_or(false)))
    }

    fn create(&self, ctx: SourceContext) -> Result<Arc<dyn Source>> {
        let def = ctx.definition;
        let options = KafkaSourceOptions::parse(&def.options)?;
        check_schema(&def, &options)?;
        let metadata = CheckpointDir::open(&ctx.metadata_path)?;
        Ok(Arc::new(KafkaSource::new(def.name, def.schema, options, metadata, ctx.clock)?))
    }
}

/// The client context of the source's consumers: librdkafka reports a
/// partition's end, which the source asks for, as a "global error" too;
/// that one is not an error here.
#[derive(Debug, Default, Clone, Copy)]
pub struct SourceClientContext;

impl rdkafka::ClientContext for SourceClientContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let eof = matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if eof {
            tracing::debug!("kafka: {reason}");
        } else {
            tracing::error!("kafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for SourceClientContext {}

/// A consumer of the source.
pub type SourceConsumer = BaseConsumer<SourceClientContext>;

/// A Kafka source of one query.
pub struct KafkaSource {
    name: String,
    schema: SchemaRef,
    options: Arc<KafkaSourceOptions>,
    partitions: Arc<Partitions>,
    reader: Arc<Mutex<SourceConsumer>>,
    state: tokio::sync::Mutex<State>,
    /// Every partition's end as of the last `latest_offset`.
    latest: Mutex<Option<PartitionOffsets>>,
    clock: ClockRef,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("name", &self.name).field("partitions", &self.partitions).finish()
    }
}

#[derive(Debug, Default)]
struct State {
    /// Frozen targets of an available-now run.
    frozen: Option<PartitionOffsets>,
    /// When `min_offsets_per_trigger` last let a batch through.
    last_trigger_ms: Option<i64>,
}

impl KafkaSource {
    /// A source reading what `options` subscribes to; its first offsets are
    /// kept in `metadata`.
    pub fn new(
        name: String,
        schema: SchemaRef,
        options: KafkaSourceOptions,
        metadata: CheckpointDir,
        clock: ClockRef,
    ) -> Result<Self> {
        let options = Arc::new(options);
        let group = format!("{}-{}", options.group_id_prefix, uuid::Uuid::new_v4());
        let client = |role: &str| -> Result<SourceConsumer> {
            options.consumer_config(&format!("{group}-{role}")).create_with_context(SourceClientContext).map_err(|e| {
                SluiceError::Source {
                    source_name: name.clone(),
                    reason: format!("cannot create a Kafka consumer for {}: {e}", options.bootstrap_servers),
                }
            })
        };
        let partitions = Arc::new(Partitions::new(name.clone(), Arc::clone(&options), client("meta")?, metadata));
        let reader = Arc::new(Mutex::new(client("reader")?));
        Ok(Self {
            name,
            schema,
            options,
            partitions,
            reader,
            state: Default::default(),
            latest: Mutex::new(None),
            clock,
        })
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        tokio::task::spawn_blocking(f).await.map_err(|e| SluiceError::Source {
            source_name: self.name.clone(),
            reason: format!("a Kafka client call failed: {e}"),
        })?
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn latest_offset(&self, start: Option<&SourceOffset>) -> Result<Option<SourceOffset>> {
        let span = info_span!("kafka_latest_offset", source = %self.name);
        async {
            let first = start.is_none();
            let start = match start {
                Some(s) => PartitionOffsets::from_json(&self.name, s)?,
                None => self.partitions.initial().await?,
            };
            // Nothing new: the start itself (`None` before the first batch).
            let unchanged = |start: &PartitionOffsets| if first { None } else { Some(start.to_json()) };
            let partitions = Arc::clone(&self.partitions);
            let from = start.clone();
            let mut state = self.state.lock().await;
            let available = match &state.frozen {
                Some(f) => partitions.clamp_to(&from, f),
                None => self.blocking(move || partitions.available(&from)).await?,
            };
            *self.latest.lock() = Some(available.clone());
            let end = match self.options.max_offsets_per_trigger {
                Some(max) => rate_limit(&start, &available, max),
                None => available,
            };
            // A partition of the start that is gone was reported by
            // `available` (per fail_on_data_loss) and leaves the offset.
            let now = self.clock.now_millis();
            if let Some(min) = self.options.min_offsets_per_trigger {
                let waited = now - *state.last_trigger_ms.get_or_insert(now);
                if start.count_to(&end) < min && (waited as u128) < self.options.max_trigger_delay.as_millis() {
                    return Ok(unchanged(&start));
                }
            }
            if end == start {
                return Ok(unchanged(&start));
            }
            state.last_trigger_ms = Some(now);
            Ok(Some(end.to_json()))
        }
        .instrument(span)
        .await
    }

    async fn get_batch(&self, start: Option<&SourceOffset>, end: &SourceOffset) -> Result<Vec<RecordBatch>> {
        let span = info_span!("kafka_get_batch", source = %self.name);
        async {
            let start = match start {
                Some(s) => PartitionOffsets::from_json(&self.name, s)?,
                None => self.partitions.initial().await?,
            };
            let end = PartitionOffsets::from_json(&self.name, end)?;
            let partitions = Arc::clone(&self.partitions);
            let reader = Arc::clone(&self.reader);
            let options = Arc::clone(&self.options);
            let name = self.name.clone();
            let raw = self
                .blocking(move || {
                    let ranges = partitions.ranges(&start, &end)?;
                    read::read_ranges(&name, &reader.lock(), &ranges, &options)
                })
                .await?;
            if raw.num_rows() == 0 {
                return Ok(vec![]);
            }
            Ok(vec![read::to_declared(&self.name, raw, &self.schema, &self.options)?])
        }
        .instrument(span)
        .await
    }

    fn reported_latest_offset(&self) -> Option<SourceOffset> {
        self.latest.lock().as_ref().map(PartitionOffsets::to_json)
    }

    /// Spark's Kafka metrics: records between the batch's end and the
    /// latest offsets, per partition (min, max, avg) and in total.
    fn metrics(&self, end: Option<&SourceOffset>) -> BTreeMap<String, String> {
        let (Some(latest), Some(end)) = (self.latest.lock().clone(), end) else { return BTreeMap::new() };
        let Ok(end) = PartitionOffsets::from_json(&self.name, end) else { return BTreeMap::new() };
        let behind: Vec<i64> =
            latest.0.iter().map(|(tp, l)| (l - end.0.get(tp).copied().unwrap_or(0)).max(0)).collect();
        if behind.is_empty() {
            return BTreeMap::new();
        }
        let total: i64 = behind.iter().sum();
        BTreeMap::from([
            ("minOffsetsBehindLatest".to_string(), behind.iter().min().copied().unwrap_or(0).to_string()),
            ("maxOffsetsBehindLatest".to_string(), behind.iter().max().copied().unwrap_or(0).to_string()),
            ("avgOffsetsBehindLatest".to_string(), format!("{:.1}", total as f64 / behind.len() as f64)),
            ("offsetsBehindLatest".to_string(), total.to_string()),
        ])
    }

    async fn batch_range(&self) -> Result<Option<(Option<SourceOffset>, SourceOffset)>> {
        let partitions = Arc::clone(&self.partitions);
        let (start, end) = self.blocking(move || partitions.batch_bounds()).await?;
        Ok(Some((Some(start.to_json()), end.to_json())))
    }

    async fn prepare_for_available_now(&self) -> Result<()> {
        let partitions = Arc::clone(&self.partitions);
        let initial = self.partitions.initial().await?;
        let frozen = self.blocking(move || partitions.available(&initial)).await?;
        self.state.lock().await.frozen = Some(frozen);
        Ok(())
    }
}
