//! The Rust API: read_stream / write_stream / foreach_batch / StreamingQuery.

use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{col, lit};
use sluice::stt::render_batches;
use sluice::{Environment, ManualClock, OutputMode, SluiceConfig, StreamingDataFrameExt, Trigger};

fn manual_env() -> (Environment, sluice::SluiceSession, tempfile::TempDir) {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, Arc::new(ManualClock::new(0)));
    (env, session, tmp)
}

/// `ts TIMESTAMP, <name> VARCHAR`.
fn timed_schema(name: &str) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None), true),
        Field::new(name, DataType::Utf8, true),
    ]))
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("word", DataType::Utf8, true)]))
}

#[tokio::test]
async fn memory_to_foreach_batch_with_dataframe_ops() {
    let (env, session, tmp) = manual_env();
    let df = session.read_stream().format("memory").schema(schema()).name("words").load().await.unwrap();
    let df =
        df.filter(col("id").gt(lit(1))).unwrap().select(vec![col("word"), (col("id") * lit(10)).alias("x")]).unwrap();
    let seen: Arc<Mutex<Vec<(u64, Vec<String>)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let q = df
        .write_stream()
        .query_name("fb")
        .option("checkpoint", tmp.path().join("ck").display().to_string())
        .foreach_batch(move |id, batches| {
            let mut rows = render_batches(batches).unwrap();
            rows.sort(); // row order within a micro-batch is not guaranteed
            sink.lock().unwrap().push((id, rows));
            Ok(())
        })
        .start()
        .await
        .unwrap();
    // Nothing runs before data arrives.
    assert!(q.process_all_available().await.unwrap().is_empty());
    let words = env.streams.get("words").unwrap();
    words.push_rows(&["1,a", "2,b"]).unwrap();
    words.push_rows(&["3,c"]).unwrap();
    let progress = q.process_all_available().await.unwrap();
    assert_eq!(progress.len(), 1, "both units in one batch");
    assert_eq!(progress[0].num_input_rows, 3);
    assert_eq!(progress[0].sink.num_output_rows, 2);
    assert_eq!(progress[0].sources[0].end_offset, Some(serde_json::json!(2)));
    for phase in ["latest_offset", "wal_commit", "plan", "read", "execute", "sink", "commit", "total"] {
        assert!(progress[0].duration_ms.contains_key(phase), "{phase}");
    }
    words.push_rows(&["4,d"]).unwrap();
    q.process_all_available().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(0, vec!["b,20".to_string(), "c,30".to_string()]), (1, vec!["d,40".to_string()])]);
    assert_eq!(q.last_progress().unwrap().batch_id, 1);
    assert_eq!(q.recent_progress().len(), 2);
    q.stop().await.unwrap();
    assert!(!q.is_active());
    assert!(q.await_termination().await.is_ok());
}

#[tokio::test]
async fn restart_resumes_after_last_commit_and_memory_table_is_queryable() {
    let (env, session, tmp) = manual_env();
    let ck = tmp.path().join("ck-restart").display().to_string();
    sluice::execute_sql(&session, "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')")
        .await
        .unwrap();
    let sql = format!(
        "CREATE SINK out WITH (connector = 'memory', output_mode = 'append', checkpoint = '{ck}') AS SELECT id, upper(word) AS w FROM ev"
    );
    sluice::execute_sql(&session, &sql).await.unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["1,a"]).unwrap();
    session.query("out").unwrap().process_all_available().await.unwrap();
    session.stop_all().await.unwrap();

    // A brand-new session on the same checkpoint: batch 0 is not re-run.
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let session2 = env.session(config, Arc::new(ManualClock::new(0)));
    sluice::execute_sql(&session2, "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')")
        .await
        .unwrap();
    sluice::execute_sql(&session2, &sql).await.unwrap();
    ev.push_rows(&["2,b"]).unwrap();
    let p = session2.query("out").unwrap().process_all_available().await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].batch_id, 1);
    assert_eq!(p[0].num_input_rows, 1);
    let rows = session2.context().sql("SELECT id, w FROM out ORDER BY id").await.unwrap().collect().await.unwrap();
    assert_eq!(render_batches(&rows).unwrap(), vec!["1,A", "2,B"]);
    session2.stop_all().await.unwrap();
}

