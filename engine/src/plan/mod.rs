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
pub mod keys;
pub mod split;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{collect, ExecutionPlan};

pub use analyze::QueryAnalysis;
pub use keys::WITHIN_WATERMARK;

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::physical::StreamScanExec;
use crate::progress::StateOperatorProgress;
use crate::state::StateStoreConfig;
use crate::stateful::{
    AggregateParts, EventTimeKey, SessionAggregate, StateLayout, StatefulOperator, StreamingAggregate, StreamingDedup,
    StreamingLimit,
};
use crate::stream_table::{MicroBatchInput, StreamingPlanning};
use keys::{dedup_spec, event_time_group, session_columns};

/// Facts about the micro-batch being run.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext {
    /// Batch id.
    pub batch_id: u64,
    /// Event-time watermark in force for this batch (ms since the epoch):
    /// state it has passed is evicted.
    pub watermark_ms: Option<i64>,
    /// Watermark late input rows are judged against (the batch's for the
    /// first stateful operator, the previous batch's for later ones).
    pub late_watermark_ms: Option<i64>,
    /// Watermark of the previous batch.
    pub previous_watermark_ms: Option<i64>,
    /// Processing time of the batch (ms since the epoch).
    pub batch_timestamp_ms: i64,
}

/// One stateful operator and the stateless plan feeding it.
#[derive(Debug)]
struct Stage {
    /// Reads the sources (first stage) or the previous stage's slot.
    pre: Arc<dyn ExecutionPlan>,
    op: tokio::sync::Mutex<Box<dyn StatefulOperator>>,
    /// Input name the operator's output is handed on under.
    slot: String,
    slot_schema: SchemaRef,
}

#[derive(Debug)]
enum Pipeline {
    Stateless {
        plan: Arc<dyn ExecutionPlan>,
    },
    /// Stateful operators in execution order (innermost first), then the
    /// plan over the last one's output.
    Stateful {
        stages: Vec<Stage>,
        post: Arc<dyn ExecutionPlan>,
    },
}

/// A streaming query, validated for its output mode, planned once, ready to
/// run batch by batch.
#[derive(Debug)]
pub struct IncrementalPlan {
    state: SessionState,
    batch_time: Arc<crate::functions::batch_time::BatchTime>,
    analysis: QueryAnalysis,
    mode: OutputMode,
    schema: SchemaRef,
    pipeline: Pipeline,
    /// `LIMIT`/`OFFSET` over the output in append and update mode: the first
    /// rows ever, counted as state.
    limit: Option<tokio::sync::Mutex<StreamingLimit>>,
}

/// Cut `plan` into its chain of stateful stages (innermost first) and the
/// plan above the outermost one. `depth` numbers the slots.
fn build_stages<'a>(
    state: &'a SessionState,
    plan: &'a LogicalPlan,
    mode: OutputMode,
    store_config: StateStoreConfig,
    depth: usize,
) -> futures::future::BoxFuture<'a, Result<Option<(Vec<Stage>, LogicalPlan)>>> {
    Box::pin(async move {
        let Some(split) = split::split(plan, &split::state_output(depth))? else { return Ok(None) };
        let original = &split.stateful;
        let input = original.inputs()[0];
        let downstream_mode = OutputMode::Append;
        let (mut stages, node) = match build_stages(state, input, downstream_mode, store_config, depth + 1).await? {
            None => (vec![], original.clone()),
            Some((inner, inner_post)) => {
                let node = original.with_new_exprs(original.expressions(), vec![inner_post])?;
                (inner, node)
            }
        };
        if !stages.is_empty() && mode != OutputMode::Append && analyze::contains_streaming_aggregate(input) {
            return Err(SluiceError::unsupported(format!(
                "an aggregation feeding another stateful operator runs in append mode only (as in Spark): in {mode} \
                 mode it would emit changing rows that the next operator cannot retract; use output_mode = 'append'"
            )));
        }
        let (pre, op): (Arc<dyn ExecutionPlan>, Box<dyn StatefulOperator>) = match (original, &node) {
            (LogicalPlan::Aggregate(agg), LogicalPlan::Aggregate(_)) => {
                let physical = state.create_physical_plan(&node).await?;
                let (parts, pre) = AggregateParts::extract(&physical)?;
                let event_time = event_time_group(agg)
                    .map(|index| EventTimeKey { index, expr: Arc::clone(&parts.group_by.expr()[index].0) });
                if depth > 0 && event_time.is_none() {
                    return Err(SluiceError::unsupported(
                        "an aggregation feeding another stateful operator must group by an event-time window with a \
                         watermark (its rows are emitted once the watermark closes them), and the query must run in \
                         append output mode; group the inner aggregation by a window of the watermarked column and use \
                         output_mode = 'append'",
                    ));
                }
                let op: Box<dyn StatefulOperator> = match session_columns(agg) {
                    Some(session) => {
                        Box::new(SessionAggregate::try_new(parts, session, event_time, mode, store_config)?)
                    }
                    None => Box::new(StreamingAggregate::try_new(parts, event_time, mode, store_config)?),
                };
                (pre, op)
            }
            (LogicalPlan::Distinct(d), LogicalPlan::Distinct(rewritten)) => {
                let pre = state.create_physical_plan(rewritten.input()).await?;
                let pre_schema = pre.schema();
                let input = d.input();
                let event_time = input
                    .schema()
                    .fields()
                    .iter()
                    .position(|f| analyze::column_is_watermark_column(input, f.name()))
                    .map(|index| EventTimeKey {
                        index,
                        expr: Arc::new(datafusion::physical_expr::expressions::Column::new(
                            pre_schema.field(index).name(),
                            index,
                        )),
                    });
                let spec = dedup_spec(d, event_time.as_ref())?;
                (pre, Box::new(StreamingDedup::try_new(&pre_schema, spec, event_time, store_config)?))
            }
            (other, _) => return Err(SluiceError::plan(format!("unexpected stateful node {}", other.display()))),
        };
        stages.push(Stage { pre, op: tokio::sync::Mutex::new(op), slot: split.slot, slot_schema: split.slot_schema });
        Ok(Some((stages, split.post)))
    })
}

