//! Marking a streaming plan's stream-stream joins: each join of two streams
//! becomes a [`StreamingJoinNode`] carrying its equi-keys, its condition
//! split by side, and the rules by which the watermark evicts each side's
//! state (Spark's `StreamingSymmetricHashJoinHelper`).
//!
//! A side's state is evicted either by a join key that is event time (both
//! sides windowed and joined on the window), or by a time-range condition:
//! from `c.ts <= i.ts + INTERVAL '1' HOUR` and the watermark on `c.ts`, no
//! future click can match an impression with `i.ts < watermark - 1 hour`.
//! The conditions are solved as Spark's `StreamingJoinHelper` solves them.

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{Between, Cast};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::utils::split_conjunction_owned;
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Extension, Filter, Join, JoinType, LogicalPlan, Operator,
};
use std::sync::Arc;

use super::analyze::{self, is_streaming};
use super::join_node::{EvictRule, StreamingJoinNode};
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;

/// `plan` with its stream-stream joins as [`StreamingJoinNode`]s, numbered
/// from `*next_id` (inner joins first). A `WHERE` over an inner join of two
/// streams joins its condition.
pub fn mark_joins(plan: &LogicalPlan, mode: OutputMode, next_id: &mut usize) -> Result<LogicalPlan> {
    if !contains_stream_join(plan) {
        return Ok(plan.clone());
    }
    let plan = merge_where(plan)?;
    let inputs = plan.inputs().into_iter().map(|i| mark_joins(i, mode, next_id)).collect::<Result<Vec<_>>>()?;
    let plan = plan.with_new_exprs(plan.expressions(), inputs)?;
    let LogicalPlan::Join(join) = &plan else { return Ok(plan) };
    if !(is_streaming(&join.left) && is_streaming(&join.right)) {
        return Ok(plan);
    }
    // Aggregations and deduplications feeding the join are numbered first
    // and emit in append mode: each row once, when final.
    let mut sides = vec![];
    for (side, input) in [("left", &join.left), ("right", &join.right)] {
        let marked = super::wrap::mark_stateful(input, OutputMode::Append, next_id)?;
        check_windowed(side, &marked)?;
        sides.push(Arc::new(marked));
    }
    let (Some(right), Some(left)) = (sides.pop(), sides.pop()) else {
        return Err(SluiceError::internal("a join without two sides"));
    };
    let join = Join { left, right, ..join.clone() };
    let node = build(&join, mode, *next_id)?;
    *next_id += 1;
    Ok(LogicalPlan::Extension(Extension { node: Arc::new(node) }))
}

fn is_stream_join(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Join(j) if is_streaming(&j.left) && is_streaming(&j.right))
}

fn contains_stream_join(plan: &LogicalPlan) -> bool {
    is_stream_join(plan) || plan.inputs().into_iter().any(contains_stream_join)
}

/// `Filter(Join(inner))` of two streams as one join whose condition holds
/// the filter (`FROM a, b WHERE a.k = b.k`).
fn merge_where(plan: &LogicalPlan) -> Result<LogicalPlan> {
    let LogicalPlan::Filter(Filter { predicate, input, .. }) = plan else { return Ok(plan.clone()) };
    let LogicalPlan::Join(join) = input.as_ref() else { return Ok(plan.clone()) };
    if join.join_type != JoinType::Inner || !is_stream_join(input) {
        return Ok(plan.clone());
    }
    let filter = match &join.filter {
        Some(f) => f.clone().and(predicate.clone()),
        None => predicate.clone(),
    };
    Ok(LogicalPlan::Join(Join { filter: Some(filter), ..join.clone() }))
}

/// Which side of a join an expression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Nothing,
    Left,
    Right,
    Both,
}

fn reads(expr: &Expr, left: &DFSchema, right: &DFSchema) -> Reads {
    let (mut l, mut r) = (false, false);
    for c in expr.column_refs() {
        if left.has_column(c) {
            l = true;
        } else if right.has_column(c) {
            r = true;
        } else {
            return Reads::Both;
        }
    }
    match (l, r) {
        (false, false) => Reads::Nothing,
        (true, false) => Reads::Left,
        (false, true) => Reads::Right,
        (true, true) => Reads::Both,
    }
}

/// The join condition's conjuncts, `BETWEEN` written as its two comparisons
/// (as Spark reads it).
fn conjuncts(join: &Join) -> Vec<Expr> {
    let mut out: Vec<Expr> = join.on.iter().map(|(l, r)| l.clone().eq(r.clone())).collect();
    for c in join.filter.clone().map(split_conjunction_owned).unwrap_or_default() {
        match c {
            Expr::Between(Between { expr, negated: false, low, high }) => {
                out.push(expr.as_ref().clone().gt_eq(*low));
                out.push(expr.as_ref().clone().lt_eq(*high));
            }
            other => out.push(other),
        }
    }
    out
}

