//! Incremental planning: turning a streaming query's logical plan into the
//! work of one micro-batch.

pub mod analyze;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;

pub use analyze::QueryAnalysis;

use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::stream_table::MicroBatchInput;

/// Facts about the micro-batch being run.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext {
    /// Batch id.
    pub batch_id: u64,
    /// Event-time watermark in force for this batch (ms since the epoch).
    pub watermark_ms: Option<i64>,
    /// Processing time of the batch (ms since the epoch).
    pub batch_timestamp_ms: i64,
}

/// A streaming query, validated for its output mode, ready to run batch by batch.
#[derive(Debug)]
pub struct IncrementalPlan {
    logical: LogicalPlan,
    analysis: QueryAnalysis,
    mode: OutputMode,
}

impl IncrementalPlan {
    /// Validate `logical` for `mode` and prepare it.
    pub fn try_new(logical: LogicalPlan, mode: OutputMode) -> Result<Self> {
        let analysis = QueryAnalysis::of(&logical);
        analysis.validate(mode)?;
        if analysis.is_stateful() {
            return Err(SluiceError::unsupported(
                "stateful streaming operators (aggregation, DISTINCT) are not available in this build yet; \
                 only stateless queries (projection, filter, functions, stream-static joins) can run",
            ));
        }
        Ok(Self { logical, analysis, mode })
    }

    /// What the query is made of.
    pub fn analysis(&self) -> &QueryAnalysis {
        &self.analysis
    }

    /// Output mode.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// Schema of the rows the query emits.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(self.logical.schema().inner())
    }

    /// Whether a batch without new data would emit rows or evict state now
    /// that the watermark moved from `last_ms` to `now_ms`.
    pub fn wants_no_data_batch(&self, _last_ms: Option<i64>, _now_ms: Option<i64>) -> bool {
        false
    }

    /// Run the query over one batch of input.
    pub async fn execute(
        &self,
        base: &SessionState,
        input: MicroBatchInput,
        ctx: BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let state = batch_state(base, input, ctx);
        let physical = state.create_physical_plan(&self.logical).await?;
        Ok(collect(physical, state.task_ctx()).await?)
    }
}

/// A session state for one batch: the batch's rows attached, and
/// `current_timestamp()` pinned to the batch timestamp.
pub fn batch_state(base: &SessionState, input: MicroBatchInput, ctx: BatchContext) -> SessionState {
    let mut state = base.clone();
    state.config_mut().set_extension(Arc::new(input));
    state.execution_props_mut().query_execution_start_time =
        chrono::DateTime::from_timestamp_millis(ctx.batch_timestamp_ms);
    state
}
