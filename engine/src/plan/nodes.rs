//! Logical extension nodes of a streaming plan: the stateful operations,
//! with what streaming needs to know about them (which key carries event
//! time, where the session window is, which operator feeds which), carried
//! through DataFusion's optimizer to the physical planner
//! ([`super::planner`]).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, UserDefinedLogicalNodeCore};

use crate::options::OutputMode;
use crate::stateful::{DedupSpec, SessionColumns};

/// A streaming aggregation (Spark's `StateStoreRestore`/`StateStoreSave`
/// pair): a DataFusion `Aggregate` whose groups live in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamingAggregateNode {
    /// The aggregation itself (its input is the node's input).
    pub aggregate: Aggregate,
    /// Operator id (innermost first); its state is under `state/<id>`.
    pub id: usize,
    /// The grouping key carrying event time, if any.
    pub event_time: Option<usize>,
    /// The session window among the grouping keys, if any.
    pub session: Option<SessionColumns>,
    /// Output mode the operator emits in.
    pub mode: OutputMode,
    /// Fed by another stateful operator.
    pub downstream: bool,
}

impl PartialOrd for StreamingAggregateNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal).or_else(|| self.id.partial_cmp(&other.id).filter(|o| o.is_ne()))
    }
}

impl UserDefinedLogicalNodeCore for StreamingAggregateNode {
    fn name(&self) -> &str {
        "StreamingAggregate"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![self.aggregate.input.as_ref()]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.aggregate.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.aggregate.group_expr.iter().chain(&self.aggregate.aggr_expr).cloned().collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let list = |v: &[Expr]| v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
        write!(
            f,
            "StreamingAggregate: operator={}, groupBy=[{}], aggr=[{}], mode={}",
            self.id,
            list(&self.aggregate.group_expr),
            list(&self.aggregate.aggr_expr),
            self.mode
        )
    }

    fn with_exprs_and_inputs(&self, mut exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let input = one_input(&mut inputs, self.name())?;
        let aggr = exprs.split_off(self.aggregate.group_expr.len());
        let aggregate = Aggregate::try_new(Arc::new(input), exprs, aggr)?;
        Ok(Self { aggregate, ..self.clone() })
    }
}

/// Streaming deduplication (Spark's `StreamingDeduplicateExec`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamingDedupNode {
    /// The rows deduplicated.
    pub input: LogicalPlan,
    /// Output schema (the `spec.outputs` columns of the input).
    pub schema: DFSchemaRef,
    /// Operator id (innermost first).
    pub id: usize,
    /// Key and output columns.
    pub spec: DedupSpec,
    /// The watermarked column of the input, if any.
    pub event_time: Option<usize>,
    /// Fed by another stateful operator.
    pub downstream: bool,
}

impl StreamingDedupNode {
    /// The node over `input`; its schema is that of the output columns.
    pub fn try_new(
        input: LogicalPlan,
        id: usize,
        spec: DedupSpec,
        event_time: Option<usize>,
        downstream: bool,
    ) -> Result<Self> {
        let schema = dedup_schema(&input, &spec)?;
        Ok(Self { input, schema, id, spec, event_time, downstream })
    }
}

fn dedup_schema(input: &LogicalPlan, spec: &DedupSpec) -> Result<DFSchemaRef> {
    let all = input.schema();
    if spec.outputs.is_empty() {
        return Ok(Arc::clone(all));
    }
    let fields = spec
        .outputs
        .iter()
        .map(|i| {
            let (q, f) = all.qualified_field(*i);
            (q.cloned(), Arc::clone(f))
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(DFSchema::new_with_metadata(fields, all.metadata().clone())?))
}

impl PartialOrd for StreamingDedupNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal).or_else(|| self.id.partial_cmp(&other.id).filter(|o| o.is_ne()))
    }
}

impl UserDefinedLogicalNodeCore for StreamingDedupNode {
    fn name(&self) -> &str {
        "StreamingDedup"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StreamingDedup: operator={}, keys={:?}", self.id, self.spec.keys)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let input = one_input(&mut inputs, self.name())?;
        Self::try_new(input, self.id, self.spec.clone(), self.event_time, self.downstream)
    }
}

/// `LIMIT` / `OFFSET` over a whole stream (Spark's `StreamingGlobalLimitExec`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct StreamingLimitNode {
    /// The rows limited.
    pub input: LogicalPlan,
    /// Operator id (after every other).
    pub id: usize,
    /// Rows skipped.
    pub skip: u64,
    /// Rows passed after them (`None`: all).
    pub fetch: Option<u64>,
}

impl UserDefinedLogicalNodeCore for StreamingLimitNode {
    fn name(&self) -> &str {
        "StreamingLimit"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StreamingLimit: skip={}, fetch={:?}", self.skip, self.fetch)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let input = one_input(&mut inputs, self.name())?;
        Ok(Self { input, ..self.clone() })
    }
}

/// Marks the input of Spark's `dropDuplicatesWithinWatermark`: the
/// deduplication right above it forgets a key once the watermark passes the
/// key's first event time plus the watermark delay. Plans as its input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct WithinWatermarkNode {
    /// The rows deduplicated.
    pub input: LogicalPlan,
}

impl WithinWatermarkNode {
    /// Whether `plan` is this marker.
    pub fn is(plan: &LogicalPlan) -> bool {
        matches!(plan, LogicalPlan::Extension(e) if e.node.as_any().is::<Self>())
    }
}

impl UserDefinedLogicalNodeCore for WithinWatermarkNode {
    fn name(&self) -> &str {
        "WithinWatermark"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WithinWatermark")
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(Self { input: one_input(&mut inputs, self.name())? })
    }
}

fn one_input(inputs: &mut Vec<LogicalPlan>, name: &str) -> Result<LogicalPlan> {
    match (inputs.pop(), inputs.is_empty()) {
        (Some(input), true) => Ok(input),
        _ => Err(DataFusionError::Internal(format!("{name} takes exactly one input"))),
    }
}
