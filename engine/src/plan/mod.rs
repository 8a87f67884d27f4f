//! Incremental planning: turning a streaming query's logical plan into the
//! work of one micro-batch.
//!
//! The physical plan is built once per query. A stateless query is one
//! physical plan run over each batch. A stateful query is cut at its
//! stateful node (see [`split`]): the stateless `pre` plan runs over the
//! batch, the stateful operator merges its output into the state store and
//! decides what to emit, and the `post` plan (projection, HAVING, ORDER BY,
//! LIMIT) runs over the emitted rows.

pub mod analyze;
pub mod split;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::SessionState;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{collect, ExecutionPlan};

pub use analyze::QueryAnalysis;

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::progress::StateOperatorProgress;
use crate::state::StateStoreConfig;
use crate::stateful::{
    AggregateParts, EventTimeKey, SessionAggregate, SessionColumns, StatefulOperator, StreamingAggregate, StreamingDedup,
};
use crate::stream_table::{MicroBatchInput, StreamingPlanning};

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

#[derive(Debug)]
enum Pipeline {
    Stateless {
        plan: Arc<dyn ExecutionPlan>,
    },
    Stateful {
        pre: Arc<dyn ExecutionPlan>,
        op: tokio::sync::Mutex<Box<dyn StatefulOperator>>,
        post: Arc<dyn ExecutionPlan>,
        slot_schema: SchemaRef,
    },
}

/// The grouping key that carries event time: a window struct or a
/// `window_end` column if there is one (a window closes at its end), else the
/// first key derived from a watermarked column.
fn event_time_group(agg: &datafusion::logical_expr::Aggregate) -> Option<usize> {
    let derived: Vec<usize> = agg
        .group_expr
        .iter()
        .enumerate()
        .filter(|(_, e)| analyze::expr_derives_from_watermark(&agg.input, e))
        .map(|(i, _)| i)
        .collect();
    let fields = agg.schema.fields();
    derived
        .iter()
        .copied()
        .find(|i| {
            fields.get(*i).is_some_and(|f| {
                matches!(f.data_type(), datafusion::arrow::datatypes::DataType::Struct(_)) || f.name() == "window_end"
            })
        })
        .or_else(|| derived.first().copied())
}

/// The grouping keys holding a session window (computed by `sluice_session`).
fn session_columns(agg: &datafusion::logical_expr::Aggregate) -> Option<SessionColumns> {
    let fields = agg.schema.fields();
    let derived: Vec<usize> = agg
        .group_expr
        .iter()
        .enumerate()
        .filter(|(_, e)| analyze::expr_derives_from_function(&agg.input, e, crate::functions::window::SESSION))
        .map(|(i, _)| i)
        .collect();
    if let Some(i) = derived.iter().copied().find(|i| matches!(fields[*i].data_type(), datafusion::arrow::datatypes::DataType::Struct(_))) {
        return Some(SessionColumns::Struct(i));
    }
    let named = |n: &str| derived.iter().copied().find(|i| fields[*i].name() == n);
    Some(SessionColumns::Pair { start: named("window_start")?, end: named("window_end")? })
}

/// A streaming query, validated for its output mode, planned once, ready to
/// run batch by batch.
#[derive(Debug)]
pub struct IncrementalPlan {
    state: SessionState,
    analysis: QueryAnalysis,
    mode: OutputMode,
    schema: SchemaRef,
    pipeline: Pipeline,
}

impl IncrementalPlan {
    /// Validate `logical` for `mode` and plan it.
    pub async fn try_new(mut state: SessionState, logical: LogicalPlan, mode: OutputMode) -> Result<Self> {
        let analysis = QueryAnalysis::of(&logical);
        analysis.validate(mode)?;
        state.config_mut().set_extension(Arc::new(StreamingPlanning));
        let schema = Arc::clone(logical.schema().inner());
        let pipeline = match split::split(&logical)? {
            None => Pipeline::Stateless { plan: state.create_physical_plan(&logical).await? },
            Some(split) => {
                let store_config = StateStoreConfig {
                    num_partitions: state.config().target_partitions().max(1),
                    ..Default::default()
                };
                let (pre, op): (Arc<dyn ExecutionPlan>, Box<dyn StatefulOperator>) = match &split.stateful {
                    LogicalPlan::Aggregate(agg) => {
                        let physical = state.create_physical_plan(&split.stateful).await?;
                        let (parts, pre) = AggregateParts::extract(&physical)?;
                        let event_time = event_time_group(agg)
                            .map(|index| EventTimeKey { index, expr: Arc::clone(&parts.group_by.expr()[index].0) });
                        let op: Box<dyn StatefulOperator> = match session_columns(agg) {
                            Some(session) => {
                                Box::new(SessionAggregate::try_new(parts, session, event_time, mode, store_config)?)
                            }
                            None => Box::new(StreamingAggregate::try_new(parts, event_time, mode, store_config)?),
                        };
                        (pre, op)
                    }
                    LogicalPlan::Distinct(d) => {
                        let input = d.input();
                        let pre = state.create_physical_plan(input).await?;
                        let pre_schema = pre.schema();
                        let event_time = input
                            .schema()
                            .fields()
                            .iter()
                            .position(|f| analyze::column_derives_from_watermark(input, f.name()))
                            .map(|index| EventTimeKey {
                                index,
                                expr: Arc::new(datafusion::physical_expr::expressions::Column::new(
                                    pre_schema.field(index).name(),
                                    index,
                                )),
                            });
                        let op = StreamingDedup::try_new(&pre_schema, event_time, store_config)?;
                        (pre, Box::new(op))
                    }
                    other => return Err(SluiceError::plan(format!("unexpected stateful node {}", other.display()))),
                };
                let post = state.create_physical_plan(&split.post).await?;
                Pipeline::Stateful { pre, op: tokio::sync::Mutex::new(op), post, slot_schema: split.slot_schema }
            }
        };
        Ok(Self { state, analysis, mode, schema, pipeline })
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
        Arc::clone(&self.schema)
    }

