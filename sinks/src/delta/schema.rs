//! The schema check of a Delta sink writing to an existing table.

use arrow::datatypes::{DataType, Schema};

/// Check the query's output `query` against the table's schema `table`:
/// every output column must be a table column of the same type; an output
/// column the table lacks is accepted (added, nullable) only with
/// `merge_schema`; a table column the output lacks must be nullable.
pub fn check(url: &url::Url, table: &Schema, query: &Schema, merge_schema: bool) -> Result<(), String> {
    let mut problems = vec![];
    let mut new_columns = vec![];
    for f in query.fields() {
        match table.field_with_name(f.name()) {
            Ok(t) if compatible(t.data_type(), f.data_type()) => {}
            Ok(t) => problems.push(format!(
                "column '{}' is {} in the table but {} in the query (cast it to {} in the query)",
                f.name(),
                t.data_type(),
                f.data_type(),
                t.data_type()
            )),
            Err(_) => new_columns.push(f.name().clone()),
        }
    }
    if !new_columns.is_empty() && !merge_schema {
        problems.push(format!(
            "the query has column(s) {} that the table does not: set merge_schema = 'true' to add them (as \
             nullable columns)",
            new_columns.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ")
        ));
    }
    for t in table.fields() {
        if query.field_with_name(t.name()).is_err() && !t.is_nullable() {
            problems.push(format!("the table's column '{}' is NOT NULL but the query does not produce it", t.name()));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the query's output does not fit the Delta table at {url}: {}; change the query, or write to a new table",
        problems.join("; ")
    ))
}

/// Whether a query column of type `query` can be written to a table column
/// of type `table` (Delta stores strings and binaries as one type each,
/// timestamps in microseconds).
fn compatible(table: &DataType, query: &DataType) -> bool {
    use DataType::*;
    let norm = |t: &DataType| match t {
        Utf8View | LargeUtf8 => Utf8,
        BinaryView | LargeBinary => Binary,
        Timestamp(_, tz) => Timestamp(arrow::datatypes::TimeUnit::Microsecond, tz.clone()),
        other => other.clone(),
    };
    norm(table) == norm(query)
}
