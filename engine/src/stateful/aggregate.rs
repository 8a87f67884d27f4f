//! [`StreamingAggregate`]: incremental aggregation with DataFusion's own
//! aggregate functions and accumulator state.
//!
//! Each batch: a `Partial` aggregation of the batch's rows (vectorised, by
//! DataFusion), a `PartialReduce` of those partial states with the stored
//! states of the same keys, and a `Final` evaluation of the rows to emit.
//! The state store keeps, per group key, the merged intermediate state row
//! (Arrow row format), prefixed with the key's event time for watermark
//! eviction. Any built-in aggregate or UDAF with a state works.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{collect, ExecutionPlan};

use super::event_time::event_time_micros;
use super::BatchContext;
use super::{EventTimeKey, LateRows, OperatorState, StatefulOperator};
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::state::StateStoreConfig;

/// The pieces of a planned DataFusion aggregation.
#[derive(Debug, Clone)]
pub struct AggregateParts {
    /// Grouping expressions over the input.
    pub group_by: PhysicalGroupBy,
    /// Aggregate functions.
    pub aggr: Vec<Arc<AggregateFunctionExpr>>,
    /// `FILTER (WHERE ...)` clauses.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Schema of the aggregation's input.
    pub input_schema: SchemaRef,
}

impl AggregateParts {
    /// Find the aggregation in a physical plan made for `Aggregate(pre)`;
    /// returns its parts and the physical plan of `pre`. The search does not
    /// enter the nodes `boundary` accepts (upstream stateful operators,
    /// whose own aggregations are theirs).
    pub fn extract(
        plan: &Arc<dyn ExecutionPlan>,
        boundary: &dyn Fn(&Arc<dyn ExecutionPlan>) -> bool,
    ) -> Result<(Self, Arc<dyn ExecutionPlan>)> {
        let mut node = Arc::clone(plan);
        loop {
            if let Some(agg) = node.downcast_ref::<AggregateExec>() {
                let agg = match agg.mode() {
                    AggregateMode::Final | AggregateMode::FinalPartitioned => find_partial(agg.input(), boundary)
                        .ok_or_else(|| {
                            SluiceError::internal("no partial aggregation found in the planned aggregation")
                        })?,
                    _ => node.clone(),
                };
                let agg = agg
                    .downcast_ref::<AggregateExec>()
                    .ok_or_else(|| SluiceError::internal("the partial stage found is not an aggregation"))?;
                if contains_aggregate(agg.input(), boundary) {
                    return Err(SluiceError::unsupported(
                        "this aggregation is planned as two nested aggregations, which streaming does not support \
                         yet; write the inner aggregation as its own query (a sink the outer one reads)",
                    ));
                }
                if agg.group_expr().has_grouping_set() {
                    return Err(SluiceError::unsupported(
                        "GROUPING SETS / ROLLUP / CUBE are not supported on streams yet",
                    ));
                }
                let parts = AggregateParts {
                    group_by: agg.group_expr().clone(),
                    aggr: agg.aggr_expr().to_vec(),
                    filters: agg.filter_expr().to_vec(),
                    input_schema: agg.input_schema(),
                };
                return Ok((parts, Arc::clone(agg.input())));
            }
            let children = node.children();
            if children.len() != 1 {
                return Err(SluiceError::internal("no aggregation found in the planned query"));
            }
            let next = Arc::clone(children[0]);
            node = next;
        }
    }
}

fn find_partial(
    plan: &Arc<dyn ExecutionPlan>,
    boundary: &dyn Fn(&Arc<dyn ExecutionPlan>) -> bool,
) -> Option<Arc<dyn ExecutionPlan>> {
    if boundary(plan) {
        return None;
    }
    if plan.downcast_ref::<AggregateExec>().is_some_and(|a| *a.mode() == AggregateMode::Partial) {
        return Some(Arc::clone(plan));
    }
    plan.children().into_iter().find_map(|c| find_partial(c, boundary))
}

fn contains_aggregate(plan: &Arc<dyn ExecutionPlan>, boundary: &dyn Fn(&Arc<dyn ExecutionPlan>) -> bool) -> bool {
    !boundary(plan)
        && (plan.downcast_ref::<AggregateExec>().is_some()
            || plan.children().into_iter().any(|c| contains_aggregate(c, boundary)))
}

/// The three DataFusion aggregation stages over in-memory batches.
#[derive(Debug)]
pub(super) struct AggStages {
    pub parts: AggregateParts,
    /// Schema of intermediate state rows: grouping keys, then state fields.
    pub partial_schema: SchemaRef,
}

impl AggStages {
    pub fn try_new(parts: AggregateParts) -> Result<Self> {
        let probe = AggregateExec::try_new(
            AggregateMode::Partial,
            parts.group_by.clone(),
            parts.aggr.clone(),
            parts.filters.clone(),
            Arc::new(EmptyExec::new(Arc::clone(&parts.input_schema))),
            Arc::clone(&parts.input_schema),
        )?;
        Ok(Self { partial_schema: probe.schema(), parts })
    }

