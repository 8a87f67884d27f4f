//! Rendering of one micro-batch as Spark-like console text.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use sluice_engine::Result;

use super::TRUNCATE_WIDTH;

const RULE: &str = "-------------------------------------------";

/// Cut `text` to `width` characters the way Spark's `show()` does: longer
/// text keeps its first `width - 3` characters followed by `...` (or just
/// the first `width` characters when `width < 4`).
pub fn truncate_cell(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width < 4 {
        return text.chars().take(width).collect();
    }
    let mut cut: String = text.chars().take(width - 3).collect();
    cut.push_str("...");
    cut
}

/// Escape characters that would break the table layout (as Spark does).
fn escape_meta(text: &str) -> String {
    text.replace('\n', "\\n").replace('\r', "\\r").replace('\t', "\\t")
}

/// Render one micro-batch (or a continuous epoch's chunk): the `title`
/// header (`Batch: <id>`, `Epoch: <id>`), a table of at most
/// `num_rows` rows, and `only showing top N rows` when rows were cut.
/// With `truncate`, cells longer than [`TRUNCATE_WIDTH`] characters are cut.
pub fn format_batch(
    title: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    num_rows: usize,
    truncate: bool,
) -> Result<String> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut shown = Vec::new();
    let mut remaining = num_rows;
    for batch in batches {
        if remaining == 0 {
            break;
        }
        let take = batch.num_rows().min(remaining);
        if take == 0 {
            continue;
        }
        remaining -= take;
        shown.push(to_strings(&batch.slice(0, take), truncate)?);
    }
    if shown.is_empty() {
        shown.push(RecordBatch::new_empty(string_schema(schema)));
    }
    let table = pretty_format_batches(&shown)?;
    let mut text = format!("{RULE}\n{title}\n{RULE}\n{table}\n");
    if total > num_rows {
        text.push_str(&format!("only showing top {num_rows} rows\n"));
    }
    text.push('\n');
    Ok(text)
}

/// `schema` with every column as nullable text.
fn string_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema.fields().iter().map(|f| Field::new(f.name(), DataType::Utf8, true)).collect::<Vec<_>>(),
    ))
}

/// Every column of `batch` as display text (nulls as `null`).
fn to_strings(batch: &RecordBatch, truncate: bool) -> Result<RecordBatch> {
    let options = FormatOptions::new().with_null("null").with_display_error(true);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
        let values: StringArray = (0..batch.num_rows())
            .map(|i| {
                let text = escape_meta(&formatter.value(i).to_string());
                Some(if truncate { truncate_cell(&text, TRUNCATE_WIDTH) } else { text })
            })
            .collect();
        columns.push(Arc::new(values));
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(string_schema(&batch.schema()), columns, &options)?)
}
