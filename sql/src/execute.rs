//! Running statements against a [`SluiceSession`].

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Statement as SqlStatement};
use sluice_engine::{
    Options, OutputMode, QuerySpec, SluiceError, SluiceSession, SourceDefinition, StreamingQuery, Trigger,
    WatermarkPolicy, WatermarkSpec,
};

use crate::error::{Result, SqlError};
use crate::parser::{parse_sql, CreateSink, CreateSource, SluiceStatement};

/// What a statement produced.
#[derive(Debug)]
pub enum StatementResult {
    /// A DDL statement succeeded.
    Done(String),
    /// A query's rows.
    Rows(Vec<RecordBatch>),
    /// `CREATE SINK` started a query.
    Started(StreamingQuery),
}

/// Engine options of `CREATE SINK ... WITH (...)`; the rest go to the connector.
const SINK_ENGINE_OPTIONS: &[&str] = &[
    "connector",
    "output_mode",
    "trigger",
    "interval",
    "checkpoint",
    "watermark_policy",
    "late_rows",
    "min_batches_to_retain",
    "state_checkpoint_interval",
    "reset_changed_state",
];

/// Parse and run every statement of `sql`, in order; stops at the first error.
///
/// ```no_run
/// # async fn demo(session: sluice_engine::SluiceSession) -> sluice_sql::Result<()> {
/// sluice_sql::execute_sql(&session, "CREATE SOURCE s (w VARCHAR) WITH (connector = 'memory')").await?;
/// # Ok(()) }
/// ```
pub async fn execute_sql(session: &SluiceSession, sql: &str) -> Result<Vec<StatementResult>> {
    let mut out = vec![];
    for stmt in parse_sql(sql)? {
        out.push(execute_statement(session, stmt).await?);
    }
    Ok(out)
}

/// Run one parsed statement.
pub async fn execute_statement(session: &SluiceSession, stmt: SluiceStatement) -> Result<StatementResult> {
    match stmt {
        SluiceStatement::CreateSource(s) => create_source(session, s).await,
        SluiceStatement::CreateSink(s) => create_sink(session, s).await,
        SluiceStatement::DropSink { name, if_exists } => match session.stop_query(&name).await {
            Ok(()) => Ok(StatementResult::Done(format!("sink '{name}' stopped"))),
            Err(_) if if_exists => Ok(StatementResult::Done(format!("no sink '{name}'"))),
            Err(e) => Err(e.into()),
        },
        SluiceStatement::ShowQueries => Ok(StatementResult::Rows(vec![show_queries(session)?])),
        SluiceStatement::ExplainQuery { name, analyze } => {
            let Some(q) = session.query(&name) else {
                let mut names: Vec<String> = session.queries().iter().map(|q| q.name().to_string()).collect();
                names.sort();
                return Err(SluiceError::plan(format!(
                    "EXPLAIN {}{name}: no running query named '{name}'; {}",
                    if analyze { "ANALYZE " } else { "" },
                    if names.is_empty() {
                        "no query runs".to_string()
                    } else {
                        format!("the queries are {}", names.join(", "))
                    }
                ))
                .into());
            };
            let text = match analyze {
                true => match (q.last_batch_plan().await, q.last_progress()) {
                    (Some(plan), Some(p)) => format!(
                        "query '{}': last micro-batch {} ({} rows in, {} ms), per-node metrics\n{plan}",
                        q.name(),
                        p.batch_id,
                        p.num_input_rows,
                        p.duration_ms.get("total").copied().unwrap_or(0)
                    ),
                    _ => format!("query '{}': no micro-batch has run yet", q.name()),
                },
                false => format!("query '{}'\n{}", q.name(), q.plan().await),
            };
            Ok(StatementResult::Rows(vec![plan_batch(&text)?]))
        }
        SluiceStatement::DataFusion(stmt) if streaming_explain(session, &stmt).await => {
            let DFStatement::Explain(explain_stmt) = *stmt else { return unreachable_explain() };
            let analyze = explain_stmt.options.analyze;
            let DFStatement::Statement(inner) = *explain_stmt.statement else { return unreachable_explain() };
            let SqlStatement::Query(mut q) = *inner else { return unreachable_explain() };
            crate::windows::rewrite_windows(&mut q)?;
            let state = session.context().state();
            let plan = state
                .statement_to_plan(DFStatement::Statement(Box::new(SqlStatement::Query(q))))
                .await
                .map_err(|e| explain(session, e))?;
            let df = DataFrame::new(state, plan);
            let text = match analyze {
                true => session.explain_analyze(df).await,
                false => session.explain(df, None).await,
            };
            let text = text.map_err(|e| match e {
                SluiceError::DataFusion(e) => explain(session, e),
                other => other.into(),
            })?;
            Ok(StatementResult::Rows(vec![plan_batch(&text)?]))
        }
        SluiceStatement::DataFusion(mut stmt) => {
            if let DFStatement::Statement(inner) = stmt.as_mut() {
                if let SqlStatement::Query(q) = inner.as_mut() {
                    crate::windows::rewrite_windows(q)?;
                }
            }
            let state = session.context().state();
            let run = async {
                let plan = state.statement_to_plan(*stmt).await?;
                session.context().execute_logical_plan(plan).await?.collect().await
            };
            Ok(StatementResult::Rows(run.await.map_err(|e| explain(session, e))?))
        }
    }
}

