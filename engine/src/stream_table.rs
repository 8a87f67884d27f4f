//! [`StreamTable`]: how a source appears in DataFusion's catalog.
//!
//! A stream is an unbounded table. Its logical plan is the user's query as
//! written; at each micro-batch the executor attaches the batch's rows to the
//! session config as a [`MicroBatchInput`], and the scan reads them from
//! there. The same logical plan is therefore planned and run once per batch
//! over exactly that batch's offset range.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::connector::SourceDefinition;

/// The rows of one micro-batch, by source name, attached to the session
/// config while the batch is planned.
#[derive(Debug, Default)]
pub struct MicroBatchInput {
    /// Batch rows per source (lower-case source name).
    pub data: HashMap<String, Vec<RecordBatch>>,
}

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
        let name = self.definition.name.to_ascii_lowercase();
        let input = state.config().get_extension::<MicroBatchInput>().ok_or_else(|| {
            DataFusionError::Plan(format!(
                "'{}' is a stream (CREATE SOURCE); read it in a streaming query (CREATE SINK ... AS SELECT ...), \
                 or query a memory sink or a static table instead",
                self.definition.name
            ))
        })?;
        let batches = input.data.get(&name).cloned().unwrap_or_default();
        let exec = MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}