/// The session state without the optimizer rule that rewrites a single
/// `COUNT(DISTINCT x)` into two nested aggregations: on a stream the
/// distinct aggregate keeps its distinct values as operator state instead
/// (as Spark does), which runs incrementally through the usual
/// partial/merge/final stages.
fn without_two_stage_distinct(state: SessionState) -> SessionState {
    let rules: Vec<_> = state
        .optimizer()
        .rules
        .iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .cloned()
        .collect();
    SessionStateBuilder::new_from_existing(state).with_optimizer_rules(rules).build()
}

impl IncrementalPlan {
    /// Validate `logical` for `mode` and plan it.
    pub async fn try_new(
        mut state: SessionState,
        logical: LogicalPlan,
        mode: OutputMode,
        store_config: StateStoreConfig,
    ) -> Result<Self> {
        let analysis = QueryAnalysis::of(&logical);
        analysis.validate(mode)?;
        let (logical, limit) = streaming_limit(logical, &analysis, mode, store_config)?;
        state.config_mut().set_extension(Arc::new(StreamingPlanning));
        let state = without_two_stage_distinct(state);
        let schema = Arc::clone(logical.schema().inner());
        let batch_time = Arc::new(crate::functions::batch_time::BatchTime::default());
        let logical = crate::functions::batch_time::bind_batch_time(logical, &batch_time)?;
        let pipeline = match build_stages(&state, &logical, mode, store_config, 0).await? {
            None => Pipeline::Stateless { plan: state.create_physical_plan(&logical).await? },
            Some((stages, post)) => Pipeline::Stateful { stages, post: state.create_physical_plan(&post).await? },
        };
        Ok(Self { state, batch_time, analysis, mode, schema, pipeline, limit: limit.map(tokio::sync::Mutex::new) })
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
        if let (true, Pipeline::Stateful { stages, .. }) = (moved, &self.pipeline) {
            for stage in stages {
                if stage.op.lock().await.watermark_driven() {
                    return true;
                }
            }
        }
        false
    }

    fn stages(&self) -> &[Stage] {
        match &self.pipeline {
            Pipeline::Stateful { stages, .. } => stages,
            Pipeline::Stateless { .. } => &[],
        }
    }

    /// Load operator state as of `version` (the last committed batch),
    /// after checking that the checkpoint's state has this query's layout.
    /// With `reset_changed`, an operator whose layout changed starts with
    /// empty state (and a warning) instead of failing; the others keep theirs.
    pub async fn restore(&self, dir: &CheckpointDir, version: Option<u64>, reset_changed: bool) -> Result<()> {
        let pool = Arc::clone(&self.state.runtime_env().memory_pool);
        let stored: Vec<u64> = dir.list_numbered_dirs().await?;
        if let Some(extra) = stored.iter().find(|k| **k as usize >= self.stages().len()).filter(|_| !reset_changed) {
            return Err(SluiceError::Checkpoint {
                path: format!("{}/{extra}", dir.location()),
                reason: format!(
                    "the checkpoint holds state of {} stateful operator(s) but the query now has {}: the query \
                     changed in a way that cannot reuse this state; restore the original query or use a new \
                     checkpoint location",
                    stored.len(),
                    self.stages().len()
                ),
            });
        }
        for (k, stage) in self.stages().iter().enumerate() {
            let op_dir = dir.child(&k.to_string());
            let mut op = stage.op.lock().await;
            let layout = op.state_layout();
            let changed = check_layout(&op_dir, &format!("stateful operator {k}"), &layout, reset_changed).await?;
            op.restore(op_dir.clone(), version, &pool, changed).await?;
            if changed {
                op_dir.write_json("_layout", &layout).await?;
            }
        }
        if let Some(limit) = &self.limit {
            let limit_dir = dir.child("limit");
            let mut limit = limit.lock().await;
            let layout = limit.state_layout();
            let changed = check_layout(&limit_dir, "the LIMIT operator", &layout, reset_changed).await?;
            limit.restore(limit_dir.clone(), version, &pool, changed).await?;
            if changed {
                limit_dir.write_json("_layout", &layout).await?;
            }
        }
        Ok(())
    }

