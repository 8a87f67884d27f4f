//! [`CaseLiteralArms`]: a logical optimizer rule that turns a searched
//! `CASE` whose arms test one expression against literals into one lookup.
//!
//! ```sql
//! CASE WHEN lower(c) = 'apple'  THEN '0'
//!      WHEN lower(c) = 'google' THEN '1'
//!      ELSE f(url) END
//! -- becomes
//! CASE WHEN lower(c) IN ('apple', 'google')
//!      THEN CASE lower(c) WHEN 'apple' THEN '0' WHEN 'google' THEN '1' END
//!      ELSE f(url) END
//! ```
//!
//! DataFusion evaluates a searched `CASE` arm by arm: each arm evaluates its
//! test on the rows no earlier arm took, then filters every column the
//! `CASE` reads (long strings included) down to the rows still left. Four
//! such arms cost four copies of those columns. After the rewrite the run of
//! arms is one test (an `IN` list, hashed) and one filter, and the inner
//! simple `CASE` with only literals is DataFusion's literal lookup table.
//!
//! The two forms agree on every row: the arms of the run are tried in order
//! and the first equal literal wins in both (the inner `CASE` keeps the
//! order, duplicates included); a NULL test value matches no arm in either
//! (`x = lit` and `x IN (...)` are both NULL). Only runs of two or more
//! consecutive arms of the form `x = literal` (either side), over the same
//! non-volatile `x`, with a non-NULL literal and a literal result, are
//! rewritten; the arms before and after a run keep their place.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::logical_expr::expr::{Case, InList};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::SessionContext;

/// `ctx` with [`CaseLiteralArms`] among its optimizer rules, just before
/// common subexpression elimination (which would otherwise hide a repeated
/// `x = literal` test behind a column, and which then computes the `x` the
/// rewrite repeats only once).
pub fn with_case_literal_arms(ctx: SessionContext) -> SessionContext {
    let state = ctx.state();
    let mut rules = state.optimizer().rules.clone();
    let at = rules.iter().position(|r| r.name() == "common_sub_expression_eliminate").unwrap_or(rules.len());
    rules.insert(at, Arc::new(CaseLiteralArms));
    SessionContext::new_with_state(
        datafusion::execution::SessionStateBuilder::new_from_existing(state).with_optimizer_rules(rules).build(),
    )
}

/// Rewrites runs of `WHEN x = literal THEN literal` arms of a searched
/// `CASE` into one `WHEN x IN (...)` arm whose result is a literal lookup
/// (see the module documentation).
#[derive(Debug, Default)]
pub struct CaseLiteralArms;

impl OptimizerRule for CaseLiteralArms {
    fn name(&self) -> &str {
        "sluice_case_literal_arms"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| Ok(rewrite_case(e)))?;
            Ok(if rewritten.transformed { Transformed::yes(name.restore(rewritten.data)) } else { rewritten })
        })
    }
}

/// One arm of the form `x = literal THEN literal`: its `x` and literal.
fn literal_arm<'a>(when: &'a Expr, then: &Expr) -> Option<(&'a Expr, &'a Expr)> {
    if !matches!(then, Expr::Literal(..)) {
        return None;
    }
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = when else { return None };
    let (tested, literal) = match (left.as_ref(), right.as_ref()) {
        (Expr::Literal(..), Expr::Literal(..)) => return None,
        (x, lit @ Expr::Literal(value, _)) | (lit @ Expr::Literal(value, _), x) if !value.is_null() => (x, lit),
        _ => return None,
    };
    (!tested.is_volatile()).then_some((tested, literal))
}

type Arm = (Box<Expr>, Box<Expr>);

fn rewrite_case(expr: Expr) -> Transformed<Expr> {
    let Expr::Case(case) = expr else { return Transformed::no(expr) };
    let runs = runs(&case.when_then_expr);
    if case.expr.is_some() || runs.is_empty() {
        return Transformed::no(Expr::Case(case));
    }
    let Case { expr: _, when_then_expr: arms, else_expr } = case;
    let mut out: Vec<Arm> = Vec::with_capacity(arms.len());
    let mut kept = 0;
    for run in runs {
        out.extend_from_slice(&arms[kept..run.start]);
        match lookup_arm(&arms[run.clone()]) {
            Some(arm) => out.push(arm),
            None => out.extend_from_slice(&arms[run.clone()]),
        }
        kept = run.end;
    }
    out.extend_from_slice(&arms[kept..]);
    Transformed::yes(Expr::Case(Case::new(None, out, else_expr)))
}

/// The runs of two or more consecutive literal arms over one `x`.
fn runs(arms: &[Arm]) -> Vec<std::ops::Range<usize>> {
    let mut out = vec![];
    let mut start = 0;
    while start < arms.len() {
        let end = run_end(arms, start);
        if end - start >= 2 {
            out.push(start..end);
        }
        start = end;
    }
    out
}

/// The one arm a run becomes: `WHEN x IN (literals) THEN CASE x WHEN ... END`.
fn lookup_arm(run: &[Arm]) -> Option<Arm> {
    let arms: Vec<(&Expr, &Expr, &Box<Expr>)> =
        run.iter().filter_map(|(when, then)| literal_arm(when, then).map(|(x, literal)| (x, literal, then))).collect();
    let tested = arms.first()?.0.clone();
    let list = arms.iter().map(|(_, literal, _)| (*literal).clone()).collect();
    let lookup = arms.iter().map(|(_, literal, then)| (Box::new((*literal).clone()), (*then).clone())).collect();
    let test = Expr::InList(InList::new(Box::new(tested.clone()), list, false));
    Some((Box::new(test), Box::new(Expr::Case(Case::new(Some(Box::new(tested)), lookup, None)))))
}