#[tokio::test]
async fn uncommitted_batch_is_rerun_with_the_same_offsets() {
    let (env, session, tmp) = manual_env();
    let ck = tmp.path().join("ck-replay");
    sluice::execute_sql(&session, "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')")
        .await
        .unwrap();
    let sql =
        format!("CREATE SINK out2 WITH (connector = 'memory', checkpoint = '{}') AS SELECT id FROM ev", ck.display());
    sluice::execute_sql(&session, &sql).await.unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["1,a"]).unwrap();
    session.query("out2").unwrap().process_all_available().await.unwrap();
    ev.push_rows(&["2,b"]).unwrap();
    session.query("out2").unwrap().process_all_available().await.unwrap();
    session.stop_all().await.unwrap();
    // Simulate a crash after the sink write of batch 1 but before its commit.
    std::fs::remove_file(ck.join("commits/1")).unwrap();
    // More data arrives meanwhile; the replay must still cover exactly unit 2.
    ev.push_rows(&["3,c"]).unwrap();
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let session2 = env.session(config, Arc::new(ManualClock::new(0)));
    sluice::execute_sql(&session2, "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')")
        .await
        .unwrap();
    sluice::execute_sql(&session2, &sql).await.unwrap();
    let p = session2.query("out2").unwrap().process_all_available().await.unwrap();
    assert_eq!(p.iter().map(|p| (p.batch_id, p.num_input_rows)).collect::<Vec<_>>(), vec![(1, 1), (2, 1)]);
    // The memory sink ignored the replayed batch 1 (idempotent): each row once.
    let rows = session2.context().sql("SELECT id FROM out2 ORDER BY id").await.unwrap().collect().await.unwrap();
    assert_eq!(render_batches(&rows).unwrap(), vec!["1", "2", "3"]);
}

#[tokio::test]
async fn background_trigger_available_now_stops_by_itself() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let session = env.default_session();
    let df = session.read_stream().format("memory").schema(schema()).name("bg").load().await.unwrap();
    env.streams.get("bg").unwrap().push_rows(&["1,a", "2,b"]).unwrap();
    let q = df
        .write_stream()
        .format("memory")
        .query_name("bg_out")
        .output_mode(OutputMode::Append)
        .trigger(Trigger::AvailableNow)
        .option("checkpoint", tmp.path().display().to_string())
        .start()
        .await
        .unwrap();
    assert!(q.await_termination_timeout(std::time::Duration::from_secs(30)).await.unwrap());
    assert_eq!(env.sinks.get("bg_out").unwrap().table_rows().iter().map(|b| b.num_rows()).sum::<usize>(), 2);
}