    /// Whether a batch without new data would emit rows or evict state now
    /// that the watermark moved from `last_ms` to `now_ms`.
    pub async fn wants_no_data_batch(&self, last_ms: Option<i64>, now_ms: Option<i64>) -> bool {
        let moved = match (last_ms, now_ms) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b > a,
            _ => false,
        };
        match &self.pipeline {
            Pipeline::Stateful { op, .. } if moved => op.lock().await.watermark_driven(),
            _ => false,
        }
    }

    /// Load operator state as of `version` (the last committed batch).
    pub async fn restore(&self, dir: &CheckpointDir, version: Option<u64>) -> Result<()> {
        if let Pipeline::Stateful { op, .. } = &self.pipeline {
            let pool = Arc::clone(&self.state.runtime_env().memory_pool);
            op.lock().await.restore(dir.child("0"), version, &pool).await?;
        }
        Ok(())
    }

    /// Schema of the rows a stateful operator drops as late (its input rows),
    /// or `None` for a stateless query.
    pub fn late_rows_schema(&self) -> Option<SchemaRef> {
        match &self.pipeline {
            Pipeline::Stateful { pre, .. } => Some(pre.schema()),
            Pipeline::Stateless { .. } => None,
        }
    }

    /// Start keeping the rows dropped as late.
    pub async fn collect_late_rows(&self) {
        if let Pipeline::Stateful { op, .. } = &self.pipeline {
            op.lock().await.collect_late_rows(true);
        }
    }

    /// The rows dropped as late in the last batch.
    pub async fn take_late_rows(&self) -> Vec<RecordBatch> {
        match &self.pipeline {
            Pipeline::Stateful { op, .. } => op.lock().await.take_late_rows(),
            Pipeline::Stateless { .. } => vec![],
        }
    }

    /// Make the state changes of batch `version` durable.
    pub async fn commit(&self, version: u64) -> Result<Vec<StateOperatorProgress>> {
        match &self.pipeline {
            Pipeline::Stateful { op, .. } => Ok(vec![op.lock().await.commit(version).await?]),
            Pipeline::Stateless { .. } => Ok(vec![]),
        }
    }

    fn task(&self, input: MicroBatchInput, ctx: BatchContext) -> Arc<TaskContext> {
        let mut config = self.state.config().clone();
        config.set_extension(Arc::new(input));
        let _ = ctx;
        Arc::new(TaskContext::from(&self.state).with_session_config(config))
    }

    /// Run the query over one batch of input. Returns the rows and the time
    /// spent preparing the batch's plans (the plan itself is built once).
    pub async fn execute(&self, input: MicroBatchInput, ctx: BatchContext) -> Result<(Vec<RecordBatch>, Duration)> {
        let started = Instant::now();
        match &self.pipeline {
            Pipeline::Stateless { plan } => {
                let task = self.task(input, ctx);
                let plan = reset_plan_states(Arc::clone(plan))?;
                let planning = started.elapsed();
                Ok((collect(plan, task).await?, planning))
            }
            Pipeline::Stateful { pre, op, post, slot_schema } => {
                let task = self.task(input, ctx);
                let (pre, post) = (reset_plan_states(Arc::clone(pre))?, reset_plan_states(Arc::clone(post))?);
                let planning = started.elapsed();
                let rows = collect(pre, Arc::clone(&task)).await?;
                let emitted = op.lock().await.process(Arc::clone(&task), rows, &ctx).await?;
                let emitted = emitted
                    .into_iter()
                    .map(|b| RecordBatch::try_new(Arc::clone(slot_schema), b.columns().to_vec()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let mut post_input = MicroBatchInput::default();
                post_input.data.insert(split::STATE_OUTPUT.to_string(), emitted);
                let task = self.task(post_input, ctx);
                Ok((collect(post, task).await?, planning))
            }
        }
    }
}
