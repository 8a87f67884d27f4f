//! [`StreamScanExec`]: the leaf of a streaming physical plan. It reads the
//! rows of the current micro-batch from the [`MicroBatchInput`] attached to
//! the task context, so a plan is built once per query and executed once per
//! batch.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, ReplaceChildrenOptions,
    SendableRecordBatchStream,
};

/// The rows of one micro-batch, by input name (lower-case source name, or an
/// internal name for a stateful operator's output), attached to the task
/// context while the batch runs.
#[derive(Debug, Default)]
pub struct MicroBatchInput {
    /// Batch rows per source (lower-case source name).
    pub data: HashMap<String, Vec<RecordBatch>>,
    /// For inputs read with only some columns: the indices (into the
    /// table's full schema, ascending) of the columns the batches hold.
    /// Inputs missing here hold every column.
    pub columns: HashMap<String, Vec<usize>>,
}

/// Reads one micro-batch's rows for the input called `key`.
#[derive(Debug)]
pub struct StreamScanExec {
    key: String,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    projected: SchemaRef,
    partitions: usize,
    cache: Arc<PlanProperties>,
}

impl StreamScanExec {
    /// Scan the input `key` (a source name, lower case) with `schema`,
    /// keeping the `projection` columns.
    pub fn try_new(key: String, schema: SchemaRef, projection: Option<Vec<usize>>) -> Result<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => Arc::clone(&schema),
        };
        let cache = properties(&projected, 1);
        Ok(Self { key, schema, projection, projected, partitions: 1, cache })
    }

    /// Hand the batch's record batches out over `n` partitions (round
    /// robin), so the stateless part of the plan runs on `n` cores.
    pub fn with_partitions(mut self, n: usize) -> Self {
        self.partitions = n.max(1);
        self.cache = properties(&self.projected, self.partitions);
        self
    }

    /// The input this scan reads (a lower-case source name or a slot).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The columns of the input's full schema this scan reads (`None`: all).
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }
}

fn properties(schema: &SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(schema)),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl DisplayAs for StreamScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StreamScanExec: input={}", self.key)
    }
}

impl ExecutionPlan for StreamScanExec {
    fn name(&self) -> &'static str {
        "StreamScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = context.session_config().get_extension::<MicroBatchInput>().ok_or_else(|| {
            DataFusionError::Internal(format!("no micro-batch input attached for stream '{}'", self.key))
        })?;
        let all = input.data.get(&self.key).map(Vec::as_slice).unwrap_or_default();
        let batches: Vec<_> = all.iter().skip(partition).step_by(self.partitions).cloned().collect();
        let projection = match (&self.projection, input.columns.get(&self.key)) {
            (p, None) => p.clone(),
            // The batches hold only `read` columns: find ours among them.
            (p, Some(read)) => {
                let wanted: Vec<usize> = p.clone().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
                let positions = wanted
                    .iter()
                    .map(|i| read.iter().position(|r| r == i))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "stream '{}' was read without a column its scan needs ({wanted:?} not in {read:?})",
                            self.key
                        ))
                    })?;
                (positions.len() != read.len() || positions.iter().enumerate().any(|(k, p)| k != *p))
                    .then_some(positions)
            }
        };
        let batches = match &projection {
            Some(p) => batches.iter().map(|b| b.project(p)).collect::<std::result::Result<Vec<_>, _>>()?,
            None => batches,
        };
        Ok(Box::pin(MemoryStream::try_new(batches, Arc::clone(&self.projected), None)?))
    }
}
