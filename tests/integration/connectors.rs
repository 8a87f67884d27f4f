//! The connectors end to end through SQL: files → files exactly once across
//! a stop and crashes, malformed CSV modes, the rate source on a manual
//! clock, the socket source, the console sink, and option checking.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice::stt::render_batches;
use sluice::{execute_sql, Environment, ManualClock, SluiceConfig, SluiceSession};
use tokio::io::AsyncWriteExt;

/// A manual session (no background trigger) on the clock `clock`.
fn session_with(env: &Environment, root: &Path, clock: Arc<ManualClock>) -> SluiceSession {
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: root.to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    env.session(config, clock)
}

fn manual_session(env: &Environment, root: &Path) -> SluiceSession {
    session_with(env, root, Arc::new(ManualClock::new(0)))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Write a file the way a real producer does: under a hidden name first,
/// then renamed into place, so the source never sees it half written.
fn publish(dir: &Path, name: &str, contents: &str) {
    let hidden = dir.join(format!(".{name}.tmp"));
    std::fs::write(&hidden, contents).unwrap();
    std::fs::rename(&hidden, dir.join(name)).unwrap();
}

/// Input file `k` (1-based) holds ids `10k+1` and `10k+2`.
fn publish_input(dir: &Path, k: u64) {
    let (a, b) = (k * 10 + 1, k * 10 + 2);
    publish(dir, &format!("in-{k}.csv"), &format!("id,name\n{a},row{a}\n{b},row{b}\n"));
}

fn expected_ids(files: u64) -> Vec<i64> {
    (1..=files).flat_map(|k| [(k * 10 + 1) as i64, (k * 10 + 2) as i64]).collect()
}

struct Etl {
    input: PathBuf,
    output: PathBuf,
    checkpoint: PathBuf,
}

impl Etl {
    fn new(root: &Path) -> Self {
        let etl = Self { input: root.join("in"), output: root.join("out"), checkpoint: root.join("ck") };
        std::fs::create_dir_all(&etl.input).unwrap();
        etl
    }

    /// Declare the CSV source and start the files sink query `etl`.
    async fn start(&self, session: &SluiceSession) {
        let source = format!(
            "CREATE SOURCE src (id BIGINT, name VARCHAR) WITH (connector = 'files', path = '{}', format = 'csv', \
             header = 'true', max_files_per_trigger = '1')",
            p(&self.input)
        );
        execute_sql(session, &source).await.unwrap();
        let sink = format!(
            "CREATE SINK etl WITH (connector = 'files', format = 'parquet', path = '{}', checkpoint = '{}') AS \
             SELECT id, name FROM src",
            p(&self.output),
            p(&self.checkpoint)
        );
        execute_sql(session, &sink).await.unwrap();
    }

    async fn committed(&self) -> Vec<String> {
        sluice_sinks::files::committed_files(&p(&self.output)).await.unwrap()
    }

    /// The highest batch id in `<checkpoint>/commits/`.
    fn last_commit(&self) -> u64 {
        std::fs::read_dir(self.checkpoint.join("commits"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            .max()
            .expect("at least one commit")
    }

    /// Every data file on disk in the output directory (outside the manifest).
    fn data_files_on_disk(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.output)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "parquet"))
            .map(|f| p(&std::fs::canonicalize(f).unwrap()))
            .collect();
        out.sort();
        out
    }
}

/// The ids of every row of the given Parquet files, sorted.
fn read_ids(files: &[String]) -> Vec<i64> {
    let mut ids = vec![];
    for file in files {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = batch.column(batch.schema().index_of("id").unwrap());
            assert_eq!(col.null_count(), 0, "{file}");
            ids.extend(col.as_primitive::<Int64Type>().values().iter().copied());
        }
    }
    ids.sort_unstable();
    ids
}

fn files_of_batch(files: &[String], batch_id: u64) -> Vec<String> {
    let prefix = format!("part-{batch_id}-");
    files.iter().filter(|f| Path::new(f).file_name().unwrap().to_str().unwrap().starts_with(&prefix)).cloned().collect()
}

