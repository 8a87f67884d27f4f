//! Tests of the `files` source.

use std::path::Path;
use std::time::{Duration, SystemTime};

use arrow::array::{AsArray, Int64Array, StringArray};
use arrow::datatypes::Int64Type;
use parquet::arrow::ArrowWriter;
use sluice_engine::SystemClock;

use super::*;

fn schema_id_name() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("name", DataType::Utf8, true)]))
}

/// Write a file and give it a modification time `secs` after the epoch
/// (plus a fixed base), so the listing order is deterministic.
fn write(dir: &Path, name: &str, body: &str, secs: u64) {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)).unwrap();
}

fn source(dir: &Path, meta: &Path, schema: SchemaRef, opts: &[(&str, &str)]) -> Arc<dyn Source> {
    let mut options: Options = opts.iter().map(|(k, v)| (*k, *v)).collect();
    options.insert("path", dir.to_str().unwrap());
    let definition =
        SourceDefinition { name: "events".into(), connector: "files".into(), options, schema, watermark: None };
    FilesSourceFactory.validate(&definition).unwrap();
    FilesSourceFactory
        .create(SourceContext {
            definition,
            metadata_path: meta.to_str().unwrap().into(),
            clock: Arc::new(SystemClock),
        })
        .unwrap()
}

fn ids(batches: &[RecordBatch]) -> Vec<Option<i64>> {
    batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().iter().collect::<Vec<_>>()).collect()
}

fn names(batches: &[RecordBatch]) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| b.column(1).as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>())
        .collect()
}

#[tokio::test]
async fn two_files_two_batches_with_max_files_per_trigger() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "b.csv", "3,c\n", 2);
    write(data.path(), "a.csv", "1,a\n2,b\n", 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("max_files_per_trigger", "1")]);
    let o0 = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(o0, json!({"log_offset": 0}));
    let b0 = src.get_batch(None, &o0).await.unwrap();
    assert_eq!(ids(&b0), vec![Some(1), Some(2)], "oldest file first");
    let o1 = src.latest_offset(Some(&o0)).await.unwrap().unwrap();
    assert_eq!(o1, json!({"log_offset": 1}));
    assert_eq!(ids(&src.get_batch(Some(&o0), &o1).await.unwrap()), vec![Some(3)]);
    // Nothing new: the same offset comes back.
    assert_eq!(src.latest_offset(Some(&o1)).await.unwrap(), Some(o1.clone()));
    // Replay of the first range is identical; the whole range holds both files.
    assert_eq!(ids(&src.get_batch(None, &o0).await.unwrap()), vec![Some(1), Some(2)]);
    assert_eq!(ids(&src.get_batch(None, &o1).await.unwrap()).len(), 3);
}

#[tokio::test]
async fn restart_neither_rereads_nor_skips() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "a.csv", "1,a\n", 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv")]);
    let o0 = src.latest_offset(None).await.unwrap().unwrap();
    // As the engine does before it writes the batch's offsets.
    src.metadata_durable().await.unwrap();
    src.commit(&o0).await.unwrap();
    drop(src);

    // Restart: same metadata path; the old file is not new, a new one is.
    write(data.path(), "b.csv", "2,b\n", 2);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv")]);
    let o1 = src.latest_offset(Some(&o0)).await.unwrap().unwrap();
    assert_eq!(o1, json!({"log_offset": 1}));
    assert_eq!(ids(&src.get_batch(Some(&o0), &o1).await.unwrap()), vec![Some(2)]);
    // A replay of the first batch after the restart still reads the first file.
    assert_eq!(ids(&src.get_batch(None, &o0).await.unwrap()), vec![Some(1)]);
}

#[tokio::test]
async fn entry_written_before_a_crash_is_handed_out_again() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "a.csv", "1,a\n", 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv")]);
    let o0 = src.latest_offset(None).await.unwrap().unwrap();
    src.metadata_durable().await.unwrap();
    drop(src); // crash before the engine wrote its offset log
    write(data.path(), "b.csv", "2,b\n", 2);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv")]);
    assert_eq!(src.latest_offset(None).await.unwrap(), Some(o0.clone()), "the pending entry, not a new one");
    assert_eq!(ids(&src.get_batch(None, &o0).await.unwrap()), vec![Some(1)]);
    let o1 = src.latest_offset(Some(&o0)).await.unwrap().unwrap();
    assert_eq!(ids(&src.get_batch(Some(&o0), &o1).await.unwrap()), vec![Some(2)]);
}

