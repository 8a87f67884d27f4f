//! Incremental planning: a streaming query's logical plan made into the
//! one physical plan every micro-batch runs.
//!
//! The stateful operations (aggregations, `DISTINCT`, a `LIMIT` over the
//! whole stream) are marked as logical extension nodes ([`nodes`]) and
//! planned by DataFusion's physical planner with
//! [`planner::StreamingExtensionPlanner`] into
//! [`StatefulExec`](crate::physical::StatefulExec) nodes. The plan is built
//! once and is immutable: the operators' state lives in the executor's
//! runtime, which attaches it to each batch's task context.

pub mod analyze;
pub mod changelog;
pub mod groups_with_state_node;
pub mod join;
pub mod join_node;
pub mod keys;
pub mod nodes;
pub mod over_window_node;
pub mod planner;
pub mod topn_node;
pub mod wrap;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{collect, displayable, ExecutionPlan};

pub use analyze::QueryAnalysis;

use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::physical::{BatchState, MicroBatchInput, StatefulExec, StreamScanExec};
use crate::state::StateStoreConfig;
use crate::stream_table::StreamingPlanning;
use nodes::StreamingLimitNode;

/// A streaming query, validated for its output mode, planned once, ready to
/// run batch by batch.
#[derive(Debug)]
pub struct IncrementalPlan {
    state: SessionState,
    batch_time: Arc<crate::functions::batch_time::BatchTime>,
    analysis: QueryAnalysis,
    mode: OutputMode,
    schema: SchemaRef,
    logical: LogicalPlan,
    plan: Arc<dyn ExecutionPlan>,
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
    /// Validate `logical` for `mode` and plan it; stateful operators keep
    /// `store_config.num_partitions` state partitions.
    pub async fn try_new(
        mut state: SessionState,
        logical: LogicalPlan,
        mode: OutputMode,
        store_config: StateStoreConfig,
    ) -> Result<Self> {
        let analysis = QueryAnalysis::of(&logical);
        analysis.validate(mode)?;
        let (logical, limit) = streaming_limit(logical, &analysis, mode)?;
        state.config_mut().set_extension(Arc::new(StreamingPlanning));
        // DataFusion's probe turns a partial aggregation into pass-through
        // when, after 100k rows of one execution, it finds few repeated
        // keys. On a stream every state row merged costs a store update,
        // so the partial stage always aggregates: one state row per key
        // and batch, however many rows the batch has for it.
        state.config_mut().options_mut().execution.skip_partial_aggregation_probe_rows_threshold = usize::MAX;
        let state = without_two_stage_distinct(state);
        let state = SessionStateBuilder::new_from_existing(state)
            .with_query_planner(Arc::new(planner::StreamingQueryPlanner::new(store_config)))
            .build();
        let schema = Arc::clone(logical.schema().inner());
        let batch_time = Arc::new(crate::functions::batch_time::BatchTime::default());
        let logical = crate::functions::batch_time::bind_batch_time(logical, &batch_time)?;
        let mut next_id = 0;
        let logical = join::mark_joins(&logical, mode, &mut next_id)?;
        let mut logical = wrap::mark_stateful(&logical, mode, &mut next_id)?;
        if let Some((skip, fetch)) = limit {
            let node = StreamingLimitNode { input: logical, id: next_id, skip, fetch };
            logical = LogicalPlan::Extension(Extension { node: Arc::new(node) });
        }
        let plan = state.create_physical_plan(&logical).await?;
        Ok(Self { state, batch_time, analysis, mode, schema, logical, plan })
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

    /// The physical plan every batch runs.
    pub fn physical(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// The logical plan, with the stateful operations as extension nodes.
    pub fn logical(&self) -> &LogicalPlan {
        &self.logical
    }

    /// The physical plan as `EXPLAIN` shows it: one node per line, the
    /// stateful nodes with their keys, state partitions and watermark rule.
    pub fn explain(&self) -> String {
        displayable(self.plan.as_ref()).indent(true).to_string()
    }

    /// The stateful nodes, by operator id (innermost first; the `LIMIT`
    /// over the stream last).
    pub fn stateful_nodes(&self) -> Vec<&StatefulExec> {
        fn walk<'a>(plan: &'a Arc<dyn ExecutionPlan>, out: &mut Vec<&'a StatefulExec>) {
            if let Some(node) = plan.downcast_ref::<StatefulExec>() {
                out.push(node);
            }
            for child in plan.children() {
                walk(child, out);
            }
        }
        let mut out = vec![];
        walk(&self.plan, &mut out);
        out.sort_by_key(|n| n.id());
        out
    }

    /// The memory pool state is accounted in.
    pub fn memory_pool(&self) -> Arc<dyn MemoryPool> {
        Arc::clone(&self.state.runtime_env().memory_pool)
    }

    /// Whether a batch without new data would emit rows or evict state now
    /// that the watermark moved from `last_ms` to `now_ms`.
    pub fn wants_no_data_batch(&self, last_ms: Option<i64>, now_ms: Option<i64>) -> bool {
        let moved = match (last_ms, now_ms) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b > a,
            _ => false,
        };
        moved && self.stateful_nodes().iter().any(|n| n.spec().watermark_driven())
    }