/// Sessions 1 and 2 of the crash tests: three files, a clean stop, two more
/// files, one more run; returns the id of the last batch (committed).
async fn run_two_sessions(env: &Environment, tmp: &Path, etl: &Etl) -> u64 {
    for k in 1..=3 {
        publish_input(&etl.input, k);
    }
    let s1 = manual_session(env, tmp);
    etl.start(&s1).await;
    let progress = s1.query("etl").unwrap().process_all_available().await.unwrap();
    let batches: Vec<(u64, u64, u64)> =
        progress.iter().map(|p| (p.batch_id, p.num_input_rows, p.sink.num_output_rows)).collect();
    assert_eq!(batches, vec![(0, 2, 2), (1, 2, 2), (2, 2, 2)], "one file per batch");
    s1.stop_all().await.unwrap();
    assert_eq!(etl.committed().await.len(), 3);

    for k in 4..=5 {
        publish_input(&etl.input, k);
    }
    let s2 = manual_session(env, tmp);
    etl.start(&s2).await;
    let progress = s2.query("etl").unwrap().process_all_available().await.unwrap();
    let batches: Vec<(u64, u64)> = progress.iter().map(|p| (p.batch_id, p.num_input_rows)).collect();
    assert_eq!(batches, vec![(3, 2), (4, 2)], "resumes after the stop with the new files only");
    s2.stop_all().await.unwrap();
    let last = etl.last_commit();
    assert_eq!(last, 4);
    last
}

#[tokio::test]
async fn files_to_files_exactly_once_across_stop_and_crash_before_commit() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let etl = Etl::new(tmp.path());
    let last = run_two_sessions(&env, tmp.path(), &etl).await;
    let before = etl.committed().await;
    assert_eq!(before.len(), 5);
    let crashed_batch_files = files_of_batch(&before, last);
    assert_eq!(crashed_batch_files.len(), 1, "{before:?}");

    // Crash after the sink wrote (and committed) batch 4 but before the
    // engine's commit: the commit log entry is missing.
    std::fs::remove_file(etl.checkpoint.join("commits").join(last.to_string())).unwrap();

    let s3 = manual_session(&env, tmp.path());
    etl.start(&s3).await;
    let progress = s3.query("etl").unwrap().process_all_available().await.unwrap();
    let batches: Vec<(u64, u64)> = progress.iter().map(|p| (p.batch_id, p.num_input_rows)).collect();
    assert_eq!(batches, vec![(last, 2)], "the uncommitted batch is re-run with the same file, nothing else");
    assert!(s3.query("etl").unwrap().process_all_available().await.unwrap().is_empty());
    s3.stop_all().await.unwrap();
    assert_eq!(etl.last_commit(), last);

    let after = etl.committed().await;
    assert_eq!(after, before, "the replayed batch added no files");
    assert_eq!(files_of_batch(&after, last), crashed_batch_files, "the crashed batch's data file is not duplicated");
    let mut sorted = after.clone();
    sorted.sort();
    assert_eq!(etl.data_files_on_disk(), sorted, "no orphan data files");
    assert_eq!(read_ids(&after), expected_ids(5), "every input row exactly once");
}

#[tokio::test]
async fn files_sink_replaces_data_files_of_a_batch_that_crashed_before_its_manifest_entry() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let etl = Etl::new(tmp.path());
    let last = run_two_sessions(&env, tmp.path(), &etl).await;
    let before = etl.committed().await;
    let orphan = files_of_batch(&before, last);
    assert_eq!(orphan.len(), 1);

    // Crash after the data file of batch 4 was written but before both the
    // sink's manifest entry and the engine's commit.
    std::fs::remove_file(etl.checkpoint.join("commits").join(last.to_string())).unwrap();
    std::fs::remove_file(etl.output.join(sluice_sinks::files::MANIFEST_DIR).join(last.to_string())).unwrap();
    assert_eq!(etl.committed().await.len(), 4, "batch 4 no longer committed");
    assert!(Path::new(&orphan[0]).exists());

    let s3 = manual_session(&env, tmp.path());
    etl.start(&s3).await;
    let progress = s3.query("etl").unwrap().process_all_available().await.unwrap();
    assert_eq!(progress.iter().map(|p| (p.batch_id, p.num_input_rows)).collect::<Vec<_>>(), vec![(last, 2)]);
    s3.stop_all().await.unwrap();

    let after = etl.committed().await;
    assert_eq!(after.len(), 5, "{after:?}");
    let rewritten = files_of_batch(&after, last);
    assert_eq!(rewritten.len(), 1, "exactly one data file for the re-run batch: {after:?}");
    assert_ne!(rewritten, orphan, "the re-run wrote a fresh file");
    assert!(!Path::new(&orphan[0]).exists(), "the uncommitted data file was removed");
    let mut sorted = after.clone();
    sorted.sort();
    assert_eq!(etl.data_files_on_disk(), sorted, "no orphan data files");
    assert_eq!(read_ids(&after), expected_ids(5), "every input row exactly once");
}

