//! [`StreamingTopNNode`]: a ranking window function over a stream, bounded
//! by a filter on its rank (Flink's Top-N), as a logical extension node.
//!
//! The shape recognised is DataFusion's plan of
//! `SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (PARTITION BY k ORDER BY
//! x DESC) AS rn FROM s) WHERE rn <= N` (also `RANK`, `DENSE_RANK`, `rn < N`
//! and `rn = 1`): a `Window` node with that one function, under a
//! projection naming its column and a filter bounding it. The node takes
//! the `Window`'s place (same schema); the filter above it stays, a no-op.

use std::cmp::Ordering;
use std::fmt;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, ScalarValue};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, UserDefinedLogicalNodeCore, Window,
};

use super::analyze;
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::stateful::RankKind;

/// A Top-N over a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamingTopNNode {
    /// The ranked rows.
    pub input: LogicalPlan,
    /// The `Window` node's schema: the input's columns, then the rank.
    pub schema: DFSchemaRef,
    /// Operator number.
    pub id: usize,
    /// The ranking function call (its `PARTITION BY` and `ORDER BY`).
    pub window: WindowFunction,
    /// Which function.
    pub kind: RankKind,
    /// The bound on the rank.
    pub n: u64,
    /// The `PARTITION BY` expression carrying event time (a window).
    pub event_time: Option<usize>,
    /// Output mode.
    pub mode: OutputMode,
    /// Whether a stateful operator reads its output.
    pub downstream: bool,
}

impl PartialOrd for StreamingTopNNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal).or_else(|| self.id.partial_cmp(&other.id).filter(|o| o.is_ne()))
    }
}

