//! [`StreamingOverWindowNode`]: window functions over a stream that are
//! not a Top-N (`AVG(final) OVER (PARTITION BY seller ORDER BY ts ROWS
//! BETWEEN 10 PRECEDING AND CURRENT ROW)`, Nexmark q6), or any window
//! function over the changing rows of an update-mode aggregation. Runs as
//! [`StreamingOverWindow`](crate::stateful::StreamingOverWindow), in
//! update mode.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::common::DFSchemaRef;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore, Window, WindowFunctionDefinition};
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::physical::StatefulExec;
use crate::state::StateStoreConfig;
use crate::stateful::{OperatorSpec, OverWindowSpec};

/// Window functions over a stream, evaluated over whole partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamingOverWindowNode {
    /// The rows (a changelog when `signed`).
    pub input: LogicalPlan,
    /// The `Window` node's schema: the input's data columns, then one per
    /// window function.
    pub schema: DFSchemaRef,
    /// Operator number.
    pub id: usize,
    /// The window function calls.
    pub window_expr: Vec<Expr>,
    /// The input ends with a changelog sign column.
    pub signed: bool,
    /// Whether a stateful operator reads its output.
    pub downstream: bool,
}

impl PartialOrd for StreamingOverWindowNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal).or_else(|| self.id.partial_cmp(&other.id).filter(|o| o.is_ne()))
    }
}

impl UserDefinedLogicalNodeCore for StreamingOverWindowNode {
    fn name(&self) -> &str {
        "StreamingOverWindow"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// The window function calls, so that DataFusion's analyzer coerces
    /// their arguments (`AVG` of an integer reads it as a float).
    fn expressions(&self) -> Vec<Expr> {
        self.window_expr.clone()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let list = self.window_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
        write!(f, "StreamingOverWindow: operator={}, [{list}]", self.id)
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> DFResult<Self> {
        let input = inputs.pop().ok_or_else(|| SluiceError::internal("StreamingOverWindow without input"))?;
        Ok(Self { input, window_expr: exprs, ..self.clone() })
    }
}

/// The node for `window` (of the original plan) over `input` (its input
/// marked; a changelog when `signed`).
pub fn over_window_node(
    window: &Window,
    input: LogicalPlan,
    id: usize,
    mode: OutputMode,
    signed: bool,
    downstream: bool,
) -> Result<StreamingOverWindowNode> {
    let names = || window.window_expr.iter().map(|e| e.schema_name().to_string()).collect::<Vec<_>>().join(", ");
    let specs: Vec<_> = window
        .window_expr
        .iter()
        .map(|e| match e.clone().unalias_nested().data {
            Expr::WindowFunction(f) => {
                // Aggregates over any frame; a ranking function only as the
                // Top-N of an update-mode aggregation's changing rows.
                let allowed = match &f.fun {
                    WindowFunctionDefinition::AggregateUDF(_) => true,
                    WindowFunctionDefinition::WindowUDF(u) => signed && super::topn_node::is_rank_function(u.name()),
                };
                if !allowed {
                    return Err(SluiceError::unsupported(format!(
                        "window function {}() over a stream is not supported: only aggregate functions (AVG, SUM, \
                         COUNT, MIN, MAX ... OVER (PARTITION BY ... ORDER BY ...)) in update output mode, and \
                         ROW_NUMBER(), RANK() and DENSE_RANK() bounded by a filter on their rank (a Top-N: WHERE rn \
                         <= N over a subquery) run over a stream",
                        f.fun.name()
                    )));
                }
                Ok((f.params.partition_by.clone(), f.params.order_by.clone()))
            }
            other => Err(SluiceError::unsupported(format!("{other} over a stream is not a window function call"))),
        })
        .collect::<Result<_>>()?;
    if mode != OutputMode::Update {
        return Err(SluiceError::unsupported(format!(
            "window functions [{}] over a stream run in update output mode, not {mode}: a new row can change the \
             values of other rows of its partition, which are emitted again; use output_mode = 'update' (for the \
             top rows per window in append mode, filter ROW_NUMBER() by rank over a window-partitioned subquery)",
            names()
        )));
    }
    if specs.windows(2).any(|w| w[0] != w[1]) {
        return Err(SluiceError::unsupported(format!(
            "window functions [{}] over a stream must share one PARTITION BY and ORDER BY; split them into queries",
            names()
        )));
    }
    Ok(StreamingOverWindowNode {
        input,
        schema: Arc::clone(&window.schema),
        id,
        window_expr: window.window_expr.clone(),
        signed,
        downstream,
    })
}

/// The physical operator of `node`, reading `input`.
pub fn plan_over_window(
    node: &StreamingOverWindowNode,
    input: Arc<dyn ExecutionPlan>,
    session: &dyn Session,
    planning_ctx: &PhysicalPlanningContext,
    config: StateStoreConfig,
) -> DFResult<StatefulExec> {
    let logical = node.input.schema();
    let props = session.execution_props();
    let windows = node
        .window_expr
        .iter()
        .map(|e| datafusion::physical_planner::create_window_expr(e, logical, props, planning_ctx))
        .collect::<DFResult<Vec<_>>>()?;
    let first = windows.first().ok_or_else(|| SluiceError::internal("an over-window node without a function"))?;
    let partition = first.partition_by().to_vec();
    let order: Vec<PhysicalSortExpr> = first.order_by().to_vec();
    let partition_names = match node.window_expr.first().map(|e| e.clone().unalias_nested().data) {
        Some(Expr::WindowFunction(f)) => f.params.partition_by.iter().map(|e| e.to_string()).collect(),
        _ => vec![],
    };
    let spec = OperatorSpec::OverWindow(Box::new(OverWindowSpec {
        schema: input.schema(),
        output: Arc::clone(node.schema.inner()),
        signed: node.signed,
        partition,
        partition_names,
        order,
        windows,
        config,
    }));
    spec.create()?;
    let (input, spec) = super::planner::partition_on(input, spec, config.num_partitions)?;
    let out = Arc::clone(node.schema.inner());
    Ok(StatefulExec::new(node.id, node.id.to_string(), Arc::new(spec), node.downstream, input, out))
}