    /// Schema of the rows the first stateful operator drops as late (its
    /// input rows), or `None` for a query without one that drops rows.
    pub fn late_rows_schema(&self) -> Option<SchemaRef> {
        fn filter_of_first(plan: &Arc<dyn ExecutionPlan>) -> Option<SchemaRef> {
            if let Some(f) = plan.downcast_ref::<crate::physical::WatermarkFilterExec>().filter(|f| f.id() == 0) {
                return Some(f.schema());
            }
            plan.children().into_iter().find_map(filter_of_first)
        }
        if let Some(schema) = filter_of_first(&self.plan) {
            return Some(schema);
        }
        self.stateful_nodes()
            .into_iter()
            .find(|n| n.id() == 0 && !matches!(n.spec().as_ref(), crate::stateful::OperatorSpec::Limit { .. }))
            .map(|n| n.spec().late_rows_schema().unwrap_or_else(|| n.input().schema()))
    }

    /// The columns each input (lower-case source name) is read with, over
    /// every scan of it in the plan: `None` when some scan needs all of them.
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
        walk(&self.plan, &mut out);
        out
    }

    fn task(&self, input: MicroBatchInput, state: BatchState) -> Arc<TaskContext> {
        let mut config = self.state.config().clone();
        config.set_extension(Arc::new(input));
        config.set_extension(Arc::new(state));
        Arc::new(TaskContext::from(&self.state).with_session_config(config))
    }

    /// Run the query over one batch of input, with the operators' state in
    /// `state`. Returns the rows, the time spent preparing the batch's plan
    /// (the plan itself is built once) and the plan instance that ran, with
    /// its metrics (rows and times per node).
    pub async fn execute(&self, input: MicroBatchInput, state: BatchState) -> Result<ExecutedBatch> {
        let started = Instant::now();
        self.batch_time.set(state.batch.batch_timestamp_ms);
        let task = self.task(input, state);
        let plan = reset_plan_states(Arc::clone(&self.plan))?;
        let planning = started.elapsed();
        let rows = collect(Arc::clone(&plan), task).await?;
        Ok(ExecutedBatch { rows, planning, plan })
    }
}

/// What running one batch produced.
#[derive(Debug)]
pub struct ExecutedBatch {
    /// The rows the query emitted.
    pub rows: Vec<RecordBatch>,
    /// Time spent preparing the batch's plan.
    pub planning: Duration,
    /// The plan instance that ran, holding its metrics.
    pub plan: Arc<dyn ExecutionPlan>,
}

/// A plan that ran, with each node's metrics (`EXPLAIN ANALYZE`).
pub fn explain_with_metrics(plan: &Arc<dyn ExecutionPlan>) -> String {
    datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true).to_string()
}

/// Take the outermost `LIMIT` of a query in append or update mode off its
/// plan, as a `StreamingLimitNode` over the output (complete mode limits the
/// whole result table of each batch, as in a batch query). A `LIMIT`
/// anywhere else in a streaming query is refused.
fn streaming_limit(
    logical: LogicalPlan,
    analysis: &QueryAnalysis,
    mode: OutputMode,
) -> Result<(LogicalPlan, Option<(u64, Option<u64>)>)> {
    if mode == OutputMode::Complete || !analysis.limit {
        return Ok((logical, None));
    }
    if mode == OutputMode::Update && analysis.aggregate {
        return Err(SluiceError::unsupported(
            "LIMIT over an aggregation in update output mode would cut a stream of changing rows at an arbitrary \
             point; use output_mode = 'complete' (the limit then applies to the whole result table), or drop the LIMIT",
        ));
    }
    let Some((rest, skip, fetch)) = crate::stateful::StreamingLimit::strip(&logical)? else {
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
    Ok((rest, Some((skip, fetch))))
}
