//! The `kafka` sink: each micro-batch's rows as Kafka records.
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `bootstrap_servers` | required | the brokers |
//! | `topic` | none | the topic of every record (else each row's `topic` column) |
//! | `format` | `json` | how a row without a `value` column is written: `json` or `csv` |
//! | `delivery` | `at_least_once` | or `exactly_once`: one transaction per batch |
//! | `marker_topic` | `topic` | exactly once: the topic whose partition 0 carries the committed batch id |
//! | `timeout_ms` | `60000` | how long a flush or a transaction step may take |
//! | `kafka.*` | | passed to the producer |
//!
//! Rows: `key`, `value` (VARCHAR or BYTEA), `headers`, `topic` and
//! `partition` columns are written as given, as Spark's Kafka sink does;
//! without a `value` column the whole row is the value, as JSON or CSV.
//!
//! At least once, the producer is idempotent (no duplicates from its own
//! retries) and a batch counts as written once every record is
//! acknowledged; a batch replayed after a crash is written again. Exactly
//! once, see [`producer`]: consumers reading with
//! `isolation.level=read_committed` see every batch once.

mod producer;
mod records;

use std::fmt::{self, Debug};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use sluice_engine::{Options, Result, Sink, SinkContext, SinkFactory, SluiceError};
use tracing::{info_span, Instrument};

use producer::{SinkProducer, Transactional};
pub use records::{RecordLayout, ValueFormat};

const VALID_OPTIONS: &[&str] =
    &["bootstrap_servers", "topic", "format", "delivery", "marker_topic", "timeout_ms", "kafka.*"];

/// Producer settings that Sluice owns.
const OWNED: &[(&str, &str)] = &[
    ("transactional.id", "with delivery = 'exactly_once' it is derived from the query id"),
    ("bootstrap.servers", "use bootstrap_servers"),
];

/// Factory of the `kafka` sink connector.
#[derive(Debug, Default, Clone)]
pub struct KafkaSinkFactory;

/// Delivery guarantee of the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

fn option_error(option: &str, value: &str, reason: &str) -> SluiceError {
    SluiceError::InvalidOption { option: option.into(), value: value.into(), reason: reason.into() }
}

fn parse_delivery(options: &Options) -> Result<Delivery> {
    match options.get("delivery").map(|d| d.trim().to_ascii_lowercase()).as_deref() {
        None | Some("at_least_once") | Some("at-least-once") => Ok(Delivery::AtLeastOnce),
        Some("exactly_once") | Some("exactly-once") => Ok(Delivery::ExactlyOnce),
        Some(other) => Err(option_error("delivery", other, "valid values are at_least_once and exactly_once")),
    }
}

impl SinkFactory for KafkaSinkFactory {
    fn name(&self) -> &str {
        "kafka"
    }

    fn valid_options(&self) -> &[&'static str] {
        VALID_OPTIONS
    }

    fn create(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>> {
        let o = &ctx.options;
        let bootstrap = o.get("bootstrap_servers").map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
            option_error("bootstrap_servers", "", "the kafka sink needs bootstrap_servers, the brokers to write to")
        })?;
        let topic = o.get("topic").map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
        let format = match o.get("format").map(|f| f.trim().to_ascii_lowercase()).as_deref() {
            None | Some("json") => ValueFormat::Json,
            Some("csv") => ValueFormat::Csv,
            Some(other) => return Err(option_error("format", other, "valid formats are json and csv")),
        };
        let delivery = parse_delivery(o)?;
        let timeout = Duration::from_millis(o.parse::<u64>("timeout_ms", "milliseconds")?.unwrap_or(60_000).max(1));
        let layout = RecordLayout::new(&ctx.name, &ctx.schema, format, topic.is_some())?;
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap).set("enable.idempotence", "true").set("acks", "all");
        for (k, v) in o.with_prefix("kafka.") {
            if let Some((_, why)) = OWNED.iter().find(|(owned, _)| *owned == k) {
                return Err(option_error(
                    &format!("kafka.{k}"),
                    v,
                    &format!("the kafka sink sets '{k}' itself: {why}"),
                ));
            }
            config.set(k, v);
        }
        let marker_topic = match delivery {
            Delivery::AtLeastOnce => None,
            Delivery::ExactlyOnce => {
                Some(o.get("marker_topic").map(str::to_string).or(topic.clone()).ok_or_else(|| {
                    option_error(
                        "marker_topic",
                        "",
                        "delivery = 'exactly_once' with a topic column needs marker_topic: an existing topic \
                         whose partition 0 carries the committed batch ids (in the offsets of the query's \
                         consumer group)",
                    )
                })?)
            }
        };
        if delivery == Delivery::ExactlyOnce {
            config.set("transactional.id", format!("sluice-{}", ctx.query_id));
        }
        let producer = producer::create(&ctx.name, &config)?;
        let mut group_config = ClientConfig::new();
        group_config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("sluice-sink-{}", ctx.query_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        Ok(Arc::new(KafkaSink(Arc::new(Inner {
            name: ctx.name.clone(),
            topic,
            layout,
            timeout,
            query_id: ctx.query_id.clone(),
            marker_topic,
            group_config,
            state: Mutex::new(SinkState::Idle(Some(producer))),
        }))))
    }
}

