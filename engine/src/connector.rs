//! The `Source` and `Sink` traits and the registry that maps connector names
//! (`files`, `memory`, ...) to factories.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use serde_json::Value;

use crate::clock::ClockRef;
use crate::error::{Result, SluiceError};
use crate::options::{Options, OutputMode};
use crate::watermark::WatermarkSpec;

/// A source's position, as JSON (written to the offset log verbatim).
pub type SourceOffset = Value;

/// What a source is: its connector, options, schema and watermark, as
/// declared by `CREATE SOURCE` or `read_stream()`.
#[derive(Debug, Clone)]
pub struct SourceDefinition {
    /// Source (table) name.
    pub name: String,
    /// Connector name.
    pub connector: String,
    /// Connector options.
    pub options: Options,
    /// Row schema.
    pub schema: SchemaRef,
    /// Optional event-time watermark.
    pub watermark: Option<WatermarkSpec>,
}

/// What a source factory gets when a query instantiates its source.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The definition.
    pub definition: SourceDefinition,
    /// Directory (local path or URL) under the query checkpoint reserved for
    /// this source's own metadata (for example the files source's seen-files log).
    pub metadata_path: String,
    /// Processing-time clock.
    pub clock: ClockRef,
}

/// A replayable (or not) stream of rows, read in offset ranges.
///
/// Sources follow Spark's `Source` contract: the engine asks for the latest
/// offset, writes it to the offset log, then asks for the rows between the
/// previous offset and that one. Asking twice for the same range must give
/// the same rows (replayable sources).
#[async_trait]
pub trait Source: Send + Sync + Debug {
    /// The schema of every batch this source returns.
    fn schema(&self) -> SchemaRef;

    /// The latest offset available, honouring the source's own rate limits
    /// relative to `start` (the end of the last planned batch). `None` when
    /// the source has no data yet.
    async fn latest_offset(&self, start: Option<&SourceOffset>) -> Result<Option<SourceOffset>>;

    /// Wait until what `latest_offset` recorded in the source's own
    /// metadata (the `files` source's seen-files log) is durable. The engine
    /// calls it before it writes the offsets of a batch, while the batch is
    /// read and executed; a source whose `latest_offset` returns with its
    /// metadata durable, or that keeps none, has nothing to wait for.
    async fn metadata_durable(&self) -> Result<()> {
        Ok(())
    }

    /// Rows in `(start, end]`.
    async fn get_batch(&self, start: Option<&SourceOffset>, end: &SourceOffset) -> Result<Vec<RecordBatch>>;

