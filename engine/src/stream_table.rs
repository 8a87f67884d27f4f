//! [`StreamTable`]: how a source appears in DataFusion's catalog.
//!
//! A stream is an unbounded table. A streaming query's physical plan is
//! built once, with a [`StreamScanExec`] leaf for each stream; at each
//! micro-batch the executor attaches the batch's rows to the task context as
//! a [`MicroBatchInput`], and the scan reads exactly that offset range.
//!
//! The same table in a batch query is a bounded scan when its source can
//! say which range a batch query reads ([`Source::batch_range`], Kafka's
//! `starting_offsets` to `ending_offsets`): batch and stream stay one.
//! Other sources refuse a batch query with a clear error.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::clock::ClockRef;
use crate::connector::{Source, SourceContext, SourceDefinition, SourceFactory};
pub use crate::physical::MicroBatchInput;
use crate::physical::StreamScanExec;

/// Marks a session state as planning a streaming query (a batch query that
/// scans a stream is refused with a clear error).
#[derive(Debug, Default)]
pub struct StreamingPlanning;

/// A source registered as an unbounded table.
#[derive(Debug)]
pub struct StreamTable {
    definition: SourceDefinition,
    batch: Option<BatchReader>,
}

/// What a batch query over a stream needs to instantiate its source.
#[derive(Debug, Clone)]
pub struct BatchReader {
    /// The source's connector.
    pub factory: Arc<dyn SourceFactory>,
    /// The session's clock.
    pub clock: ClockRef,
}

impl StreamTable {
    /// Wrap a source definition (batch queries over it are refused).
    pub fn new(definition: SourceDefinition) -> Self {
        Self { definition, batch: None }
    }
    /// Wrap a source definition whose connector may serve batch queries.
    pub fn with_batch_reader(definition: SourceDefinition, reader: BatchReader) -> Self {
        Self { definition, batch: Some(reader) }
    }
    /// The same table over another definition (a watermark added).
    pub fn with_definition(&self, definition: SourceDefinition) -> Self {
        Self { definition, batch: self.batch.clone() }
    }
    /// The definition behind this table.
    pub fn definition(&self) -> &SourceDefinition {
        &self.definition
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.definition.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if state.config().get_extension::<StreamingPlanning>().is_none() {
            return self.batch_scan(projection).await;
        }
        let key = self.definition.name.to_ascii_lowercase();
        let partitions = state.config().target_partitions();
        Ok(Arc::new(StreamScanExec::try_new(key, self.schema(), projection.cloned())?.with_partitions(partitions)))
    }
}

impl StreamTable {
    /// A batch query's scan: the source's batch range, read now.
    async fn batch_scan(&self, projection: Option<&Vec<usize>>) -> Result<Arc<dyn ExecutionPlan>> {
        let refused = || {
            DataFusionError::Plan(format!(
                "'{}' is a stream (CREATE SOURCE, {} connector); read it in a streaming query (CREATE SINK ... AS \
                 SELECT ...), or query a memory sink or a static table instead",
                self.definition.name, self.definition.connector
            ))
        };
        let Some(reader) = &self.batch else { return Err(refused()) };
        let external = |e: crate::error::SluiceError| DataFusionError::External(Box::new(e));
        // A batch read keeps no metadata: the source's goes in a temporary
        // directory, removed when the read is done (`metadata` is dropped).
        let metadata = tempfile::Builder::new().prefix("sluice-batch-read-").tempdir().map_err(|e| {
            DataFusionError::Execution(format!(
                "cannot create a temporary directory to read '{}' ({e}); check that TMPDIR is writable",
                self.definition.name
            ))
        })?;
        let source: Arc<dyn Source> = reader
            .factory
            .create(SourceContext {
                definition: self.definition.clone(),
                metadata_path: metadata.path().display().to_string(),
                clock: Arc::clone(&reader.clock),
            })
            .map_err(external)?;
        let Some((start, end)) = source.batch_range().await.map_err(external)? else {
            source.stop().await.map_err(external)?;
            return Err(refused());
        };
        let batches = source.get_batch(start.as_ref(), &end).await.map_err(external)?;
        source.stop().await.map_err(external)?;
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?)
    }
}
