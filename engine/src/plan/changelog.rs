//! Update-mode aggregations feeding another operator (Nexmark q4: an
//! average of per-auction maxima): the inner aggregation emits its changed
//! groups, a [`StreamingChangelogNode`] turns each into a retraction of the
//! group's previous row and the new row (a sign column), and the operator
//! after it applies both.
//!
//! An aggregation over a changelog is rewritten into one whose functions
//! can be retracted: `COUNT(x)` is `SUM(sign)` over non-null `x`, `SUM(x)`
//! is `SUM(x * sign)`, `AVG(x)` their quotient. Other functions (`MIN`,
//! `MAX`, `DISTINCT`, ...) cannot be retracted from a summary and are
//! refused, naming the function.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Column, DFSchema, DFSchemaRef};
use datafusion::error::Result as DFResult;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{
    cast, col, lit, when, Aggregate, Expr, ExprSchemable, Extension, Filter, LogicalPlan, Projection, SubqueryAlias,
    UserDefinedLogicalNodeCore,
};

use super::analyze::is_streaming;
use super::nodes::StreamingAggregateNode;
use crate::error::{Result, SluiceError};
use crate::stateful::SIGN_COLUMN;

/// An update-mode operator's changing rows as a changelog.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamingChangelogNode {
    /// The update-mode operator.
    pub input: LogicalPlan,
    /// Its columns, then the sign.
    pub schema: DFSchemaRef,
    /// Operator number.
    pub id: usize,
    /// The columns (input indices) identifying a row.
    pub keys: Vec<usize>,
}

impl StreamingChangelogNode {
    /// The node over `input`, whose rows are identified by `keys`.
    pub fn try_new(input: LogicalPlan, id: usize, keys: Vec<usize>) -> Result<Self> {
        let sign = DFSchema::try_from(datafusion::arrow::datatypes::Schema::new(vec![Field::new(
            SIGN_COLUMN,
            DataType::Int64,
            false,
        )]))?;
        let mut schema = input.schema().as_ref().clone();
        schema.merge(&sign);
        Ok(Self { input, schema: Arc::new(schema), id, keys })
    }
}

impl PartialOrd for StreamingChangelogNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal).or_else(|| self.id.partial_cmp(&other.id).filter(|o| o.is_ne()))
    }
}

impl UserDefinedLogicalNodeCore for StreamingChangelogNode {
    fn name(&self) -> &str {
        "StreamingChangelog"
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
        write!(f, "StreamingChangelog: operator={}, keys={:?}", self.id, self.keys)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> DFResult<Self> {
        let input = inputs.pop().ok_or_else(|| SluiceError::internal("StreamingChangelog without input"))?;
        Ok(Self { input, ..self.clone() })
    }
}

/// Whether `plan` is, through projections, filters and aliases, an
/// aggregation over a stream: in update mode it emits changing rows.
pub fn emits_changes(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(a) => is_streaming(&a.input),
        LogicalPlan::Projection(p) => emits_changes(&p.input),
        LogicalPlan::Filter(f) => emits_changes(&f.input),
        LogicalPlan::SubqueryAlias(a) => emits_changes(&a.input),
        _ => false,
    }
}

/// `plan` (marked, over an update-mode aggregation) with a changelog node
/// `id` on the aggregation and its sign column carried up through the
/// projections, filters and aliases above it.
pub fn thread_sign(plan: &LogicalPlan, id: usize) -> Result<LogicalPlan> {
    Ok(match plan {
        LogicalPlan::Extension(e) if let Some(agg) = e.node.as_any().downcast_ref::<StreamingAggregateNode>() => {
            let keys = (0..agg.aggregate.group_expr.len()).collect();
            let node = StreamingChangelogNode::try_new(plan.clone(), id, keys)?;
            LogicalPlan::Extension(Extension { node: Arc::new(node) })
        }
        LogicalPlan::Projection(p) => {
            let input = thread_sign(&p.input, id)?;
            let mut exprs = p.expr.clone();
            exprs.push(sign_of(input.schema())?);
            LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?)
        }
        LogicalPlan::Filter(f) => {
            LogicalPlan::Filter(Filter::try_new(f.predicate.clone(), Arc::new(thread_sign(&f.input, id)?))?)
        }
        LogicalPlan::SubqueryAlias(a) => {
            LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(thread_sign(&a.input, id)?), a.alias.clone())?)
        }
        other => {
            return Err(SluiceError::unsupported(format!(
                "{} between an update-mode aggregation and the operator it feeds is not supported; only projections, \
                 filters and subquery aliases may come between them",
                other.display()
            )));
        }
    })
}

