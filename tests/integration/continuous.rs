//! The continuous trigger: rows delivered as they arrive, epochs committed
//! on the clock's interval boundaries, restarts from the last committed
//! epoch, replay of an uncommitted one, and the queries it refuses.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{col, lit};
use sluice::stt::render_batches;
use sluice::{
    execute_sql, Environment, ManualClock, OutputMode, SluiceConfig, SluiceSession, StreamingDataFrameExt, Trigger,
};

/// What a `foreach_batch` sink saw: `(epoch, row)` in arrival order.
type Seen = Arc<Mutex<Vec<(u64, String)>>>;

/// A test's environment, manual clock (at 0) and checkpoint location.
struct Fixture {
    env: Environment,
    tmp: tempfile::TempDir,
    clock: Arc<ManualClock>,
    ck: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ck = tmp.path().join("ck");
        Self { env: Environment::default(), tmp, clock: Arc::new(ManualClock::new(0)), ck }
    }

    /// [`start_filter`] in a new session, with what its sink saw and the
    /// `words` stream it reads.
    async fn start_filter(&self, fail_on: Option<i64>) -> (Seen, sluice::StreamingQuery, Arc<sluice::MemoryStream>) {
        let seen: Seen = Arc::default();
        let q = start_filter(&self.session(), &self.ck, &seen, fail_on).await.unwrap();
        let words = self.env.streams.get("words").unwrap();
        (seen, q, words)
    }

    /// A new session of the same environment (a restart, for the engine).
    fn session(&self) -> SluiceSession {
        session(&self.env, self.tmp.path(), &self.clock)
    }
}

/// A session with the background trigger on a manual clock at 0.
fn session(env: &Environment, root: &Path, clock: &Arc<ManualClock>) -> SluiceSession {
    let config = SluiceConfig {
        auto_trigger: true,
        checkpoint_root: root.join("default-checkpoints"),
        target_partitions: 2,
        ..Default::default()
    };
    env.session(config, Arc::clone(clock) as sluice::ClockRef)
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("word", DataType::Utf8, true)]))
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..400 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Start `SELECT id, word FROM words WHERE id % 2 = 0` under the continuous
/// trigger (1 s epochs) into a `foreach_batch` that records every row.
async fn start_filter(
    s: &SluiceSession,
    ck: &Path,
    seen: &Seen,
    fail_on: Option<i64>,
) -> sluice::Result<sluice::StreamingQuery> {
    let df = s.read_stream().format("memory").schema(schema()).name("words").load().await?;
    let df = df.filter((col("id") % lit(2)).eq(lit(0)))?.select(vec![col("id"), col("word")])?;
    let sink = Arc::clone(seen);
    df.write_stream()
        .query_name("evens")
        .trigger(Trigger::Continuous(Duration::from_secs(1)))
        .option("checkpoint", ck.display().to_string())
        .foreach_batch(move |epoch, batches| {
            let rows = render_batches(batches).map_err(sluice::SluiceError::plan)?;
            if fail_on.is_some_and(|id| rows.iter().any(|r| r.starts_with(&format!("{id},")))) {
                return Err(sluice::SluiceError::plan(format!("the writer refused row {}", fail_on.unwrap_or(0))));
            }
            sink.lock().unwrap().extend(rows.into_iter().map(|r| (epoch, r)));
            Ok(())
        })
        .start()
        .await
}

#[tokio::test]
async fn rows_reach_the_sink_before_the_epoch_ends_and_epochs_commit_on_the_interval() {
    let f = Fixture::new();
    let (clock, ck) = (&f.clock, &f.ck);
    let (seen, q, words) = f.start_filter(None).await;
    words.push_rows(&["1,a", "2,b", "3,c", "4,d"]).unwrap();
    wait_for("the first chunk", || seen.lock().unwrap().len() == 2).await;
    // Delivered while the clock stands still: the epoch is still open.
    assert_eq!(*seen.lock().unwrap(), vec![(0, "2,b".to_string()), (0, "4,d".to_string())]);
    assert!(!ck.join("offsets/0").exists(), "nothing is logged before the epoch ends");
    assert!(q.recent_progress().is_empty());
    words.push_rows(&["6,e"]).unwrap();
    wait_for("the second chunk", || seen.lock().unwrap().len() == 3).await;

    clock.set(1000);
    wait_for("epoch 0's commit", || q.recent_progress().len() == 1).await;
    assert!(ck.join("offsets/0").exists() && ck.join("commits/0").exists());
    let p = q.last_progress().unwrap();
    assert_eq!((p.batch_id, p.num_input_rows, p.sink.num_output_rows), (0, 5, 3));
    let epoch = p.epoch.clone().expect("an epoch's progress has its chunks");
    assert!(epoch.chunks >= 2, "two pushes, two chunks at least: {epoch:?}");
    assert!(epoch.latency_max_us >= epoch.latency_p50_us);
    let end0 = p.sources[0].end_offset.clone();
    assert!(end0.is_some());
    assert!(p.json().contains("\"epoch\""), "{}", p.json());

    words.push_rows(&["8,f", "9,g"]).unwrap();
    wait_for("epoch 1's chunk", || seen.lock().unwrap().len() == 4).await;
    assert_eq!(seen.lock().unwrap()[3], (1, "8,f".to_string()));
    // An epoch without rows logs nothing.
    clock.set(2000);
    wait_for("epoch 1's commit", || q.recent_progress().len() == 2).await;
    let p = q.last_progress().unwrap();
    assert_eq!((p.batch_id, p.num_input_rows), (1, 2));
    assert_eq!(p.sources[0].start_offset, end0);
    clock.set(3000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!ck.join("offsets/2").exists(), "an empty epoch is not logged");
    q.stop().await.unwrap();

    // A restart (a new session of the same process) resumes after the last
    // committed epoch.
    let s = f.session();
    let seen2: Seen = Arc::default();
    let q = start_filter(&s, &ck, &seen2, None).await.unwrap();
    words.push_rows(&["10,h"]).unwrap();
    wait_for("the restarted query's chunk", || !seen2.lock().unwrap().is_empty()).await;
    assert_eq!(*seen2.lock().unwrap(), vec![(2, "10,h".to_string())]);
    q.stop().await.unwrap();
    assert!(ck.join("commits/2").exists(), "stop commits the open epoch");
}

