//! What a streaming query is made of, and whether an output mode can run it.
//!
//! The rules are Spark's `UnsupportedOperationChecker`, with messages that
//! name the operator, the mode and the fix (see SQL.md, "What each output
//! mode allows").

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};

use crate::connector::SourceDefinition;
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::stream_table::StreamTable;

/// The streaming-relevant facts about a query's logical plan.
#[derive(Debug, Default, Clone)]
pub struct QueryAnalysis {
    /// Stream sources read by the query (each once).
    pub sources: Vec<SourceDefinition>,
    /// An aggregation over a stream.
    pub aggregate: bool,
    /// The aggregation groups by an event-time column carrying a watermark.
    pub event_time_aggregate: bool,
    /// `SELECT DISTINCT` over a stream (deduplication).
    pub distinct: bool,
    /// `ORDER BY` over a stream that is not after an aggregation.
    pub sort_without_aggregate: bool,
    /// `ORDER BY` after an aggregation.
    pub sort_after_aggregate: bool,
    /// `LIMIT` over a stream.
    pub limit: bool,
    /// A join of two streams.
    pub stream_stream_join: bool,
    /// A window function over a stream (a Top-N).
    pub window: bool,
    /// An outer join that would need the static side to be a stream.
    pub unsupported_outer_join: Option<String>,
    /// The `flat_map_groups_with_state` / `map_groups_with_state` operations.
    pub groups_with_state: Vec<GroupsWithStateFacts>,
}

/// What the output-mode rules need to know of a `flat_map_groups_with_state`.
#[derive(Debug, Clone)]
pub struct GroupsWithStateFacts {
    /// `flat_map_groups_with_state` or `map_groups_with_state`.
    pub operation: &'static str,
    /// The mode the operation declares.
    pub mode: OutputMode,
    /// `map_groups_with_state`.
    pub is_map: bool,
    /// A streaming aggregation feeds it.
    pub after_aggregate: bool,
}