/// Whether `stmt` is an `EXPLAIN` of a query that reads a stream: it is
/// planned as a streaming query (DataFusion's own `EXPLAIN` cannot plan a
/// stream).
async fn streaming_explain(session: &SluiceSession, stmt: &DFStatement) -> bool {
    let DFStatement::Explain(e) = stmt else { return false };
    let DFStatement::Statement(inner) = e.statement.as_ref() else { return false };
    let SqlStatement::Query(q) = inner.as_ref() else { return false };
    let mut q = q.clone();
    if crate::windows::rewrite_windows(&mut q).is_err() {
        return false;
    }
    let state = session.context().state();
    match state.statement_to_plan(DFStatement::Statement(Box::new(SqlStatement::Query(q)))).await {
        Ok(plan) => sluice_engine::plan::analyze::is_streaming(&plan),
        Err(_) => false,
    }
}

fn unreachable_explain<T>() -> Result<T> {
    Err(SluiceError::internal("EXPLAIN of a streaming query lost its query").into())
}

/// A one-column (`plan`) batch of the lines of `text`.
fn plan_batch(text: &str) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]));
    let lines = datafusion::arrow::array::StringArray::from(text.lines().collect::<Vec<_>>());
    Ok(RecordBatch::try_new(schema, vec![Arc::new(lines)]).map_err(SluiceError::from)?)
}

/// The Arrow schema of SQL column definitions, as DataFusion maps types.
async fn columns_schema(session: &SluiceSession, source: &CreateSource) -> Result<SchemaRef> {
    if source.columns.is_empty() {
        return Ok(Arc::new(Schema::empty()));
    }
    // Names are quoted (lower-cased first when written unquoted, as
    // DataFusion normalises them), so a column named like a keyword
    // (`key`, Kafka's column) is not read as a constraint.
    let cols: Vec<String> = source
        .columns
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.name.quote_style.is_none() {
                c.name.value = c.name.value.to_lowercase();
                c.name.quote_style = Some('"');
            }
            c.to_string()
        })
        .collect();
    let sql = format!("CREATE TABLE __sluice_schema_probe ({})", cols.join(", "));
    let state = session.context().state();
    let stmt = state.sql_to_statement(&sql, &datafusion::config::Dialect::Generic).map_err(|e| explain(session, e))?;
    match state.statement_to_plan(stmt).await.map_err(|e| explain(session, e))? {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(t)) => Ok(Arc::clone(t.input.schema().inner())),
        _ => Err(SqlError::Parse("cannot read the column list".into())),
    }
}