    /// Rows in `(start, end]`, only the `columns` of [`Source::schema`]
    /// (ascending indices): the returned batches have the schema
    /// `schema().project(columns)`. The engine asks for the columns its plan
    /// reads; sources that can skip columns cheaply (Parquet files) override
    /// this, the others read whole rows and drop the rest.
    async fn get_batch_columns(
        &self,
        start: Option<&SourceOffset>,
        end: &SourceOffset,
        columns: &[usize],
    ) -> Result<Vec<RecordBatch>> {
        let batches = self.get_batch(start, end).await?;
        if columns.len() == self.schema().fields().len() {
            return Ok(batches);
        }
        Ok(batches.iter().map(|b| b.project(columns)).collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Called after the batch ending at `end` is committed; data up to it
    /// will never be asked for again.
    async fn commit(&self, _end: &SourceOffset) -> Result<()> {
        Ok(())
    }

    /// Freeze the target end for an `AvailableNow` trigger: later calls to
    /// `latest_offset` never go past what is available now.
    async fn prepare_for_available_now(&self) -> Result<()> {
        Ok(())
    }

    /// The offsets a batch (not streaming) query over this source reads,
    /// `(start, end]`, or `None` when the source cannot be read as a bounded
    /// table (the default: a batch query over it is refused). Kafka reads
    /// from `starting_offsets` to `ending_offsets`.
    async fn batch_range(&self) -> Result<Option<(Option<SourceOffset>, SourceOffset)>> {
        Ok(None)
    }

    /// The latest offset the source knows of, past its rate limits, as of the
    /// last `latest_offset` call (Spark's `reportLatestOffset`; progress
    /// shows it as `latestOffset`). `None` when the source has no such idea.
    fn reported_latest_offset(&self) -> Option<SourceOffset> {
        None
    }

    /// The source's own metrics after a batch ending at `end` (Spark's
    /// `ReportsSourceMetrics`), shown in progress under `sources[].metrics`.
    fn metrics(&self, _end: Option<&SourceOffset>) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Whether the same offsets give the same rows after a restart.
    fn replayable(&self) -> bool {
        true
    }

    /// Why this source cannot feed a query under the continuous trigger,
    /// which asks it for new rows every millisecond or so; `None` (the
    /// default) when it can. The reason is shown to the user as is, so it
    /// names the source kind and says what to do instead.
    fn continuous_refusal(&self) -> Option<String> {
        None
    }

    /// Release resources (sockets, files).
    async fn stop(&self) -> Result<()> {
        Ok(())
    }
}

/// Builds [`Source`]s for one connector.
pub trait SourceFactory: Send + Sync + Debug {
    /// The connector name (`files`, `memory`, ...).
    fn name(&self) -> &str;
    /// Every option this connector accepts.
    fn valid_options(&self) -> &[&'static str];
    /// Check a definition when it is declared (`CREATE SOURCE`), before any
    /// query uses it. Unknown options are already rejected by the registry.
    fn validate(&self, _definition: &SourceDefinition) -> Result<()> {
        Ok(())
    }
    /// The schema to use when the definition gives none (fixed-schema
    /// connectors such as `rate` or `socket`).
    fn default_schema(&self, _options: &Options) -> Option<SchemaRef> {
        None
    }
    /// Why [`Self::default_schema`] gave none, for a connector that reads
    /// its schema from the data and could not (a table that is not there):
    /// the error to report instead of "needs a schema".
    fn schema_error(&self, _options: &Options) -> Option<SluiceError> {
        None
    }
    /// Instantiate the source for one query.
    fn create(&self, ctx: SourceContext) -> Result<Arc<dyn Source>>;
}

/// What a sink factory gets when a query starts.
#[derive(Clone)]
pub struct SinkContext {
    /// Query (and sink) name.
    pub name: String,
    /// Connector options.
    pub options: Options,
    /// Schema of the rows the query produces.
    pub schema: SchemaRef,
    /// Output mode of the query.
    pub output_mode: OutputMode,
    /// The DataFusion context (the memory sink registers its table here).
    pub context: SessionContext,
    /// Checkpoint location of the query.
    pub checkpoint: String,
    /// The query's id (stable across restarts: it lives in the checkpoint).
    /// Exactly-once sinks record it with each batch, so a batch id written by
    /// another query (another checkpoint) is never mistaken for this one's.
    pub query_id: String,
}

impl Debug for SinkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkContext").field("name", &self.name).field("options", &self.options).finish()
    }
}

/// Where a query writes each micro-batch.
///
/// `add_batch` must be idempotent by `batch_id`: after a crash the engine
/// re-sends the last uncommitted batch with the same id and the same rows.
#[async_trait]
pub trait Sink: Send + Sync + Debug {
    /// Write one micro-batch's output.
    async fn add_batch(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<()>;
    /// Whether writes are exactly-once (idempotent by batch id) or
    /// at-least-once (console, foreach without dedup).
    fn exactly_once(&self) -> bool {
        true
    }
    /// Continuous trigger: deliver `batches`, part of epoch `epoch`, now,
    /// before the epoch ends (at-least-once: after a crash the rows since
    /// the last committed epoch come again). Return `Ok(false)`, as the
    /// default does, to have the engine keep the epoch's rows and hand them
    /// all to [`Sink::add_batch`] with the epoch as batch id when the epoch
    /// commits: exactly-once for sinks idempotent by batch id, at the cost
    /// of the rows waiting for the epoch's end.
    async fn add_chunk(&self, _epoch: u64, _batches: &[RecordBatch]) -> Result<bool> {
        Ok(false)
    }
    /// Flush and release resources when the query stops.
    async fn stop(&self) -> Result<()> {
        Ok(())
    }
}

/// Builds [`Sink`]s for one connector.
pub trait SinkFactory: Send + Sync + Debug {
    /// The connector name.
    fn name(&self) -> &str;
    /// Every option this connector accepts (engine options such as
    /// `output_mode` or `checkpoint` are handled before and not listed).
    fn valid_options(&self) -> &[&'static str];
    /// Output modes this sink supports.
    fn supports(&self, _mode: OutputMode) -> bool {
        true
    }
    /// Whether the sink needs a durable checkpoint location. A sink whose
    /// output outlives the query (files, tables) does: with a temporary
    /// checkpoint every run would start again at batch 0 and collide with
    /// what the last run wrote.
    fn requires_checkpoint(&self) -> bool {
        false
    }
    /// Instantiate the sink for one query.
    fn create(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>>;
}

/// Maps connector names to factories.
#[derive(Debug, Default, Clone)]
pub struct ConnectorRegistry {
    sources: BTreeMap<String, Arc<dyn SourceFactory>>,
    sinks: BTreeMap<String, Arc<dyn SinkFactory>>,
}

impl ConnectorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Register a source connector (replacing one of the same name).
    pub fn register_source(&mut self, factory: Arc<dyn SourceFactory>) {
        self.sources.insert(factory.name().to_ascii_lowercase(), factory);
    }
    /// Register a sink connector (replacing one of the same name).
    pub fn register_sink(&mut self, factory: Arc<dyn SinkFactory>) {
        self.sinks.insert(factory.name().to_ascii_lowercase(), factory);
    }
    /// Look up a source connector, or an error listing the valid ones.
    pub fn source(&self, name: &str) -> Result<Arc<dyn SourceFactory>> {
        self.sources.get(&name.to_ascii_lowercase()).cloned().ok_or_else(|| SluiceError::UnknownConnector {
            kind: "source",
            name: name.into(),
            valid: self.sources.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
    /// Look up a sink connector, or an error listing the valid ones.
    pub fn sink(&self, name: &str) -> Result<Arc<dyn SinkFactory>> {
        self.sinks.get(&name.to_ascii_lowercase()).cloned().ok_or_else(|| SluiceError::UnknownConnector {
            kind: "sink",
            name: name.into(),
            valid: self.sinks.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}