#[tokio::test]
async fn rows_of_an_epoch_that_failed_before_its_commit_are_delivered_again() {
    let f = Fixture::new();
    let (clock, ck) = (&f.clock, &f.ck);
    let (seen, q, words) = f.start_filter(Some(6)).await;
    words.push_rows(&["2,a"]).unwrap();
    wait_for("epoch 0's chunk", || seen.lock().unwrap().len() == 1).await;
    clock.set(1000);
    wait_for("epoch 0's commit", || q.recent_progress().len() == 1).await;
    words.push_rows(&["4,b"]).unwrap();
    wait_for("epoch 1's chunk", || seen.lock().unwrap().len() == 2).await;
    // The writer fails on the next chunk: the query fails inside epoch 1.
    words.push_rows(&["6,c"]).unwrap();
    let failed = q.await_termination_timeout(Duration::from_secs(5)).await;
    assert!(matches!(&failed, Err(e) if e.to_string().contains("refused row 6")), "{failed:?}");
    assert!(!ck.join("offsets/1").exists(), "the failed epoch was never logged");

    // At-least-once: the restart reads epoch 1's rows again from epoch 0's end.
    let s = f.session();
    let seen2: Seen = Arc::default();
    let q = start_filter(&s, &ck, &seen2, None).await.unwrap();
    wait_for("the replay", || seen2.lock().unwrap().len() == 2).await;
    assert_eq!(*seen2.lock().unwrap(), vec![(1, "4,b".to_string()), (1, "6,c".to_string())]);
    q.stop().await.unwrap();
}

#[tokio::test]
async fn a_logged_but_uncommitted_epoch_is_re_run_over_exactly_its_offsets() {
    let f = Fixture::new();
    let (clock, ck) = (&f.clock, &f.ck);
    let (seen, q, words) = f.start_filter(None).await;
    words.push_rows(&["2,a"]).unwrap();
    wait_for("epoch 0", || seen.lock().unwrap().len() == 1).await;
    clock.set(1000);
    wait_for("epoch 0's commit", || q.recent_progress().len() == 1).await;
    words.push_rows(&["4,b", "6,c"]).unwrap();
    wait_for("epoch 1", || seen.lock().unwrap().len() == 3).await;
    q.stop().await.unwrap();
    // A crash between the offset log and the commit log of epoch 1.
    std::fs::remove_file(ck.join("commits/1")).unwrap();
    words.push_rows(&["8,d"]).unwrap();

    let s = f.session();
    let seen2: Seen = Arc::default();
    let q = start_filter(&s, &ck, &seen2, None).await.unwrap();
    wait_for("the replay and the new row", || seen2.lock().unwrap().len() == 3).await;
    // Epoch 1 again with exactly its rows (as one batch), then 8 in epoch 2.
    assert_eq!(*seen2.lock().unwrap(), vec![(1, "4,b".to_string()), (1, "6,c".to_string()), (2, "8,d".to_string())]);
    q.stop().await.unwrap();
}