fn watermark_spec(col: &datafusion::sql::sqlparser::ast::Ident, expr: &Expr) -> Result<WatermarkSpec> {
    let bad = || {
        SqlError::Engine(SluiceError::plan(format!(
            "WATERMARK FOR {col} AS {expr}: expected `{col}` or `{col} - INTERVAL '<n>' <unit>` (e.g. {col} - INTERVAL '10' MINUTE)"
        )))
    };
    let same_col = |e: &Expr| matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&col.value));
    let delay = match expr {
        e if same_col(e) => std::time::Duration::ZERO,
        Expr::BinaryOp { left, op: BinaryOperator::Minus, right } if same_col(left) => {
            crate::windows::duration_of(right).map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    Ok(WatermarkSpec { column: col.value.clone(), delay })
}

async fn create_source(session: &SluiceSession, s: CreateSource) -> Result<StatementResult> {
    if s.if_not_exists && session.context().table_exist(s.name.as_str())? {
        return Ok(StatementResult::Done(format!("source '{}' exists", s.name)));
    }
    let mut options: Options = s.options.iter().cloned().collect();
    let connector = options.remove("connector").ok_or_else(|| {
        SluiceError::plan(format!("CREATE SOURCE {}: the WITH clause needs connector = '<name>'", s.name))
    })?;
    let schema = columns_schema(session, &s).await?;
    let watermark = s.watermark.as_ref().map(|(c, e)| watermark_spec(c, e)).transpose()?;
    session.create_source(SourceDefinition { name: s.name.clone(), connector, options, schema, watermark })?;
    Ok(StatementResult::Done(format!("source '{}' created", s.name)))
}

/// The query spec of `CREATE SINK ... WITH (...)`.
fn sink_spec(s: &CreateSink) -> Result<QuerySpec> {
    let all: Options = s.options.iter().cloned().collect();
    let output_mode = all.get("output_mode").map(str::parse::<OutputMode>).transpose()?.unwrap_or_default();
    let trigger = Trigger::parse(all.get("trigger").unwrap_or("processing_time"), all.get("interval"))?;
    let watermark_policy = match all.get("watermark_policy").map(str::to_ascii_lowercase).as_deref() {
        None | Some("min") => WatermarkPolicy::Min,
        Some("max") => WatermarkPolicy::Max,
        Some(other) => {
            return Err(SluiceError::InvalidOption {
                option: "watermark_policy".into(),
                value: other.into(),
                reason: "use 'min' or 'max'".into(),
            }
            .into())
        }
    };
    let options: Options =
        s.options.iter().filter(|(k, _)| !SINK_ENGINE_OPTIONS.contains(&k.as_str())).cloned().collect();
    Ok(QuerySpec {
        name: Some(s.name.clone()),
        format: all.get("connector").unwrap_or("memory").to_string(),
        options,
        output_mode,
        trigger,
        checkpoint: all.get("checkpoint").map(str::to_string),
        watermark_policy,
        foreach: None,
        late_rows: all.get("late_rows").map(str::to_string),
        min_batches_to_retain: all.parse::<u64>("min_batches_to_retain", "a positive number of batches")?,
        reset_changed_state: all.bool("reset_changed_state", false)?,
        state_checkpoint_interval: all.parse::<u64>("state_checkpoint_interval", "a positive number of batches")?,
    })
}

async fn create_sink(session: &SluiceSession, mut s: CreateSink) -> Result<StatementResult> {
    let spec = sink_spec(&s)?;
    crate::windows::rewrite_windows(&mut s.query)?;
    let state = session.context().state();
    let plan = state
        .statement_to_plan(DFStatement::Statement(Box::new(SqlStatement::Query(s.query))))
        .await
        .map_err(|e| explain(session, e))?;
    let df = DataFrame::new(state, plan);
    let query = session.start_query(df, spec).await.map_err(|e| match e {
        SluiceError::DataFusion(e) => explain(session, e),
        other => other.into(),
    })?;
    Ok(StatementResult::Started(query))
}

/// A DataFusion error in the terms of this session's tables.
fn explain(session: &SluiceSession, e: datafusion::error::DataFusionError) -> SqlError {
    let mut known: Vec<String> = session
        .context()
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
        .map(|s| s.table_names())
        .unwrap_or_default();
    known.retain(|n| !n.starts_with("__"));
    known.sort();
    crate::error::explain_datafusion_error(e, &known)
}

fn show_queries(session: &SluiceSession) -> Result<RecordBatch> {
    let queries = session.queries();
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("last_batch_id", DataType::UInt64, true),
        Field::new("last_input_rows", DataType::UInt64, true),
        Field::new("input_rows_per_second", DataType::Float64, true),
        Field::new("processed_rows_per_second", DataType::Float64, true),
        Field::new("last_batch_ms", DataType::UInt64, true),
        Field::new("state_rows", DataType::UInt64, true),
        Field::new("watermark", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
    ]));
    let progress: Vec<_> = queries.iter().map(|q| q.last_progress()).collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(queries.iter().map(|q| q.name().to_string()))),
        Arc::new(StringArray::from_iter_values(queries.iter().map(|q| q.id()))),
        Arc::new(StringArray::from_iter_values(queries.iter().map(|q| q.status().message))),
        Arc::new(UInt64Array::from_iter(progress.iter().map(|p| p.as_ref().map(|p| p.batch_id)))),
        Arc::new(UInt64Array::from_iter(progress.iter().map(|p| p.as_ref().map(|p| p.num_input_rows)))),
        Arc::new(Float64Array::from_iter(progress.iter().map(|p| p.as_ref().map(|p| p.input_rows_per_second)))),
        Arc::new(Float64Array::from_iter(progress.iter().map(|p| p.as_ref().map(|p| p.processed_rows_per_second)))),
        Arc::new(UInt64Array::from_iter(
            progress.iter().map(|p| p.as_ref().and_then(|p| p.duration_ms.get("total").copied())),
        )),
        Arc::new(UInt64Array::from_iter(
            progress.iter().map(|p| p.as_ref().map(|p| p.state_operators.iter().map(|s| s.num_rows_total).sum())),
        )),
        Arc::new(StringArray::from_iter(queries.iter().map(|q| {
            q.watermark_ms().and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.naive_utc().to_string())
        }))),
        Arc::new(StringArray::from_iter(queries.iter().map(|q| q.exception()))),
    ];
    Ok(RecordBatch::try_new(schema, cols).map_err(SluiceError::from)?)
}
