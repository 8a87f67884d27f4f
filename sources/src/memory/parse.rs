//! Parsing of comma-separated text rows into a typed record batch (used by
//! the stream-test `insert` directive and the REPL).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_engine::{Result, SluiceError};

/// Parse rows of comma-separated values, in the schema's column order.
/// `NULL` is null; a value may be double-quoted to hold a comma (a quote is
/// doubled inside). Timestamps are `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
///
/// ```
/// # use std::sync::Arc;
/// # use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, true),
///     Field::new("name", DataType::Utf8, true),
/// ]));
/// let batch = sluice_sources::memory::parse_rows(&schema, &["1,\"Smith, J\"", "2,NULL"]).unwrap();
/// assert_eq!(batch.num_rows(), 2);
/// ```
pub fn parse_rows<S: AsRef<str>>(schema: &SchemaRef, lines: &[S]) -> Result<RecordBatch> {
    let width = schema.fields().len();
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(lines.len()); width];
    for (line_no, line) in lines.iter().enumerate() {
        let line = line.as_ref();
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
        let mut record = csv::StringRecord::new();
        let ok = reader
            .read_record(&mut record)
            .map_err(|e| SluiceError::Malformed { location: format!("row {}", line_no + 1), reason: e.to_string() })?;
        // A lone empty line is one empty value for a one-column schema.
        if !ok {
            record = csv::StringRecord::from(vec![""]);
        }
        if record.len() != width {
            return Err(SluiceError::Malformed {
                location: format!("row {} ('{line}')", line_no + 1),
                reason: format!("expected {width} values, found {}", record.len()),
            });
        }
        let raw = raw_fields(line);
        for (i, value) in record.iter().enumerate() {
            let quoted = raw.get(i).is_some_and(|r| r.trim_start().starts_with('"'));
            columns[i].push(if value == "NULL" && !quoted { None } else { Some(value.to_string()) });
        }
    }
    let options = CastOptions { safe: false, ..Default::default() };
    let arrays = schema
        .fields()
        .iter()
        .zip(columns)
        .map(|(field, values)| {
            let strings: ArrayRef = Arc::new(StringArray::from(values));
            if field.data_type() == &DataType::Utf8 {
                return Ok(strings);
            }
            cast_with_options(&strings, field.data_type(), &options).map_err(|e| SluiceError::Malformed {
                location: format!("column '{}'", field.name()),
                reason: format!("cannot read the values as {}: {e}", field.data_type()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?)
}

/// The raw (unparsed) text of each comma-separated field, to tell a quoted
/// "NULL" string from a NULL.
fn raw_fields(line: &str) -> Vec<&str> {
    let mut out = vec![];
    let (mut start, mut in_quotes) = (0, false);
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                out.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&line[start..]);
    out
}