#[tokio::test]
async fn offset_beyond_the_log_is_a_checkpoint_error() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv")]);
    let e = src.latest_offset(Some(&json!({"log_offset": 3}))).await.unwrap_err().to_string();
    assert!(e.contains("seen-files log entry 3 is missing"), "{e}");
    let e = src.latest_offset(Some(&json!(3))).await.unwrap_err().to_string();
    assert!(e.contains("not a files-source offset"), "{e}");
}

const BAD_CSV: &str = "1,a\nx,b\n3,c\n";

#[tokio::test]
async fn malformed_csv_permissive_keeps_row_with_null() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "bad.csv", BAD_CSV, 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch(None, &end).await.unwrap();
    assert_eq!(ids(&b), vec![Some(1), None, Some(3)]);
    assert_eq!(names(&b)[1].as_deref(), Some("b"));
}

#[tokio::test]
async fn malformed_csv_dropmalformed_drops_row() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "bad.csv", BAD_CSV, 1);
    write(data.path(), "short.csv", "4\n5,e\n", 2);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("mode", "dropmalformed")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch(None, &end).await.unwrap();
    assert_eq!(ids(&b), vec![Some(1), Some(3), Some(5)], "bad value and wrong field count dropped");
}

#[tokio::test]
async fn malformed_csv_failfast_names_file_and_line() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "bad.csv", BAD_CSV, 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("mode", "failfast")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let err = src.get_batch(None, &end).await.unwrap_err();
    match &err {
        SluiceError::Malformed { location, reason } => {
            assert!(location.ends_with("bad.csv:2"), "{location}");
            assert!(reason.contains("'x'") && reason.contains("id"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert!(err.to_string().contains("bad.csv:2"));
}

#[tokio::test]
async fn csv_header_is_skipped_and_line_numbers_count_it() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "h.csv", "id,name\n1,\"Smith, J\"\n2,\n", 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("header", "true")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch(None, &end).await.unwrap();
    assert_eq!(ids(&b), vec![Some(1), Some(2)]);
    assert_eq!(names(&b), vec![Some("Smith, J".to_string()), None]);

    write(data.path(), "h2.csv", "id,name\n1,a\nnope,b\n", 2);
    let meta2 = tempfile::tempdir().unwrap();
    let opts = [("format", "csv"), ("header", "true"), ("mode", "failfast")];
    let src = source(data.path(), meta2.path(), schema_id_name(), &opts);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let e = src.get_batch(None, &end).await.unwrap_err().to_string();
    assert!(e.contains("h2.csv:3"), "{e}");
}

/// Regression (issue 9, case 3): with `header = 'true'` columns were bound by
/// position, so a file whose header order differs loaded values into the
/// wrong columns without a word.
#[tokio::test]
async fn csv_header_binds_columns_by_name() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "a.csv", "id,name\n1,x\n", 1);
    write(data.path(), "b.csv", "NAME,ID,extra\ny,2,zzz\n", 2);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("header", "true")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch(None, &end).await.unwrap();
    assert_eq!(ids(&b), vec![Some(1), Some(2)]);
    assert_eq!(names(&b), vec![Some("x".to_string()), Some("y".to_string())]);

    // A header that does not name a declared column is an error naming both.
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "c.csv", "ident,name\n3,z\n", 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("header", "true")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let e = src.get_batch(None, &end).await.unwrap_err().to_string();
    assert!(e.contains("c.csv:1") && e.contains("[ident, name]") && e.contains("[id]"), "{e}");
}