    /// Schema of the rows the first stateful operator drops as late (its
    /// input rows), or `None` for a stateless query.
    pub fn late_rows_schema(&self) -> Option<SchemaRef> {
        self.stages().first().map(|s| s.pre.schema())
    }

    /// Start keeping the rows the first stateful operator drops as late.
    pub async fn collect_late_rows(&self) {
        if let Some(stage) = self.stages().first() {
            stage.op.lock().await.collect_late_rows(true);
        }
    }

    /// The rows dropped as late in the last batch.
    pub async fn take_late_rows(&self) -> Vec<RecordBatch> {
        match self.stages().first() {
            Some(stage) => stage.op.lock().await.take_late_rows(),
            None => vec![],
        }
    }

    /// Make the state changes of batch `version` durable.
    pub async fn commit(&self, version: u64) -> Result<Vec<StateOperatorProgress>> {
        let mut out = vec![];
        for stage in self.stages() {
            out.push(stage.op.lock().await.commit(version).await?);
        }
        if let Some(limit) = &self.limit {
            out.push(limit.lock().await.commit(version).await?);
        }
        Ok(out)
    }

    /// The columns each input (lower-case source name) is read with, over
    /// every scan of it in the query's plans: `None` when some scan needs
    /// all of them.
    pub fn input_columns(&self) -> HashMap<String, Option<BTreeSet<usize>>> {
        fn walk(plan: &Arc<dyn ExecutionPlan>, out: &mut HashMap<String, Option<BTreeSet<usize>>>) {
            if let Some(scan) = plan.downcast_ref::<StreamScanExec>() {
                let entry = out.entry(scan.key().to_string()).or_insert_with(|| Some(BTreeSet::new()));
                match (entry.as_mut(), scan.projection()) {
                    (Some(set), Some(p)) => set.extend(p.iter().copied()),
                    (_, None) => *entry = None,
                    (None, Some(_)) => {}
                }
            }
            for child in plan.children() {
                walk(child, out);
            }
        }
        let mut out = HashMap::new();
        match &self.pipeline {
            Pipeline::Stateless { plan } => walk(plan, &mut out),
            Pipeline::Stateful { stages, post } => {
                for stage in stages {
                    walk(&stage.pre, &mut out);
                }
                walk(post, &mut out);
            }
        }
        out
    }

    fn task(&self, input: MicroBatchInput) -> Arc<TaskContext> {
        let mut config = self.state.config().clone();
        config.set_extension(Arc::new(input));
        Arc::new(TaskContext::from(&self.state).with_session_config(config))
    }

    /// Run the query over one batch of input. Returns the rows and the time
    /// spent preparing the batch's plans (the plan itself is built once).
    pub async fn execute(&self, input: MicroBatchInput, ctx: BatchContext) -> Result<(Vec<RecordBatch>, Duration)> {
        let Some(limit) = &self.limit else { return self.execute_pipeline(input, ctx).await };
        let mut limit = limit.lock().await;
        if limit.exhausted() && matches!(self.pipeline, Pipeline::Stateless { .. }) {
            // Every row the query will ever emit is out: nothing to compute.
            limit.apply(vec![])?;
            return Ok((vec![], Duration::ZERO));
        }
        let (rows, planning) = self.execute_pipeline(input, ctx).await?;
        Ok((limit.apply(rows)?, planning))
    }

