//! Physical planning of the streaming extension nodes ([`super::nodes`])
//! into [`StatefulExec`] nodes of the query's one physical plan.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::error::Result as DFResult;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use super::changelog::StreamingChangelogNode;
use super::groups_with_state_node::{plan_groups_with_state, GroupsWithStateNode};
use super::join_node::{EvictRule, StreamingJoinNode};
use super::nodes::{StreamingAggregateNode, StreamingDedupNode, StreamingLimitNode, WithinWatermarkNode};
use super::over_window_node::{plan_over_window, StreamingOverWindowNode};
use super::topn_node::StreamingTopNNode;
use crate::error::SluiceError;
use crate::options::OutputMode;
use crate::physical::{contains_stateful, StatefulExec, WatermarkFilterExec};
use crate::state::StateStoreConfig;
use crate::stateful::{AggregateParts, ChangelogSpec, EventTimeKey, Evict, JoinSpec, OperatorSpec, SideSpec, TopNSpec};

/// Plans the streaming extension nodes.
#[derive(Debug)]
pub struct StreamingExtensionPlanner {
    config: StateStoreConfig,
}

/// The query planner of a streaming query: DataFusion's, with
/// [`StreamingExtensionPlanner`].
pub struct StreamingQueryPlanner {
    planner: DefaultPhysicalPlanner,
}

impl std::fmt::Debug for StreamingQueryPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamingQueryPlanner")
    }
}

impl StreamingQueryPlanner {
    /// A planner whose stateful operators keep state in stores of `config`
    /// (its partition count is the number of state partitions).
    pub fn new(config: StateStoreConfig) -> Self {
        Self {
            planner: DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(StreamingExtensionPlanner {
                config,
            })]),
        }
    }
}

#[async_trait]
impl QueryPlanner for StreamingQueryPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.planner.create_physical_plan(plan, session).await
    }
}

/// `input` partitioned on `spec`'s keys into `n` partitions (one partition
/// when there are no keys), and `spec` with that many state partitions. An
/// ordered input (an aggregate with `ORDER BY` in its arguments) stays
/// ordered within each partition.
pub(super) fn partition_on(
    input: Arc<dyn ExecutionPlan>,
    spec: OperatorSpec,
    n: usize,
) -> DFResult<(Arc<dyn ExecutionPlan>, OperatorSpec)> {
    let keys = spec.key_exprs();
    if keys.is_empty() {
        let input: Arc<dyn ExecutionPlan> = match input.output_partitioning().partition_count() {
            1 => input,
            _ if input.output_ordering().is_some() => {
                let ordering = input.output_ordering().cloned().ok_or_else(|| SluiceError::internal("ordering"))?;
                Arc::new(datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec::new(
                    ordering, input,
                ))
            }
            _ => Arc::new(CoalescePartitionsExec::new(input)),
        };
        return Ok((input, spec.with_state_partitions(1)));
    }
    let n = n.max(1);
    let mut repartition = RepartitionExec::try_new(input, Partitioning::Hash(keys, n))?;
    if repartition.input().output_ordering().is_some() {
        repartition = repartition.with_preserve_order();
    }
    Ok((Arc::new(repartition), spec.with_state_partitions(n)))
}

/// The event-time key's name as `EXPLAIN` shows it (`window.end` for a
/// window struct).
fn event_time_name(parts: &AggregateParts, et: &EventTimeKey) -> String {
    let (expr, name) = &parts.group_by.expr()[et.index];
    match expr.data_type(&parts.input_schema) {
        Ok(datafusion::arrow::datatypes::DataType::Struct(_)) => format!("{name}.end"),
        _ => name.clone(),
    }
}