#[tokio::test]
async fn json_lines_by_name_and_modes() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let body = "{\"name\":\"a\",\"id\":1}\n\n{\"ID\":\"2\"}\n{broken\n{\"id\":\"zz\",\"name\":\"d\"}\n";
    write(data.path(), "e.json", body, 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "json")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch(None, &end).await.unwrap();
    assert_eq!(ids(&b), vec![Some(1), Some(2), None, None]);
    assert_eq!(names(&b), vec![Some("a".into()), None, None, Some("d".into())]);

    let meta2 = tempfile::tempdir().unwrap();
    let src = source(data.path(), meta2.path(), schema_id_name(), &[("format", "json"), ("mode", "dropmalformed")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(ids(&src.get_batch(None, &end).await.unwrap()), vec![Some(1), Some(2)]);

    let meta3 = tempfile::tempdir().unwrap();
    let src = source(data.path(), meta3.path(), schema_id_name(), &[("format", "json"), ("mode", "failfast")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let e = src.get_batch(None, &end).await.unwrap_err().to_string();
    assert!(e.contains("e.json:4") && e.contains("invalid JSON"), "{e}");
}

#[tokio::test]
async fn text_format_has_a_default_schema() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "t.txt", "hello\r\n\nworld\n", 1);
    let options: Options = [("format", "text")].into_iter().collect();
    let schema = FilesSourceFactory.default_schema(&options).unwrap();
    assert_eq!(schema.field(0).name(), "value");
    assert!(FilesSourceFactory.default_schema(&Options::new()).is_none());
    let src = source(data.path(), meta.path(), schema, &[("format", "text")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch(None, &end).await.unwrap();
    let lines: Vec<_> = b[0].column(0).as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
    assert_eq!(lines, vec!["hello", "", "world"]);
}

#[tokio::test]
async fn parquet_columns_by_name_missing_ones_null() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file_schema = Arc::new(Schema::new(vec![
        Field::new("other", DataType::Utf8, true),
        Field::new("ID", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&file_schema),
        vec![Arc::new(StringArray::from(vec!["x", "y"])), Arc::new(arrow::array::Int32Array::from(vec![7, 8]))],
    )
    .unwrap();
    let file = std::fs::File::create(data.path().join("p.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(file, file_schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "parquet")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch(None, &end).await.unwrap();
    assert_eq!(b[0].schema(), schema_id_name());
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>(), &Int64Array::from(vec![7, 8]));
    assert_eq!(names(&b), vec![None, None]);

    write(data.path(), "not.parquet", "1,a\n", 5);
    let o1 = src.latest_offset(Some(&end)).await.unwrap().unwrap();
    let e = src.get_batch(Some(&end), &o1).await.unwrap_err().to_string();
    assert!(e.contains("not.parquet") && e.contains("format"), "{e}");
}

#[tokio::test]
async fn parquet_reads_only_the_asked_columns_across_row_groups_in_order() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
    ]));
    let rows = 10_000i64;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("name-{i}")))),
            Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i * 2))),
        ],
    )
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(1_000)).build();
    let file = std::fs::File::create(data.path().join("p.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let src = source(data.path(), meta.path(), Arc::clone(&schema), &[("format", "parquet")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch_columns(None, &end, &[0, 2]).await.unwrap();
    assert_eq!(b[0].schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), vec!["id", "n"]);
    let got: Vec<(i64, i64)> = b
        .iter()
        .flat_map(|b| {
            let (id, n) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>());
            (0..b.num_rows()).map(|i| (id.value(i), n.value(i))).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, (0..rows).map(|i| (i, i * 2)).collect::<Vec<_>>());
    // A replay of the same range with all columns gives the same rows.
    assert_eq!(ids(&src.get_batch(None, &end).await.unwrap()), (0..rows).map(Some).collect::<Vec<_>>());
}

#[tokio::test]
async fn csv_projection_still_checks_whole_rows() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "a.csv", "1,a\nx,b\n3,c\n", 5);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("mode", "dropmalformed")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    let b = src.get_batch_columns(None, &end, &[1]).await.unwrap();
    assert_eq!(b[0].num_columns(), 1);
    let got: Vec<_> =
        b.iter().flat_map(|b| b.column(0).as_string::<i32>().iter().map(|s| s.map(String::from))).collect();
    assert_eq!(got, vec![Some("a".to_string()), Some("c".to_string())]);
}

#[tokio::test]
async fn latest_first_hands_out_newest() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "old.csv", "1,a\n", 1);
    write(data.path(), "new.csv", "2,b\n", 9);
    let opts = [("format", "csv"), ("max_files_per_trigger", "1"), ("latest_first", "true")];
    let src = source(data.path(), meta.path(), schema_id_name(), &opts);
    let o0 = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(ids(&src.get_batch(None, &o0).await.unwrap()), vec![Some(2)]);
}

#[tokio::test]
async fn available_now_freezes_the_listing() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "a.csv", "1,a\n", 1);
    write(data.path(), "b.csv", "2,b\n", 2);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("max_files_per_trigger", "1")]);
    src.prepare_for_available_now().await.unwrap();
    write(data.path(), "c.csv", "3,c\n", 3);
    let o0 = src.latest_offset(None).await.unwrap().unwrap();
    let o1 = src.latest_offset(Some(&o0)).await.unwrap().unwrap();
    assert_eq!(src.latest_offset(Some(&o1)).await.unwrap(), Some(o1.clone()), "c.csv arrived after the freeze");
    assert_eq!(ids(&src.get_batch(None, &o1).await.unwrap()), vec![Some(1), Some(2)]);
}

