use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use sluice_engine::{Options, OutputMode, Sink, SinkContext, SinkFactory};

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, true), Field::new("n", DataType::Int64, false)]))
}

fn batch(words: &[Option<&str>], counts: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(StringArray::from(words.to_vec())), Arc::new(Int64Array::from(counts.to_vec()))],
    )
    .unwrap()
}

fn ctx(options: &[(&str, &str)]) -> SinkContext {
    SinkContext {
        name: "q".into(),
        options: options.iter().copied().collect::<Options>(),
        schema: schema(),
        output_mode: OutputMode::Update,
        context: SessionContext::new(),
        checkpoint: "/tmp/unused".into(),
        query_id: "q-1".into(),
    }
}

/// A console sink writing into a buffer, and the buffer.
fn capture(options: &[(&str, &str)]) -> (Arc<dyn Sink>, Arc<Mutex<Vec<u8>>>) {
    let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
    let target: ConsoleTarget = buffer.clone();
    let sink = ConsoleSinkFactory::with_target(target).create(ctx(options)).unwrap();
    (sink, buffer)
}

fn text(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8(buffer.lock().clone()).unwrap()
}

#[tokio::test]
async fn prints_header_and_table() {
    let (sink, buffer) = capture(&[]);
    sink.add_batch(3, &[batch(&[Some("a"), None], &[2, 1])]).await.unwrap();
    let expected = "\
-------------------------------------------
Batch: 3
-------------------------------------------
+------+---+
| word | n |
+------+---+
| a    | 2 |
| null | 1 |
+------+---+

";
    assert_eq!(text(&buffer), expected);
    assert!(!sink.exactly_once());
}

#[tokio::test]
async fn cuts_rows_across_batches_and_says_so() {
    let (sink, buffer) = capture(&[("num_rows", "3")]);
    let batches = [batch(&[Some("a"), Some("b")], &[1, 2]), batch(&[Some("c"), Some("d")], &[3, 4])];
    sink.add_batch(0, &batches).await.unwrap();
    let out = text(&buffer);
    assert!(out.contains("| a    | 1 |") && out.contains("| c    | 3 |"), "{out}");
    assert!(!out.contains("| d "), "{out}");
    assert!(out.ends_with("+------+---+\nonly showing top 3 rows\n\n"), "{out}");
}

#[tokio::test]
async fn no_notice_when_all_rows_fit() {
    let (sink, buffer) = capture(&[("num_rows", "2")]);
    sink.add_batch(0, &[batch(&[Some("a"), Some("b")], &[1, 2])]).await.unwrap();
    assert!(!text(&buffer).contains("only showing"));
}

#[tokio::test]
async fn truncates_long_cells_by_default() {
    let long = "abcdefghijklmnopqrstuvwxyz";
    let (sink, buffer) = capture(&[]);
    sink.add_batch(1, &[batch(&[Some(long)], &[1])]).await.unwrap();
    let out = text(&buffer);
    assert!(out.contains("| abcdefghijklmnopq... | 1 |"), "{out}");
    assert!(!out.contains(long), "{out}");

    let (sink, buffer) = capture(&[("truncate", "false")]);
    sink.add_batch(1, &[batch(&[Some(long)], &[1])]).await.unwrap();
    assert!(text(&buffer).contains(&format!("| {long} | 1 |")));
}

#[tokio::test]
async fn empty_batch_prints_header_only_table() {
    let (sink, buffer) = capture(&[]);
    sink.add_batch(5, &[]).await.unwrap();
    let out = text(&buffer);
    assert!(out.starts_with("-------------------------------------------\nBatch: 5\n"), "{out}");
    assert!(out.contains("| word | n |"), "{out}");
    assert!(!out.contains("only showing"), "{out}");
}

#[tokio::test]
async fn same_batch_id_printed_once_per_run() {
    let (sink, buffer) = capture(&[]);
    sink.add_batch(0, &[batch(&[Some("a")], &[1])]).await.unwrap();
    sink.add_batch(0, &[batch(&[Some("a")], &[1])]).await.unwrap();
    sink.add_batch(1, &[batch(&[Some("b")], &[1])]).await.unwrap();
    let out = text(&buffer);
    assert_eq!(out.matches("Batch: 0").count(), 1, "{out}");
    assert_eq!(out.matches("Batch: 1").count(), 1, "{out}");
}

#[test]
fn bad_options_are_rejected() {
    let factory = ConsoleSinkFactory::default();
    let e = factory.create(ctx(&[("num_rows", "-1")])).unwrap_err().to_string();
    assert!(e.contains("num_rows"), "{e}");
    let e = factory.create(ctx(&[("truncate", "maybe")])).unwrap_err().to_string();
    assert!(e.contains("truncate"), "{e}");
    let e = factory.create(ctx(&[("rows", "3")])).unwrap_err().to_string();
    assert!(e.contains("num_rows, truncate"), "{e}");
    assert_eq!(factory.name(), "console");
}

#[test]
fn truncate_cell_follows_spark() {
    assert_eq!(truncate_cell("short", 20), "short");
    assert_eq!(truncate_cell("exactly-twenty-chars", 20), "exactly-twenty-chars");
    assert_eq!(truncate_cell("ééééééééééééééééééééé", 20), "ééééééééééééééééé...");
    assert_eq!(truncate_cell("abcdef", 3), "abc");
}