impl StreamingExtensionPlanner {
    async fn aggregate(&self, node: &StreamingAggregateNode, session: &dyn Session) -> DFResult<StatefulExec> {
        // DataFusion plans the aggregation (with its input) as for a batch
        // query; its partial stage gives the aggregate functions and keys.
        let physical = session.create_physical_plan(&LogicalPlan::Aggregate(node.aggregate.clone())).await?;
        let (parts, pre) = AggregateParts::extract(&physical, &|p| p.downcast_ref::<StatefulExec>().is_some())?;
        let event_time = node.event_time.and_then(|index| {
            parts.group_by.expr().get(index).map(|(e, _)| EventTimeKey { index, expr: Arc::clone(e) })
        });
        let (input, spec) = match node.session {
            Some(session) => {
                // Sessions merge across rows of a key: the raw rows are
                // partitioned on the other keys.
                let spec = OperatorSpec::Session { parts, session, event_time, mode: node.mode, config: self.config };
                spec.create()?;
                partition_on(pre, spec, self.config.num_partitions)?
            }
            None => {
                // As DataFusion's batch plan: the partial aggregation runs on
                // the input's partitions, then its (few) partial states are
                // hash-partitioned on the keys to the state partitions. Late
                // rows are dropped before the partial stage.
                let mut input = pre;
                if let (Some(et), true) = (&event_time, node.mode != OutputMode::Complete) {
                    let name = event_time_name(&parts, et);
                    input = Arc::new(WatermarkFilterExec::new(node.id, et.clone(), node.downstream, name, input));
                }
                let partial = AggregateExec::try_new(
                    AggregateMode::Partial,
                    parts.group_by.clone(),
                    parts.aggr.clone(),
                    parts.filters.clone(),
                    input,
                    Arc::clone(&parts.input_schema),
                )?;
                let spec = OperatorSpec::Aggregate {
                    parts,
                    event_time,
                    mode: node.mode,
                    partial_input: true,
                    config: self.config,
                };
                spec.create()?;
                partition_on(Arc::new(partial), spec, self.config.num_partitions)?
            }
        };
        let schema = Arc::clone(node.aggregate.schema.inner());
        Ok(StatefulExec::new(node.id, node.id.to_string(), Arc::new(spec), node.downstream, input, schema))
    }

    fn dedup(&self, node: &StreamingDedupNode, input: Arc<dyn ExecutionPlan>) -> DFResult<StatefulExec> {
        let schema = input.schema();
        let event_time = node.event_time.map(|index| EventTimeKey {
            index,
            expr: Arc::new(Column::new(schema.field(index).name(), index)) as Arc<dyn PhysicalExpr>,
        });
        let spec = OperatorSpec::Dedup { schema, spec: node.spec.clone(), event_time, config: self.config };
        spec.create()?;
        let (input, spec) = partition_on(input, spec, self.config.num_partitions)?;
        let out = Arc::clone(node.schema.inner());
        Ok(StatefulExec::new(node.id, node.id.to_string(), Arc::new(spec), node.downstream, input, out))
    }