#[tokio::test]
async fn hidden_files_and_folders_are_ignored() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // (A `_sluice_manifest` folder makes the directory a files-sink output:
    // see `sink_output_reads_only_committed_files_in_manifest_order`.)
    std::fs::create_dir(data.path().join("_spark_metadata")).unwrap();
    write(data.path(), "_spark_metadata/0", "9,z\n", 1);
    write(data.path(), ".a.csv.crc", "8,y\n", 1);
    write(data.path(), "_SUCCESS", "", 1);
    write(data.path(), "a.csv", "1,a\n", 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(ids(&src.get_batch(None, &end).await.unwrap()), vec![Some(1)]);
}

#[tokio::test]
async fn clean_source_delete_and_archive_on_commit() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(data.path(), "a.csv", "1,a\n", 1);
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv"), ("clean_source", "delete")]);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    src.get_batch(None, &end).await.unwrap();
    assert!(data.path().join("a.csv").exists(), "not before the commit");
    src.commit(&end).await.unwrap();
    assert!(!data.path().join("a.csv").exists());

    let archive = tempfile::tempdir().unwrap();
    let meta2 = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("sub")).unwrap();
    write(data.path(), "sub/b.csv", "2,b\n", 2);
    let opts =
        [("format", "csv"), ("clean_source", "archive"), ("source_archive_dir", archive.path().to_str().unwrap())];
    let src = source(data.path(), meta2.path(), schema_id_name(), &opts);
    let end = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(ids(&src.get_batch(None, &end).await.unwrap()), vec![Some(2)]);
    src.commit(&end).await.unwrap();
    assert!(!data.path().join("sub/b.csv").exists());
    assert_eq!(std::fs::read_to_string(archive.path().join("sub/b.csv")).unwrap(), "2,b\n");
}

#[test]
fn options_are_checked() {
    assert_eq!(
        FilesSourceFactory.valid_options(),
        &[
            "path",
            "format",
            "header",
            "max_files_per_trigger",
            "latest_first",
            "clean_source",
            "source_archive_dir",
            "mode"
        ]
    );
    let parse = |kv: &[(&str, &str)]| FilesOptions::parse(&kv.iter().map(|(k, v)| (*k, *v)).collect());
    let e = parse(&[]).unwrap_err().to_string();
    assert!(e.contains("path"), "{e}");
    let ok = parse(&[("path", "/tmp/in"), ("format", "CSV"), ("mode", "FailFast")]).unwrap();
    assert_eq!(ok.settings.format, FileFormat::Csv);
    assert_eq!(ok.settings.mode, ParseMode::FailFast);
    assert_eq!(parse(&[("path", "/tmp/in")]).unwrap().settings.format, FileFormat::Parquet);
    let e = parse(&[("path", "/x"), ("format", "avro")]).unwrap_err().to_string();
    assert!(e.contains("csv, json, parquet, text"), "{e}");
    let e = parse(&[("path", "/x"), ("clean_source", "archive")]).unwrap_err().to_string();
    assert!(e.contains("source_archive_dir"), "{e}");
    let e = parse(&[("path", "/x"), ("clean_source", "archive"), ("source_archive_dir", "/x/old")]).unwrap_err();
    assert!(e.to_string().contains("overlap"), "{e}");
    assert!(parse(&[("path", "/x"), ("max_files_per_trigger", "0")]).is_err());
    assert!(parse(&[("path", "/x"), ("mode", "lenient")]).is_err());
    let e = parse(&[("path", "hdfs://nn/x")]).unwrap_err().to_string();
    assert!(e.contains("not supported in this build"), "{e}");
}

#[test]
fn schema_must_suit_the_format() {
    let def = |format: &str, schema: SchemaRef| SourceDefinition {
        name: "s".into(),
        connector: "files".into(),
        options: [("path", "/x"), ("format", format)].into_iter().collect(),
        schema,
        watermark: None,
    };
    let e = FilesSourceFactory.validate(&def("text", schema_id_name())).unwrap_err().to_string();
    assert!(e.contains("exactly one VARCHAR column"), "{e}");
    let list = Arc::new(Schema::new(vec![Field::new(
        "l",
        DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
        true,
    )]));
    assert!(FilesSourceFactory.validate(&def("csv", Arc::clone(&list))).is_err());
    assert!(FilesSourceFactory.validate(&def("parquet", list)).is_ok());
}

#[tokio::test]
async fn missing_directory_error_names_it() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let missing = data.path().join("incoming");
    let src = source(&missing, meta.path(), schema_id_name(), &[("format", "csv")]);
    let e = src.latest_offset(None).await.unwrap_err().to_string();
    assert!(e.contains("incoming") && e.contains("does not exist") && e.contains("events"), "{e}");
}

