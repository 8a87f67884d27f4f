//! Event-time watermarks: declaration and tracking.

use std::time::Duration;

/// `WATERMARK FOR <column> AS <column> - INTERVAL ...`: the watermark is the
/// maximum event time seen minus `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// Event-time column.
    pub column: String,
    /// Allowed lateness.
    pub delay: Duration,
}

impl WatermarkSpec {
    /// Check the declaration against the schema of source `source`: the
    /// column must exist and be a timestamp (a watermark on anything else
    /// would compare apples with times and drop every row as late).
    pub fn check(&self, source: &str, schema: &datafusion::arrow::datatypes::Schema) -> crate::Result<()> {
        let Some((_, field)) = schema.column_with_name(&self.column) else {
            return Err(crate::SluiceError::plan(format!(
                "WATERMARK FOR {}: source '{source}' has no column '{}'; columns are: {}",
                self.column,
                self.column,
                schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
            )));
        };
        if !matches!(field.data_type(), datafusion::arrow::datatypes::DataType::Timestamp(_, _)) {
            return Err(crate::SluiceError::plan(format!(
                "WATERMARK FOR {}: column '{}' of source '{source}' is {}, but a watermark needs a TIMESTAMP column; \
                 declare the column as TIMESTAMP, or put the watermark on the source's event-time column",
                self.column,
                self.column,
                field.data_type()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    #[test]
    fn watermark_needs_a_timestamp_column() {
        let schema = Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("n", DataType::Int64, true),
        ]);
        let spec = |c: &str| WatermarkSpec { column: c.into(), delay: Duration::from_secs(1) };
        assert!(spec("ts").check("ev", &schema).is_ok());
        let e = spec("n").check("ev", &schema).unwrap_err().to_string();
        assert!(e.contains("'n'") && e.contains("Int64") && e.contains("TIMESTAMP"), "{e}");
        let e = spec("x").check("ev", &schema).unwrap_err().to_string();
        assert!(e.contains("no column 'x'") && e.contains("ts, n"), "{e}");
    }
}