    /// The partial states of a batch's input rows, as one batch of
    /// `partial_schema` (a group may appear more than once: merge with
    /// `PartialReduce`).
    pub async fn partial(&self, input: Vec<RecordBatch>, task: &Arc<TaskContext>) -> Result<RecordBatch> {
        let partial = self.run(AggregateMode::Partial, input, task).await?;
        Ok(concat_batches(&self.partial_schema, &partial)?)
    }

    /// Run one stage: `Partial` over input rows; `PartialReduce` or `Final`
    /// over state rows.
    pub async fn run(
        &self,
        mode: AggregateMode,
        input: Vec<RecordBatch>,
        task: &Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let (schema, group_by, filters) = match mode {
            AggregateMode::Partial => {
                (Arc::clone(&self.parts.input_schema), self.parts.group_by.clone(), self.parts.filters.clone())
            }
            _ => (Arc::clone(&self.partial_schema), self.parts.group_by.as_final(), vec![None; self.parts.aggr.len()]),
        };
        // The partial stage reads the batch's rows over the session's target
        // partitions, in parallel; the merge stages read one partition.
        let partitions = match mode {
            AggregateMode::Partial => {
                let n = task.session_config().target_partitions().clamp(1, input.len().max(1));
                let mut parts = vec![vec![]; n];
                for (i, b) in input.into_iter().enumerate() {
                    parts[i % n].push(b);
                }
                parts
            }
            _ => vec![input],
        };
        let source = MemorySourceConfig::try_new_exec(&partitions, schema, None)?;
        let exec = AggregateExec::try_new(
            mode,
            group_by,
            self.parts.aggr.clone(),
            filters,
            source,
            Arc::clone(&self.parts.input_schema),
        )?;
        Ok(collect(Arc::new(exec), Arc::clone(task)).await?)
    }
}

/// Drop rows whose event-time key is at or below the watermark; returns the
/// kept rows and the number dropped, keeping the dropped ones in `late`.
pub fn drop_late(
    input: Vec<RecordBatch>,
    et: &EventTimeKey,
    wm: super::EventTime,
    late: &mut LateRows,
) -> Result<(Vec<RecordBatch>, u64)> {
    let wm_us = wm.micros();
    let mut out = vec![];
    let mut dropped = 0;
    for b in input {
        let values = et.expr.evaluate(&b)?.into_array(b.num_rows())?;
        let times = event_time_micros(&values)?;
        let keep: BooleanArray = times.iter().map(|t| Some(t.is_some_and(|t| t > wm_us))).collect();
        let kept = filter_record_batch(&b, &keep)?;
        dropped += (b.num_rows() - kept.num_rows()) as u64;
        if late.on && kept.num_rows() < b.num_rows() {
            late.push(filter_record_batch(&b, &datafusion::arrow::compute::not(&keep)?)?);
        }
        out.push(kept);
    }
    Ok((out, dropped))
}

/// Incremental aggregation over the state store.
#[derive(Debug)]
pub struct StreamingAggregate {
    stages: AggStages,
    partial_schema: SchemaRef,
    num_keys: usize,
    key_conv: RowConverter,
    value_conv: RowConverter,
    event_time: Option<EventTimeKey>,
    mode: OutputMode,
    /// The input is already partial states (the plan's partial
    /// aggregation ran before the shuffle, with late rows dropped before it).
    partial_input: bool,
    state: OperatorState,
}

const NO_EVENT_TIME: i64 = i64::MAX;

impl StreamingAggregate {
    /// An aggregation emitting in `mode`; `event_time` names the grouping key
    /// that carries event time (for late-row dropping and eviction).
    pub fn try_new(
        parts: AggregateParts,
        event_time: Option<EventTimeKey>,
        mode: OutputMode,
        store_config: StateStoreConfig,
    ) -> Result<Self> {
        let num_keys = parts.group_by.expr().len();
        let stages = AggStages::try_new(parts)?;
        let partial_schema = Arc::clone(&stages.partial_schema);
        let fields =
            |n: usize| partial_schema.fields().iter().take(n).map(|f| SortField::new(f.data_type().clone())).collect();
        let key_conv = RowConverter::new(fields(num_keys))?;
        let value_conv = RowConverter::new(fields(partial_schema.fields().len()))?;
        Ok(Self {
            stages,
            partial_schema,
            num_keys,
            key_conv,
            value_conv,
            event_time,
            mode,
            partial_input: false,
            state: OperatorState::new("aggregate", store_config),
        })
    }

    /// Take partial states (rows of the partial aggregation's schema) as
    /// input instead of input rows: the plan runs the partial stage, and
    /// drops late rows, before hash-partitioning on the keys.
    pub fn with_partial_input(mut self) -> Self {
        self.partial_input = true;
        self
    }

    async fn run(
        &self,
        mode: AggregateMode,
        input: Vec<RecordBatch>,
        task: &Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        self.stages.run(mode, input, task).await
    }