/// Write the `files` sink manifest entry of `batch_id` naming `files`.
async fn commit_files(dir: &Path, batch_id: u64, files: &[&str]) {
    use sluice_engine::manifest::{ManifestEntry, ManifestFile, MANIFEST_DIR};
    let log = CheckpointDir::open(dir.to_str().unwrap()).unwrap().child(MANIFEST_DIR);
    let files = files.iter().map(|f| ManifestFile { path: (*f).into(), rows: 1, size: 1 }).collect();
    log.write_json(&batch_id.to_string(), &ManifestEntry { batch_id, format: "csv".into(), files, query_id: None })
        .await
        .unwrap();
}

#[tokio::test]
async fn sink_output_reads_only_committed_files_in_manifest_order() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Modification times opposite to the manifest order.
    write(data.path(), "part-0-x.csv", "1,a\n", 3);
    std::fs::create_dir_all(data.path().join("k=1")).unwrap();
    write(data.path(), "k=1/part-1-y.csv", "2,b\n", 2);
    // Batch 2 crashed before its manifest entry: not a candidate.
    write(data.path(), "part-2-z.csv", "3,c\n", 1);
    commit_files(data.path(), 0, &["part-0-x.csv"]).await;
    commit_files(data.path(), 1, &["k=1/part-1-y.csv"]).await;
    let src = source(data.path(), meta.path(), schema_id_name(), &[("format", "csv")]);
    let o0 = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(ids(&src.get_batch(None, &o0).await.unwrap()), vec![Some(1), Some(2)], "manifest order");
    assert_eq!(src.latest_offset(Some(&o0)).await.unwrap(), Some(o0.clone()), "uncommitted file ignored");
    // Batch 2 is re-run and committed: its file becomes a candidate.
    commit_files(data.path(), 2, &["part-2-z.csv"]).await;
    let o1 = src.latest_offset(Some(&o0)).await.unwrap().unwrap();
    assert_eq!(ids(&src.get_batch(Some(&o0), &o1).await.unwrap()), vec![Some(3)]);
}

#[tokio::test]
async fn sink_output_parquet_one_of_two_files_committed() {
    let (data, meta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let schema = schema_id_name();
    for (name, id) in [("part-0-a.parquet", 1), ("part-1-b.parquet", 2)] {
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![id])), Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        let file = std::fs::File::create(data.path().join(name)).unwrap();
        let mut w = ArrowWriter::try_new(file, Arc::clone(&schema), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    commit_files(data.path(), 0, &["part-1-b.parquet"]).await;
    let src = source(data.path(), meta.path(), schema, &[("format", "parquet")]);
    let o0 = src.latest_offset(None).await.unwrap().unwrap();
    assert_eq!(ids(&src.get_batch(None, &o0).await.unwrap()), vec![Some(2)]);
    assert_eq!(src.latest_offset(Some(&o0)).await.unwrap(), Some(o0));
}

mod readers_never_panic {
    use proptest::prelude::*;

    use super::*;

    fn bytes_like(format: FileFormat) -> BoxedStrategy<Vec<u8>> {
        // Arbitrary bytes, and bytes made of the format's own punctuation.
        let alphabet: &'static [u8] = match format {
            FileFormat::Csv => b"0123456789,\"\n\r ab-.\xff",
            FileFormat::Json => b"{}[]\":,0123456789 \nidnameul.-\\\xc3",
            _ => b"PAR1\x00\x01\x15\x16\x19\x1c\n",
        };
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec(proptest::sample::select(alphabet), 0..256),
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Whatever the bytes, every reader in every mode returns rows or an
        /// error naming the file: it never panics.
        #[test]
        fn csv_json_text_parquet_readers_return_rows_or_an_error(
            (format, bytes) in prop_oneof![
                Just(FileFormat::Csv), Just(FileFormat::Json), Just(FileFormat::Text), Just(FileFormat::Parquet)
            ].prop_flat_map(|f| (Just(f), bytes_like(f))),
            header in any::<bool>(),
            mode in prop_oneof![Just(ParseMode::Permissive), Just(ParseMode::DropMalformed), Just(ParseMode::FailFast)],
            not_null in any::<bool>(),
        ) {
            let schema = match (format, not_null) {
                (FileFormat::Text, _) => Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, true)])),
                (_, nn) => Arc::new(Schema::new(vec![
                    Field::new("id", DataType::Int64, !nn),
                    Field::new("name", DataType::Utf8, true),
                ])),
            };
            let settings = ParseSettings { format, header, mode };
            match parse::parse_file(bytes::Bytes::from(bytes), "f.dat", &schema, &settings, None) {
                Ok(batches) => {
                    for b in batches {
                        prop_assert_eq!(b.schema(), Arc::clone(&schema));
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains("f.dat"), "error does not name the file: {}", e),
            }
        }
    }
}
