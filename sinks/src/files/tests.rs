use std::fs::File;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
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

fn ctx(options: &[(&str, &str)], mode: OutputMode) -> SinkContext {
    SinkContext {
        name: "out".into(),
        options: options.iter().copied().collect::<Options>(),
        schema: schema(),
        output_mode: mode,
        context: SessionContext::new(),
        checkpoint: "/tmp/unused".into(),
        query_id: "q-1".into(),
    }
}

fn sink(dir: &str, extra: &[(&str, &str)]) -> Arc<dyn Sink> {
    let mut options = vec![("path", dir)];
    options.extend_from_slice(extra);
    FilesSinkFactory.create(ctx(&options, OutputMode::Append)).unwrap()
}

/// Every file under `dir` (relative, sorted), the manifest excluded.
fn data_files_on_disk(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != MANIFEST_DIR {
                    walk(base, &p, out);
                }
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn parquet_rows(path: &str) -> usize {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}

#[tokio::test]
async fn two_batches_are_committed_and_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let sink = sink(dir, &[]);
    assert!(sink.exactly_once());
    sink.add_batch(0, &[batch(&[Some("a"), Some("b")], &[1, 2])]).await.unwrap();
    sink.add_batch(1, &[batch(&[Some("c")], &[3]), batch(&[Some("d")], &[4])]).await.unwrap();

    let files = committed_files(dir).await.unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].contains("part-0-") && files[0].ends_with(".parquet"), "{files:?}");
    assert!(files[1].contains("part-1-"), "{files:?}");
    assert_eq!(parquet_rows(&files[0]), 2);
    assert_eq!(parquet_rows(&files[1]), 2);

    let entries = committed_entries(&format!("file://{dir}")).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.batch_id).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(entries[1].files[0].rows, 2);
    assert_eq!(entries[1].format, "parquet");
    // The entry is a versioned, checksummed file.
    let raw = std::fs::read_to_string(tmp.path().join(MANIFEST_DIR).join("1")).unwrap();
    assert!(raw.starts_with("v1\ncrc32:"), "{raw}");
}

#[tokio::test]
async fn replayed_batch_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let rows = [batch(&[Some("a")], &[1])];
    sink(dir, &[]).add_batch(0, &rows).await.unwrap();
    let before = data_files_on_disk(tmp.path());
    let manifest_before = std::fs::read(tmp.path().join(MANIFEST_DIR).join("0")).unwrap();

    // Same instance and a new one (after a restart): both no-ops.
    let restarted = sink(dir, &[]);
    restarted.add_batch(0, &rows).await.unwrap();
    restarted.add_batch(0, &rows).await.unwrap();
    assert_eq!(data_files_on_disk(tmp.path()), before);
    assert_eq!(std::fs::read(tmp.path().join(MANIFEST_DIR).join("0")).unwrap(), manifest_before);
    assert_eq!(committed_files(dir).await.unwrap().len(), 1);
}

#[tokio::test]
async fn uncommitted_files_are_ignored_and_cleaned_on_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let s = sink(dir, &[]);
    s.add_batch(0, &[batch(&[Some("a")], &[1])]).await.unwrap();
    // A crash after writing batch 1's data but before its manifest entry.
    std::fs::write(tmp.path().join("part-1-crashed.parquet"), b"partial").unwrap();
    let files = committed_files(dir).await.unwrap();
    assert_eq!(files.len(), 1);
    assert!(files.iter().all(|f| !f.contains("crashed")), "{files:?}");

    // The restarted query re-sends batch 1: the stale file goes away.
    let restarted = sink(dir, &[]);
    restarted.add_batch(1, &[batch(&[Some("b"), Some("c")], &[2, 3])]).await.unwrap();
    let on_disk = data_files_on_disk(tmp.path());
    assert!(!on_disk.iter().any(|f| f.contains("crashed")), "{on_disk:?}");
    let files = committed_files(dir).await.unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(parquet_rows(&files[1]), 2);
}

