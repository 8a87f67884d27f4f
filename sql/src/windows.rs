//! Rewriting event-time windows into plain DataFusion SQL over Sluice's
//! window functions (see `sluice_engine::functions::window`):
//!
//! - `GROUP BY window(ts, size[, slide[, offset]])` and
//!   `GROUP BY session_window(ts, gap)` (Spark): the FROM clause gains a
//!   struct column `window` with fields `start` and `end`, and the query
//!   groups by it (`window.start` / `window.end` select its fields);
//! - `FROM TUMBLE(t, ts, size[, offset])`, `HOP(t, ts, slide, size[, offset])`
//!   and `SESSION(t, ts, gap)` (Flink): the table with `window_start` and
//!   `window_end` columns added.
//!
//! Durations are SQL intervals or Spark strings (`'10 minutes'`).

use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName, Query, Select, SetExpr,
    TableAlias, TableFactor, TableWithJoins, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use sluice_engine::parse_duration;

use crate::error::{Result, SqlError};

/// The duration an expression denotes: `INTERVAL '10' MINUTE`,
/// `INTERVAL '10 minutes'` or `'10 minutes'`.
pub fn duration_of(e: &Expr) -> Result<Duration> {
    let text = match e {
        Expr::Interval(i) => {
            let value = i.value.to_string().trim_matches('\'').to_string();
            let unit = i.leading_field.as_ref().map(|f| f.to_string()).unwrap_or_default();
            format!("{value} {unit}")
        }
        Expr::Value(v) => v.to_string().trim_matches('\'').to_string(),
        other => {
            return Err(SqlError::Parse(format!(
                "expected a duration such as INTERVAL '10' MINUTE or '10 minutes', found {other}"
            )))
        }
    };
    parse_duration(&text).map_err(|e| SqlError::Parse(e.to_string()))
}

fn micros(d: Duration) -> i64 {
    d.as_micros() as i64
}

/// A window size, slide or gap argument of `call`, in microseconds: a
/// positive duration, or an error naming the call and the argument.
fn window_arg(call: &str, what: &str, e: &Expr) -> Result<i64> {
    let bad = |reason: String| {
        SqlError::Engine(sluice_engine::SluiceError::plan(format!("{call}: the window {what} {reason}")))
    };
    let d = duration_of(e).map_err(|err| {
        let err = err.to_string();
        bad(format!(
            "{e} is not a duration ({}); write e.g. INTERVAL '10' MINUTE",
            err.trim_start_matches("SQL syntax error: ")
        ))
    })?;
    if d.is_zero() {
        return Err(bad(format!("must be positive, found {e}")));
    }
    Ok(micros(d))
}

/// Sliding windows need `0 < slide <= size` (as in Spark): a longer slide
/// would leave rows between windows, in none.
fn check_slide(call: &str, size: i64, slide: i64) -> Result<()> {
    if slide > size {
        return Err(SqlError::Engine(sluice_engine::SluiceError::plan(format!(
            "{call}: the slide ({} s) is longer than the window size ({} s), so rows between windows would belong to \
             none; use a slide at most as long as the size",
            slide as f64 / 1e6,
            size as f64 / 1e6
        ))));
    }
    Ok(())
}

fn parse_query(sql: &str) -> Result<Box<Query>> {
    Ok(Parser::new(&GenericDialect {}).try_with_sql(sql)?.parse_query()?)
}

fn args_of(args: &[FunctionArg]) -> Result<Vec<Expr>> {
    args.iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
            other => Err(SqlError::Parse(format!("unexpected window argument {other}"))),
        })
        .collect()
}