/// The end (exclusive) of the run of literal arms over one `x` starting at `start`.
fn run_end(arms: &[Arm], start: usize) -> usize {
    let Some((first, _)) = literal_arm(&arms[start].0, &arms[start].1) else { return start + 1 };
    let mut end = start + 1;
    while end < arms.len() && literal_arm(&arms[end].0, &arms[end].1).is_some_and(|(x, _)| x == first) {
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::with_case_literal_arms;

    fn table() -> RecordBatch {
        let c: Vec<Option<&str>> = vec![
            Some("Apple"),
            Some("google"),
            None,
            Some("other"),
            Some("baidu"),
            Some("apple"),
            Some("x"),
            Some("facebook"),
            Some(""),
        ];
        let n: Vec<Option<i64>> = vec![Some(1), None, Some(3), Some(4), Some(5), Some(6), Some(7), None, Some(9)];
        RecordBatch::try_from_iter(vec![
            ("c", Arc::new(StringArray::from(c)) as ArrayRef),
            ("n", Arc::new(Int64Array::from(n)) as ArrayRef),
        ])
        .expect("a valid batch")
    }

    async fn run(sql: &str, with_rule: bool) -> (String, String) {
        let ctx = if with_rule { with_case_literal_arms(SessionContext::new()) } else { SessionContext::new() };
        ctx.register_batch("t", table()).expect("register");
        let df = ctx.sql(sql).await.expect("plan");
        let plan = format!("{}", df.clone().into_optimized_plan().expect("optimize").display_indent());
        let rows = pretty_format_batches(&df.collect().await.expect("run")).expect("format").to_string();
        (plan, rows)
    }

    /// Queries whose results must not change under the rule, and whether
    /// each has a run of literal arms to rewrite.
    const QUERIES: &[(&str, bool)] = &[
        // The q21 shape: four arms on one expression, a computed ELSE.
        (
            "SELECT c, CASE WHEN lower(c) = 'apple' THEN '0' WHEN lower(c) = 'google' THEN '1' \
             WHEN lower(c) = 'facebook' THEN '2' WHEN 'baidu' = lower(c) THEN '3' ELSE concat('#', c) END AS id FROM t",
            true,
        ),
        // A duplicated literal (the first arm wins), no ELSE, no alias.
        ("SELECT CASE WHEN c = 'apple' THEN 1 WHEN c = 'apple' THEN 2 WHEN c = 'x' THEN 3 END FROM t", true),
        // A run between other arms; an arm on another column breaks it.
        (
            "SELECT c, n, CASE WHEN n > 5 THEN 'big' WHEN c = 'x' THEN 'ex' WHEN c = 'other' THEN 'oth' \
             WHEN n = 1 THEN 'one' WHEN c = 'baidu' THEN 'b' ELSE 'none' END AS k FROM t",
            true,
        ),
        // In a filter, over an integer column with a NULL result literal.
        (
            "SELECT n FROM t WHERE (CASE WHEN n = 1 THEN 10 WHEN n = 3 THEN NULL WHEN n = 9 THEN 90 ELSE n END) > 4",
            true,
        ),
        // Inside an aggregate (its name kept), and as a grouping key.
        ("SELECT sum(CASE WHEN c = 'apple' THEN 1 WHEN c = 'x' THEN 2 ELSE 0 END) FROM t", true),
        (
            "SELECT CASE WHEN c = 'apple' THEN 'A' WHEN c = 'x' THEN 'X' END AS k, count(*) AS n FROM t \
             GROUP BY CASE WHEN c = 'apple' THEN 'A' WHEN c = 'x' THEN 'X' END ORDER BY k",
            true,
        ),
        // Nothing to rewrite: a single literal arm, non-literal results, a NULL literal.
        ("SELECT CASE WHEN c = 'x' THEN 1 ELSE 0 END AS a FROM t", false),
        ("SELECT CASE WHEN c = 'x' THEN n WHEN c = 'apple' THEN n + 1 END AS a FROM t", false),
        ("SELECT CASE WHEN n = NULL THEN 1 WHEN n IS NULL THEN 2 ELSE 3 END AS a FROM t", false),
    ];

    #[tokio::test]
    async fn rewritten_cases_give_the_same_rows() {
        for (sql, rewrites) in QUERIES {
            let (plan, rows) = run(sql, true).await;
            let (_, expected) = run(sql, false).await;
            assert_eq!(rows, expected, "{sql}\n{plan}");
            // The lookup is a simple CASE inside the run's arm (its test an
            // IN list, or ORs where DataFusion unrolls a short list).
            assert_eq!(plan.contains(" THEN CASE "), *rewrites, "{sql}\n{plan}");
        }
    }

    #[tokio::test]
    async fn a_run_becomes_one_lookup_arm() {
        let (plan, _) = run(QUERIES[0].0, true).await;
        assert!(
            plan.contains(
                "CASE WHEN __common_expr_1 IN ([Utf8(\"apple\"), Utf8(\"google\"), Utf8(\"facebook\"), \
                 Utf8(\"baidu\")]) THEN CASE __common_expr_1 WHEN Utf8(\"apple\") THEN Utf8(\"0\")"
            ),
            "{plan}"
        );
    }
}