/// The producer, before and after exactly-once recovery.
enum SinkState {
    /// Not yet used (the producer is taken when transactions start).
    Idle(Option<SinkProducer>),
    /// Transactions started.
    Transactional(Box<Transactional>),
}

/// A Kafka sink of one query.
pub struct KafkaSink(Arc<Inner>);

struct Inner {
    name: String,
    topic: Option<String>,
    layout: RecordLayout,
    timeout: Duration,
    query_id: String,
    marker_topic: Option<String>,
    group_config: ClientConfig,
    state: Mutex<SinkState>,
}

impl Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink").field("name", &self.0.name).field("topic", &self.0.topic).finish()
    }
}

impl Inner {
    fn write_blocking(&self, batch_id: u64, records: Vec<records::Records>) -> Result<()> {
        let mut state = self.state.lock();
        if let Some(marker) = &self.marker_topic {
            if let SinkState::Idle(p) = &mut *state {
                let producer = p.take().ok_or_else(|| SluiceError::Internal("kafka sink producer taken".into()))?;
                let group = self.group_config.create().map_err(|e| SluiceError::Sink {
                    sink: self.name.clone(),
                    reason: format!("cannot create the consumer that reads committed batch ids: {e}"),
                })?;
                let t = Transactional::start(
                    &self.name,
                    producer,
                    group,
                    marker.clone(),
                    self.query_id.clone(),
                    self.timeout,
                )?;
                *state = SinkState::Transactional(Box::new(t));
            }
        }
        match &mut *state {
            SinkState::Transactional(t) => {
                if t.committed(batch_id) {
                    tracing::info!(sink = %self.name, batch_id, "batch already committed in Kafka; not written again");
                    return Ok(());
                }
                t.write(&self.name, batch_id, self.topic.as_deref(), &records, self.timeout)
            }
            SinkState::Idle(Some(p)) => {
                for r in &records {
                    producer::send_all(&self.name, p, self.topic.as_deref(), r)?;
                }
                producer::flush(&self.name, p, self.timeout)
            }
            SinkState::Idle(None) => Err(SluiceError::Internal("kafka sink has no producer".into())),
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn add_batch(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let span = info_span!("kafka_sink_batch", sink = %self.0.name, batch_id);
        async {
            let records = batches
                .iter()
                .filter(|b| b.num_rows() > 0)
                .map(|b| records::Records::from_batch(&self.0.layout, b))
                .collect::<Result<Vec<_>>>()?;
            let inner = Arc::clone(&self.0);
            tokio::task::spawn_blocking(move || inner.write_blocking(batch_id, records)).await.map_err(|e| {
                SluiceError::Sink { sink: self.0.name.clone(), reason: format!("the Kafka write task failed: {e}") }
            })?
        }
        .instrument(span)
        .await
    }

    fn exactly_once(&self) -> bool {
        self.0.marker_topic.is_some()
    }
}
