//! Windowed aggregation throughput and state memory.
//!
//! Run with `cargo bench --bench stateful` (`SLUICE_BENCH_ROWS`, default
//! 10,000,000). Over the same Parquet files (rows with an event time at
//! 10,000 rows per second of event time, 1,000 keys):
//! - a tumbling-window (10 s) count by key, append mode with a 5 s watermark;
//! - a sliding-window (10 s every 2 s) sum by key, append mode.
//!
//! Each runs as a Sluice stream (files source, one file per micro-batch,
//! `available_now`) and as DataFusion's batch execution of the equivalent
//! query (the baseline, same window functions). Reported: rows/s of both,
//! their ratio, and the state store's memory per key at its peak.
//!
//! Then a count per key in update mode (no window), two ways over the same
//! files: `flat_map_groups_with_state` with an `i64` state per key, and the
//! built-in `GROUP BY k` aggregation; rows/s of both.
//!
//! Last, the same update-mode count over files where every row has its own
//! key (10M distinct keys at the default size), at two batch sizes (one and
//! four files per micro-batch): rows/s, the state at its peak, the process's
//! peak resident memory, and the commit time of the first and last batches
//! (a commit writes what the batch changed, so it should not grow with the
//! keys already in the store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Int64Array, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use sluice::{execute_sql, Environment, OutputMode};

const FILES: usize = 20;
const KEYS: i64 = 1000;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

/// Write `rows` rows over [`FILES`] Parquet files; `k` cycles through
/// [`KEYS`] keys, or with `distinct` is the row's index.
fn write_files(dir: &std::path::Path, rows: usize, distinct: bool) {
    let per_file = rows / FILES;
    let base = 1_700_000_000_000_000_000i64;
    for f in 0..FILES {
        let file = std::fs::File::create(dir.join(format!("part-{f:04}.parquet"))).expect("create");
        let mut w = ArrowWriter::try_new(file, schema(), None).expect("writer");
        let mut i = f * per_file;
        let end = i + per_file;
        while i < end {
            let n = (end - i).min(131_072);
            let idx: Vec<i64> = (i..i + n).map(|x| x as i64).collect();
            // 10,000 rows per second of event time, with some disorder.
            let ts = TimestampNanosecondArray::from_iter_values(
                idx.iter().map(|x| base + x * 100_000 - (x * 7919 % 13) * 50_000_000),
            );
            let batch = RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(ts),
                    Arc::new(Int64Array::from_iter_values(
                        idx.iter().map(|x| if distinct { *x } else { (x * 31) % KEYS }),
                    )),
                    Arc::new(Int64Array::from_iter_values(idx.iter().map(|x| x % 100))),
                ],
            )
            .expect("batch");
            w.write(&batch).expect("write");
            i += n;
        }
        w.close().expect("close");
    }
}

struct Case {
    name: &'static str,
    /// The query over a table named `t` (window functions as Sluice rewrites them).
    batch_sql: &'static str,
    stream_sql: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "tumbling 10 s count by key",
        batch_sql: "SELECT w['start'] AS ws, k, count(*) AS n FROM (SELECT k, sluice_tumble(ts, 10000000, 0) AS w FROM t) GROUP BY w, k",
        stream_sql: "SELECT window.start AS ws, k, count(*) AS n FROM t GROUP BY window(ts, '10 seconds'), k",
    },
    Case {
        name: "sliding 10 s / 2 s sum by key",
        batch_sql: "SELECT w['start'] AS ws, k, sum(v) AS s FROM (SELECT k, v, unnest(sluice_windows(ts, 10000000, 2000000, 0)) AS w FROM t) GROUP BY w, k",
        stream_sql: "SELECT window.start AS ws, k, sum(v) AS s FROM t GROUP BY window(ts, '10 seconds', '2 seconds'), k",
    },
];

