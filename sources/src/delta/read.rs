//! Reading a Delta table's data files as batches of the table's schema.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, StringArray};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_engine::{Result, SluiceError};

use super::log::{AddFile, DeltaLog};

/// The rows of `files`, as batches of `schema`: partition columns come from
/// each file's partition values, columns a file lacks (added to the table
/// later) are NULL, other types are cast to the table's.
pub fn read_files(source: &str, log: &DeltaLog, files: &[AddFile], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let mut out = vec![];
    for f in files {
        let path = log.file_path(&f.path);
        let fail = |reason: String| SluiceError::Source { source_name: source.to_string(), reason };
        let file = std::fs::File::open(&path).map_err(|e| {
            fail(format!(
                "a data file of the Delta table at {} is missing ({}: {e}): it was vacuumed or deleted; restore \
                 it, or restart the query from a later version with a new checkpoint",
                log.root().display(),
                path.display()
            ))
        })?;
        let unreadable = |e: parquet::errors::ParquetError| fail(format!("cannot read {}: {e}", path.display()));
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(unreadable)?.build().map_err(unreadable)?;
        for batch in reader {
            let batch = batch.map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            let n = batch.num_rows();
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let column = match (f.partition_values.get(field.name()), batch.column_by_name(field.name())) {
                    (Some(value), _) => {
                        let values: ArrayRef = Arc::new(StringArray::from(vec![value.as_deref(); n]));
                        cast(&values, field.data_type()).map_err(|e| {
                            fail(format!(
                                "partition value {value:?} of column '{}' in {} is not a {}: {e}",
                                field.name(),
                                path.display(),
                                field.data_type()
                            ))
                        })?
                    }
                    (None, Some(c)) if c.data_type() == field.data_type() => Arc::clone(c),
                    (None, Some(c)) => cast(c, field.data_type())?,
                    (None, None) => new_null_array(field.data_type(), n),
                };
                columns.push(column);
            }
            out.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
        }
    }
    Ok(out)
}
