//! [`TransformExec`]: runs a `transform` function on each micro-batch's
//! rows (all input partitions, gathered) and streams out the rows of the
//! DataFrame it returns.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, ChildrenPropertiesMode, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};

use super::BatchState;
use crate::arbitrary::transform::{batch_frame, TransformFn};
use crate::error::SluiceError;

/// A `transform` function over its input.
pub struct TransformExec {
    input: Arc<dyn ExecutionPlan>,
    func: TransformFn,
    state: Arc<SessionState>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl fmt::Debug for TransformExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransformExec").field("schema", &self.schema).finish()
    }
}

impl TransformExec {
    /// `func` over `input`, emitting rows of `schema` in one partition.
    pub fn new(input: Arc<dyn ExecutionPlan>, func: TransformFn, state: Arc<SessionState>, schema: SchemaRef) -> Self {
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self { input, func, state, schema, cache }
    }
}

impl DisplayAs for TransformExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TransformExec: a function per micro-batch")
    }
}

impl ExecutionPlan for TransformExec {
    fn name(&self) -> &str {
        "TransformExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::only_child(children, "TransformExec")?;
        Ok(Arc::new(Self::new(input, Arc::clone(&self.func), Arc::clone(&self.state), Arc::clone(&self.schema))))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("TransformExec has one partition, asked for {partition}")));
        }
        let input: Arc<dyn ExecutionPlan> = match self.input.output_partitioning().partition_count() {
            1 => Arc::clone(&self.input),
            _ => Arc::new(CoalescePartitionsExec::new(Arc::clone(&self.input))),
        };
        let (func, state, schema) = (Arc::clone(&self.func), Arc::clone(&self.state), Arc::clone(&self.schema));
        let batch_id = context.session_config().get_extension::<BatchState>().map(|b| b.batch.batch_id).unwrap_or(0);
        let run = async move {
            let input_schema = input.schema();
            let rows = collect(input, context).await?;
            let df = batch_frame(&state, input_schema, rows)?;
            let out = func(df, batch_id).await?;
            let got = out.schema().as_arrow().clone();
            if got.fields().len() != schema.fields().len()
                || got.fields().iter().zip(schema.fields()).any(|(g, w)| g.data_type() != w.data_type())
            {
                return Err(SluiceError::plan(format!(
                    "transform: the function returned a DataFrame of schema ({}) in batch {batch_id}, but ({}) when \
                     the query was defined; a streaming query's output schema cannot change between batches",
                    describe(&got),
                    describe(&schema)
                ))
                .into());
            }
            let batches = out.collect().await?;
            let batches = batches
                .into_iter()
                .map(|b| {
                    datafusion::arrow::record_batch::RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec())
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
        };
        let stream = futures::stream::once(run).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream)))
    }
}

use futures::TryStreamExt;

fn describe(schema: &datafusion::arrow::datatypes::Schema) -> String {
    crate::stateful::StateLayout::describe(schema.fields()).join(", ")
}
