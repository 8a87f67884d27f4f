//! The memory sink as a DataFusion table.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::MemorySinkStore;

/// A read-only table over a memory sink's rows.
#[derive(Debug)]
pub struct MemorySinkTable {
    store: Arc<MemorySinkStore>,
}

impl MemorySinkTable {
    /// A table over `store`.
    pub fn new(store: Arc<MemorySinkStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl TableProvider for MemorySinkTable {
    fn schema(&self) -> SchemaRef {
        self.store.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows = self.store.table_rows();
        Ok(MemorySourceConfig::try_new_exec(&[rows], self.schema(), projection.cloned())?)
    }
}
