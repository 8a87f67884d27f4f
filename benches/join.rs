//! Stream-stream join throughput and state size.
//!
//! Run with `cargo bench --bench join` (`SLUICE_BENCH_ROWS`, default
//! 10,000,000: half impressions, half clicks). Over the same Parquet files
//! (20 per side; 10,000 impressions per second of event time, each clicked
//! once within 5 seconds):
//! an inner join of clicks with their impression within 10 seconds,
//! `c.ts BETWEEN i.ts AND i.ts + INTERVAL '10' SECOND`, in append mode with
//! 5-second watermarks on both sides.
//!
//! It runs as a Sluice stream (two files sources, one file each per
//! micro-batch, `available_now`: 20 batches) and as DataFusion's batch hash
//! join of the same query on the same files (the baseline). Reported: input
//! rows/s of both, their ratio, and the join state's memory per stored row at
//! its peak.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use sluice::{execute_sql, Environment, OutputMode};

/// The allocator the `sluice` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FILES: usize = 20;
const BASE_US: i64 = 1_700_000_000_000_000;

const QUERY: &str = "SELECT i.id, i.k, i.ts AS imp_ts, c.ts AS click_ts, c.u \
                     FROM imps i JOIN clicks c \
                     ON i.id = c.id AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '10' SECOND";

fn schema(other: &str) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        Field::new("id", DataType::Int64, false),
        Field::new(other, DataType::Int64, false),
    ]))
}

/// `rows` impressions (id x at 100 µs steps) under `dir/imps`, and one click
/// each under `dir/clicks`, up to 4.9 s later.
fn write_files(dir: &Path, rows: usize) {
    for (side, other) in [("imps", "k"), ("clicks", "u")] {
        let sub = dir.join(side);
        std::fs::create_dir_all(&sub).expect("mkdir");
        let per_file = rows / FILES;
        for f in 0..FILES {
            let file = std::fs::File::create(sub.join(format!("part-{f:04}.parquet"))).expect("create");
            let mut w = ArrowWriter::try_new(file, schema(other), None).expect("writer");
            let (mut i, end) = (f * per_file, (f + 1) * per_file);
            while i < end {
                let n = (end - i).min(131_072);
                let idx: Vec<i64> = (i..i + n).map(|x| x as i64).collect();
                let delay = |x: i64| if side == "clicks" { (x * 7919 % 50) * 100_000 } else { 0 };
                let ts = TimestampMicrosecondArray::from_iter_values(idx.iter().map(|x| BASE_US + x * 100 + delay(*x)));
                let extra = Int64Array::from_iter_values(idx.iter().map(|x| (x * 31) % 1000));
                let cols: Vec<datafusion::arrow::array::ArrayRef> =
                    vec![Arc::new(ts), Arc::new(Int64Array::from_iter_values(idx.iter().copied())), Arc::new(extra)];
                w.write(&RecordBatch::try_new(schema(other), cols).expect("batch")).expect("write");
                i += n;
            }
            w.close().expect("close");
        }
    }
}

async fn batch(dir: &Path) -> (Duration, u64) {
    let ctx = SessionContext::new();
    for t in ["imps", "clicks"] {
        ctx.register_parquet(t, dir.join(t).display().to_string(), ParquetReadOptions::default())
            .await
            .expect("register");
    }
    let t = Instant::now();
    let out = ctx.sql(QUERY).await.expect("sql").collect().await.expect("run");
    (t.elapsed(), out.iter().map(|b| b.num_rows() as u64).sum())
}

async fn stream(dir: &Path, ck: &Path) -> (Duration, u64, u64, u64, usize) {
    let env = Environment::default();
    let session = env.default_session();
    for (t, other) in [("imps", "k"), ("clicks", "u")] {
        let path = dir.join(t).display().to_string();
        execute_sql(
            &session,
            &format!(
                "CREATE SOURCE {t} (ts TIMESTAMP NOT NULL, id BIGINT NOT NULL, {other} BIGINT NOT NULL, \
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
                 WITH (connector = 'files', path = '{path}', format = 'parquet', max_files_per_trigger = 1)"
            ),
        )
        .await
        .expect("source");
    }
    let df = session.context().sql(QUERY).await.expect("plan");
    let run = sluice::bench::run_available_now(df, OutputMode::Append, ck, false, &[]).await.expect("run");
    let progress = run.query.recent_progress();
    if std::env::var("SLUICE_BENCH_VERBOSE").is_ok() {
        for p in &progress {
            eprintln!(
                "batch {}: {:?} state {:?}",
                p.batch_id,
                p.duration_ms,
                p.state_operators.first().map(|s| s.commit_time_ms)
            );
        }
    }
    let peak = sluice::bench::peak_state(&progress);
    (run.elapsed, run.rows_out, peak.0, peak.1, progress.len())
}

fn main() {
    let rows: usize = std::env::var("SLUICE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let per_side = rows / 2;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    write_files(&data, per_side);
    rt.block_on(async {
        println!("stream-stream join over {rows} rows ({per_side} impressions, {per_side} clicks, {FILES} files each)");
        let _ = batch(&data).await;
        let (bt, bout) = batch(&data).await;
        let (st, sout, mem, stored, batches) = stream(&data, &tmp.path().join("ck")).await;
        let (brate, srate) = (rows as f64 / bt.as_secs_f64(), rows as f64 / st.as_secs_f64());
        println!("  datafusion batch : {:>8.0} ms {:>12.0} rows/s  ({bout} pairs)", bt.as_secs_f64() * 1e3, brate);
        println!(
            "  sluice stream    : {:>8.0} ms {:>12.0} rows/s  ({sout} pairs, {batches} batches)",
            st.as_secs_f64() * 1e3,
            srate
        );
        println!("  ratio sluice/datafusion: {:.2}", srate / brate);
        if stored > 0 {
            println!("  state at peak: {stored} rows stored, {mem} bytes, {:.0} bytes/row", mem as f64 / stored as f64);
        }
    });
}
