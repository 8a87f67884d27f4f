//! [`StatefulExec`]: a stateful streaming operator as a node of the query's
//! one physical plan (Spark's `StateStoreSaveExec`,
//! `StreamingDeduplicateExec`, `SessionWindowStateStoreSaveExec`,
//! `StreamingGlobalLimitExec`).
//!
//! Its input is hash-partitioned on the operator's key, one DataFusion
//! partition per state partition, so one batch's state work runs on every
//! core. Partition `i` collects its input rows, hands them to the state
//! partition `i` instance of the operator (taken from the [`BatchState`]
//! attached to the task context), and streams out what it emits.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, ChildrenPropertiesMode, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use super::BatchState;
use crate::stateful::OperatorSpec;

/// A stateful operator over its (partitioned) input.
#[derive(Debug)]
pub struct StatefulExec {
    id: usize,
    state_dir: String,
    spec: Arc<OperatorSpec>,
    /// Fed by another stateful operator: late rows are judged by the
    /// previous batch's watermark.
    downstream: bool,
    input: Arc<dyn ExecutionPlan>,
    /// The right input of a two-input operator (a join; `input` is its left).
    right: Option<Arc<dyn ExecutionPlan>>,
    /// For an operator fed by another: how far (≤ 0, in µs) the upstream
    /// operators shift the watermark their output rows are judged by.
    watermark_shift_us: i64,
    /// The order the operator needs its input in (an aggregate with
    /// `ORDER BY` in its arguments), as planned.
    input_ordering: Option<LexOrdering>,
    /// The input holds a stateful node: it runs every batch (its watermark
    /// work is due even when this operator needs no rows).
    input_stateful: bool,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    /// Output rows and state-work time per partition (`EXPLAIN ANALYZE`).
    metrics: ExecutionPlanMetricsSet,
}

impl StatefulExec {
    /// Operator `id` (its state under `state/<state_dir>`) running `spec`
    /// over `input`, which must be partitioned on `spec`'s keys, one
    /// partition per state partition. Emits rows of `schema`.
    pub fn new(
        id: usize,
        state_dir: String,
        spec: Arc<OperatorSpec>,
        downstream: bool,
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
    ) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        let input_ordering = input.output_ordering().cloned();
        let input_stateful = contains_stateful(&input);
        let watermark_shift_us = output_shift(&input);
        Self {
            id,
            state_dir,
            spec,
            downstream,
            input,
            right: None,
            watermark_shift_us,
            input_ordering,
            input_stateful,
            schema,
            cache,
            metrics: Default::default(),
        }
    }

    /// A two-input operator (a join) over `left` and `right`, both
    /// partitioned on `spec`'s keys into the same number of partitions.
    pub fn new_join(
        id: usize,
        spec: Arc<OperatorSpec>,
        downstream: bool,
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
    ) -> Self {
        let mut node = Self::new(id, id.to_string(), spec, downstream, left, schema);
        node.input_stateful |= contains_stateful(&right);
        node.watermark_shift_us = node.watermark_shift_us.min(output_shift(&right));
        node.input_ordering = None;
        node.right = Some(right);
        node
    }

    /// How far (≤ 0, in µs) this operator's output rows lag the watermark in
    /// event time, counting the operators before it.
    pub fn output_watermark_shift_us(&self) -> i64 {
        self.watermark_shift_us + self.spec.output_watermark_offset_us()
    }

    /// The operator's id in the runtime (innermost first).
    pub fn id(&self) -> usize {
        self.id
    }

    /// The directory under the checkpoint's `state/` holding its state.
    pub fn state_dir(&self) -> &str {
        &self.state_dir
    }

    /// What the operator is.
    pub fn spec(&self) -> &Arc<OperatorSpec> {
        &self.spec
    }

    /// The number of state partitions (= partitions of its input).
    pub fn state_partitions(&self) -> usize {
        self.cache.output_partitioning().partition_count()
    }

    /// The operator's input.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    fn with_children(&self, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Self> {
        if self.right.is_some() {
            let (Some(right), Some(left), true) = (children.pop(), children.pop(), children.is_empty()) else {
                return Err(DataFusionError::Internal(format!("{} takes exactly two children", self.name())));
            };
            return Ok(Self::new_join(
                self.id,
                Arc::clone(&self.spec),
                self.downstream,
                left,
                right,
                self.schema.clone(),
            ));
        }
        let mut node = Self::new(
            self.id,
            self.state_dir.clone(),
            Arc::clone(&self.spec),
            self.downstream,
            super::only_child(children, self.name())?,
            self.schema.clone(),
        );
        // The requirement stays as planned, whatever the new input provides.
        node.input_ordering = self.input_ordering.clone();
        Ok(node)
    }
}

