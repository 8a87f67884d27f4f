//! [`StreamTable`]: how a source appears in DataFusion's catalog.
//!
//! A stream is an unbounded table. A streaming query's physical plan is
//! built once, with a [`StreamScanExec`] leaf for each stream; at each
//! micro-batch the executor attaches the batch's rows to the task context as
//! a [`MicroBatchInput`], and the scan reads exactly that offset range.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::connector::SourceDefinition;
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
}

impl StreamTable {
    /// Wrap a source definition.
    pub fn new(definition: SourceDefinition) -> Self {
        Self { definition }
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
            return Err(DataFusionError::Plan(format!(
                "'{}' is a stream (CREATE SOURCE); read it in a streaming query (CREATE SINK ... AS SELECT ...), \
                 or query a memory sink or a static table instead",
                self.definition.name
            )));
        }
        let key = self.definition.name.to_ascii_lowercase();
        let partitions = state.config().target_partitions();
        Ok(Arc::new(StreamScanExec::try_new(key, self.schema(), projection.cloned())?.with_partitions(partitions)))
    }
}
