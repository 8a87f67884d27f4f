//! `partition_by` of the files sink: columns of the query's output, or
//! expressions over them (`date_format(ts, 'yyyy-MM-dd-HH') AS hour`), each
//! a level of `name=value/` directories. An expression's value is computed
//! per row at write time; its name is its alias, else its text.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use sluice_engine::{Result, SluiceError};

/// One level of partitioning.
#[derive(Debug, Clone)]
pub struct PartitionColumn {
    /// The directory level's name (`name=value`).
    pub name: String,
    /// The expression computing it, when it is not an output column.
    pub expr: Option<Arc<dyn PhysicalExpr>>,
}

/// Split `value` at commas outside parentheses and quotes.
fn split_top_level(value: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth, mut quote) = (vec![], String::new(), 0i32, None::<char>);
    for c in value.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

/// `expr AS name` split into the expression and the alias.
fn split_alias(item: &str) -> (&str, Option<&str>) {
    let lower = item.to_ascii_lowercase();
    match lower.rfind(" as ") {
        Some(i) if !item[i + 4..].trim().is_empty() && !item[i + 4..].contains(['(', ')', '\'']) => {
            (item[..i].trim(), Some(item[i + 4..].trim().trim_matches('"')))
        }
        _ => (item, None),
    }
}

/// Parse `partition_by` against the query's output `schema`.
pub fn parse(value: Option<&str>, schema: &Schema, ctx: &SessionContext) -> Result<Vec<PartitionColumn>> {
    let Some(value) = value else { return Ok(vec![]) };
    let bad =
        |reason: String| SluiceError::InvalidOption { option: "partition_by".into(), value: value.into(), reason };
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut out: Vec<PartitionColumn> = vec![];
    for item in split_top_level(value) {
        let column =
            names.iter().find(|n| **n == item).or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(&item)));
        let part = match column {
            Some(c) => PartitionColumn { name: c.clone(), expr: None },
            None if item.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                return Err(bad(format!("no column '{item}' in the query output; columns are: {}", names.join(", "))));
            }
            None => {
                let (text, alias) = split_alias(&item);
                let df_schema = DFSchema::try_from(schema.clone())?;
                let state = ctx.state();
                let logical = state
                    .create_logical_expr(text, &df_schema)
                    .map_err(|e| bad(format!("'{text}' is neither a column nor an expression over the output: {e}")))?;
                let physical = state.create_physical_expr(logical, &df_schema)?;
                let name = alias.unwrap_or(text).to_string();
                if names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                    return Err(bad(format!(
                        "the partition '{name}' has the name of an output column; give the expression another \
                         name (AS ...)"
                    )));
                }
                PartitionColumn { name, expr: Some(physical) }
            }
        };
        if !out.iter().any(|p| p.name == part.name) {
            out.push(part);
        }
    }
    if !out.is_empty() && out.iter().filter(|p| p.expr.is_none()).count() == names.len() {
        return Err(bad("cannot partition by every column: no column would be left in the data files".into()));
    }
    Ok(out)
}

/// `batch` with the computed partition columns appended (a no-op without
/// expressions).
pub fn with_computed(batch: &RecordBatch, partitions: &[PartitionColumn]) -> Result<RecordBatch> {
    if partitions.iter().all(|p| p.expr.is_none()) {
        return Ok(batch.clone());
    }
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    for p in partitions {
        if let Some(expr) = &p.expr {
            let values = expr.evaluate(batch)?.into_array(batch.num_rows())?;
            fields.push(Field::new(&p.name, values.data_type().clone(), true));
            columns.push(values);
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}
