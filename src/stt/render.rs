//! Rendering Arrow values the way stream tests write them (STREAMTEST.md,
//! "Rendering values").

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Render every row of the batches as `v1,v2,...`.
pub fn render_batches(batches: &[RecordBatch]) -> Result<Vec<String>, String> {
    let mut rows = vec![];
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Result<Vec<String>, String> = b.columns().iter().map(|c| render_value(c, r)).collect();
            rows.push(cells?.join(","));
        }
    }
    Ok(rows)
}

/// Render a timestamp in microseconds as `YYYY-MM-DD HH:MM:SS[.ffffff]`.
pub fn render_timestamp_micros(us: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_micros(us) else { return us.to_string() };
    let base = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = us.rem_euclid(1_000_000);
    if frac == 0 {
        base
    } else {
        format!("{base}.{}", format!("{frac:06}").trim_end_matches('0'))
    }
}

fn quote(s: &str) -> String {
    if s.contains(',') || s.contains('"') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Render one value.
pub fn render_value(array: &ArrayRef, row: usize) -> Result<String, String> {
    if array.is_null(row) {
        return Ok("NULL".into());
    }
    Ok(match array.data_type() {
        DataType::Float64 => format!("{}", array.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => format!("{}", array.as_primitive::<Float32Type>().value(row)),
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = cast(&array.slice(row, 1), &DataType::Utf8).map_err(|e| e.to_string())?;
            quote(s.as_string::<i32>().value(0))
        }
        DataType::Timestamp(_, _) => {
            let us = cast(&array.slice(row, 1), &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| e.to_string())?;
            render_timestamp_micros(us.as_primitive::<TimestampMicrosecondType>().value(0))
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let parts: Result<Vec<String>, String> = fields
                .iter()
                .zip(s.columns())
                .map(|(f, c)| Ok(format!("{}: {}", f.name(), render_value(c, row)?)))
                .collect();
            format!("{{{}}}", parts?.join(", "))
        }
        _ => {
            let fmt = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()).map_err(|e| e.to_string())?;
            quote(&fmt.value(row).to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_trim_fraction() {
        assert_eq!(render_timestamp_micros(0), "1970-01-01 00:00:00");
        assert_eq!(render_timestamp_micros(1_500_000), "1970-01-01 00:00:01.5");
    }

    #[test]
    fn floats_are_shortest() {
        assert_eq!(format!("{}", 3.0f64), "3");
        assert_eq!(format!("{}", 2.3333333333333335f64), "2.3333333333333335");
    }
}