#[tokio::test]
async fn update_mode_count_emits_per_chunk_and_keeps_its_state_across_a_restart() {
    let f = Fixture::new();
    let (env, clock, ck) = (&f.env, &f.clock, &f.ck);
    let start = |seen: Seen| {
        let s = f.session();
        let ck = ck.clone();
        async move {
            let df = s.read_stream().format("memory").schema(schema()).name("words").load().await.unwrap();
            let df = df
                .aggregate(vec![col("word")], vec![datafusion::functions_aggregate::count::count(col("id")).alias("n")])
                .unwrap();
            df.write_stream()
                .query_name("counts")
                .output_mode(OutputMode::Update)
                .trigger(Trigger::Continuous(Duration::from_secs(1)))
                .option("checkpoint", ck.display().to_string())
                .foreach_batch(move |epoch, batches| {
                    let mut rows = render_batches(batches).map_err(sluice::SluiceError::plan)?;
                    rows.sort();
                    seen.lock().unwrap().extend(rows.into_iter().map(|r| (epoch, r)));
                    Ok(())
                })
                .start()
                .await
                .unwrap()
        }
    };
    let seen: Seen = Arc::default();
    let q = start(Arc::clone(&seen)).await;
    let words = env.streams.get("words").unwrap();
    words.push_rows(&["1,a", "2,a", "3,b"]).unwrap();
    wait_for("the first counts", || seen.lock().unwrap().len() == 2).await;
    words.push_rows(&["4,a"]).unwrap();
    wait_for("a's new count", || seen.lock().unwrap().len() == 3).await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(0, "a,2".to_string()), (0, "b,1".to_string()), (0, "a,3".to_string())],
        "each chunk emits the groups it changed, before the epoch ends"
    );
    clock.set(1000);
    wait_for("epoch 0's commit", || q.recent_progress().len() == 1).await;
    let p = q.last_progress().unwrap();
    assert_eq!(p.state_operators[0].num_rows_total, 2);
    q.stop().await.unwrap();

    let seen2: Seen = Arc::default();
    let q = start(Arc::clone(&seen2)).await;
    words.push_rows(&["5,b"]).unwrap();
    wait_for("b's count after the restart", || seen2.lock().unwrap().len() == 1).await;
    assert_eq!(*seen2.lock().unwrap(), vec![(1, "b,2".to_string())]);
    q.stop().await.unwrap();
}

#[tokio::test]
async fn append_mode_windows_are_emitted_as_soon_as_the_watermark_passes_them() {
    let f = Fixture::new();
    let (env, clock, s) = (&f.env, &f.clock, f.session());
    execute_sql(&s, "CREATE SOURCE ev (ts TIMESTAMP, word VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'memory')")
        .await
        .unwrap();
    let ck = &f.ck;
    execute_sql(
        &s,
        &format!(
            "CREATE SINK w WITH (connector = 'memory', trigger = 'continuous', interval = '1 second', checkpoint = '{}') AS \
             SELECT window_start, count(*) AS n FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end",
            ck.display()
        ),
    )
    .await
    .unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["2026-01-01 00:00:01,a", "2026-01-01 00:00:05,b"]).unwrap();
    ev.push_rows(&["2026-01-01 00:00:12,c"]).unwrap();
    let q = s.query("w").unwrap();
    // The memory sink commits by epoch: the window appears at the end of
    // the first epoch with rows (whenever the query's task started it).
    for second in 1..=10 {
        clock.set(second * 1000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !q.recent_progress().is_empty() || q.exception().is_some() {
            break;
        }
    }
    assert_eq!(q.exception(), None);
    let p = q.recent_progress()[0].clone();
    assert_eq!((p.num_input_rows, p.sink.num_output_rows), (3, 1), "emitted in the epoch that moved the watermark");
    // Nothing new: the following epochs log nothing.
    clock.advance(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(q.recent_progress().len(), 1, "{:?}", q.recent_progress());
    let out = render_batches(&env.sinks.get("w").unwrap().table_rows()).unwrap();
    assert_eq!(out, vec!["2026-01-01 00:00:00,2"], "the window [0s, 10s) closed once the watermark passed 10s");
    q.stop().await.unwrap();
}

#[tokio::test]
async fn the_continuous_trigger_refuses_what_it_cannot_run_and_says_what_to_do() {
    let f = Fixture::new();
    let s = f.session();
    execute_sql(&s, "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')").await.unwrap();
    std::fs::create_dir_all(f.tmp.path().join("in")).unwrap();
    execute_sql(
        &s,
        &format!(
            "CREATE SOURCE f (id BIGINT, word VARCHAR) WITH (connector = 'files', path = '{}', format = 'csv')",
            f.tmp.path().join("in").display()
        ),
    )
    .await
    .unwrap();
    let refused = |sql: &str| {
        let s = s.clone();
        let sql = sql.to_string();
        async move {
            let e = execute_sql(&s, &sql).await.err().unwrap_or_else(|| panic!("accepted: {sql}"));
            e.to_string()
        }
    };
    let sink = "CREATE SINK x WITH (connector = 'memory', trigger = 'continuous'";
    let e = refused(&format!("{sink}) AS SELECT DISTINCT word FROM ev")).await;
    assert!(e.contains("deduplication") && e.contains("micro-batch trigger"), "{e}");
    let e = refused(&format!("{sink}, output_mode = 'complete') AS SELECT word, count(*) FROM ev GROUP BY word")).await;
    assert!(e.contains("complete output mode") && e.contains("update"), "{e}");
    let e = refused(&format!("{sink}) AS SELECT id FROM f")).await;
    assert!(e.contains("source 'f'") && e.contains("files source") && e.contains("processing_time"), "{e}");
    let e = refused(&format!("{sink}) AS SELECT a.id FROM ev a JOIN ev b ON a.id = b.id")).await;
    assert!(e.contains("stream-stream join"), "{e}");
    assert!(s.query("x").is_none(), "nothing was started");
}