/// The SQL expression assigning windows for a Spark-style grouping call.
fn grouping_window_expr(name: &str, args: &[Expr]) -> Result<String> {
    let ts = args.first().ok_or_else(|| SqlError::Parse(format!("{name}() needs a time column")))?;
    match name {
        "window" => {
            let size = window_arg(
                "window()",
                "size",
                args.get(1).ok_or_else(|| SqlError::Parse("window() needs a size".into()))?,
            )?;
            let slide = args.get(2).map(|s| window_arg("window()", "slide", s)).transpose()?.unwrap_or(size);
            check_slide("window()", size, slide)?;
            let offset = args.get(3).map(duration_of).transpose()?.map(micros).unwrap_or(0);
            Ok(if slide == size {
                format!("sluice_tumble({ts}, {size}, {offset})")
            } else {
                format!("unnest(sluice_windows({ts}, {size}, {slide}, {offset}))")
            })
        }
        _ => {
            let gap = window_arg(
                "session_window()",
                "gap",
                args.get(1).ok_or_else(|| SqlError::Parse("session_window() needs a gap".into()))?,
            )?;
            Ok(format!("sluice_session({ts}, {gap})"))
        }
    }
}

fn window_call(e: &Expr) -> Option<(String, Vec<Expr>)> {
    if let Expr::Function(f) = e {
        let name = f.name.to_string().to_ascii_lowercase();
        if name == "window" || name == "session_window" {
            if let FunctionArguments::List(list) = &f.args {
                return args_of(&list.args).ok().map(|a| (name, a));
            }
        }
    }
    None
}

fn alias_of(name: &Ident) -> TableAlias {
    TableAlias { explicit: true, name: name.clone(), columns: vec![], at: None }
}

/// The alias a wrapped FROM clause keeps, so qualified names still resolve.
fn from_alias(from: &[TableWithJoins]) -> Option<TableAlias> {
    match from {
        [TableWithJoins { relation, joins }] if joins.is_empty() => match relation {
            TableFactor::Table { alias: Some(a), .. } | TableFactor::Derived { alias: Some(a), .. } => Some(a.clone()),
            TableFactor::Table { name, alias: None, .. } => {
                name.0.last().and_then(|p| p.as_ident()).map(|i| alias_of(i))
            }
            _ => None,
        },
        _ => None,
    }
}

fn rewrite_group_by(select: &mut Select) -> Result<()> {
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else { return Ok(()) };
    let Some(pos) = exprs.iter().position(|e| window_call(e).is_some()) else { return Ok(()) };
    let (name, args) = window_call(&exprs[pos]).ok_or_else(|| SqlError::Parse("window".into()))?;
    if exprs.iter().filter(|e| window_call(e).is_some()).count() > 1 {
        return Err(SqlError::Parse("only one window() or session_window() per GROUP BY".into()));
    }
    let assign = grouping_window_expr(&name, &args)?;
    let original = exprs[pos].clone();
    exprs[pos] = Expr::Identifier(Ident::new("window"));
    // A select item that repeats the grouping call refers to the column.
    for item in select.projection.iter_mut() {
        if let datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(e) = item {
            if *e == original {
                *e = Expr::Identifier(Ident::new("window"));
            }
        }
    }
    let mut inner = parse_query(&format!("SELECT *, {assign} AS window FROM __sluice_from"))?;
    let SetExpr::Select(inner_select) = inner.body.as_mut() else {
        return Err(SqlError::Parse("internal: window rewrite".into()));
    };
    let alias = from_alias(&select.from);
    inner_select.from = std::mem::take(&mut select.from);
    select.from = vec![TableWithJoins {
        relation: TableFactor::Derived { lateral: false, subquery: inner, alias, sample: None },
        joins: vec![],
    }];
    Ok(())
}

