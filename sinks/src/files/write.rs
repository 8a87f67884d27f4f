//! Splitting a micro-batch by partition values and encoding data files.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use sluice_engine::{Result, SluiceError};

/// Partition directory value of a null (Hive's convention, as in Spark).
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Data file format of the `files` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileFormat {
    /// Apache Parquet (default).
    #[default]
    Parquet,
    /// CSV with a header line.
    Csv,
    /// Newline-delimited JSON, one object per row.
    Json,
}

impl FileFormat {
    /// File name extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for FileFormat {
    type Err = SluiceError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "parquet" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "json" | "ndjson" | "jsonl" => Ok(Self::Json),
            _ => Err(SluiceError::InvalidOption {
                option: "format".into(),
                value: s.into(),
                reason: "valid formats of the files sink are parquet, csv, json".into(),
            }),
        }
    }
}

/// Escape a partition column name or value for a directory name, as Spark's
/// `escapePathName` does (`%XX` for characters that are unsafe in paths).
pub(crate) fn escape_path_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let unsafe_char = c.is_ascii_control()
            || matches!(c, '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^');
        if unsafe_char {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Split `batches` into groups of rows with the same values of the columns
/// `partition_by`: `(directory, batches without the partition columns)`, the
/// directory being `col=value/...` (empty without partitioning). Empty
/// batches are dropped.
pub(crate) fn split_by_partition(
    batches: &[RecordBatch],
    partition_by: &[String],
) -> Result<BTreeMap<String, Vec<RecordBatch>>> {
    let mut groups: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        if partition_by.is_empty() {
            groups.entry(String::new()).or_default().push(batch.clone());
            continue;
        }
        let schema = batch.schema();
        let key_indices = partition_by.iter().map(|c| schema.index_of(c)).collect::<Result<Vec<_>, _>>()?;
        let data_indices: Vec<usize> = (0..schema.fields().len()).filter(|i| !key_indices.contains(i)).collect();
        let options = FormatOptions::new();
        let formatters = key_indices
            .iter()
            .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &options))
            .collect::<Result<Vec<_>, ArrowError>>()?;
        let mut rows_by_dir: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let mut dir = String::new();
            for ((name, &col), formatter) in partition_by.iter().zip(&key_indices).zip(&formatters) {
                let value = if batch.column(col).is_null(row) {
                    NULL_PARTITION.to_string()
                } else {
                    escape_path_name(&formatter.value(row).to_string())
                };
                if !dir.is_empty() {
                    dir.push('/');
                }
                dir.push_str(&format!("{}={value}", escape_path_name(name)));
            }
            let row = u32::try_from(row).map_err(|_| SluiceError::exhausted("a batch of more than 4,294,967,295 rows is too large to partition; lower the source's per-trigger limit"))?;
            rows_by_dir.entry(dir).or_default().push(row);
        }
        for (dir, rows) in rows_by_dir {
            let taken = take_record_batch(batch, &UInt32Array::from(rows))?;
            groups.entry(dir).or_default().push(taken.project(&data_indices)?);
        }
    }
    Ok(groups)
}

/// Encode `batches` (non-empty, same schema) as one data file.
pub(crate) fn encode(format: FileFormat, batches: &[RecordBatch]) -> std::result::Result<Vec<u8>, String> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    match format {
        FileFormat::Parquet => {
            let mut writer = ArrowWriter::try_new(Vec::new(), first.schema(), None).map_err(|e| e.to_string())?;
            for batch in batches {
                writer.write(batch).map_err(|e| e.to_string())?;
            }
            writer.into_inner().map_err(|e| e.to_string())
        }
        FileFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
            for batch in batches {
                writer.write(batch).map_err(|e| e.to_string())?;
            }
            Ok(writer.into_inner())
        }
        FileFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
            for batch in batches {
                writer.write(batch).map_err(|e| e.to_string())?;
            }
            writer.finish().map_err(|e| e.to_string())?;
            Ok(writer.into_inner())
        }
    }
}