/// Run a query over one CSV file with a non-numeric id on line 3 in `mode`;
/// the memory sink's rows (`id,name` ordered by name), or the error.
async fn read_bad_csv(mode: &str) -> Result<Vec<String>, String> {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    publish(&input, "bad.csv", "id,name\n1,a\nnot_a_number,b\n3,c\n");
    let session = manual_session(&env, tmp.path());
    let source = format!(
        "CREATE SOURCE src (id BIGINT, name VARCHAR) WITH (connector = 'files', path = '{}', format = 'csv', \
         header = 'true', mode = '{mode}')",
        p(&input)
    );
    execute_sql(&session, &source).await.unwrap();
    let sink = format!(
        "CREATE SINK parsed WITH (connector = 'memory', checkpoint = '{}') AS SELECT id, name FROM src",
        p(&tmp.path().join("ck"))
    );
    execute_sql(&session, &sink).await.unwrap();
    let result = session.query("parsed").unwrap().process_all_available().await;
    let out = match result {
        Ok(progress) => {
            assert_eq!(progress.len(), 1);
            let rows =
                session.context().sql("SELECT id, name FROM parsed ORDER BY name").await.unwrap().collect().await;
            Ok(render_batches(&rows.unwrap()).unwrap())
        }
        Err(e) => Err(e.to_string()),
    };
    session.stop_all().await.unwrap();
    out
}

#[tokio::test]
async fn malformed_csv_row_in_each_mode() {
    assert_eq!(read_bad_csv("permissive").await.unwrap(), vec!["1,a", "NULL,b", "3,c"]);
    assert_eq!(read_bad_csv("dropmalformed").await.unwrap(), vec!["1,a", "3,c"]);
    let e = read_bad_csv("failfast").await.unwrap_err();
    assert!(e.contains("bad.csv:3") && e.contains("not_a_number"), "{e}");
}

#[tokio::test]
async fn rate_source_follows_the_manual_clock() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let start_ms = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::new(start_ms));
    let session = session_with(&env, tmp.path(), Arc::clone(&clock));
    execute_sql(&session, "CREATE SOURCE r WITH (connector = 'rate', rows_per_second = '10')").await.unwrap();
    let sink = format!(
        "CREATE SINK rate_out WITH (connector = 'memory', checkpoint = '{}') AS SELECT value, \"timestamp\" FROM r",
        p(&tmp.path().join("ck"))
    );
    execute_sql(&session, &sink).await.unwrap();
    let q = session.query("rate_out").unwrap();
    assert!(q.process_all_available().await.unwrap().is_empty(), "no rows at the start time");

    clock.advance(Duration::from_secs(2));
    let progress = q.process_all_available().await.unwrap();
    assert_eq!(progress.iter().map(|p| p.num_input_rows).sum::<u64>(), 20);
    let rows = session
        .context()
        .sql("SELECT value, CAST(\"timestamp\" AS BIGINT) / 1000000 AS ms FROM rate_out ORDER BY value")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("{i},{}", start_ms + i * 100)).collect();
    assert_eq!(render_batches(&rows).unwrap(), expected);

    // The clock did not move: nothing new.
    assert!(q.process_all_available().await.unwrap().is_empty());
    session.stop_all().await.unwrap();
}