fn rewrite_tvf(tf: &mut TableFactor) -> Result<()> {
    let TableFactor::Table { name, args: Some(args), alias, .. } = tf else { return Ok(()) };
    let fname = name.to_string().to_ascii_uppercase();
    if !matches!(fname.as_str(), "TUMBLE" | "HOP" | "SESSION") {
        return Ok(());
    }
    let a = args_of(&args.args)?;
    let need = |n: usize, usage: &str| -> Result<()> {
        if a.len() < n {
            Err(SqlError::Parse(format!("{fname} needs ({usage})")))
        } else {
            Ok(())
        }
    };
    let (table, ts) = (a.first().cloned(), a.get(1).cloned());
    let assign = match fname.as_str() {
        "TUMBLE" => {
            need(3, "table, time column, size[, offset]")?;
            let offset = a.get(3).map(duration_of).transpose()?.map(micros).unwrap_or(0);
            format!("sluice_tumble({}, {}, {offset})", a[1], window_arg("TUMBLE", "size", &a[2])?)
        }
        "HOP" => {
            need(4, "table, time column, slide, size[, offset]")?;
            let offset = a.get(4).map(duration_of).transpose()?.map(micros).unwrap_or(0);
            let (slide, size) = (window_arg("HOP", "slide", &a[2])?, window_arg("HOP", "size", &a[3])?);
            check_slide("HOP", size, slide)?;
            format!("unnest(sluice_windows({}, {size}, {slide}, {offset}))", a[1])
        }
        _ => {
            need(3, "table, time column, gap")?;
            format!("sluice_session({}, {})", a[1], window_arg("SESSION", "gap", &a[2])?)
        }
    };
    let (Some(table), Some(_)) = (table, ts) else { return Ok(()) };
    let table = table.to_string();
    let table = table.trim_start_matches("TABLE ").trim();
    let sql = format!(
        "SELECT * EXCLUDE (__sluice_w), get_field(__sluice_w, 'start') AS window_start, \
         get_field(__sluice_w, 'end') AS window_end FROM (SELECT *, {assign} AS __sluice_w FROM {table})"
    );
    let subquery = parse_query(&sql)?;
    let alias = alias
        .clone()
        .or_else(|| ObjectName::from(vec![Ident::new(table)]).0.last().and_then(|p| p.as_ident()).map(alias_of));
    *tf = TableFactor::Derived { lateral: false, subquery, alias, sample: None };
    Ok(())
}

struct Rewriter {
    error: Option<SqlError>,
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        match rewrite_group_by(select) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        match rewrite_tvf(tf) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

/// Rewrite the windows of a query given as SQL text, returning SQL that
/// DataFusion runs as is (for batch engines comparing with Sluice).
pub fn rewrite_windows_sql(sql: &str) -> Result<String> {
    let mut q = parse_query(sql)?;
    rewrite_windows(&mut q)?;
    Ok(q.to_string())
}

/// Rewrite every window grouping call and window table function in `query`.
pub fn rewrite_windows(query: &mut Query) -> Result<()> {
    let mut r = Rewriter { error: None };
    let _ = query.visit(&mut r);
    match r.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> String {
        let mut q = parse_query(sql).unwrap();
        rewrite_windows(&mut q).unwrap();
        q.to_string()
    }

    #[test]
    fn spark_window_grouping() {
        let s =
            rw("SELECT window.start, word, count(*) FROM events GROUP BY window(ts, '10 minutes', '5 minutes'), word");
        assert!(
            s.contains("unnest(sluice_windows(ts, 600000000, 300000000, 0)) AS window FROM events) AS events"),
            "{s}"
        );
        assert!(s.contains("GROUP BY window, word"), "{s}");
        let s = rw("SELECT count(*) FROM e GROUP BY window(ts, INTERVAL '1' MINUTE)");
        assert!(s.contains("sluice_tumble(ts, 60000000, 0) AS window"), "{s}");
    }

    #[test]
    fn table_functions() {
        let s = rw("SELECT window_start, count(*) FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) GROUP BY 1");
        assert!(s.contains("sluice_tumble(ts, 10000000, 0) AS __sluice_w FROM bid") && s.contains("AS bid"), "{s}");
        let s = rw("SELECT * FROM HOP(bid, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) h");
        assert!(s.contains("sluice_windows(ts, 10000000, 2000000, 0)") && s.ends_with(") h"), "{s}");
    }
}