fn join_name(t: JoinType) -> &'static str {
    match t {
        JoinType::Inner => "INNER",
        JoinType::Left => "LEFT OUTER",
        JoinType::Right => "RIGHT OUTER",
        JoinType::Full => "FULL OUTER",
        JoinType::LeftSemi => "LEFT SEMI",
        JoinType::LeftAnti => "LEFT ANTI",
        JoinType::RightSemi => "RIGHT SEMI",
        JoinType::RightAnti => "RIGHT ANTI",
        JoinType::LeftMark => "LEFT MARK",
        JoinType::RightMark => "RIGHT MARK",
    }
}

/// The source names a side reads, for messages.
fn sources_of(plan: &LogicalPlan) -> String {
    analyze::stream_sources(plan).iter().map(|s| s.name.clone()).collect::<Vec<_>>().join(", ")
}

fn build(join: &Join, mode: OutputMode, id: usize) -> Result<StreamingJoinNode> {
    let name = join_name(join.join_type);
    if !matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full | JoinType::LeftSemi
    ) {
        return Err(SluiceError::unsupported(format!(
            "{name} join between two streams is not supported: stream-stream joins are INNER, LEFT/RIGHT/FULL OUTER \
             or LEFT SEMI"
        )));
    }
    if mode != OutputMode::Append && join.join_type != JoinType::Inner {
        return Err(SluiceError::unsupported(format!(
            "{name} join between two streams is not supported in {mode} output mode, only in append mode: its \
             NULL-padded rows are emitted once, when final; use output_mode = 'append'"
        )));
    }
    let (ls, rs) = (join.left.schema().as_ref(), join.right.schema().as_ref());
    let mut on = vec![];
    let (mut left_filter, mut right_filter, mut pair_filter) = (vec![], vec![], vec![]);
    for c in conjuncts(join) {
        if let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = &c {
            match (reads(left, ls, rs), reads(right, ls, rs)) {
                (Reads::Left, Reads::Right) => {
                    on.push(coerce_key(left, right, ls, rs)?);
                    continue;
                }
                (Reads::Right, Reads::Left) => {
                    on.push(coerce_key(right, left, ls, rs)?);
                    continue;
                }
                _ => {}
            }
        }
        match reads(&c, ls, rs) {
            Reads::Left => left_filter.push(c),
            Reads::Right => right_filter.push(c),
            Reads::Both | Reads::Nothing => pair_filter.push(c),
        }
    }
    if on.is_empty() {
        return Err(SluiceError::unsupported(format!(
            "a join between two streams needs an equality between the two sides (ON a.key = b.key) to partition its \
             state by; the {name} join reads {} and {} with none",
            sources_of(&join.left),
            sources_of(&join.right)
        )));
    }
    let left_time = watermark_column(&join.left);
    let right_time = watermark_column(&join.right);
    let key_rule = on.iter().position(|(l, r)| is_event_time_key(&join.left, l) || is_event_time_key(&join.right, r));
    let (left_evict, right_evict) = match key_rule {
        Some(ordinal) => (Some(EvictRule::Key { ordinal }), Some(EvictRule::Key { ordinal })),
        None => (
            value_rule(&pair_filter, &join.left, &join.right, left_time),
            value_rule(&pair_filter, &join.right, &join.left, right_time),
        ),
    };
    let needs = |left: bool, right: bool| (!left || left_evict.is_some()) && (!right || right_evict.is_some());
    let ok = match join.join_type {
        JoinType::Left | JoinType::LeftSemi => needs(true, false),
        JoinType::Right => needs(false, true),
        JoinType::Full => needs(true, true),
        _ => true,
    };
    if !ok {
        return Err(SluiceError::unsupported(format!(
            "{name} join between two streams is not supported without a watermark in the join keys, or a watermark \
             on both sides and a time-range condition bounding the side whose rows are emitted without a match: its \
             unmatched rows would never be final. Declare WATERMARK FOR the event-time columns of {} and {} and add \
             a range condition between them such as `AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '1' HOUR`, or join \
             on an event-time window of both. Watermarked columns: {}",
            sources_of(&join.left),
            sources_of(&join.right),
            watermarked(join)
        )));
    }
    let unbounded: Vec<String> = [("left", &left_evict, &join.left), ("right", &right_evict, &join.right)]
        .into_iter()
        .filter(|(_, rule, _)| rule.is_none())
        .map(|(side, _, plan)| format!("{side} ({})", sources_of(plan)))
        .collect();
    if !unbounded.is_empty() {
        tracing::warn!(
            operator = id,
            "stream-stream join: the state of its {} side is never evicted, so it grows without bound; declare \
             watermarks on both sources and add an event-time range condition (or join on a window) to bound it",
            unbounded.join(" and ")
        );
    }
    let conj = |v: Vec<Expr>| v.into_iter().reduce(Expr::and);
    Ok(StreamingJoinNode {
        left: join.left.as_ref().clone(),
        right: join.right.as_ref().clone(),
        on,
        left_filter: conj(left_filter),
        right_filter: conj(right_filter),
        pair_filter: conj(pair_filter),
        join_type: join.join_type,
        schema: Arc::clone(&join.schema),
        id,
        left_time,
        right_time,
        left_evict,
        right_evict,
    })
}