#[tokio::test]
async fn socket_source_reads_lines_from_a_server() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(b"hello\nworld\r\nthird line\n").await.unwrap();
        conn.flush().await.unwrap();
        // Keep the connection open a while, as `nc -lk` would.
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let session = manual_session(&env, tmp.path());
    let source = format!("CREATE SOURCE lines WITH (connector = 'socket', host = '127.0.0.1', port = '{port}')");
    execute_sql(&session, &source).await.unwrap();
    let sink = format!(
        "CREATE SINK sock_out WITH (connector = 'memory', checkpoint = '{}') AS SELECT value FROM lines",
        p(&tmp.path().join("ck"))
    );
    execute_sql(&session, &sink).await.unwrap();
    let q = session.query("sock_out").unwrap();
    let store = env.sinks.get("sock_out").unwrap();
    let rows = || store.table_rows().iter().map(|b| b.num_rows()).sum::<usize>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rows() < 3 && tokio::time::Instant::now() < deadline {
        q.process_all_available().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = render_batches(&store.table_rows()).unwrap();
    assert_eq!(got, vec!["hello", "world", "third line"]);
    session.stop_all().await.unwrap();
    server.abort();
}

#[tokio::test]
async fn console_sink_reports_its_output_rows() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let session = manual_session(&env, tmp.path());
    execute_sql(&session, "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')").await.unwrap();
    let sink = format!(
        "CREATE SINK con WITH (connector = 'console', num_rows = '5', checkpoint = '{}') AS \
         SELECT id, upper(word) AS w FROM ev WHERE id >= 2",
        p(&tmp.path().join("ck"))
    );
    execute_sql(&session, &sink).await.unwrap();
    env.streams.get("ev").unwrap().push_rows(&["1,a", "2,b", "3,c"]).unwrap();
    let q = session.query("con").unwrap();
    let progress = q.process_all_available().await.unwrap();
    assert_eq!(progress.len(), 1);
    let last = q.last_progress().unwrap();
    assert_eq!((last.batch_id, last.num_input_rows, last.sink.num_output_rows), (0, 3, 2));
    assert_eq!(last.sink.description, "console");
    env.streams.get("ev").unwrap().push_rows(&["4,d"]).unwrap();
    q.process_all_available().await.unwrap();
    let last = q.last_progress().unwrap();
    assert_eq!((last.batch_id, last.num_input_rows, last.sink.num_output_rows), (1, 1, 1));
    assert!(q.exception().is_none());
    session.stop_all().await.unwrap();
}

#[tokio::test]
async fn unknown_files_options_list_the_valid_ones() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let session = manual_session(&env, tmp.path());
    let e = execute_sql(
        &session,
        &format!(
            "CREATE SOURCE src (id BIGINT) WITH (connector = 'files', path = '{}', maxfiles = '3')",
            p(tmp.path())
        ),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown option 'maxfiles'")
            && e.contains("source connector 'files'")
            && e.contains("max_files_per_trigger")
            && e.contains("clean_source"),
        "{e}"
    );

    execute_sql(&session, "CREATE SOURCE ev (id BIGINT) WITH (connector = 'memory')").await.unwrap();
    let out = tmp.path().join("out");
    let e = execute_sql(
        &session,
        &format!(
            "CREATE SINK s WITH (connector = 'files', path = '{}', compression = 'zstd') AS SELECT id FROM ev",
            p(&out)
        ),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown option 'compression'")
            && e.contains("sink connector 'files'")
            && e.contains("partition_by"),
        "{e}"
    );
    assert!(session.query("s").is_none(), "no query was started");
}

/// Run `select` over a Parquet file whose `note` column is text while the
/// source declares it BIGINT: reading `note` fails, so a query that
/// succeeds proves the engine decoded only the columns the plan reads.
async fn read_parquet_columns(select: &str) -> Result<Vec<String>, String> {
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("note", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["x", "y", "z"])),
            Arc::new(TimestampMillisecondArray::from(vec![1_000, 2_000, 30_000])),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(input.join("a.parquet")).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let session = manual_session(&env, tmp.path());
    let source = format!(
        "CREATE SOURCE src (id BIGINT, note BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'files', path = '{}', format = 'parquet')",
        p(&input)
    );
    execute_sql(&session, &source).await.unwrap();
    let sink = format!(
        "CREATE SINK out WITH (connector = 'memory', checkpoint = '{}') AS {select}",
        p(&tmp.path().join("ck"))
    );
    execute_sql(&session, &sink).await.unwrap();
    let q = session.query("out").unwrap();
    let result = q.process_all_available().await;
    let out = match result {
        Ok(_) => {
            let rows = session.context().sql("SELECT * FROM out ORDER BY 1").await.unwrap().collect().await.unwrap();
            let watermark = q.watermark_ms();
            let mut lines = render_batches(&rows).unwrap();
            lines.push(format!("watermark={watermark:?}"));
            Ok(lines)
        }
        Err(e) => Err(e.to_string()),
    };
    session.stop_all().await.unwrap();
    out
}