/// The watermark shift of the nearest stateful operators in `plan`.
fn output_shift(plan: &Arc<dyn ExecutionPlan>) -> i64 {
    if let Some(node) = plan.downcast_ref::<StatefulExec>() {
        return node.output_watermark_shift_us();
    }
    plan.children().into_iter().map(output_shift).fold(0, i64::min)
}

/// Whether `plan` holds a stateful node.
pub fn contains_stateful(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<StatefulExec>().is_some() || plan.children().into_iter().any(contains_stateful)
}

impl DisplayAs for StatefulExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: operator={}, ", self.spec.exec_name(), self.state_dir)?;
        if let Some(detail) = self.spec.detail() {
            write!(f, "{detail}, ")?;
        }
        write!(
            f,
            "keys=[{}], state_partitions={}, watermark={}",
            self.spec.key_names().join(", "),
            self.state_partitions(),
            self.spec.watermark_rule()
        )?;
        if self.downstream {
            write!(f, ", late_rows_by=previous_watermark")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for StatefulExec {
    fn name(&self) -> &'static str {
        self.spec.exec_name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        std::iter::once(&self.input).chain(self.right.as_ref()).collect()
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        let keys = self.spec.key_exprs();
        if self.right.is_some() {
            return vec![Distribution::KeyPartitioned(keys), Distribution::KeyPartitioned(self.spec.right_key_exprs())];
        }
        if keys.is_empty() {
            vec![Distribution::SinglePartition]
        } else {
            vec![Distribution::KeyPartitioned(keys)]
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let mut out = vec![self.input_ordering.clone().map(OrderingRequirements::from)];
        if self.right.is_some() {
            out.push(None);
        }
        out
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.children().len()]
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
        Ok(Arc::new(self.with_children(children)?))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let state = context
            .session_config()
            .get_extension::<BatchState>()
            .ok_or_else(|| DataFusionError::Internal(format!("{} ran without a batch state attached", self.name())))?;
        let op = state.operator(self.id, partition)?;
        let batch =
            if self.downstream { state.batch.downstream().shifted(self.watermark_shift_us) } else { state.batch };
        let input = Arc::clone(&self.input);
        let right = self.right.clone();
        let input_stateful = self.input_stateful;
        let schema = Arc::clone(&self.schema);
        let out_schema = Arc::clone(&schema);
        let name = self.spec.exec_name();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let run = async move {
            let finish = |emitted: Vec<RecordBatch>| {
                baseline.record_output(emitted.iter().map(RecordBatch::num_rows).sum());
                let emitted = emitted
                    .into_iter()
                    .map(|b| {
                        RecordBatch::try_new(Arc::clone(&out_schema), b.columns().to_vec()).map_err(|e| {
                            DataFusionError::Internal(format!("{name} emitted rows that do not match its schema: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok::<_, DataFusionError>(futures::stream::iter(emitted.into_iter().map(Ok)))
            };
            let mut op = op.lock().await;
            if let Some(right) = right {
                let (left, right) = futures::try_join!(
                    input.execute(partition, Arc::clone(&context))?.try_collect::<Vec<RecordBatch>>(),
                    right.execute(partition, Arc::clone(&context))?.try_collect::<Vec<RecordBatch>>()
                )?;
                let timer = baseline.elapsed_compute().timer();
                let started = std::time::Instant::now();
                let emitted =
                    op.process_join(Arc::clone(&context), left, right, &batch).await.map_err(DataFusionError::from)?;
                op.state().update_time += started.elapsed();
                timer.done();
                return finish(emitted);
            }
            let rows: Vec<RecordBatch> = if op.needs_input() || input_stateful {
                input.execute(partition, Arc::clone(&context))?.try_collect().await?
            } else {
                vec![]
            };
            let timer = baseline.elapsed_compute().timer();
            let started = std::time::Instant::now();
            let emitted = op.process(Arc::clone(&context), rows, &batch).await.map_err(DataFusionError::from)?;
            op.state().update_time += started.elapsed();
            timer.done();
            finish(emitted)
        };
        let stream = futures::stream::once(run).try_flatten().boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