/// An aggregation feeding a join must close its groups by the watermark
/// (group by an event-time window), or its rows would never be final.
fn check_windowed(side: &str, plan: &LogicalPlan) -> Result<()> {
    if let LogicalPlan::Extension(e) = plan {
        if let Some(agg) = e.node.as_any().downcast_ref::<super::nodes::StreamingAggregateNode>() {
            if agg.event_time.is_none() {
                return Err(SluiceError::unsupported(format!(
                    "an aggregation feeding a stream-stream join (its {side} side) must group by an event-time \
                     window of a watermarked column, so that each of its rows is emitted once, when the watermark \
                     closes it; group the aggregation by TUMBLE/HOP window_start and window_end (or window(...)), \
                     or aggregate after the join"
                )));
            }
        }
    }
    plan.inputs().into_iter().try_for_each(|i| check_windowed(side, i))
}

/// An equi-key pair with both sides of one type (the common comparison type
/// when they differ), checked to be hashable.
fn coerce_key(l: &Expr, r: &Expr, ls: &DFSchema, rs: &DFSchema) -> Result<(Expr, Expr)> {
    let (lt, rt) = (l.get_type(ls)?, r.get_type(rs)?);
    let common = if lt == rt {
        lt.clone()
    } else {
        comparison_coercion(&lt, &rt).ok_or_else(|| {
            SluiceError::plan(format!(
                "join keys {l} ({lt}) and {r} ({rt}) cannot be compared; cast one to the other's type"
            ))
        })?
    };
    if RowConverter::new(vec![SortField::new(common.clone())]).is_err() {
        return Err(SluiceError::unsupported(format!(
            "join key {l} = {r} is of type {common}, which a stream-stream join cannot hash into its state; join on \
             scalar columns (numbers, strings, timestamps, or a window)"
        )));
    }
    let cast = |e: &Expr, t: &DataType| {
        if *t == common {
            e.clone()
        } else {
            Expr::Cast(Cast::new(Box::new(e.clone()), common.clone()))
        }
    };
    Ok((cast(l, &lt), cast(r, &rt)))
}

/// The watermarked columns of both sides, for messages.
fn watermarked(join: &Join) -> String {
    let cols: Vec<String> = [&join.left, &join.right]
        .into_iter()
        .flat_map(|p| watermark_column(p).map(|i| p.schema().qualified_field(i)))
        .map(|(q, f)| match q {
            Some(q) => format!("{q}.{}", f.name()),
            None => f.name().clone(),
        })
        .collect();
    if cols.is_empty() {
        "none (declare WATERMARK FOR on the sources)".into()
    } else {
        cols.join(", ")
    }
}

/// The side's event-time column: a source's watermarked column (renamed at
/// most), else a window (struct, or its `window_end`) over one, as a
/// windowed aggregation feeding the join emits it (a window row is emitted
/// once the watermark passes its end, so its end is the row's event time).
fn watermark_column(plan: &LogicalPlan) -> Option<usize> {
    let fields = plan.schema().fields();
    fields.iter().position(|f| analyze::column_is_watermark_column(plan, f.name())).or_else(|| {
        (0..fields.len()).find(|i| {
            let (q, f) = plan.schema().qualified_field(*i);
            is_event_time_key(plan, &Expr::Column(datafusion::common::Column::new(q.cloned(), f.name())))
        })
    })
}

/// Whether a join key is event time: the watermarked column, or a window
/// (struct, or its `window_end`) over it.
fn is_event_time_key(plan: &LogicalPlan, key: &Expr) -> bool {
    if analyze::expr_is_watermark_column(plan, key) {
        return true;
    }
    let windowed = match key.get_type(plan.schema()) {
        Ok(DataType::Struct(_)) => true,
        _ => matches!(key, Expr::Column(c) if c.name == "window_end"),
    };
    windowed && analyze::expr_derives_from_watermark(plan, key)
}

