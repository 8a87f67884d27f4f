//! Rows to Kafka records: the `key`, `value`, `headers`, `topic` and
//! `partition` columns as given (Spark's Kafka sink), or, without a `value`
//! column, the whole row as JSON or CSV.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int32Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use sluice_engine::{Result, SluiceError};

/// How a row without a `value` column becomes a message value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// One JSON object per row (the default).
    Json,
    /// One CSV line per row, no header.
    Csv,
}

/// Where each part of a record comes from in the query's rows.
#[derive(Debug, Clone)]
pub struct RecordLayout {
    key: Option<usize>,
    value: Option<usize>,
    headers: Option<usize>,
    topic: Option<usize>,
    partition: Option<usize>,
    format: ValueFormat,
}

fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::Null
    )
}

impl RecordLayout {
    /// Check the query's schema; `sink` names the sink in errors.
    pub fn new(sink: &str, schema: &Schema, format: ValueFormat, topic_option: bool) -> Result<Self> {
        let find = |name: &str| schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case(name));
        let bad = |reason: String| SluiceError::Sink { sink: sink.into(), reason };
        let value = find("value");
        for (name, idx) in [("key", find("key")), ("value", value)] {
            if let Some(i) = idx {
                let t = schema.field(i).data_type();
                if !is_bytes(t) {
                    return Err(bad(format!(
                        "column '{name}' is {t}; the Kafka sink writes a {name} of type VARCHAR or BYTEA: cast it \
                         (CAST(.. AS VARCHAR)){}",
                        if name == "value" { ", or name no column value to write each row as JSON" } else { "" }
                    )));
                }
            }
        }
        let topic = find("topic");
        if let Some(i) = topic {
            if !matches!(schema.field(i).data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                return Err(bad(format!("column 'topic' is {}; it must be VARCHAR", schema.field(i).data_type())));
            }
        } else if !topic_option {
            return Err(bad(
                "the Kafka sink needs a topic: set the topic option, or give the rows a topic column".into()
            ));
        }
        let partition = find("partition");
        if let Some(i) = partition {
            if !schema.field(i).data_type().is_integer() {
                return Err(bad(format!(
                    "column 'partition' is {}; it must be an integer",
                    schema.field(i).data_type()
                )));
            }
        }
        let headers = find("headers");
        if let Some(i) = headers {
            let ok = match schema.field(i).data_type() {
                DataType::List(f) => match f.data_type() {
                    DataType::Struct(fs) => {
                        fs.len() == 2
                            && fs[0].name() == "key"
                            && is_bytes(fs[0].data_type())
                            && is_bytes(fs[1].data_type())
                    }
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                return Err(bad(format!(
                    "column 'headers' is {}; it must be a list of {{key VARCHAR, value BYTEA}} structs, as the \
                     kafka source's include_headers gives",
                    schema.field(i).data_type()
                )));
            }
        }
        Ok(Self { key: find("key"), value, headers, topic, partition, format })
    }
}

/// The records of one batch, column by column.
pub struct Records {
    /// Message keys.
    pub keys: Option<BinaryArray>,
    /// Message values (one per row).
    pub values: Vec<Option<Vec<u8>>>,
    /// Per-row topics, if the rows carry them.
    pub topics: Option<StringArray>,
    /// Per-row partitions, if the rows carry them.
    pub partitions: Option<Int32Array>,
    /// Per-row headers (key, value) lists.
    pub headers: Option<Vec<Vec<(String, Option<Vec<u8>>)>>>,
}

fn bytes_column(c: &ArrayRef) -> Result<BinaryArray> {
    Ok(cast(c, &DataType::Binary)?.as_binary::<i32>().clone())
}