impl QueryAnalysis {
    /// Analyse a logical plan.
    pub fn of(plan: &LogicalPlan) -> Self {
        let mut info = QueryAnalysis { sources: stream_sources(plan), ..Default::default() };
        let _ = plan.apply(|node| {
            match node {
                LogicalPlan::Aggregate(agg) if is_streaming(&agg.input) => {
                    info.aggregate = true;
                    if super::keys::event_time_group(agg).is_some() {
                        info.event_time_aggregate = true;
                    }
                }
                LogicalPlan::Distinct(d) if is_streaming(d.input()) => info.distinct = true,
                LogicalPlan::Sort(s) if is_streaming(&s.input) => {
                    if contains_streaming_aggregate(&s.input) {
                        info.sort_after_aggregate = true;
                    } else {
                        info.sort_without_aggregate = true;
                    }
                }
                LogicalPlan::Limit(l) if is_streaming(&l.input) => info.limit = true,
                LogicalPlan::Window(w) if is_streaming(&w.input) => info.window = true,
                LogicalPlan::Extension(e) => {
                    if let Some(n) =
                        e.node.as_any().downcast_ref::<super::groups_with_state_node::GroupsWithStateNode>()
                    {
                        info.groups_with_state.push(GroupsWithStateFacts {
                            operation: n.operation(),
                            mode: n.mode,
                            is_map: n.is_map,
                            after_aggregate: contains_streaming_aggregate(&n.input),
                        });
                    }
                }
                LogicalPlan::Join(j) => {
                    let (l, r) = (is_streaming(&j.left), is_streaming(&j.right));
                    if l && r {
                        info.stream_stream_join = true;
                    } else if (r && matches!(j.join_type, JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti))
                        || (l && matches!(j.join_type, JoinType::Right | JoinType::RightSemi | JoinType::RightAnti))
                        || ((l || r) && matches!(j.join_type, JoinType::Full))
                    {
                        info.unsupported_outer_join = Some(format!("{}", j.join_type));
                    }
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        info
    }

    /// Whether the query keeps state between batches.
    pub fn is_stateful(&self) -> bool {
        self.aggregate || self.distinct || self.stream_stream_join || self.window || !self.groups_with_state.is_empty()
    }

    /// Spark's rules for `flat_map_groups_with_state` and
    /// `map_groups_with_state` against the query's output mode.
    fn validate_groups_with_state(&self, mode: OutputMode) -> Result<()> {
        if self.groups_with_state.len() > 1 {
            return Err(SluiceError::unsupported(
                "a streaming query may have one flat_map_groups_with_state / map_groups_with_state; merge the \
                 functions into one, or write the first one's output to a sink and read it as another stream",
            ));
        }
        for g in &self.groups_with_state {
            let op = g.operation;
            if g.after_aggregate {
                return Err(SluiceError::unsupported(format!(
                    "{op} is not supported after an aggregation on a stream (as in Spark): its input would be \
                     changing rows; group the raw rows with group_by_key and aggregate in the function, or \
                     aggregate after it"
                )));
            }
            if g.is_map {
                if self.aggregate {
                    return Err(SluiceError::unsupported(format!(
                        "{op} is not supported with an aggregation in the same streaming query (as in Spark); use \
                         flat_map_groups_with_state with OutputMode::Append before the aggregation"
                    )));
                }
                if mode != OutputMode::Update {
                    return Err(SluiceError::unsupported(format!(
                        "{op} is not supported with {mode} output mode: it emits rows that replace earlier ones; run \
                         the query with output_mode = 'update'"
                    )));
                }
            } else if self.aggregate {
                if g.mode == OutputMode::Update {
                    return Err(SluiceError::unsupported(format!(
                        "{op} in update mode is not supported with an aggregation after it (as in Spark): the \
                         aggregation cannot retract the rows it replaces; declare OutputMode::Append on {op}"
                    )));
                }
            } else if mode == OutputMode::Complete {
                return Err(SluiceError::unsupported(format!(
                    "{op} is not supported with complete output mode without an aggregation after it: there is no \
                     result table to rewrite; run the query with output_mode = '{}'",
                    g.mode
                )));
            } else if g.mode != mode {
                return Err(SluiceError::unsupported(format!(
                    "{op} declared in {} mode is not supported with {mode} output mode (as in Spark, the two must \
                     match); declare OutputMode::{} on {op}, or run the query with output_mode = '{}'",
                    g.mode,
                    if mode == OutputMode::Update { "Update" } else { "Append" },
                    g.mode
                )));
            }
        }
        Ok(())
    }

    /// Check the query against `mode`; the error names the operator, the mode
    /// and what would make it valid.
    pub fn validate(&self, mode: OutputMode) -> Result<()> {
        if self.sources.is_empty() {
            return Err(SluiceError::plan(
                "the query reads no stream: a sink needs a query over at least one source (CREATE SOURCE); \
                 run queries over static tables directly instead",
            ));
        }
        if let Some(join) = &self.unsupported_outer_join {
            return Err(SluiceError::unsupported(format!(
                "{join} join between a stream and a static table is not supported: the outer side must be the stream \
                 (use LEFT JOIN with the stream on the left, or an inner join)"
            )));
        }
        self.validate_groups_with_state(mode)?;
        if self.sort_without_aggregate || (self.sort_after_aggregate && mode != OutputMode::Complete) {
            return Err(SluiceError::unsupported(format!(
                "ORDER BY is not supported on a streaming query in {mode} output mode: sorting is only possible after \
                 an aggregation in complete output mode; remove ORDER BY, or aggregate and use output_mode = 'complete'"
            )));
        }
        match mode {
            OutputMode::Complete if self.distinct => Err(SluiceError::unsupported(
                "complete output mode is not supported for SELECT DISTINCT (deduplication) on a stream: it keeps no \
                 result table to rewrite; use output_mode = 'append' or 'update'",
            )),
            OutputMode::Complete if self.window => Err(SluiceError::unsupported(
                "complete output mode is not supported for a Top-N (ROW_NUMBER/RANK/DENSE_RANK over a stream) or \
                 another window function over a stream (AVG ... OVER): it emits the rows that change (update mode) \
                 or each window's final ranking (append mode); use output_mode = 'update'",
            )),
            OutputMode::Complete if !self.aggregate => Err(SluiceError::unsupported(
                "complete output mode is not supported for a streaming query without aggregation: there is no result \
                 table to rewrite; use output_mode = 'append' or 'update', or aggregate with GROUP BY",
            )),
            OutputMode::Complete if self.limit && !self.aggregate => {
                Err(SluiceError::unsupported("LIMIT in complete output mode is only possible after an aggregation"))
            }
            OutputMode::Append if self.aggregate && !self.event_time_aggregate => {
                let declared: Vec<String> = self
                    .sources
                    .iter()
                    .filter_map(|s| s.watermark.as_ref().map(|w| format!("{}.{}", s.name, w.column)))
                    .collect();
                Err(SluiceError::unsupported(match declared.is_empty() {
                    true => "append output mode is not supported for a streaming aggregation without a watermark: a \
                             group's row would never be final. Declare WATERMARK FOR <column> on the source and group \
                             by an event-time window of that column, or use output_mode = 'update' or 'complete'"
                        .to_string(),
                    false => format!(
                        "append output mode needs the aggregation to group by the watermarked event time ({}) or a \
                         window over it (both window_start and window_end of TUMBLE/HOP, or window(...)); a group \
                         keyed otherwise never closes. Group by the window, or use output_mode = 'update' or 'complete'",
                        declared.join(", ")
                    ),
                }))
            }
            _ => Ok(()),
        }
    }
}

/// The source definition behind a table scan, if it scans a stream.
pub fn stream_source_of(plan: &LogicalPlan) -> Option<SourceDefinition> {
    if let LogicalPlan::TableScan(scan) = plan {
        let provider = source_as_provider(&scan.source).ok()?;
        return provider.downcast_ref::<StreamTable>().map(|t| t.definition().clone());
    }
    None
}

/// Every distinct stream source in a plan.
pub fn stream_sources(plan: &LogicalPlan) -> Vec<SourceDefinition> {
    let mut out: Vec<SourceDefinition> = vec![];
    let _ = plan.apply(|node| {
        if let Some(def) = stream_source_of(node) {
            if !out.iter().any(|d| d.name.eq_ignore_ascii_case(&def.name)) {
                out.push(def);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// Whether the plan reads a stream.
pub fn is_streaming(plan: &LogicalPlan) -> bool {
    !stream_sources(plan).is_empty()
}

/// Whether the plan contains an aggregation over a stream.
pub fn contains_streaming_aggregate(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::Aggregate(a) = node {
            if is_streaming(&a.input) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Where a derived column must come from.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// A source's watermarked event-time column.
    Watermark,
    /// A call of the named scalar function.
    Function(&'a str),
    /// The watermarked column itself, only renamed on the way (as in Spark,
    /// an expression over it such as `date_trunc` is no longer event time).
    WatermarkColumn,
}

fn calls(expr: &Expr, fname: &str) -> bool {
    let mut found = false;
    let _ = expr.apply(|e| {
        if let Expr::ScalarFunction(f) = e {
            found |= f.name() == fname;
        }
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

fn expr_derives(input: &LogicalPlan, expr: &Expr, origin: Origin) -> bool {
    if let Origin::WatermarkColumn = origin {
        let mut e = expr;
        while let Expr::Alias(a) = e {
            e = &a.expr;
        }
        return matches!(e, Expr::Column(c) if column_derives(input, &c.name, origin));
    }
    if let Origin::Function(f) = origin {
        if calls(expr, f) {
            return true;
        }
    }
    expr.column_refs().iter().any(|c| column_derives(input, &c.name, origin))
}

fn column_derives(plan: &LogicalPlan, name: &str, origin: Origin) -> bool {
    if let Some(def) = stream_source_of(plan) {
        return matches!(origin, Origin::Watermark | Origin::WatermarkColumn)
            && def.watermark.as_ref().is_some_and(|w| w.column.eq_ignore_ascii_case(name));
    }
    match plan {
        LogicalPlan::Projection(p) => p
            .schema
            .fields()
            .iter()
            .position(|f| f.name() == name)
            .and_then(|i| p.expr.get(i))
            .is_some_and(|e| expr_derives(&p.input, e, origin)),
        LogicalPlan::Aggregate(a) => a
            .schema
            .fields()
            .iter()
            .position(|f| f.name() == name)
            .and_then(|i| a.group_expr.get(i))
            .is_some_and(|e| expr_derives(&a.input, e, origin)),
        LogicalPlan::Extension(e)
            if let Some(n) = e.node.as_any().downcast_ref::<super::nodes::StreamingAggregateNode>() =>
        {
            column_derives(&LogicalPlan::Aggregate(n.aggregate.clone()), name, origin)
        }
        // Unnest renames `__unnest_placeholder(x)` to `__unnest_placeholder(x,depth=1)`.
        LogicalPlan::Unnest(u) => u.input.schema().fields().iter().any(|f| {
            (f.name() == name || name.starts_with(f.name().trim_end_matches(')')))
                && column_derives(&u.input, f.name(), origin)
        }),
        other => other.inputs().iter().any(|i| column_derives(i, name, origin)),
    }
}

/// Whether `expr`, evaluated over `input`, is derived from a source's
/// watermarked event-time column.
pub fn expr_derives_from_watermark(input: &LogicalPlan, expr: &Expr) -> bool {
    expr_derives(input, expr, Origin::Watermark)
}

/// Whether `expr`, evaluated over `input`, is a source's watermarked
/// event-time column itself (renamed at most).
pub fn expr_is_watermark_column(input: &LogicalPlan, expr: &Expr) -> bool {
    expr_derives(input, expr, Origin::WatermarkColumn)
}

/// Whether the output column `name` of `plan` is a source's watermarked
/// event-time column itself (renamed at most).
pub fn column_is_watermark_column(plan: &LogicalPlan, name: &str) -> bool {
    column_derives(plan, name, Origin::WatermarkColumn)
}

/// Whether `expr`, evaluated over `input`, is computed by a call of the
/// scalar function `fname` (followed through projections and unnests).
pub fn expr_derives_from_function(input: &LogicalPlan, expr: &Expr, fname: &str) -> bool {
    expr_derives(input, expr, Origin::Function(fname))
}
