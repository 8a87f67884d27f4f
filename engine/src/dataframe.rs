//! Streaming operations on DataFusion DataFrames (the Rust API's
//! `with_watermark`, windows and deduplication), as Spark's Dataset methods.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{col, lit, Expr, LogicalPlan, TableScanBuilder};

use crate::error::{Result, SluiceError};
use crate::functions::window::{window_udf, SESSION, TUMBLE, WINDOWS};
use crate::options::parse_duration;
use crate::stream_table::StreamTable;
use crate::watermark::WatermarkSpec;

fn udf_call(name: &str, args: Vec<Expr>) -> Result<Expr> {
    let udf = window_udf(name).ok_or_else(|| SluiceError::plan(format!("no function {name}")))?;
    Ok(Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), args)))
}

fn micros(text: &str) -> Result<i64> {
    Ok(parse_duration(text)?.as_micros() as i64)
}

/// Declare an event-time watermark on `column` of the stream this DataFrame
/// reads: the watermark is the maximum event time seen minus `delay`
/// (`"10 minutes"`). The column must be a column of the source.
///
/// ```no_run
/// # fn demo(df: datafusion::dataframe::DataFrame) -> sluice_engine::Result<()> {
/// let df = sluice_engine::dataframe::with_watermark(df, "ts", "10 minutes")?;
/// # Ok(()) }
/// ```
pub fn with_watermark(df: DataFrame, column: &str, delay: &str) -> Result<DataFrame> {
    let delay = parse_duration(delay)?;
    let (state, plan) = df.into_parts();
    let mut found = false;
    let mut refused = None;
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::TableScan(scan) = &node else { return Ok(Transformed::no(node)) };
            let provider = source_as_provider(&scan.source)?;
            let Some(table) = provider.downcast_ref::<StreamTable>() else { return Ok(Transformed::no(node)) };
            if table.definition().schema.column_with_name(column).is_none() {
                return Ok(Transformed::no(node));
            }
            let mut def = table.definition().clone();
            let spec = WatermarkSpec { column: column.to_string(), delay };
            if let Err(e) = spec.check(&def.name, &def.schema) {
                refused = Some(e);
                return Ok(Transformed::no(node));
            }
            def.watermark = Some(spec);
            let scan = TableScanBuilder::new(
                scan.table_name.clone(),
                provider_as_source(Arc::new(table.with_definition(def))),
            )
            .with_projection(scan.projection.clone())
            .with_filters(scan.filters.clone())
            .with_fetch(scan.fetch)
            .build()?;
            found = true;
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        })?
        .data;
    if let Some(e) = refused {
        return Err(e);
    }
    if !found {
        return Err(SluiceError::plan(format!(
            "with_watermark: no stream read by this DataFrame has a column '{column}'; name a timestamp column of the source"
        )));
    }
    Ok(DataFrame::new(state, plan))
}

/// Add a struct column `name` (`{start, end}`) holding the event-time window
/// of `time_column`: tumbling windows of `size`, or sliding windows every
/// `slide` (a row then appears once per window containing it). Group by
/// the column to aggregate per window.
pub fn with_window(df: DataFrame, name: &str, time_column: &str, size: &str, slide: Option<&str>) -> Result<DataFrame> {
    let size = micros(size)?;
    let slide = slide.map(micros).transpose()?.unwrap_or(size);
    if size <= 0 || slide <= 0 || slide > size {
        return Err(SluiceError::plan(format!(
            "with_window: the window size ({size} µs) and slide ({slide} µs) must be positive, and the slide at most \
             the size (rows between windows would belong to none)"
        )));
    }
    if slide == size {
        let expr = udf_call(TUMBLE, vec![col(time_column), lit(size), lit(0i64)])?;
        return Ok(df.with_column(name, expr)?);
    }
    let expr = udf_call(WINDOWS, vec![col(time_column), lit(size), lit(slide), lit(0i64)])?;
    Ok(df.with_column(name, expr)?.unnest_columns(&[name])?)
}

/// Add a struct column `name` holding the session window of each row
/// (`[ts, ts + gap)`); grouping by it merges the sessions of each group
/// across rows and batches.
pub fn with_session_window(df: DataFrame, name: &str, time_column: &str, gap: &str) -> Result<DataFrame> {
    let expr = udf_call(SESSION, vec![col(time_column), lit(micros(gap)?)])?;
    Ok(df.with_column(name, expr)?)
}

/// Streaming deduplication (Spark's `dropDuplicates`): each distinct row
/// (or each distinct value of `columns`) is emitted once, the first time it
/// is seen; with a watermark on a column of the row, state older than the
/// watermark is forgotten and older rows are dropped as late.
pub fn drop_duplicates(df: DataFrame, columns: Option<&[&str]>) -> Result<DataFrame> {
    match columns {
        None => Ok(df.distinct()?),
        Some(cols) => {
            let all: Vec<Expr> = df.schema().columns().into_iter().map(Expr::Column).collect();
            Ok(df.distinct_on(cols.iter().map(|c| col(*c)).collect(), all, None)?)
        }
    }
}

/// Spark's `dropDuplicatesWithinWatermark`: a row is a duplicate of an
/// earlier one with the same `columns` while the watermark has not passed
/// that earlier row's event time plus the watermark delay; the event time
/// itself need not be equal. Needs a watermark on the stream.
pub fn drop_duplicates_within_watermark(df: DataFrame, columns: &[&str]) -> Result<DataFrame> {
    let (state, plan) = df.into_parts();
    let marker = crate::plan::nodes::WithinWatermarkNode { input: plan };
    let plan = datafusion::logical_expr::LogicalPlan::Extension(datafusion::logical_expr::Extension {
        node: std::sync::Arc::new(marker),
    });
    let df = DataFrame::new(state, plan);
    let all: Vec<Expr> = df.schema().columns().into_iter().map(Expr::Column).collect();
    Ok(df.distinct_on(columns.iter().map(|c| col(*c)).collect(), all, None)?)
}