/// The state-eviction rule of `side` from the range conditions relating its
/// watermarked column to the watermarked column of `other`: evict a row when
/// its event time <= watermark + offset (the least offset over the
/// conditions).
fn value_rule(conditions: &[Expr], side: &LogicalPlan, other: &LogicalPlan, time: Option<usize>) -> Option<EvictRule> {
    let column = time?;
    let offset = conditions.iter().filter_map(|c| solve(c, side, other, column)).min()?;
    Some(EvictRule::Value { column, offset_us: offset })
}

/// Solve one comparison for the bound it puts on `side`'s time column given
/// the watermark on `other`'s (Spark's `getStateValueWatermark`): returns
/// the offset `c` such that no future row of `other` can match a row of
/// `side` whose time is <= watermark + c.
fn solve(cond: &Expr, side: &LogicalPlan, other: &LogicalPlan, column: usize) -> Option<i64> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = cond else { return None };
    // As `l < r` or `l <= r`.
    let (l, r, strict) = match op {
        Operator::Lt => (left, right, true),
        Operator::LtEq => (left, right, false),
        Operator::Gt => (right, left, true),
        Operator::GtEq => (right, left, false),
        _ => return None,
    };
    // Terms of l - r < 0.
    let mut terms = vec![];
    collect_terms(l, false, &mut terms)?;
    collect_terms(r, true, &mut terms)?;
    let (ss, os) = (side.schema(), other.schema());
    let mut constant: i64 = 0;
    let (mut own, mut theirs) = (None, None);
    for t in terms {
        match t {
            Term::Constant(c) => constant = constant.checked_add(c)?,
            Term::Column(c, negated) => {
                if ss.has_column(&c) {
                    if own.is_some() {
                        return None;
                    }
                    own = Some((c, negated));
                } else if os.has_column(&c) {
                    if theirs.is_some() {
                        return None;
                    }
                    theirs = Some((c, negated));
                } else {
                    return None;
                }
            }
        }
    }
    let ((own, own_negated), (theirs, theirs_negated)) = (own?, theirs?);
    // `-own + theirs + c < 0`: own > theirs + c > watermark + c.
    if !own_negated || theirs_negated {
        return None;
    }
    if ss.index_of_column(&own).ok()? != column {
        return None;
    }
    // Only the event-time column of `other` is known to exceed the watermark.
    let other_time = watermark_column(other)?;
    if os.index_of_column(&theirs).ok()? != other_time {
        return None;
    }
    // `own >= theirs + c` leaves `own = watermark + c` possible: keep it.
    Some(if strict { constant } else { constant - 1000 })
}

enum Term {
    Column(datafusion::common::Column, bool),
    Constant(i64),
}

/// The additive terms of a time expression (columns, and intervals in
/// microseconds), each negated when `negate`; `None` when it is not one.
fn collect_terms(e: &Expr, negate: bool, out: &mut Vec<Term>) -> Option<()> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Plus, right }) => {
            collect_terms(left, negate, out)?;
            collect_terms(right, negate, out)
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Minus, right }) => {
            collect_terms(left, negate, out)?;
            collect_terms(right, !negate, out)
        }
        Expr::Negative(inner) => collect_terms(inner, !negate, out),
        Expr::Alias(a) => collect_terms(&a.expr, negate, out),
        Expr::Cast(Cast { expr, field }) if matches!(field.data_type(), DataType::Timestamp(_, _)) => {
            collect_terms(expr, negate, out)
        }
        Expr::Column(c) => {
            out.push(Term::Column(c.clone(), negate));
            Some(())
        }
        Expr::Literal(v, _) => {
            let us = interval_micros(v)?;
            out.push(Term::Constant(if negate { us.checked_neg()? } else { us }));
            Some(())
        }
        _ => None,
    }
}

/// An interval literal in microseconds (month intervals have no fixed length).
fn interval_micros(v: &ScalarValue) -> Option<i64> {
    const DAY_US: i64 = 86_400_000_000;
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            (i.days as i64).checked_mul(DAY_US)?.checked_add(i.nanoseconds / 1000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            (i.days as i64).checked_mul(DAY_US)?.checked_add(i.milliseconds as i64 * 1000)
        }
        ScalarValue::DurationSecond(Some(s)) => s.checked_mul(1_000_000),
        ScalarValue::DurationMillisecond(Some(ms)) => ms.checked_mul(1000),
        ScalarValue::DurationMicrosecond(Some(us)) => Some(*us),
        ScalarValue::DurationNanosecond(Some(ns)) => Some(ns / 1000),
        _ => None,
    }
}