    fn join(
        &self,
        node: &StreamingJoinNode,
        inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
    ) -> DFResult<StatefulExec> {
        let [left, right] = inputs else {
            return Err(SluiceError::internal("a stream-stream join without two inputs").into());
        };
        let (ls, rs) = (node.left.schema().as_ref(), node.right.schema().as_ref());
        let joined = ls.join(rs)?;
        let filter = |e: &Option<datafusion::logical_expr::Expr>, schema: &datafusion::common::DFSchema| {
            e.as_ref().map(|e| session.create_physical_expr(e.clone(), schema)).transpose()
        };
        let side = |logical: &LogicalPlan,
                    plan: &Arc<dyn ExecutionPlan>,
                    schema: &datafusion::common::DFSchema,
                    keys: Vec<&datafusion::logical_expr::Expr>,
                    own: &Option<datafusion::logical_expr::Expr>,
                    time: Option<usize>,
                    rule: Option<EvictRule>|
         -> DFResult<SideSpec> {
            let key_names: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let keys = keys
                .into_iter()
                .map(|k| session.create_physical_expr(k.clone(), schema))
                .collect::<DFResult<Vec<_>>>()?;
            let evict = match rule {
                None => None,
                Some(EvictRule::Key { ordinal }) => {
                    let (Some(key), Some(name)) = (keys.get(ordinal), key_names.get(ordinal)) else {
                        return Err(SluiceError::internal("a join's event-time key is not among its keys").into());
                    };
                    Some(Evict {
                        time: Arc::clone(key),
                        offset_us: 0,
                        describe: format!("evict when {name} <= watermark"),
                    })
                }
                Some(EvictRule::Value { column, offset_us }) => {
                    let schema = plan.schema();
                    let name = schema
                        .fields()
                        .get(column)
                        .map(|f| f.name().clone())
                        .ok_or_else(|| SluiceError::internal("a join's event-time column is not in its input"))?;
                    Some(Evict {
                        time: Arc::new(Column::new(&name, column)) as Arc<dyn PhysicalExpr>,
                        offset_us,
                        describe: format!(
                            "evict when {name} <= watermark {} {} ms",
                            if offset_us < 0 { '-' } else { '+' },
                            offset_us.unsigned_abs() as f64 / 1000.0
                        ),
                    })
                }
            };
            let sources =
                super::analyze::stream_sources(logical).iter().map(|s| s.name.clone()).collect::<Vec<_>>().join(", ");
            Ok(SideSpec {
                sources,
                schema: plan.schema(),
                keys,
                key_names,
                filter: filter(own, schema)?,
                event_time: time,
                evict,
            })
        };
        let left_spec = side(
            &node.left,
            left,
            ls,
            node.on.iter().map(|(l, _)| l).collect(),
            &node.left_filter,
            node.left_time,
            node.left_evict,
        )?;
        let right_spec = side(
            &node.right,
            right,
            rs,
            node.on.iter().map(|(_, r)| r).collect(),
            &node.right_filter,
            node.right_time,
            node.right_evict,
        )?;
        let n = self.config.num_partitions.max(1);
        let left_keys = left_spec.keys.clone();
        let right_keys = right_spec.keys.clone();
        let spec = OperatorSpec::Join(Box::new(JoinSpec {
            join_type: node.join_type,
            joined_schema: JoinSpec::joined(&left.schema(), &right.schema()),
            left: left_spec,
            right: right_spec,
            pair_filter: filter(&node.pair_filter, &joined)?,
            output: Arc::clone(node.schema.inner()),
            config: self.config,
        }))
        .with_state_partitions(n);
        spec.create()?;
        let downstream = contains_stateful(left) || contains_stateful(right);
        let left = Arc::new(RepartitionExec::try_new(Arc::clone(left), Partitioning::Hash(left_keys, n))?);
        let right = Arc::new(RepartitionExec::try_new(Arc::clone(right), Partitioning::Hash(right_keys, n))?);
        let schema = Arc::clone(node.schema.inner());
        Ok(StatefulExec::new_join(node.id, Arc::new(spec), downstream, left, right, schema))
    }

    fn topn(
        &self,
        node: &StreamingTopNNode,
        input: Arc<dyn ExecutionPlan>,
        session: &dyn Session,
    ) -> DFResult<StatefulExec> {
        let logical = node.input.schema();
        let params = &node.window.params;
        let partition = params
            .partition_by
            .iter()
            .map(|e| session.create_physical_expr(e.clone(), logical))
            .collect::<DFResult<Vec<_>>>()?;
        let order = params
            .order_by
            .iter()
            .map(|s| {
                Ok(datafusion::physical_expr::PhysicalSortExpr {
                    expr: session.create_physical_expr(s.expr.clone(), logical)?,
                    options: datafusion::arrow::compute::SortOptions { descending: !s.asc, nulls_first: s.nulls_first },
                })
            })
            .collect::<DFResult<Vec<_>>>()?;
        let event_time = node.event_time.map(|index| EventTimeKey { index, expr: Arc::clone(&partition[index]) });
        let spec = OperatorSpec::TopN(Box::new(TopNSpec {
            schema: input.schema(),
            output: Arc::clone(node.schema.inner()),
            partition,
            partition_names: params.partition_by.iter().map(|e| e.to_string()).collect(),
            order,
            kind: node.kind,
            n: node.n,
            mode: node.mode,
            event_time,
            config: self.config,
        }));
        spec.create()?;
        let (input, spec) = partition_on(input, spec, self.config.num_partitions)?;
        let out = Arc::clone(node.schema.inner());
        Ok(StatefulExec::new(node.id, node.id.to_string(), Arc::new(spec), node.downstream, input, out))
    }