impl UserDefinedLogicalNodeCore for StreamingTopNNode {
    fn name(&self) -> &str {
        "StreamingTopN"
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
        write!(f, "StreamingTopN: operator={}, {}() <= {}, mode={}", self.id, self.kind.name(), self.n, self.mode)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> DFResult<Self> {
        let input = inputs.pop().ok_or_else(|| SluiceError::internal("StreamingTopN without input"))?;
        Ok(Self { input, ..self.clone() })
    }
}

/// Whether `window` (found under `root`) is a Top-N: one ranking function
/// with an `ORDER BY`, its rank bounded by a filter above it. Other window
/// functions run as an over-window operator.
pub fn is_topn(window: &Window, root: &LogicalPlan) -> bool {
    let column = window.schema.field(window.schema.fields().len() - 1).name().clone();
    is_ranking(window) && rank_bound(root, &column).is_some()
}

/// Whether `window` computes one ranking function with an `ORDER BY`, or
/// one that is not an aggregate function (all of which the Top-N operator
/// either runs or refuses by name).
pub fn is_ranking(window: &Window) -> bool {
    let [Expr::WindowFunction(wf)] = window.window_expr.as_slice() else { return false };
    is_rank_function(wf.fun.name())
}

/// Whether `name` is `ROW_NUMBER`, `RANK` or `DENSE_RANK`.
pub fn is_rank_function(name: &str) -> bool {
    matches!(name.to_ascii_lowercase().as_str(), "row_number" | "rank" | "dense_rank")
}

/// The Top-N node for `window` (found under `root`, the query's plan above
/// it), reading `input` (its input, with its own stateful operators marked).
pub fn topn_node(
    window: &Window,
    root: &LogicalPlan,
    input: LogicalPlan,
    id: usize,
    mode: OutputMode,
    downstream: bool,
) -> Result<StreamingTopNNode> {
    let only = "only ROW_NUMBER(), RANK() and DENSE_RANK() bounded by a filter on their rank (a Top-N: WHERE rn <= N \
                over a subquery) run over a stream";
    let [Expr::WindowFunction(wf)] = window.window_expr.as_slice() else {
        let names: Vec<String> = window.window_expr.iter().map(|e| e.schema_name().to_string()).collect();
        return Err(SluiceError::unsupported(format!(
            "window functions [{}] over a stream: {only}, one per query",
            names.join(", ")
        )));
    };
    let name = wf.fun.name().to_ascii_lowercase();
    let kind = match name.as_str() {
        "row_number" => RankKind::RowNumber,
        "rank" => RankKind::Rank,
        "dense_rank" => RankKind::DenseRank,
        other => {
            return Err(SluiceError::unsupported(format!(
                "window function {other}() over a stream is not supported: {only}"
            )));
        }
    };
    if wf.params.order_by.is_empty() {
        return Err(SluiceError::unsupported(format!(
            "{name}() over a stream needs an ORDER BY in its OVER clause: the rank orders the rows of each partition"
        )));
    }
    let column = window.schema.field(window.schema.fields().len() - 1).name().clone();
    let n = rank_bound(root, &column).ok_or_else(|| {
        SluiceError::unsupported(format!(
            "{name}() over a stream needs a filter bounding its rank (a Top-N: SELECT * FROM (SELECT ..., {name}() OVER \
             (...) AS rn FROM ...) WHERE rn <= N): without one every row would be kept in state for ever"
        ))
    })?;
    // The window's end closes it: a window struct, else a bound named like
    // its end (`window_end`), else the first event-time key.
    let timed: Vec<(usize, &Expr)> = wf
        .params
        .partition_by
        .iter()
        .enumerate()
        .filter(|(_, e)| analyze::expr_derives_from_watermark(&window.input, e))
        .collect();
    let input_schema = window.input.schema();
    let is_struct = |e: &Expr| {
        e.get_type(input_schema.as_ref()).is_ok_and(|t| matches!(t, datafusion::arrow::datatypes::DataType::Struct(_)))
    };
    let event_time = timed
        .iter()
        .find(|(_, e)| is_struct(e))
        .or_else(|| timed.iter().find(|(_, e)| e.schema_name().to_string().to_ascii_lowercase().contains("end")))
        .or_else(|| timed.first())
        .map(|(i, _)| *i);
    match (mode, event_time) {
        (OutputMode::Complete, _) => {
            return Err(SluiceError::unsupported(format!(
                "a Top-N ({name}() <= {n}) over a stream runs in update or append output mode, not complete; use \
                 output_mode = 'update'"
            )));
        }
        (OutputMode::Append, None) => {
            return Err(SluiceError::unsupported(format!(
                "a Top-N ({name}() <= {n}) in append output mode emits each window's ranking once its window closes, \
                 so it must be partitioned by an event-time window (with a watermark); partition by the window, or \
                 use output_mode = 'update' (the changed ranks as they change)"
            )));
        }
        _ => {}
    }
    Ok(StreamingTopNNode {
        input,
        schema: window.schema.clone(),
        id,
        window: (**wf).clone(),
        kind,
        n,
        event_time,
        mode,
        downstream,
    })
}

/// The bound a filter in `plan` puts on the window column `column` (or a
/// projection's alias of it): `<= N`, `< N + 1`, `= 1`, either way round.
fn rank_bound(plan: &LogicalPlan, column: &str) -> Option<u64> {
    let mut names = vec![column.to_string()];
    let _ = plan.apply(|n| {
        if let LogicalPlan::Projection(p) = n {
            for e in &p.expr {
                if let Expr::Alias(a) = e {
                    if matches!(a.expr.as_ref(), Expr::Column(c) if c.name == column) {
                        names.push(a.name.clone());
                    }
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut bound: Option<u64> = None;
    let _ = plan.apply(|n| {
        if let LogicalPlan::Filter(f) = n {
            for conjunct in datafusion::logical_expr::utils::split_conjunction(&f.predicate) {
                if let Some(b) = bound_of(conjunct, &names) {
                    bound = Some(bound.map_or(b, |old| old.min(b)));
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    bound
}

fn bound_of(expr: &Expr, names: &[String]) -> Option<u64> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else { return None };
    let is_rank = |e: &Expr| matches!(e, Expr::Column(c) if names.contains(&c.name));
    let value = |e: &Expr| match e {
        Expr::Literal(v, _) => v.cast_to(&datafusion::arrow::datatypes::DataType::Int64).ok().and_then(|v| match v {
            ScalarValue::Int64(Some(n)) => Some(n),
            _ => None,
        }),
        _ => None,
    };
    let (op, v) = match (is_rank(left), is_rank(right)) {
        (true, false) => (*op, value(right)?),
        (false, true) => (op.swap()?, value(left)?),
        _ => return None,
    };
    let n = match op {
        Operator::LtEq => v,
        Operator::Lt => v - 1,
        Operator::Eq if v == 1 => 1,
        _ => return None,
    };
    (n >= 1).then_some(n as u64)
}