    async fn execute_pipeline(
        &self,
        input: MicroBatchInput,
        ctx: BatchContext,
    ) -> Result<(Vec<RecordBatch>, Duration)> {
        let started = Instant::now();
        self.batch_time.set(ctx.batch_timestamp_ms);
        match &self.pipeline {
            Pipeline::Stateless { plan } => {
                let task = self.task(input);
                let plan = reset_plan_states(Arc::clone(plan))?;
                let planning = started.elapsed();
                Ok((collect(plan, task).await?, planning))
            }
            Pipeline::Stateful { stages, post } => {
                let pres =
                    stages.iter().map(|s| reset_plan_states(Arc::clone(&s.pre))).collect::<Result<Vec<_>, _>>()?;
                let post = reset_plan_states(Arc::clone(post))?;
                let planning = started.elapsed();
                let mut data = input;
                for (k, (stage, pre)) in stages.iter().zip(pres).enumerate() {
                    let task = self.task(data);
                    let rows = collect(pre, Arc::clone(&task)).await?;
                    // Downstream operators judge lateness by the previous batch's
                    // watermark: rows their upstream emitted under the current
                    // one are on time for them (Spark 3.5+).
                    let stage_ctx =
                        if k == 0 { ctx } else { BatchContext { late_watermark_ms: ctx.previous_watermark_ms, ..ctx } };
                    let emitted = stage.op.lock().await.process(Arc::clone(&task), rows, &stage_ctx).await?;
                    let emitted = emitted
                        .into_iter()
                        .map(|b| RecordBatch::try_new(Arc::clone(&stage.slot_schema), b.columns().to_vec()))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    data = MicroBatchInput::default();
                    data.data.insert(stage.slot.clone(), emitted);
                }
                let task = self.task(data);
                Ok((collect(post, task).await?, planning))
            }
        }
    }
}

/// Take the outermost `LIMIT` of a query in append or update mode off its
/// plan, as a [`StreamingLimit`] over the output (complete mode limits the
/// whole result table of each batch, as in a batch query). A `LIMIT`
/// anywhere else in a streaming query is refused.
fn streaming_limit(
    logical: LogicalPlan,
    analysis: &QueryAnalysis,
    mode: OutputMode,
    store_config: StateStoreConfig,
) -> Result<(LogicalPlan, Option<StreamingLimit>)> {
    if mode == OutputMode::Complete || !analysis.limit {
        return Ok((logical, None));
    }
    if mode == OutputMode::Update && analysis.aggregate {
        return Err(SluiceError::unsupported(
            "LIMIT over an aggregation in update output mode would cut a stream of changing rows at an arbitrary \
             point; use output_mode = 'complete' (the limit then applies to the whole result table), or drop the LIMIT",
        ));
    }
    let Some((rest, skip, fetch)) = StreamingLimit::strip(&logical)? else {
        return Err(SluiceError::unsupported(format!(
            "LIMIT inside a streaming query (in a subquery, or below another operation) is not supported in {mode} \
             output mode; put the LIMIT on the outermost SELECT, where it means the first rows the query ever emits"
        )));
    };
    if QueryAnalysis::of(&rest).limit {
        return Err(SluiceError::unsupported(
            "a streaming query may have one LIMIT, on its outermost SELECT; remove the inner LIMIT",
        ));
    }
    Ok((rest, Some(StreamingLimit::new(skip, fetch, store_config))))
}

/// Check the layout recorded in `op_dir` against `layout` before the state
/// there is restored: `Ok(true)` when the state must start afresh (layout
/// changed or unknown, with `reset_changed`), `Ok(false)` to reuse it (the
/// layout of a fresh directory is recorded now). `what` names the operator
/// in errors.
async fn check_layout(op_dir: &CheckpointDir, what: &str, layout: &StateLayout, reset_changed: bool) -> Result<bool> {
    let old = op_dir.read_json::<StateLayout>("_layout").await?;
    // State files without their layout: the query-change check would be
    // skipped and the state reused blindly, so this is damage.
    let unknown = old.is_none() && !op_dir.list_all().await?.is_empty();
    if unknown && !reset_changed {
        return Err(SluiceError::Checkpoint {
            path: format!("{}/_layout", op_dir.location()),
            reason: format!(
                "missing, but {what} has state files: without its layout Sluice cannot check that the state \
                 belongs to this query. The checkpoint is damaged: restore the file from a backup, set \
                 reset_changed_state = 'true' to start this operator's state afresh, or use a new checkpoint location"
            ),
        });
    }
    let changed = unknown || old.as_ref().is_some_and(|old| old != layout);
    if let (Some(old), true, false) = (&old, changed, reset_changed) {
        return Err(SluiceError::Checkpoint {
            path: format!("{}/_layout", op_dir.location()),
            reason: format!(
                "{what} changed: the checkpoint holds state of operator '{}' with keys [{}] and state [{}], the \
                 query now has operator '{}' with keys [{}] and state [{}]. Its state cannot be reused: restore the \
                 original query, use a new checkpoint location, or set reset_changed_state = 'true' to start this \
                 operator's state afresh",
                old.operator,
                old.keys.join(", "),
                old.values.join(", "),
                layout.operator,
                layout.keys.join(", "),
                layout.values.join(", ")
            ),
        });
    }
    if changed {
        tracing::warn!(
            operator = %layout.operator,
            "{what} changed: its state is reset (reset_changed_state); the other operators keep theirs"
        );
    } else if old.is_none() {
        // A fresh operator records its layout before any state file exists.
        op_dir.write_json("_layout", layout).await?;
    }
    Ok(changed)
}