impl Records {
    /// Convert one batch.
    pub fn from_batch(layout: &RecordLayout, batch: &RecordBatch) -> Result<Self> {
        let keys = layout.key.map(|i| bytes_column(batch.column(i))).transpose()?;
        let values = match layout.value {
            Some(i) => bytes_column(batch.column(i))?.iter().map(|v| v.map(<[u8]>::to_vec)).collect(),
            None => encode_rows(batch, layout.format)?,
        };
        let topics = layout
            .topic
            .map(|i| cast(batch.column(i), &DataType::Utf8).map(|a| a.as_string::<i32>().clone()))
            .transpose()?;
        let partitions = layout
            .partition
            .map(|i| cast(batch.column(i), &DataType::Int32).map(|a| a.as_primitive().clone()))
            .transpose()?;
        let headers = layout.headers.map(|i| headers_of(batch.column(i))).transpose()?;
        Ok(Self { keys, values, topics, partitions, headers })
    }
}

fn headers_of(column: &ArrayRef) -> Result<Vec<Vec<(String, Option<Vec<u8>>)>>> {
    let list = column.as_list::<i32>();
    let mut out = Vec::with_capacity(list.len());
    for row in 0..list.len() {
        let mut hs = vec![];
        if list.is_valid(row) {
            let entries = list.value(row);
            let s = entries.as_struct();
            let k = cast(s.column(0), &DataType::Utf8)?;
            let v = bytes_column(s.column(1))?;
            let k = k.as_string::<i32>();
            for j in 0..s.len() {
                if s.is_valid(j) && k.is_valid(j) {
                    hs.push((k.value(j).to_string(), v.is_valid(j).then(|| v.value(j).to_vec())));
                }
            }
        }
        out.push(hs);
    }
    Ok(out)
}

/// Each row as one JSON object or one CSV line.
fn encode_rows(batch: &RecordBatch, format: ValueFormat) -> Result<Vec<Option<Vec<u8>>>> {
    match format {
        ValueFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                w.write(batch)?;
                w.finish()?;
            }
            let lines: Vec<Option<Vec<u8>>> =
                buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| Some(l.to_vec())).collect();
            if lines.len() != batch.num_rows() {
                return Err(SluiceError::Internal(format!(
                    "the JSON writer gave {} lines for {} rows",
                    lines.len(),
                    batch.num_rows()
                )));
            }
            Ok(lines)
        }
        ValueFormat::Csv => (0..batch.num_rows())
            .map(|i| {
                let mut buf = Vec::new();
                {
                    let mut w = arrow::csv::WriterBuilder::new().with_header(false).build(&mut buf);
                    w.write(&batch.slice(i, 1))?;
                }
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                Ok(Some(buf))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::Field;

    #[test]
    fn rows_without_a_value_column_are_written_as_json_or_csv() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(vec![Some("a,b"), None])), Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let json = RecordLayout::new("s", &schema, ValueFormat::Json, true).unwrap();
        let r = Records::from_batch(&json, &batch).unwrap();
        assert_eq!(r.values, vec![Some(br#"{"word":"a,b","n":1}"#.to_vec()), Some(br#"{"n":2}"#.to_vec())]);
        let csv = RecordLayout::new("s", &schema, ValueFormat::Csv, true).unwrap();
        let r = Records::from_batch(&csv, &batch).unwrap();
        assert_eq!(r.values, vec![Some(b"\"a,b\",1".to_vec()), Some(b",2".to_vec())]);
    }

    #[test]
    fn a_value_that_is_not_text_or_bytes_or_no_topic_is_refused() {
        let schema = Schema::new(vec![Field::new("value", DataType::Int64, true)]);
        let e = RecordLayout::new("s", &schema, ValueFormat::Json, true).unwrap_err().to_string();
        assert!(e.contains("column 'value' is Int64") && e.contains("CAST"), "{e}");
        let schema = Schema::new(vec![Field::new("value", DataType::Utf8, true)]);
        let e = RecordLayout::new("s", &schema, ValueFormat::Json, false).unwrap_err().to_string();
        assert!(e.contains("needs a topic"), "{e}");
    }
}
