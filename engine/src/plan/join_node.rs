//! [`StreamingJoinNode`]: a join of two streams as a logical extension node
//! (Spark's `StreamingSymmetricHashJoinExec`), made by [`super::join`].

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{build_join_schema, Expr, JoinType, LogicalPlan, UserDefinedLogicalNodeCore};

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
        // The optimizer may have pruned the inputs' columns (see
        // `necessary_children_exprs`): the watermarked columns move.
        let mut node = Self { on, left_filter, right_filter, pair_filter, ..self.clone() };
        if left.schema() != self.left.schema() || right.schema() != self.right.schema() {
            node.left_time = moved(self.left_time, &self.left, &left)?;
            node.right_time = moved(self.right_time, &self.right, &right)?;
            node.left_evict = moved_rule(self.left_evict, &self.left, &left)?;
            node.right_evict = moved_rule(self.right_evict, &self.right, &right)?;
            node.schema = Arc::new(build_join_schema(left.schema(), right.schema(), &self.join_type)?);
        }
        node.left = left;
        node.right = right;
        Ok(node)
    }

    /// The input columns the output columns need, and those the join
    /// itself reads (its watermarked columns; the columns of its keys and
    /// conditions the optimizer adds itself). The join's state keeps only
    /// these: a query that selects few columns of a wide stream stores few.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let n_left = self.left.schema().fields().len();
        let (mut left, mut right) = (vec![], vec![]);
        for &i in output_columns {
            match self.join_type {
                JoinType::LeftSemi => left.push(i),
                _ if i < n_left => left.push(i),
                _ => right.push(i - n_left),
            }
        }
        left.extend(self.left_time);
        right.extend(self.right_time);
        if let Some(EvictRule::Value { column, .. }) = self.left_evict {
            left.push(column);
        }
        if let Some(EvictRule::Value { column, .. }) = self.right_evict {
            right.push(column);
        }
        for v in [&mut left, &mut right] {
            v.sort_unstable();
            v.dedup();
        }
        Some(vec![left, right])
    }
}

/// Where column `index` of `old` is in `new` (by qualified name).
fn moved(index: Option<usize>, old: &LogicalPlan, new: &LogicalPlan) -> Result<Option<usize>> {
    let Some(i) = index else { return Ok(None) };
    let (qualifier, field) = old.schema().qualified_field(i);
    new.schema().index_of_column_by_name(qualifier, field.name()).map(Some).ok_or_else(|| {
        DataFusionError::Internal(format!("a stream-stream join's watermarked column {} was pruned", field.name()))
    })
}

fn moved_rule(rule: Option<EvictRule>, old: &LogicalPlan, new: &LogicalPlan) -> Result<Option<EvictRule>> {
    Ok(match rule {
        Some(EvictRule::Value { column, offset_us }) => {
            let column = moved(Some(column), old, new)?
                .ok_or_else(|| DataFusionError::Internal("a join's eviction column vanished".into()))?;
            Some(EvictRule::Value { column, offset_us })
        }
        r => r,
    })
}
