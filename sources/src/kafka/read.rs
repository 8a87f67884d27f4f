//! Reading exact offset ranges of Kafka partitions into Arrow columns, and
//! turning them into the source's declared rows.
//!
//! A range `[from, until)` is read with an assigned (not subscribed)
//! consumer, so the consumer group never moves it. Offsets can have gaps
//! (transaction markers, aborted records under `read_committed`, compacted
//! records), so a partition is done when a record at `until - 1` or later
//! arrives, or at the partition's end once the broker says the end is at or
//! past `until`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampNanosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use sluice_engine::{Result, SluiceError};

use super::options::KafkaSourceOptions;
use crate::files::parse_records;

/// The columns of a Kafka record, as in Spark (`timestamp_type` in snake case).
pub fn kafka_schema(include_headers: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("timestamp_type", DataType::Int32, false),
    ];
    if include_headers {
        fields.push(Field::new("headers", headers_type(), true));
    }
    Arc::new(Schema::new(fields))
}

fn header_fields() -> Fields {
    Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Binary, true)])
}

fn headers_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(header_fields()), true)))
}

/// The records to read from one partition: offsets `[from, until)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset.
    pub from: i64,
    /// One past the last offset.
    pub until: i64,
}

/// Records read, column by column, in Kafka's schema.
struct Columns {
    key: BinaryBuilder,
    value: BinaryBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampNanosecondBuilder,
    timestamp_type: Int32Builder,
    headers: Option<ListBuilder<StructBuilder>>,
    rows: usize,
}

impl Columns {
    fn new(include_headers: bool) -> Self {
        Self {
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampNanosecondBuilder::new(),
            timestamp_type: Int32Builder::new(),
            headers: include_headers.then(|| ListBuilder::new(StructBuilder::from_fields(header_fields(), 0))),
            rows: 0,
        }
    }

    fn push<M: Message>(&mut self, m: &M) {
        self.key.append_option(m.key());
        self.value.append_option(m.payload());
        self.topic.append_value(m.topic());
        self.partition.append_value(m.partition());
        self.offset.append_value(m.offset());
        let (ts, kind) = match m.timestamp() {
            Timestamp::NotAvailable => (None, -1),
            Timestamp::CreateTime(t) => (Some(t), 0),
            Timestamp::LogAppendTime(t) => (Some(t), 1),
        };
        self.timestamp.append_option(ts.map(|t| t.saturating_mul(1_000_000)));
        self.timestamp_type.append_value(kind);
        if let Some(list) = &mut self.headers {
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    if let Some(header) = h.try_get(i) {
                        let entry = list.values();
                        entry.field_builder::<StringBuilder>(0).map(|b| b.append_value(header.key));
                        entry.field_builder::<BinaryBuilder>(1).map(|b| b.append_option(header.value));
                        entry.append(true);
                    }
                }
            }
            list.append(true);
        }
        self.rows += 1;
    }

    fn finish(mut self, include_headers: bool) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.timestamp_type.finish()),
        ];
        if let Some(mut h) = self.headers.take() {
            arrays.push(Arc::new(h.finish()));
        }
        Ok(RecordBatch::try_new(kafka_schema(include_headers), arrays)?)
    }
}

/// Read `ranges` (one topic at a time) into one batch of Kafka's schema.
/// Blocking: call it from `spawn_blocking`.
pub fn read_ranges(
    source: &str,
    consumer: &super::SourceConsumer,
    ranges: &[PartitionRange],
    options: &KafkaSourceOptions,
) -> Result<RecordBatch> {
    let mut columns = Columns::new(options.include_headers);
    let mut by_topic: BTreeMap<&str, Vec<&PartitionRange>> = BTreeMap::new();
    for r in ranges.iter().filter(|r| r.until > r.from) {
        by_topic.entry(r.topic.as_str()).or_default().push(r);
    }
    for (topic, ranges) in by_topic {
        read_topic(source, consumer, topic, &ranges, options, &mut columns)?;
    }
    columns.finish(options.include_headers)
}

