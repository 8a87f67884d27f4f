//! [`WatermarkFilterExec`]: drops the input rows a stateful operator would
//! reject as late, before the operator's partial aggregation (Spark's
//! watermark predicate for data). The rows and their count go to the
//! operator's [`LateCollector`](super::LateCollector) in the batch state,
//! for the progress report and the `late_rows` sink.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::ChildrenPropertiesMode;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::BatchState;
use crate::stateful::{event_time_micros, EventTimeKey};

/// Drops rows whose event time is at or below the batch's late watermark.
#[derive(Debug)]
pub struct WatermarkFilterExec {
    /// The operator whose late rows these are.
    id: usize,
    event_time: EventTimeKey,
    /// Judged by the previous batch's watermark (fed by another operator).
    downstream: bool,
    /// Name of the event-time key, for `EXPLAIN`.
    time_name: String,
    input: Arc<dyn ExecutionPlan>,
}

impl WatermarkFilterExec {
    /// The filter for operator `id`, over `input`, on `event_time` (named
    /// `time_name` in `EXPLAIN`).
    pub fn new(
        id: usize,
        event_time: EventTimeKey,
        downstream: bool,
        time_name: String,
        input: Arc<dyn ExecutionPlan>,
    ) -> Self {
        Self { id, event_time, downstream, time_name, input }
    }

    /// The operator whose late rows this filter drops.
    pub fn id(&self) -> usize {
        self.id
    }
}

impl DisplayAs for WatermarkFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let wm = if self.downstream { "previous watermark" } else { "watermark" };
        write!(f, "WatermarkFilterExec: operator={}, drop rows with {} <= {wm}", self.id, self.time_name)
    }
}

impl ExecutionPlan for WatermarkFilterExec {
    fn name(&self) -> &'static str {
        "WatermarkFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.event_time.expr)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            id: self.id,
            event_time: self.event_time.clone(),
            downstream: self.downstream,
            time_name: self.time_name.clone(),
            input: super::only_child(children, self.name())?,
        }))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let state = context.session_config().get_extension::<BatchState>().ok_or_else(|| {
            DataFusionError::Internal("WatermarkFilterExec ran without a batch state attached".into())
        })?;
        let batch = if self.downstream { state.batch.downstream() } else { state.batch };
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let Some(wm) = batch.late_watermark else { return Ok(input) };
        let late = state.late(self.id)?;
        let keeping = late.keeping();
        let et = self.event_time.clone();
        let wm_us = wm.micros();
        let stream = input.map(move |b| {
            let b = b?;
            let values = et.expr.evaluate(&b)?.into_array(b.num_rows())?;
            let times = event_time_micros(&values).map_err(DataFusionError::from)?;
            let keep: BooleanArray = times.iter().map(|t| Some(t.is_some_and(|t| t > wm_us))).collect();
            if keep.true_count() == b.num_rows() {
                return Ok(b);
            }
            let kept = filter_record_batch(&b, &keep)?;
            late.count((b.num_rows() - kept.num_rows()) as u64);
            if keeping {
                late.keep(filter_record_batch(&b, &not(&keep)?)?);
            }
            Ok::<RecordBatch, DataFusionError>(kept)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream.boxed())))
    }
}