/// The sign column of `schema`, as an expression.
fn sign_of(schema: &DFSchema) -> Result<Expr> {
    let (q, _) = schema.qualified_field_with_unqualified_name(SIGN_COLUMN)?;
    Ok(Expr::Column(Column::new(q.cloned(), SIGN_COLUMN)))
}

/// `agg` (over a changelog) as an aggregation of retractable sums, and the
/// projection over it that gives `agg`'s own columns.
pub fn retracting_aggregate(agg: &Aggregate) -> Result<(Aggregate, Vec<Expr>)> {
    let schema = agg.input.schema();
    let sign = sign_of(schema)?;
    let groups = agg.group_expr.len();
    if agg.schema.fields().len() != groups + agg.aggr_expr.len() {
        return Err(SluiceError::unsupported(
            "GROUPING SETS, CUBE and ROLLUP over an update-mode aggregation are not supported",
        ));
    }
    let mut out: Vec<Expr> = (0..groups)
        .map(|i| {
            let (q, f) = agg.schema.qualified_field(i);
            Expr::Column(Column::new(q.cloned(), f.name()))
        })
        .collect();
    // Each distinct sum once (`AVG(x)` and `SUM(x)` share x's count).
    let mut aggs: Vec<(Expr, String)> = vec![];
    fn add(aggs: &mut Vec<(Expr, String)>, e: Expr, what: &str) -> String {
        if let Some((_, name)) = aggs.iter().find(|(a, _)| *a == e) {
            return name.clone();
        }
        let name = format!("__retract_{what}_{}", aggs.len());
        aggs.push((e, name.clone()));
        name
    }
    for (i, e) in agg.aggr_expr.iter().enumerate() {
        let Expr::AggregateFunction(f) = e.clone().unalias_nested().data else {
            return Err(SluiceError::unsupported(format!("{e} over an update-mode aggregation is not supported")));
        };
        let name = f.func.name().to_ascii_lowercase();
        let shown = e.schema_name().to_string();
        let p = &f.params;
        let refuse = |why: &str| {
            SluiceError::unsupported(format!(
                "{shown} over the changing rows of an update-mode aggregation is not supported: {why}. Over an \
                 aggregation without a window only COUNT, SUM and AVG (without DISTINCT or FILTER) can follow; or \
                 group the inner aggregation by an event-time window with a watermark and use output_mode = 'append'"
            ))
        };
        if p.distinct || p.filter.is_some() || !p.order_by.is_empty() {
            return Err(refuse("DISTINCT, FILTER and ORDER BY cannot be retracted"));
        }
        let arg = p.args.first().cloned().unwrap_or_else(|| lit(1i64));
        let nonnull = when(arg.clone().is_not_null(), sign.clone()).otherwise(lit(0i64))?;
        let count = add(&mut aggs, sum(nonnull), "count");
        let counted = col(count.as_str()).gt(lit(0i64));
        let numeric = |t: &DataType| match t {
            t if t.is_integer() => Ok(DataType::Int64),
            t if t.is_floating() => Ok(DataType::Float64),
            other => Err(refuse(&format!(
                "its argument is of type {other}; only integer and floating-point values can be retracted"
            ))),
        };
        let result = match name.as_str() {
            "count" => datafusion::functions::expr_fn::coalesce(vec![col(count.as_str()), lit(0i64)]),
            "sum" | "avg" => {
                let t = numeric(&arg.get_type(schema)?)?;
                let total = add(&mut aggs, sum(cast(arg, t.clone()) * cast(sign.clone(), t)), "sum");
                let value = match name.as_str() {
                    "sum" => col(total.as_str()),
                    _ => cast(col(total.as_str()), DataType::Float64) / cast(col(count.as_str()), DataType::Float64),
                };
                when(counted, value).end()?
            }
            _ => return Err(refuse("it cannot be retracted from a summary of the rows")),
        };
        let (_, field) = agg.schema.qualified_field(groups + i);
        out.push(cast(result, field.data_type().clone()).alias(field.name()));
    }
    let aggs = aggs.into_iter().map(|(e, name)| e.alias(name)).collect();
    let rewritten = Aggregate::try_new(Arc::clone(&agg.input), agg.group_expr.clone(), aggs)?;
    Ok((rewritten, out))
}