fn read_topic(
    source: &str,
    consumer: &super::SourceConsumer,
    topic: &str,
    ranges: &[&PartitionRange],
    options: &KafkaSourceOptions,
    columns: &mut Columns,
) -> Result<()> {
    let fail = |reason: String| SluiceError::Source { source_name: source.into(), reason };
    let mut tpl = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, &PartitionRange> = BTreeMap::new();
    for r in ranges {
        tpl.add_partition_offset(topic, r.partition, Offset::Offset(r.from))
            .map_err(|e| fail(format!("topic '{topic}' partition {}: {e}", r.partition)))?;
        remaining.insert(r.partition, r);
    }
    consumer.assign(&tpl).map_err(|e| fail(format!("cannot assign topic '{topic}': {e}")))?;
    let mut deadline = Instant::now() + options.poll_timeout;
    let result = (|| {
        while !remaining.is_empty() {
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    let p = m.partition();
                    if let Some(r) = remaining.get(&p) {
                        deadline = Instant::now() + options.poll_timeout;
                        if m.offset() < r.until && m.offset() >= r.from {
                            columns.push(&m);
                        }
                        if m.offset() >= r.until - 1 {
                            remaining.remove(&p);
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(r) = remaining.get(&p) {
                        let (_, high) = consumer
                            .fetch_watermarks(topic, p, options.poll_timeout)
                            .map_err(|e| fail(format!("topic '{topic}' partition {p}: cannot read its end: {e}")))?;
                        if high >= r.until {
                            remaining.remove(&p);
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(fail(format!(
                        "reading topic '{topic}' partitions {:?}: {e}; if records were deleted (retention), set \
                         fail_on_data_loss = 'false' to skip what is gone",
                        remaining.keys().collect::<Vec<_>>()
                    )))
                }
            }
            if Instant::now() > deadline {
                let (p, r) = remaining.iter().next().map(|(p, r)| (*p, *r)).unwrap_or((0, ranges[0]));
                return Err(fail(format!(
                    "timed out after {} ms waiting for records of topic '{topic}' partition {p} up to offset {} \
                     (the broker reported them); is the broker reachable? (poll_timeout_ms raises the wait)",
                    options.poll_timeout.as_millis(),
                    r.until
                )));
            }
        }
        Ok(())
    })();
    let _ = consumer.unassign();
    result
}

/// Turn a batch of Kafka's schema into the source's declared rows: decoded
/// from the value (`format`), or Kafka's own columns, cast to the declared
/// types.
pub fn to_declared(
    source: &str,
    raw: RecordBatch,
    schema: &SchemaRef,
    options: &KafkaSourceOptions,
) -> Result<RecordBatch> {
    let Some(format) = options.format else {
        let arrays = schema
            .fields()
            .iter()
            .map(|f| {
                let column = raw.column_by_name(f.name()).ok_or_else(|| {
                    SluiceError::Internal(format!("kafka source '{source}': no column '{}'", f.name()))
                })?;
                Ok(if column.data_type() == f.data_type() { Arc::clone(column) } else { cast(column, f.data_type())? })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?);
    };
    let values = raw
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .ok_or_else(|| SluiceError::Internal(format!("kafka source '{source}': the value column is not binary")))?;
    if format == crate::files::FileFormat::Json {
        if let Some(batch) = decode_json_fast(values, schema) {
            return Ok(batch);
        }
    }
    let records: Vec<Option<&[u8]>> = values.iter().collect();
    let topics = raw.column(2).as_any().downcast_ref::<arrow::array::StringArray>();
    let partitions = raw.column(3).as_any().downcast_ref::<arrow::array::Int32Array>();
    let offsets = raw.column(4).as_any().downcast_ref::<arrow::array::Int64Array>();
    let locate = |i: usize| match (topics, partitions, offsets) {
        (Some(t), Some(p), Some(o)) => {
            format!("source '{source}', topic '{}' partition {} offset {}", t.value(i), p.value(i), o.value(i))
        }
        _ => format!("source '{source}', record {i}"),
    };
    let what = format!("kafka source '{source}'");
    Ok(parse_records(&records, &what, &locate, schema, format, options.mode)?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

/// Decode every value with Arrow's JSON decoder in one go. `None` sends the
/// batch to the record-by-record path (which applies `mode` and names the
/// bad record): any value that is missing, not exactly one object, or does
/// not decode, or a NULL whose key the record spells in another case.
fn decode_json_fast(values: &arrow::array::BinaryArray, schema: &SchemaRef) -> Option<RecordBatch> {
    use arrow::array::Array;
    if values.null_count() > 0 || values.is_empty() {
        return None;
    }
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(values.len() + 1)
        .with_strict_mode(false)
        .build_decoder()
        .ok()?;
    for v in values.iter().flatten() {
        // Values are separated by whitespace; a value that is not one
        // object changes the row count below.
        let trimmed = v.trim_ascii();
        if trimmed.first() != Some(&b'{') || trimmed.last() != Some(&b'}') {
            return None;
        }
        let mut buf = trimmed;
        while !buf.is_empty() {
            let n = decoder.decode(buf).ok()?;
            if n == 0 {
                return None;
            }
            buf = &buf[n..];
        }
        decoder.decode(b"\n").ok()?;
    }
    let batch = decoder.flush().ok()??;
    if batch.num_rows() != values.len() {
        return None;
    }
    // A NULL where the record spells the key in another case: the slow
    // path matches keys ignoring case, as the files source does.
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if column.null_count() == 0 {
            continue;
        }
        let exact = format!("\"{}\"", field.name());
        let lower = exact.to_ascii_lowercase();
        for row in (0..column.len()).filter(|r| column.is_null(*r)) {
            let raw = values.value(row);
            let has = |needle: &[u8], fold: bool| {
                raw.windows(needle.len()).any(|w| if fold { w.eq_ignore_ascii_case(needle) } else { w == needle })
            };
            if !has(exact.as_bytes(), false) && has(lower.as_bytes(), true) {
                return None;
            }
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use arrow::array::{BinaryArray, Int64Array, StringArray};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]))
    }

    #[test]
    fn the_fast_json_path_decodes_clean_values_and_leaves_the_rest_to_the_record_path() {
        let values = BinaryArray::from_iter_values([
            &br#"{"word": "a", "n": 1}"#[..],
            b"{\n \"word\": \"b\",\n \"n\": \"2\"\n}",
            br#"{"n": 3, "other": [1]}"#,
        ]);
        let b = decode_json_fast(&values, &schema()).expect("clean values decode at once");
        let words = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let ns = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(words.iter().collect::<Vec<_>>(), vec![Some("a"), Some("b"), None]);
        assert_eq!(ns.iter().collect::<Vec<_>>(), vec![Some(1), Some(2), Some(3)]);
        for bad in [&br#"{"WORD": "a", "n": 1}"#[..], b"not json", br#"{"n": "x"}"#, br#"{"n": 1} {"n": 2}"#, b""] {
            let values = BinaryArray::from_iter_values([&br#"{"word": "z", "n": 0}"#[..], bad]);
            assert!(decode_json_fast(&values, &schema()).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
