//! [`StreamingJoinNode`]: a join of two streams as a logical extension node
//! (Spark's `StreamingSymmetricHashJoinExec`), made by [`super::join`].

use std::cmp::Ordering;
use std::fmt;

use datafusion::common::DFSchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, UserDefinedLogicalNodeCore};

/// When the watermark evicts a row of one side's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum EvictRule {
    /// The join key `ordinal` is event time (a window, or the watermarked
    /// column): evict when it (a window's end) <= watermark.
    Key {
        /// Position among the equi-keys.
        ordinal: usize,
    },
    /// A range condition bounds the side's watermarked column `column` by the
    /// other side's: evict when it <= watermark + `offset_us`.
    Value {
        /// The side's watermarked column.
        column: usize,
        /// Offset to the watermark, in microseconds.
        offset_us: i64,
    },
}

/// A join of two streams, with its condition split as the symmetric hash
/// join runs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamingJoinNode {
    /// Left input.
    pub left: LogicalPlan,
    /// Right input.
    pub right: LogicalPlan,
    /// Equi-keys: (over left, over right), of one type per pair.
    pub on: Vec<(Expr, Expr)>,
    /// Conjuncts reading only the left side (a left row failing them never
    /// matches).
    pub left_filter: Option<Expr>,
    /// Conjuncts reading only the right side.
    pub right_filter: Option<Expr>,
    /// The rest of the condition, applied to matched pairs.
    pub pair_filter: Option<Expr>,
    /// Join type (inner, left/right/full outer, left semi).
    pub join_type: JoinType,
    /// Output schema (the join's).
    pub schema: DFSchemaRef,
    /// Operator id; its state is under `state/<id>`.
    pub id: usize,
    /// The left side's watermarked column (rows at or below the watermark are late).
    pub left_time: Option<usize>,
    /// The right side's watermarked column.
    pub right_time: Option<usize>,
    /// How the watermark evicts left state (`None`: never).
    pub left_evict: Option<EvictRule>,
    /// How the watermark evicts right state.
    pub right_evict: Option<EvictRule>,
}

impl PartialOrd for StreamingJoinNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal).or_else(|| self.id.partial_cmp(&other.id).filter(|o| o.is_ne()))
    }
}

impl UserDefinedLogicalNodeCore for StreamingJoinNode {
    fn name(&self) -> &str {
        "StreamingJoin"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.left, &self.right]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        let mut out: Vec<Expr> = self.on.iter().flat_map(|(l, r)| [l.clone(), r.clone()]).collect();
        out.extend([&self.left_filter, &self.right_filter, &self.pair_filter].into_iter().flatten().cloned());
        out
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let on: Vec<String> = self.on.iter().map(|(l, r)| format!("{l} = {r}")).collect();
        write!(f, "StreamingJoin: operator={}, type={}, on=[{}]", self.id, self.join_type, on.join(", "))?;
        if let Some(p) = &self.pair_filter {
            write!(f, ", filter={p}")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let (Some(right), Some(left), true) = (inputs.pop(), inputs.pop(), inputs.is_empty()) else {
            return Err(DataFusionError::Internal("StreamingJoin takes exactly two inputs".into()));
        };
        let mut exprs = exprs.into_iter();
        let mut on = vec![];
        for _ in 0..self.on.len() {
            let (Some(l), Some(r)) = (exprs.next(), exprs.next()) else {
                return Err(DataFusionError::Internal("StreamingJoin given too few key expressions".into()));
            };
            on.push((l, r));
        }
        let mut next = |present: bool| if present { exprs.next() } else { None };
        let left_filter = next(self.left_filter.is_some());
        let right_filter = next(self.right_filter.is_some());
        let pair_filter = next(self.pair_filter.is_some());
        Ok(Self { left, right, on, left_filter, right_filter, pair_filter, ..self.clone() })
    }
}