#[tokio::test]
async fn processing_time_trigger_follows_the_manual_clock() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let config = SluiceConfig {
        auto_trigger: true,
        checkpoint_root: tmp.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, clock.clone());
    let df = session.read_stream().format("memory").schema(schema()).name("pt").load().await.unwrap();
    let stream = env.streams.get("pt").unwrap();
    stream.push_rows(&["1,a"]).unwrap();
    let q = df
        .write_stream()
        .query_name("pt_out")
        .trigger(Trigger::ProcessingTime(std::time::Duration::from_secs(10)))
        .option("checkpoint", tmp.path().join("ck").display().to_string())
        .start()
        .await
        .unwrap();
    let batches = |q: &sluice::StreamingQuery| q.recent_progress().len();
    let wait_for = |n: usize| {
        let q = q.clone();
        async move {
            for _ in 0..2000 {
                if q.recent_progress().len() >= n {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            false
        }
    };
    // The first trigger fires at once.
    assert!(wait_for(1).await, "first batch");
    // New data waits for the next interval boundary.
    stream.push_rows(&["2,b"]).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(batches(&q), 1, "no batch before the interval elapses");
    clock.advance(std::time::Duration::from_secs(10));
    assert!(wait_for(2).await, "second batch after 10 s of clock time");
    // An interval without new data runs no batch.
    clock.advance(std::time::Duration::from_secs(10));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(batches(&q), 2, "no batch without new data");
    let p = q.last_progress().unwrap();
    assert_eq!((p.batch_id, p.num_input_rows), (1, 1));
    assert_eq!(p.timestamp_ms, 1_010_000, "batch time comes from the clock");
    q.stop().await.unwrap();
}

#[tokio::test]
async fn dataframe_windows_with_watermark_in_append_mode() {
    use datafusion::functions_aggregate::expr_fn::count;
    use sluice::dataframe::{drop_duplicates, with_watermark, with_window};
    let (env, session, tmp) = manual_env();
    let schema = timed_schema("word");
    let df = session.read_stream().format("memory").schema(schema).name("ev").load().await.unwrap();
    let df = with_watermark(df, "ts", "10 minutes").unwrap();
    let df = with_window(df, "window", "ts", "10 minutes", Some("5 minutes")).unwrap();
    let df = df.aggregate(vec![col("window"), col("word")], vec![count(lit(1)).alias("n")]).unwrap();
    let q = df
        .write_stream()
        .query_name("wc")
        .output_mode(OutputMode::Append)
        .option("checkpoint", tmp.path().join("wc").display().to_string())
        .start()
        .await
        .unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["2024-01-01 12:07:00,dog", "2024-01-01 12:08:00,dog"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(env.sinks.get("wc").unwrap().received_since(0).len(), 0, "windows still open");
    ev.push_rows(&["2024-01-01 12:21:00,owl"]).unwrap();
    q.process_all_available().await.unwrap();
    let mut rows = render_batches(&env.sinks.get("wc").unwrap().received_since(0)).unwrap();
    rows.sort();
    assert_eq!(
        rows,
        // Watermark 12:11: [12:00,12:10) is closed, [12:05,12:15) still open.
        vec!["{start: 2024-01-01 12:00:00, end: 2024-01-01 12:10:00},dog,2"]
    );
    assert_eq!(q.watermark_ms().map(|w| w % 86_400_000), Some((12 * 60 + 11) * 60_000));

    // A watermark on a column the stream does not have is refused clearly.
    let df = session.context().table("ev").await.unwrap();
    let e = with_watermark(df, "nope", "1 minute").unwrap_err().to_string();
    assert!(e.contains("no stream") && e.contains("'nope'"), "{e}");

    // drop_duplicates on the whole row.
    let df = drop_duplicates(session.context().table("ev").await.unwrap(), None).unwrap();
    let d = df
        .write_stream()
        .query_name("dd")
        .option("checkpoint", tmp.path().join("dd").display().to_string())
        .start()
        .await
        .unwrap();
    d.process_all_available().await.unwrap();
    ev.push_rows(&["2024-01-01 12:21:00,owl", "2024-01-01 12:30:00,cat"]).unwrap();
    d.process_all_available().await.unwrap();
    assert_eq!(env.sinks.get("dd").unwrap().table_rows().iter().map(|b| b.num_rows()).sum::<usize>(), 4);
}

#[tokio::test]
async fn drop_duplicates_by_columns_and_within_watermark() {
    use sluice::dataframe::{drop_duplicates, drop_duplicates_within_watermark, with_watermark};
    let (env, session, tmp) = manual_env();
    let schema = timed_schema("id");
    let df = session.read_stream().format("memory").schema(schema).name("ev").load().await.unwrap();
    let by_id = drop_duplicates(df.clone(), Some(&["id"])).unwrap();
    let q1 = by_id
        .write_stream()
        .query_name("by_id")
        .option("checkpoint", tmp.path().join("a").display().to_string())
        .start()
        .await
        .unwrap();
    let within = drop_duplicates_within_watermark(with_watermark(df, "ts", "10 minutes").unwrap(), &["id"]).unwrap();
    let q2 = within
        .write_stream()
        .query_name("within")
        .option("checkpoint", tmp.path().join("b").display().to_string())
        .start()
        .await
        .unwrap();
    let ev = env.streams.get("ev").unwrap();
    let run = || async {
        q1.process_all_available().await.unwrap();
        q2.process_all_available().await.unwrap();
    };
    ev.push_rows(&["2024-01-01 12:00:00,x", "2024-01-01 12:03:00,x", "2024-01-01 12:05:00,y"]).unwrap();
    run().await;
    // Watermark 11:55. x again at 12:08: within 10 minutes of 12:00, a duplicate for both.
    ev.push_rows(&["2024-01-01 12:08:00,x", "2024-01-01 12:30:00,z"]).unwrap();
    run().await;
    // Watermark 12:20 > 12:00 + 10 min: x is forgotten by the within-watermark dedup only.
    ev.push_rows(&["2024-01-01 12:25:00,x"]).unwrap();
    run().await;
    let rows = |name: &str| {
        let mut r = render_batches(&env.sinks.get(name).unwrap().table_rows()).unwrap();
        r.sort();
        r
    };
    assert_eq!(rows("by_id"), vec!["2024-01-01 12:00:00,x", "2024-01-01 12:05:00,y", "2024-01-01 12:30:00,z"]);
    assert_eq!(
        rows("within"),
        vec!["2024-01-01 12:00:00,x", "2024-01-01 12:05:00,y", "2024-01-01 12:25:00,x", "2024-01-01 12:30:00,z"]
    );
}
