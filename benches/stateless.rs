//! Stateless throughput and per-trigger overhead.
//!
//! Run with `cargo bench --bench stateless` (set `SLUICE_BENCH_ROWS` to
//! change the data size, default 4,000,000). Reports:
//! - rows/s of a filter + projection over Parquet files read by the `files`
//!   source with an `available_now` run, next to DataFusion's batch
//!   execution of the same query on the same files (the baseline);
//! - the cost of an empty trigger and of a 1-row trigger (memory source).
//!
//! Figures come from one run on one machine; compare ratios, not absolutes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use sluice::{execute_sql, Environment, ManualClock, SluiceConfig};

const QUERY_BODY: &str =
    "SELECT id, upper(name) AS name, price * qty AS total FROM {T} WHERE qty > 2 AND price < 900.0";

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new("qty", DataType::Int64, false),
    ]))
}

fn write_files(dir: &std::path::Path, rows: usize, files: usize) {
    let per_file = rows / files;
    let names = ["alpha", "beta", "gamma", "delta", "epsilon"];
    for f in 0..files {
        let path = dir.join(format!("part-{f:04}.parquet"));
        let file = std::fs::File::create(path).expect("create bench file");
        let mut w = ArrowWriter::try_new(file, schema(), None).expect("parquet writer");
        let mut start = f * per_file;
        let end = start + per_file;
        while start < end {
            let n = (end - start).min(65_536);
            let ids: Vec<i64> = (start..start + n).map(|i| i as i64).collect();
            let batch = RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from_iter_values(ids.iter().map(|i| names[(*i % 5) as usize]))),
                    Arc::new(Float64Array::from_iter_values(ids.iter().map(|i| (*i % 1000) as f64 + 0.5))),
                    Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 7))),
                ],
            )
            .expect("batch");
            w.write(&batch).expect("write");
            start += n;
        }
        w.close().expect("close");
    }
}

async fn datafusion_batch(dir: &str) -> (Duration, u64) {
    let ctx = SessionContext::new();
    ctx.register_parquet("t", dir, ParquetReadOptions::default()).await.expect("register");
    let t = Instant::now();
    let batches = ctx.sql(&QUERY_BODY.replace("{T}", "t")).await.expect("sql").collect().await.expect("collect");
    (t.elapsed(), batches.iter().map(|b| b.num_rows() as u64).sum())
}

async fn sluice_stream(dir: &str, ck: &str) -> (Duration, u64, usize) {
    let env = Environment::default();
    let session = env.default_session();
    execute_sql(
        &session,
        &format!(
            "CREATE SOURCE t (id BIGINT NOT NULL, name VARCHAR NOT NULL, price DOUBLE NOT NULL, qty BIGINT NOT NULL) \
             WITH (connector = 'files', path = '{dir}', format = 'parquet')"
        ),
    )
    .await
    .expect("source");
    let df = session.context().sql(&QUERY_BODY.replace("{T}", "t")).await.expect("plan");
    let run = sluice::bench::run_available_now(df, sluice::OutputMode::Append, std::path::Path::new(ck), false, &[])
        .await
        .expect("run");
    (run.elapsed, run.rows_out, run.query.recent_progress().len())
}

async fn trigger_overhead(iterations: usize) -> (Duration, Duration) {
    let env = Environment::default();
    let tmp = tempfile::tempdir().expect("tmp");
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, Arc::new(ManualClock::new(0)));
    execute_sql(&session, "CREATE SOURCE s (id BIGINT, word VARCHAR) WITH (connector = 'memory')").await.expect("src");
    let ck = tmp.path().join("ck").display().to_string();
    execute_sql(
        &session,
        &format!("CREATE SINK o WITH (checkpoint = '{ck}') AS SELECT id, upper(word) AS w FROM s WHERE id > 0"),
    )
    .await
    .expect("sink");
    let q = session.query("o").expect("query");
    let stream = env.streams.get("s").expect("stream");
    stream.push_rows(&["1,warm"]).expect("push");
    q.process_all_available().await.expect("warm-up");
    let t = Instant::now();
    for _ in 0..iterations {
        q.process_all_available().await.expect("empty trigger");
    }
    let empty = t.elapsed() / iterations as u32;
    let t = Instant::now();
    for i in 0..iterations {
        stream.push_rows(&[format!("{},w", i + 1)]).expect("push");
        q.process_all_available().await.expect("1-row trigger");
    }
    let one_row = t.elapsed() / iterations as u32;
    (empty, one_row)
}

fn main() {
    let rows: usize = std::env::var("SLUICE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    write_files(&data, rows, 8);
    let dir = data.display().to_string();
    rt.block_on(async {
        // Warm-up of both paths, then measured runs.
        let _ = datafusion_batch(&dir).await;
        let (df_time, df_rows) = datafusion_batch(&dir).await;
        let _ = sluice_stream(&dir, &tmp.path().join("ck0").display().to_string()).await;
        let (sl_time, sl_rows, batches) = sluice_stream(&dir, &tmp.path().join("ck1").display().to_string()).await;
        assert_eq!(df_rows, sl_rows, "both engines must produce the same rows");
        let df_rate = rows as f64 / df_time.as_secs_f64();
        let sl_rate = rows as f64 / sl_time.as_secs_f64();
        println!("stateless filter+projection over {rows} rows in 8 Parquet files ({df_rows} rows out)");
        println!("  datafusion batch : {:>8.1} ms  {:>12.0} rows/s", df_time.as_secs_f64() * 1e3, df_rate);
        println!(
            "  sluice stream    : {:>8.1} ms  {:>12.0} rows/s  ({batches} batches, available_now)",
            sl_time.as_secs_f64() * 1e3,
            sl_rate
        );
        println!("  ratio sluice/datafusion: {:.2}", sl_rate / df_rate);
        // What durability costs per trigger: the same 1-row triggers with
        // the fsyncs of checkpoint and sink writes off.
        sluice::checkpoint::set_fsync_enabled(false);
        let (_, one_unsynced) = trigger_overhead(300).await;
        sluice::checkpoint::set_fsync_enabled(true);
        let (empty, one) = trigger_overhead(300).await;
        println!("per-trigger overhead (memory source, checkpointed, 300 triggers)");
        println!("  empty trigger    : {:>8.1} us", empty.as_secs_f64() * 1e6);
        println!("  1-row trigger    : {:>8.1} us", one.as_secs_f64() * 1e6);
        println!(
            "  1-row trigger, no fsync: {:>8.1} us (durable writes cost {:.1} us per trigger)",
            one_unsynced.as_secs_f64() * 1e6,
            (one.as_secs_f64() - one_unsynced.as_secs_f64()) * 1e6
        );
    });
}
