//! `read_stream()` and `write_stream()`: Spark-shaped builders.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;

use crate::connector::SourceDefinition;
use crate::error::{Result, SluiceError};
use crate::execution::WatermarkPolicy;
use crate::options::{Options, OutputMode, Trigger};
use crate::query::StreamingQuery;
use crate::session::{QuerySpec, SluiceSession};

/// Builder for a streaming read; `load()` returns a DataFusion `DataFrame`
/// over an unbounded table, on which every DataFrame method works.
///
/// ```no_run
/// # async fn demo(session: sluice_engine::SluiceSession, schema: datafusion::arrow::datatypes::SchemaRef) -> sluice_engine::Result<()> {
/// let df = session.read_stream().format("files").schema(schema)
///     .option("path", "/data/in").option("format", "csv").load().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DataStreamReader {
    session: SluiceSession,
    format: String,
    schema: Option<SchemaRef>,
    options: Options,
    name: Option<String>,
}

impl SluiceSession {
    /// Start building a stream read (`format`, `schema`, `option`, `load`).
    /// (Defined here, beside the builder, so the session module does not
    /// depend on this one.)
    pub fn read_stream(&self) -> DataStreamReader {
        DataStreamReader::new(self.clone())
    }
}

impl DataStreamReader {
    pub(crate) fn new(session: SluiceSession) -> Self {
        Self { session, format: "files".into(), schema: None, options: Options::new(), name: None }
    }
    /// Connector name.
    pub fn format(mut self, format: &str) -> Self {
        self.format = format.into();
        self
    }
    /// Row schema (optional for fixed-schema connectors such as `rate`).
    pub fn schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }
    /// A connector option.
    pub fn option(mut self, key: &str, value: impl Into<String>) -> Self {
        self.options.insert(key, value);
        self
    }
    /// The name of the stream's table (default: a generated one).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Declare the source and return a DataFrame over it.
    pub async fn load(self) -> Result<DataFrame> {
        let name = self.name.unwrap_or_else(|| self.session.fresh_name("__stream_"));
        self.session.create_source(SourceDefinition {
            name: name.clone(),
            connector: self.format,
            options: self.options,
            schema: self.schema.unwrap_or_else(|| Arc::new(Schema::empty())),
            watermark: None,
        })?;
        Ok(self.session.context().table(name.as_str()).await?)
    }
}

/// `df.write_stream()` and `df.explain_stream()` for DataFusion DataFrames.
pub trait StreamingDataFrameExt {
    /// Start building the sink of a streaming query over this DataFrame.
    fn write_stream(&self) -> DataStreamWriter;
    /// The incremental physical plan this DataFrame runs as a streaming
    /// query in `mode` (`None`: the first mode it supports), as `EXPLAIN`
    /// shows it.
    fn explain_stream(&self, mode: Option<OutputMode>) -> futures::future::BoxFuture<'_, Result<String>>;
    /// Group the stream by the columns `keys`, for
    /// `flat_map_groups_with_state` / `map_groups_with_state`
    /// ([`crate::arbitrary`]).
    fn group_by_key(&self, keys: &[&str]) -> Result<crate::arbitrary::KeyedStream>;
}

impl StreamingDataFrameExt for DataFrame {
    fn explain_stream(&self, mode: Option<OutputMode>) -> futures::future::BoxFuture<'_, Result<String>> {
        Box::pin(async move { SluiceSession::of_dataframe(self)?.explain(self.clone(), mode).await })
    }

    fn group_by_key(&self, keys: &[&str]) -> Result<crate::arbitrary::KeyedStream> {
        crate::arbitrary::group_by_key(self.clone(), keys)
    }

    fn write_stream(&self) -> DataStreamWriter {
        DataStreamWriter {
            df: self.clone(),
            spec: QuerySpec { format: "memory".into(), ..Default::default() },
            invalid: None,
        }
    }
}

/// Builder for a streaming query's sink; `start()` starts the query.
///
/// ```no_run
/// # async fn demo(df: datafusion::dataframe::DataFrame) -> sluice_engine::Result<()> {
/// use sluice_engine::{StreamingDataFrameExt, OutputMode};
/// let query = df.write_stream().format("console").output_mode(OutputMode::Append)
///     .query_name("echo").start().await?;
/// query.process_all_available().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DataStreamWriter {
    df: DataFrame,
    spec: QuerySpec,
    /// An option value that could not be used, reported by `start()`.
    invalid: Option<SluiceError>,
}

impl DataStreamWriter {
    /// Sink connector.
    pub fn format(mut self, format: &str) -> Self {
        self.spec.format = format.into();
        self
    }
    /// Output mode.
    pub fn output_mode(mut self, mode: OutputMode) -> Self {
        self.spec.output_mode = mode;
        self
    }
    /// Trigger.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.spec.trigger = trigger;
        self
    }
    /// Query name.
    pub fn query_name(mut self, name: &str) -> Self {
        self.spec.name = Some(name.into());
        self
    }
    /// A sink option; `checkpoint` sets the checkpoint location.
    pub fn option(mut self, key: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        if key.eq_ignore_ascii_case("checkpoint") || key.eq_ignore_ascii_case("checkpointLocation") {
            self.spec.checkpoint = Some(value);
        } else if key.eq_ignore_ascii_case("late_rows") {
            self.spec.late_rows = Some(value);
        } else if key.eq_ignore_ascii_case("reset_changed_state") {
            if let Some(reset) = self.typed("reset_changed_state", value, "true or false") {
                self.spec.reset_changed_state = reset;
            }
        } else if key.eq_ignore_ascii_case("state_checkpoint_interval") {
            self.spec.state_checkpoint_interval =
                self.typed("state_checkpoint_interval", value, "a positive number of batches");
        } else if key.eq_ignore_ascii_case("min_batches_to_retain") {
            self.spec.min_batches_to_retain =
                self.typed("min_batches_to_retain", value, "a positive number of batches");
        } else {
            self.spec.options.insert(key, value);
        }
        self
    }
    /// `value` of engine option `option` as a `T`; one that does not read
    /// as `expected` is kept as the error [`Self::start`] returns.
    fn typed<T: std::str::FromStr>(&mut self, option: &str, value: String, expected: &str) -> Option<T> {
        match value.trim().parse() {
            Ok(v) => Some(v),
            Err(_) => {
                let reason = format!("expected {expected}");
                self.invalid = Some(SluiceError::InvalidOption { option: option.into(), value, reason });
                None
            }
        }
    }
    /// Watermark policy across several sources.
    pub fn watermark_policy(mut self, policy: WatermarkPolicy) -> Self {
        self.spec.watermark_policy = policy;
        self
    }
    /// Send every micro-batch to `f(batch_id, rows)` instead of a connector.
    pub fn foreach_batch<F>(mut self, f: F) -> Self
    where
        F: Fn(u64, &[RecordBatch]) -> Result<()> + Send + Sync + 'static,
    {
        self.spec.foreach = Some(Arc::new(f));
        self
    }
    /// Start the query.
    pub async fn start(self) -> Result<StreamingQuery> {
        if let Some(e) = self.invalid {
            return Err(e);
        }
        let session = SluiceSession::of_dataframe(&self.df)?;
        session.start_query(self.df, self.spec).await
    }
}