async fn batch(dir: &str, sql: &str) -> (Duration, u64) {
    let ctx = SessionContext::new();
    for udf in sluice::functions::window_udfs() {
        ctx.register_udf(udf);
    }
    ctx.register_parquet("t", dir, ParquetReadOptions::default()).await.expect("register");
    let t = Instant::now();
    let out = ctx.sql(sql).await.expect("sql").collect().await.expect("run");
    (t.elapsed(), out.iter().map(|b| b.num_rows() as u64).sum())
}

async fn stream(dir: &str, ck: &str, sql: &str) -> (Duration, u64, u64, u64, usize) {
    let session = source(dir).await;
    let stmt = sluice::parse_sql(&format!("CREATE SINK x AS {sql}")).expect("parse");
    let sluice::sql::SluiceStatement::CreateSink(mut sink) = stmt.into_iter().next().expect("stmt") else {
        panic!("not a sink")
    };
    sluice::sql::windows::rewrite_windows(&mut sink.query).expect("rewrite");
    let df = session.context().sql(&sink.query.to_string()).await.expect("plan");
    let run = sluice::bench::run_available_now(df, OutputMode::Append, std::path::Path::new(ck), false, &[])
        .await
        .expect("run");
    let progress = run.query.recent_progress();
    let peak = sluice::bench::peak_state(&progress);
    (run.elapsed, run.rows_out, peak.0, peak.1, progress.len())
}

/// A source `t` over the files, in a new session, one file per batch.
async fn source(dir: &str) -> sluice::SluiceSession {
    source_with(dir, 1).await
}

/// A source `t` over the files, in a new session, `files` files per batch.
async fn source_with(dir: &str, files: usize) -> sluice::SluiceSession {
    let env = Environment::default();
    let session = env.default_session();
    execute_sql(
        &session,
        &format!(
            "CREATE SOURCE t (ts TIMESTAMP NOT NULL, k BIGINT NOT NULL, v BIGINT NOT NULL, \
             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'files', path = '{dir}', format = 'parquet', max_files_per_trigger = {files})"
        ),
    )
    .await
    .expect("source");
    session
}

/// The count per key in update mode, by `flat_map_groups_with_state` or by
/// `GROUP BY`: elapsed time and rows emitted.
async fn count_per_key(dir: &str, ck: &str, with_state: bool) -> (Duration, u64) {
    use sluice::arbitrary::{GroupKey, GroupState, GroupStateTimeout};
    use sluice::StreamingDataFrameExt;
    let session = source(dir).await;
    let df = if with_state {
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let schema = Arc::clone(&out);
        let df = session.context().sql("SELECT k FROM t").await.expect("plan");
        df.group_by_key(&["k"])
            .expect("keys")
            .flat_map_groups_with_state(
                OutputMode::Update,
                GroupStateTimeout::NoTimeout,
                out,
                move |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<i64>| {
                    let n = state.get_option().copied().unwrap_or(0)
                        + rows.iter().map(|b| b.num_rows() as i64).sum::<i64>();
                    state.update(n);
                    let k = match key.values().first() {
                        Some(datafusion::common::ScalarValue::Int64(Some(k))) => *k,
                        _ => 0,
                    };
                    Ok(vec![RecordBatch::try_new(
                        Arc::clone(&schema),
                        vec![Arc::new(Int64Array::from(vec![k])), Arc::new(Int64Array::from(vec![n]))],
                    )?])
                },
            )
            .expect("flat_map_groups_with_state")
    } else {
        session.context().sql("SELECT k, count(*) AS n FROM t GROUP BY k").await.expect("plan")
    };
    let run = sluice::bench::run_available_now(df, OutputMode::Update, std::path::Path::new(ck), false, &[])
        .await
        .expect("run");
    (run.elapsed, run.rows_out)
}