    fn event_times(&self, batch: &RecordBatch) -> Result<Vec<i64>> {
        match &self.event_time {
            Some(et) => Ok(event_time_micros(batch.column(et.index))?.values().to_vec()),
            None => Ok(vec![NO_EVENT_TIME; batch.num_rows()]),
        }
    }

    fn decode(&self, values: &[&[u8]]) -> Result<RecordBatch> {
        if values.iter().any(|v| v.len() < 8) {
            return Err(SluiceError::plan(
                "a stored aggregation state entry is too short: the state is damaged; restore the checkpoint or \
                 use a new checkpoint location",
            ));
        }
        let parser = self.value_conv.parser();
        let rows = values.iter().map(|v| parser.parse(&v[8..]));
        let arrays = self.value_conv.convert_rows(rows)?;
        Ok(RecordBatch::try_new(Arc::clone(&self.partial_schema), arrays)?)
    }

    /// Merge a partial-state batch into the store; returns the merged states.
    async fn merge(&mut self, partial: RecordBatch, task: &Arc<TaskContext>) -> Result<RecordBatch> {
        let keys = self.key_conv.convert_columns(&partial.columns()[..self.num_keys])?;
        let store = self.state.store()?;
        // Each stored state once, even when the partial stage emitted its
        // group more than once.
        let mut seen = datafusion::common::HashSet::new();
        let old: Vec<&[u8]> = (0..partial.num_rows())
            .map(|i| state_key(&keys, i))
            .filter(|k| seen.insert(*k))
            .filter_map(|k| store.get(k))
            .collect();
        let old = self.decode(&old)?;
        // PartialReduce also folds together rows of one group that the
        // partial stage emitted more than once (one per input partition, or
        // when DataFusion skips partial aggregation of high-cardinality keys).
        let merged = self.run(AggregateMode::PartialReduce, vec![old, partial], task).await?;
        let merged = concat_batches(&self.partial_schema, &merged)?;
        let keys = self.key_conv.convert_columns(&merged.columns()[..self.num_keys])?;
        let values = self.value_conv.convert_columns(merged.columns())?;
        let times = self.event_times(&merged)?;
        let store = self.state.store_mut()?;
        for i in 0..merged.num_rows() {
            let mut v = Vec::with_capacity(8 + values.row(i).as_ref().len());
            v.extend_from_slice(&times[i].to_le_bytes());
            v.extend_from_slice(values.row(i).as_ref());
            store.put(state_key(&keys, i), v);
        }
        Ok(merged)
    }
}

/// The state-store key of group `i`. A global aggregate (no GROUP BY)
/// keeps its one row under the empty key: a row converter over no columns
/// yields no rows.
fn state_key(keys: &Rows, i: usize) -> &[u8] {
    if keys.num_rows() == 0 {
        &[]
    } else {
        keys.row(i).data()
    }
}

/// The event-time prefix of a stored value (a short, damaged value counts
/// as expired rather than panicking; `decode` reports it).
fn time_prefix(v: &[u8]) -> i64 {
    v.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes).unwrap_or(i64::MIN)
}

#[async_trait]
impl StatefulOperator for StreamingAggregate {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let event_time = self.event_time.as_ref().filter(|_| self.mode != OutputMode::Complete && !self.partial_input);
        let input = self.state.drop_late(input, event_time, ctx.late_watermark)?;
        let rows: usize = input.iter().map(|b| b.num_rows()).sum();
        let mut out = vec![];
        if rows > 0 || self.num_keys == 0 {
            let partial = match self.partial_input {
                true => concat_batches(&self.partial_schema, &input)?,
                false => self.stages.partial(input, &task).await?,
            };
            let merged = self.merge(partial, &task).await?;
            if self.mode == OutputMode::Update {
                out.extend(self.run(AggregateMode::Final, vec![merged], &task).await?);
            }
        }
        match self.mode {
            OutputMode::Complete => {
                let store = self.state.store()?;
                let all: Vec<&[u8]> = store.iter().map(|(_, v)| v).collect();
                let states = self.decode(&all)?;
                out.extend(self.run(AggregateMode::Final, vec![states], &task).await?);
            }
            mode => {
                if let (Some(_), Some(wm)) = (&self.event_time, ctx.watermark) {
                    let wm_us = wm.micros();
                    let evicted = self.state.store_mut()?.evict(|_, v| time_prefix(v) <= wm_us);
                    if mode == OutputMode::Append && !evicted.is_empty() {
                        let values: Vec<&[u8]> = evicted.iter().map(Vec::as_slice).collect();
                        let states = self.decode(&values)?;
                        out.extend(self.run(AggregateMode::Final, vec![states], &task).await?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn watermark_driven(&self) -> bool {
        self.event_time.is_some() && self.mode != OutputMode::Complete
    }

    fn state_layout(&self) -> super::StateLayout {
        let fields = self.partial_schema.fields();
        super::StateLayout {
            operator: "aggregate".into(),
            keys: super::StateLayout::describe(&fields[..self.num_keys]),
            values: super::StateLayout::describe(&fields[self.num_keys..]),
        }
    }
}