#[tokio::test]
async fn parquet_source_decodes_only_the_columns_the_query_reads() {
    // `ts` is not selected but still read for the watermark (30 s - 1 s).
    assert_eq!(
        read_parquet_columns("SELECT id * 10 AS x FROM src WHERE id > 1").await.unwrap(),
        vec!["20", "30", "watermark=Some(29000)"]
    );
    let e = read_parquet_columns("SELECT id, note FROM src").await.unwrap_err();
    assert!(e.contains("a.parquet") && e.contains("note") && e.contains("Int64"), "{e}");
}

/// Every data file under `dir` (recursively), relative, outside the manifest.
fn data_files(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("_sluice_manifest") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|x| x == "csv") {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn files_sink_partitions_by_an_expression_with_spark_date_format_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let env = Environment::default();
    let start = |session: SluiceSession| {
        let (out, ck) = (out.clone(), tmp.path().join("ck"));
        async move {
            execute_sql(
                &session,
                &format!(
                    "CREATE SOURCE IF NOT EXISTS bids (ts TIMESTAMP, auction BIGINT) WITH (connector = 'memory');
                     CREATE SINK logged WITH (connector = 'files', path = '{}', format = 'csv', checkpoint = '{}', \
                     partition_by = 'date_format(ts, ''yyyy-MM-dd'') AS dt, date_format(ts, ''HH'') AS hr') AS \
                     SELECT ts, auction FROM bids",
                    p(&out),
                    p(&ck)
                ),
            )
            .await
            .unwrap();
            session
        }
    };
    let session = start(manual_session(&env, tmp.path())).await;
    let bids = env.streams.get("bids").unwrap();
    bids.push_rows(&["2024-01-01T10:15:00,1", "2024-01-01T11:20:00,2", "2024-01-02T10:00:00,3"]).unwrap();
    session.query("logged").unwrap().process_all_available().await.unwrap();
    session.stop_all().await.unwrap();
    // A restart replays nothing and appends the next batch to its hour.
    let session = start(manual_session(&env, tmp.path())).await;
    bids.push_rows(&["2024-01-01T10:45:00,4"]).unwrap();
    session.query("logged").unwrap().process_all_available().await.unwrap();
    let files = data_files(&out);
    let dirs: std::collections::BTreeSet<String> =
        files.iter().map(|f| f.rsplit_once('/').unwrap().0.to_string()).collect();
    assert_eq!(
        dirs.into_iter().collect::<Vec<_>>(),
        vec!["dt=2024-01-01/hr=10", "dt=2024-01-01/hr=11", "dt=2024-01-02/hr=10"],
        "{files:?}"
    );
    // Each row once, in its hour's directory; the computed columns are not in the files.
    let hour10: String = files
        .iter()
        .filter(|f| f.starts_with("dt=2024-01-01/hr=10/"))
        .map(|f| std::fs::read_to_string(out.join(f)).unwrap())
        .collect();
    assert_eq!(hour10.lines().filter(|l| !l.starts_with("ts")).count(), 2, "{hour10}");
    assert!(hour10.lines().next().is_some_and(|h| h == "ts,auction"), "{hour10}");
    // A bad expression and a name taken by a column are refused.
    let e = execute_sql(
        &session,
        &format!(
            "CREATE SINK bad WITH (connector = 'files', path = '{}', checkpoint = '{}', partition_by = 'nope(ts)') \
             AS SELECT ts, auction FROM bids",
            p(&tmp.path().join("bad")),
            p(&tmp.path().join("ck-bad"))
        ),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("partition_by") && e.contains("nope(ts)"), "{e}");
    session.stop_all().await.unwrap();
}