fn main() {
    let rows: usize = std::env::var("SLUICE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    write_files(&data, rows, false);
    let distinct = tmp.path().join("distinct");
    std::fs::create_dir_all(&distinct).expect("mkdir");
    write_files(&distinct, rows, true);
    let dir = data.display().to_string();
    rt.block_on(async {
        println!("windowed aggregation over {rows} rows, {KEYS} keys, {FILES} Parquet files");
        for (i, case) in CASES.iter().enumerate() {
            let _ = batch(&dir, case.batch_sql).await;
            let (bt, bout) = batch(&dir, case.batch_sql).await;
            let ck = tmp.path().join(format!("ck{i}")).display().to_string();
            let (st, sout, mem, keys, batches) = stream(&dir, &ck, case.stream_sql).await;
            let (brate, srate) = (rows as f64 / bt.as_secs_f64(), rows as f64 / st.as_secs_f64());
            println!("{}", case.name);
            println!(
                "  datafusion batch : {:>8.0} ms {:>12.0} rows/s  ({bout} windows)",
                bt.as_secs_f64() * 1e3,
                brate
            );
            println!(
                "  sluice stream    : {:>8.0} ms {:>12.0} rows/s  ({sout} windows emitted, {batches} batches)",
                st.as_secs_f64() * 1e3,
                srate
            );
            println!("  ratio sluice/datafusion: {:.2}", srate / brate);
            if keys > 0 {
                println!("  state at peak: {keys} keys, {mem} bytes, {:.0} bytes/key", mem as f64 / keys as f64);
            }
        }
        println!("count per key, update mode, {KEYS} keys");
        let mut rates = vec![];
        for (i, (label, with_state)) in
            [("built-in GROUP BY k", false), ("flat_map_groups_with_state", true)].into_iter().enumerate()
        {
            let ck = tmp.path().join(format!("count{i}")).display().to_string();
            let (t, out) = count_per_key(&dir, &ck, with_state).await;
            let rate = rows as f64 / t.as_secs_f64();
            rates.push(rate);
            println!("  {label:<28}: {:>8.0} ms {:>12.0} rows/s  ({out} rows emitted)", t.as_secs_f64() * 1e3, rate);
        }
        println!("  ratio flat_map_groups_with_state/built-in: {:.2}", rates[1] / rates[0]);
        let distinct = distinct.display().to_string();
        println!("count per key, update mode, every row its own key ({rows} keys)");
        for files in [1, 4] {
            let ck = tmp.path().join(format!("distinct{files}")).display().to_string();
            distinct_keys(&distinct, &ck, files, rows).await;
        }
    });
}

/// The update-mode count over distinct keys, `files` files per batch.
async fn distinct_keys(dir: &str, ck: &str, files: usize, rows: usize) {
    let session = source_with(dir, files).await;
    let df = session.context().sql("SELECT k, count(*) AS n FROM t GROUP BY k").await.expect("plan");
    let run = sluice::bench::run_available_now(df, OutputMode::Update, std::path::Path::new(ck), false, &[])
        .await
        .expect("run");
    let progress = run.query.recent_progress();
    let (mem, keys) = sluice::bench::peak_state(&progress);
    let commit = |p: &sluice::StreamingQueryProgress| p.duration_ms.get("commit").copied().unwrap_or(0);
    let n = progress.len();
    let first: Vec<u64> = progress.iter().take(3).map(commit).collect();
    let last: Vec<u64> = progress.iter().skip(n.saturating_sub(3)).map(commit).collect();
    println!(
        "  {:>7} rows/batch: {:>8.0} ms {:>12.0} rows/s, {n} batches; state at peak {keys} keys, {:.0} MiB; \
         process peak RSS {:.0} MiB; commit ms first batches {first:?}, last batches {last:?}",
        rows / FILES * files,
        run.elapsed.as_secs_f64() * 1e3,
        rows as f64 / run.elapsed.as_secs_f64(),
        mem as f64 / (1 << 20) as f64,
        peak_rss_mib(),
    );
}

/// The process's peak resident memory (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}