#[tokio::test]
async fn empty_batch_commits_without_data_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let s = sink(dir, &[]);
    s.add_batch(0, &[]).await.unwrap();
    s.add_batch(1, &[RecordBatch::new_empty(schema())]).await.unwrap();
    assert!(data_files_on_disk(tmp.path()).is_empty());
    let entries = committed_entries(dir).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.files.is_empty()));
}

#[tokio::test]
async fn csv_and_json_are_readable() {
    for (format, ext) in [("csv", "csv"), ("json", "json")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        sink(dir, &[("format", format)])
            .add_batch(0, &[batch(&[Some("a"), None, Some("c")], &[1, 2, 3])])
            .await
            .unwrap();
        let files = committed_files(dir).await.unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].ends_with(&format!(".{ext}")), "{files:?}");
        let file = File::open(&files[0]).unwrap();
        let rows: usize = if format == "csv" {
            let reader = arrow::csv::ReaderBuilder::new(schema()).with_header(true).build(file).unwrap();
            reader.map(|b| b.unwrap().num_rows()).sum()
        } else {
            let reader = arrow::json::ReaderBuilder::new(schema()).build(std::io::BufReader::new(file)).unwrap();
            reader.map(|b| b.unwrap().num_rows()).sum()
        };
        assert_eq!(rows, 3, "{format}");
    }
}

#[tokio::test]
async fn partition_by_writes_hive_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let s = sink(dir, &[("partition_by", "WORD")]);
    s.add_batch(0, &[batch(&[Some("a"), Some("b"), Some("a"), None, Some("x/y")], &[1, 2, 3, 4, 5])]).await.unwrap();
    let on_disk = data_files_on_disk(tmp.path());
    let dirs: Vec<&str> = on_disk.iter().map(|f| f.rsplit_once('/').unwrap().0).collect();
    assert_eq!(dirs, vec!["word=__HIVE_DEFAULT_PARTITION__", "word=a", "word=b", "word=x%2Fy"], "{on_disk:?}");

    let files = committed_files(dir).await.unwrap();
    assert_eq!(files.len(), 4);
    let a = files.iter().find(|f| f.contains("/word=a/")).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(a).unwrap()).unwrap();
    // The partition column lives in the directory name only.
    assert_eq!(reader.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), vec!["n"]);
    assert_eq!(parquet_rows(a), 2);
}

#[test]
fn append_only_and_options_checked() {
    let f = FilesSinkFactory;
    assert_eq!(f.name(), "files");
    assert!(f.supports(OutputMode::Append));
    assert!(!f.supports(OutputMode::Update));
    assert!(!f.supports(OutputMode::Complete));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let err = |options: &[(&str, &str)], mode| f.create(ctx(options, mode)).unwrap_err().to_string();
    assert!(err(&[("path", dir)], OutputMode::Update).contains("update output mode"));
    assert!(err(&[], OutputMode::Append).contains("path"));
    assert!(err(&[("path", dir), ("format", "avro")], OutputMode::Append).contains("parquet, csv, json"));
    assert!(err(&[("path", dir), ("partition_by", "nope")], OutputMode::Append).contains("word, n"));
    assert!(err(&[("path", dir), ("partition_by", "word,n")], OutputMode::Append).contains("every column"));
    assert!(err(&[("path", "s3://bucket/x")], OutputMode::Append).contains("file://"));
}

#[tokio::test]
async fn committed_files_of_missing_dir_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let e = committed_files(missing.to_str().unwrap()).await.unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert!(!missing.exists());
    // An existing directory without a manifest has no committed files.
    assert!(committed_files(tmp.path().to_str().unwrap()).await.unwrap().is_empty());
}

#[test]
fn path_names_are_escaped_like_spark() {
    assert_eq!(write::escape_path_name("a b"), "a b");
    assert_eq!(write::escape_path_name("x/y=z:1%"), "x%2Fy%3Dz%3A1%25");
}
