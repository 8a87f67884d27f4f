//! Marking a streaming plan's stateful operations: each aggregation,
//! `DISTINCT` or Top-N (a ranking window function) over a stream becomes a
//! logical extension node
//! ([`super::nodes`]) that carries what streaming needs to know about it.
//!
//! A stateful query has the shape `post(stateful(pre))`: `pre` is stateless
//! or another stateful chain, and `post` is made of projections, filters
//! (HAVING), sorts and limits. Operators are numbered innermost first.

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Extension, LogicalPlan, Projection};
use std::sync::Arc;

use super::analyze::{self, is_streaming};
use super::changelog;
use super::groups_with_state_node::GroupsWithStateNode;
use super::keys::{dedup_spec, event_time_group, session_columns};
use super::nodes::{StreamingAggregateNode, StreamingDedupNode};
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;

fn is_stateful(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(a) => is_streaming(&a.input),
        LogicalPlan::Distinct(d) => is_streaming(d.input()),
        LogicalPlan::Window(w) => is_streaming(&w.input),
        LogicalPlan::Extension(e) => e.node.as_any().is::<GroupsWithStateNode>(),
        _ => false,
    }
}

fn contains_stateful(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|n| {
        found |= is_stateful(n);
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// Whether `plan` holds a stream-stream join (a stateful operator).
fn contains_join(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|n| {
        found |= matches!(n, LogicalPlan::Extension(e) if e.node.as_any().is::<super::join_node::StreamingJoinNode>());
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// The outermost stateful node of `plan`, reached through projections,
/// filters, sorts and limits only.
fn find(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    if is_stateful(plan) {
        return Ok(Some(plan.clone()));
    }
    match plan {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_) => find(plan.inputs()[0]),
        other if contains_stateful(other) => Err(SluiceError::unsupported(format!(
            "an aggregation or DISTINCT below {} is not supported in a streaming query yet; only projections, \
             filters, ORDER BY and LIMIT may follow it",
            other.display()
        ))),
        _ => Ok(None),
    }
}

/// `plan` with its stateful operations as extension nodes, numbered from
/// `*next_id` (innermost first). `mode` is the mode the outermost one
/// emits in (the ones feeding it emit in append mode).
pub fn mark_stateful(plan: &LogicalPlan, mode: OutputMode, next_id: &mut usize) -> Result<LogicalPlan> {
    mark(plan, mode, 0, next_id)
}

fn mark(plan: &LogicalPlan, mode: OutputMode, depth: usize, next_id: &mut usize) -> Result<LogicalPlan> {
    let Some(original) = find(plan)? else { return Ok(plan.clone()) };
    let input = original.inputs()[0];
    // An aggregation or window function over an unwindowed aggregation, in
    // update or complete mode: the inner one emits its changing rows in
    // update mode, as a changelog the outer one retracts and applies.
    let retract = mode != OutputMode::Append
        && matches!(original, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_))
        && changelog::emits_changes(input);
    let before = *next_id;
    let inner_mode = if retract { OutputMode::Update } else { OutputMode::Append };
    let mut inner = mark(input, inner_mode, depth + 1, next_id)?;
    if retract {
        inner = changelog::thread_sign(&inner, *next_id)?;
        *next_id += 1;
    }
    let downstream = *next_id > before || contains_join(input);
    if downstream && mode != OutputMode::Append && analyze::contains_streaming_aggregate(input) && !retract {
        return Err(SluiceError::unsupported(format!(
            "an aggregation feeding another stateful operator runs in append mode only (as in Spark): in {mode} \
             mode it would emit changing rows that the next operator cannot retract; use output_mode = 'append'"
        )));
    }
    let id = *next_id;
    let extension =
        |node: Arc<dyn datafusion::logical_expr::UserDefinedLogicalNode>| LogicalPlan::Extension(Extension { node });
    let replacement = match &original {
        LogicalPlan::Aggregate(agg) => {
            let event_time = event_time_group(agg);
            if depth > 0 && event_time.is_none() && mode != OutputMode::Update {
                return Err(SluiceError::unsupported(
                    "an aggregation feeding another stateful operator must group by an event-time window with a \
                     watermark (its rows are emitted once the watermark closes them), and the query must run in \
                     append output mode; group the inner aggregation by a window of the watermarked column and use \
                     output_mode = 'append'",
                ));
            }
            let session = session_columns(agg);
            let LogicalPlan::Aggregate(aggregate) = original.with_new_exprs(original.expressions(), vec![inner])?
            else {
                return Err(SluiceError::internal("an aggregation rebuilt as another node"));
            };
            if retract {
                let (aggregate, project) = changelog::retracting_aggregate(&aggregate)?;
                let event_time = event_time_group(&aggregate);
                let node = StreamingAggregateNode { aggregate, id, event_time, session: None, mode, downstream };
                LogicalPlan::Projection(Projection::try_new(project, Arc::new(extension(Arc::new(node))))?)
            } else {
                extension(Arc::new(StreamingAggregateNode { aggregate, id, event_time, session, mode, downstream }))
            }
        }
        LogicalPlan::Distinct(d) => {
            let input = d.input();
            let event_time =
                input.schema().fields().iter().position(|f| analyze::column_is_watermark_column(input, f.name()));
            let spec = dedup_spec(d, event_time)?;
            extension(Arc::new(StreamingDedupNode::try_new(inner, id, spec, event_time, downstream)?))
        }
        LogicalPlan::Window(w)
            if super::topn_node::is_ranking(w) && !(retract && super::topn_node::is_topn(w, plan)) =>
        {
            extension(Arc::new(super::topn_node::topn_node(w, plan, inner, id, mode, downstream)?))
        }
        LogicalPlan::Window(w) => {
            extension(Arc::new(super::over_window_node::over_window_node(w, inner, id, mode, retract, downstream)?))
        }
        LogicalPlan::Extension(e) if e.node.as_any().is::<GroupsWithStateNode>() => {
            let Some(node) = e.node.as_any().downcast_ref::<GroupsWithStateNode>() else {
                return Err(SluiceError::internal("a groups-with-state node of another type"));
            };
            extension(Arc::new(GroupsWithStateNode { input: inner, id, downstream, ..node.clone() }))
        }
        other => return Err(SluiceError::internal(format!("unexpected stateful node {}", other.display()))),
    };
    *next_id += 1;
    let marked = plan
        .clone()
        .transform_down(|n| {
            Ok(if n == original {
                Transformed::new(replacement.clone(), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(n)
            })
        })?
        .data;
    Ok(marked)
}