    fn changelog(&self, node: &StreamingChangelogNode, input: Arc<dyn ExecutionPlan>) -> DFResult<StatefulExec> {
        let spec = OperatorSpec::Changelog(Box::new(ChangelogSpec {
            schema: input.schema(),
            output: Arc::clone(node.schema.inner()),
            keys: node.keys.clone(),
            config: self.config,
        }));
        spec.create()?;
        let (input, spec) = partition_on(input, spec, self.config.num_partitions)?;
        let out = Arc::clone(node.schema.inner());
        Ok(StatefulExec::new(node.id, node.id.to_string(), Arc::new(spec), true, input, out))
    }

    fn limit(&self, node: &StreamingLimitNode, input: Arc<dyn ExecutionPlan>) -> DFResult<StatefulExec> {
        let config = StateStoreConfig { num_partitions: 1, ..self.config };
        let spec = OperatorSpec::Limit { skip: node.skip, fetch: node.fetch, config };
        let (input, spec) = partition_on(input, spec, 1)?;
        let schema = Arc::clone(node.input.schema().inner());
        Ok(StatefulExec::new(node.id, "limit".into(), Arc::new(spec), false, input, schema))
    }
}

#[async_trait]
impl ExtensionPlanner for StreamingExtensionPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DFResult<Option<Arc<dyn ExecutionPlan>>> {
        let any = node.as_any();
        let input =
            || physical_inputs.first().cloned().ok_or_else(|| SluiceError::internal("a streaming node without input"));
        if let Some(n) = any.downcast_ref::<StreamingAggregateNode>() {
            return Ok(Some(Arc::new(self.aggregate(n, session).await?)));
        }
        if let Some(n) = any.downcast_ref::<StreamingDedupNode>() {
            return Ok(Some(Arc::new(self.dedup(n, input()?)?)));
        }
        if let Some(n) = any.downcast_ref::<StreamingJoinNode>() {
            return Ok(Some(Arc::new(self.join(n, physical_inputs, session)?)));
        }
        if let Some(n) = any.downcast_ref::<StreamingTopNNode>() {
            return Ok(Some(Arc::new(self.topn(n, input()?, session)?)));
        }
        if let Some(n) = any.downcast_ref::<StreamingChangelogNode>() {
            return Ok(Some(Arc::new(self.changelog(n, input()?)?)));
        }
        if let Some(n) = any.downcast_ref::<StreamingOverWindowNode>() {
            return Ok(Some(Arc::new(plan_over_window(n, input()?, session, planning_ctx, self.config)?)));
        }
        if let Some(n) = any.downcast_ref::<GroupsWithStateNode>() {
            return Ok(Some(Arc::new(plan_groups_with_state(n, input()?, session, self.config)?)));
        }
        if let Some(n) = any.downcast_ref::<crate::arbitrary::transform::TransformNode>() {
            let exec = crate::physical::TransformExec::new(
                input()?,
                Arc::clone(&n.func),
                Arc::clone(&n.state),
                Arc::clone(n.schema.inner()),
            );
            return Ok(Some(Arc::new(exec)));
        }
        if let Some(n) = any.downcast_ref::<StreamingLimitNode>() {
            return Ok(Some(Arc::new(self.limit(n, input()?)?)));
        }
        if any.is::<WithinWatermarkNode>() {
            return Ok(Some(input()?));
        }
        Ok(None)
    }
}
