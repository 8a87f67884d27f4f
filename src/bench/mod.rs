//! The Nexmark benchmark runner (`sluice bench nexmark`): each query of
//! `benches/nexmark/` over pre-generated Parquet events, as fast as the
//! engine goes (`available_now`), next to DataFusion's batch execution of the
//! same query on the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use sluice_engine::{
    Options, OutputMode, SluiceError, SourceDefinition, StreamingDataFrameExt, StreamingQuery, Trigger, WatermarkSpec,
};
use sluice_sources::nexmark::{
    schema_of, write_files, StreamSettings, Table, DEFAULT_BASE_TIME_MS, DEFAULT_EVENT_RATE,
};

use crate::Environment;

pub mod latency;

/// Boxed error of the runner.
pub type BenchResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One query file.
#[derive(Debug, Clone)]
pub struct NexmarkQuery {
    /// Name (`q0`).
    pub name: String,
    /// The SELECT.
    pub sql: String,
    /// Output mode (`-- mode:` line).
    pub mode: OutputMode,
    /// Column saying when a windowed row is final (`-- closed-by:` line).
    pub closed_by: Option<String>,
    /// Why plain DataFusion cannot run an equivalent batch query
    /// (`-- no-batch-equivalent:` line), if it cannot.
    pub no_batch_equivalent: Option<String>,
    /// Columns an update-mode output is upserted on to give the batch
    /// result (`-- upsert-key:` line; a Top-N's partition and rank), for
    /// queries that cannot run in complete mode.
    pub upsert_key: Vec<String>,
}

/// Load `dir/<name>.sql`.
pub fn load_query(dir: &Path, name: &str) -> BenchResult<NexmarkQuery> {
    let path = dir.join(format!("{name}.sql"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let header = |key: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix("--")?.trim().strip_prefix(key)).map(|v| v.trim().to_string())
    };
    let mode = header("mode:").unwrap_or_else(|| "append".into()).parse::<OutputMode>()?;
    let sql = text.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    Ok(NexmarkQuery {
        name: name.into(),
        sql: sql.trim().trim_end_matches(';').into(),
        mode,
        closed_by: header("closed-by:"),
        no_batch_equivalent: header("no-batch-equivalent:"),
        upsert_key: header("upsert-key:")
            .map(|k| k.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect())
            .unwrap_or_default(),
    })
}

/// Every query name in `dir`, sorted.
pub fn query_names(dir: &Path) -> BenchResult<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".sql").map(String::from))
        .collect();
    names.sort();
    Ok(names)
}

/// Write `events` Nexmark events as Parquet under `dir/{person,auction,bid}`.
pub fn generate(dir: &Path, events: u64) -> BenchResult<()> {
    let settings =
        StreamSettings { events, seed: 0, base_time_ms: DEFAULT_BASE_TIME_MS, event_rate: DEFAULT_EVENT_RATE };
    write_files(dir, settings, "parquet", (events / 20).max(10_000))?;
    Ok(())
}

/// Rows of the static `side_input` table (Nexmark q13): `key` 0..10000 and
/// a `value` string per key.
pub const SIDE_INPUT_KEYS: i64 = 10_000;

/// The static `side_input` table q13 joins the bid stream with.
pub fn side_input_table() -> BenchResult<Arc<MemTable>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(0..SIDE_INPUT_KEYS)),
            Arc::new(StringArray::from_iter_values((0..SIDE_INPUT_KEYS).map(|k| format!("value-{k}")))),
        ],
    )?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// What a streaming run measured.
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// Wall time from start to termination.
    pub elapsed: Duration,
    /// Micro-batches run.
    pub batches: usize,
    /// Median and 99th percentile batch duration (over the last 100 batches).
    pub p50_ms: u64,
    /// See `p50_ms`.
    pub p99_ms: u64,
    /// Rows written to the sink.
    pub rows_out: u64,
    /// Final watermark (ms).
    pub watermark_ms: Option<i64>,
    /// Milliseconds spent in each phase of a batch (`latest_offset`,
    /// `read`, `plan`, `execute`, `sink`, `commit`, `wal_commit`), summed
    /// over the batches in the progress history (the last 100).
    pub phase_ms: BTreeMap<String, u64>,
}

/// Peak resident memory of this process, in MiB (Linux), if known.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// Reset the peak resident memory that [`peak_memory_mib`] reports, so the
/// next reading covers only what runs after this call (Linux; a no-op
/// elsewhere).
pub fn reset_peak_memory() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// How a streaming run of [`run_stream`] is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamSetup {
    /// Output mode (default: the query's own).
    pub mode: Option<OutputMode>,
    /// Keep the rows the sink received.
    pub keep: bool,
    /// The query option `state_checkpoint_interval` (`None`: the default).
    pub state_checkpoint_interval: Option<u64>,
}

/// Run `query` as a stream over the files in `data`, set up by `setup`;
/// with `setup.keep`, return the rows the sink received.
pub async fn run_stream(
    data: &Path,
    query: &NexmarkQuery,
    checkpoint: &Path,
    setup: StreamSetup,
) -> BenchResult<(StreamReport, Vec<Vec<RecordBatch>>)> {
    let env = Environment::default();
    let session = env.default_session();
    for table in [Table::Person, Table::Auction, Table::Bid] {
        let options: Options = [
            ("path", data.join(table.name()).display().to_string()),
            ("format", "parquet".to_string()),
            ("max_files_per_trigger", "1".to_string()),
        ]
        .into_iter()
        .collect();
        session.create_source(SourceDefinition {
            name: table.name().into(),
            connector: "files".into(),
            options,
            schema: schema_of(table),
            watermark: Some(WatermarkSpec { column: "date_time".into(), delay: Duration::from_secs(5) }),
        })?;
    }
    session.context().register_table("side_input", side_input_table()?)?;
    let sql = sluice_sql::windows::rewrite_windows_sql(&query.sql)?;
    let df = session.context().sql(&sql).await?;
    let mut options = vec![];
    if let Some(k) = setup.state_checkpoint_interval {
        options.push(("state_checkpoint_interval", k.to_string()));
    }
    let run = run_available_now(df, setup.mode.unwrap_or(query.mode), checkpoint, setup.keep, &options).await?;
    let (q, elapsed) = (&run.query, run.elapsed);
    let mut durations: Vec<u64> =
        q.recent_progress().iter().map(|p| p.duration_ms.get("total").copied().unwrap_or(0)).collect();
    durations.sort_unstable();
    let mut phase_ms = BTreeMap::new();
    for p in q.recent_progress() {
        for (phase, ms) in p.duration_ms.iter().filter(|(k, _)| k.as_str() != "total") {
            *phase_ms.entry(phase.clone()).or_insert(0) += ms;
        }
    }
    let pct = |p: f64| durations.get(((durations.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    let report = StreamReport {
        elapsed,
        batches: q.last_progress().map(|p| p.batch_id as usize + 1).unwrap_or(0),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        rows_out: run.rows_out,
        watermark_ms: q.watermark_ms(),
        phase_ms,
    };
    Ok((report, run.kept))
}

/// A finished available-now run of [`run_available_now`].
#[derive(Debug)]
pub struct AvailableNowRun {
    /// The terminated query (its progress history stays readable).
    pub query: StreamingQuery,
    /// Wall time from start to termination.
    pub elapsed: Duration,
    /// Rows the sink received.
    pub rows_out: u64,
    /// The sink's batches, one entry per micro-batch (empty unless kept).
    pub kept: Vec<Vec<RecordBatch>>,
}

/// The first stateful operator's state at its largest over `progress`:
/// (memory bytes, rows), or zeros without one.
pub fn peak_state(progress: &[sluice_engine::StreamingQueryProgress]) -> (u64, u64) {
    progress
        .iter()
        .filter_map(|p| p.state_operators.first())
        .max_by_key(|s| s.memory_used_bytes)
        .map(|s| (s.memory_used_bytes, s.num_rows_total))
        .unwrap_or((0, 0))
}

/// Run `df` as a stream with the available-now trigger in `mode`, into a
/// sink that counts rows (and keeps them with `keep`), until it has read
/// everything available at start.
pub async fn run_available_now(
    df: DataFrame,
    mode: OutputMode,
    checkpoint: &Path,
    keep: bool,
    options: &[(&str, String)],
) -> BenchResult<AvailableNowRun> {
    let batches: Arc<Mutex<Vec<Vec<RecordBatch>>>> = Arc::default();
    let rows = Arc::new(AtomicU64::new(0));
    let (sink, counter) = (Arc::clone(&batches), Arc::clone(&rows));
    let started = Instant::now();
    let mut writer = df.write_stream();
    for (k, v) in options {
        writer = writer.option(k, v.clone());
    }
    let query = writer
        .output_mode(mode)
        .trigger(Trigger::AvailableNow)
        .option("checkpoint", checkpoint.display().to_string())
        .foreach_batch(move |_, b| {
            counter.fetch_add(b.iter().map(|b| b.num_rows() as u64).sum(), Ordering::Relaxed);
            if keep {
                sink.lock().map_err(|_| SluiceError::plan("poisoned"))?.push(b.to_vec());
            }
            Ok(())
        })
        .start()
        .await?;
    query.await_termination().await?;
    let elapsed = started.elapsed();
    let kept = std::mem::take(&mut *batches.lock().map_err(|_| "poisoned")?);
    Ok(AvailableNowRun { query, elapsed, rows_out: rows.load(Ordering::Relaxed), kept })
}

/// Run `query` with DataFusion's batch engine over the same files.
pub async fn run_batch(data: &Path, query: &NexmarkQuery) -> BenchResult<(Duration, Vec<RecordBatch>)> {
    // Its optimizer rule for CASE arms over literals, and
    let ctx = sluice_engine::optimizer::with_case_literal_arms(SessionContext::new());
    for udf in sluice_engine::functions::window_udfs() {
        ctx.register_udf(udf);
    }
    // Spark's date_format patterns, the faster to_char and split_part, as a Sluice session has them.
    ctx.register_udf(sluice_engine::functions::date_format::to_char_udf());
    ctx.register_udf(sluice_engine::functions::split_part::split_part_udf());
    ctx.register_udf(sluice_engine::functions::date_format::date_format_udf());
    for table in [Table::Person, Table::Auction, Table::Bid] {
        let dir: PathBuf = data.join(table.name());
        ctx.register_parquet(table.name(), dir.display().to_string(), ParquetReadOptions::default()).await?;
    }
    ctx.register_table("side_input", side_input_table()?)?;
    let sql = sluice_sql::windows::rewrite_windows_sql(&query.sql)?;
    let started = Instant::now();
    let rows = ctx.sql(&sql).await?.collect().await?;
    Ok((started.elapsed(), rows))
}

/// A query run as a stream and, when it has a batch equivalent, by
/// DataFusion's batch engine (after a warm-up run) on the same files.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The streaming run.
    pub stream: StreamReport,
    /// Sluice events per second (all events of the stream).
    pub events_per_s: f64,
    /// DataFusion batch events per second, if measured.
    pub batch_events_per_s: Option<f64>,
    /// Peak resident memory of the process during the streaming run, MiB.
    pub peak_mib: Option<f64>,
}

/// Whether `e` is the refusal of a `state_checkpoint_interval` over 1.
fn refuses_interval(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(e.downcast_ref::<SluiceError>(), Some(SluiceError::InvalidOption { option, .. }) if option == "state_checkpoint_interval")
}

/// Run `query` over the `events` in `data` as a stream (checkpoint under
/// `work`), after a discarded warm-up run, and, with `baseline`, with
/// DataFusion batch (also after a warm-up run).
pub async fn compare(
    data: &Path,
    work: &Path,
    query: &NexmarkQuery,
    events: u64,
    baseline: bool,
    state_checkpoint_interval: u64,
) -> BenchResult<Comparison> {
    let mut setup = StreamSetup { state_checkpoint_interval: Some(state_checkpoint_interval), ..Default::default() };
    // A discarded warm-up run first, as the DataFusion baseline (below) and
    // the Spark runs of benches/compare get: the measured run then starts
    // with the files in the page cache and the allocator's pages in place,
    // like the batch run it is compared with, not with a fresh process.
    let warm_up = work.join(format!("ck-{}-warm-up", query.name));
    match run_stream(data, query, &warm_up, setup).await {
        // A query whose state replay cannot rebuild checkpoints every batch.
        Err(e) if refuses_interval(e.as_ref()) => {
            eprintln!("  {}: state checkpointed every batch ({e})", query.name);
            setup.state_checkpoint_interval = None;
            let _ = std::fs::remove_dir_all(&warm_up);
            let _ = run_stream(data, query, &warm_up, setup).await?;
        }
        other => {
            other?;
        }
    }
    let _ = std::fs::remove_dir_all(&warm_up);
    reset_peak_memory();
    let (stream, _) = run_stream(data, query, &work.join(format!("ck-{}", query.name)), setup).await?;
    let peak_mib = peak_memory_mib();
    let events_per_s = events as f64 / stream.elapsed.as_secs_f64();
    let batch_events_per_s = if baseline && query.no_batch_equivalent.is_none() {
        let _ = run_batch(data, query).await?;
        let (t, _) = run_batch(data, query).await?;
        Some(events as f64 / t.as_secs_f64())
    } else {
        None
    };
    Ok(Comparison { stream, events_per_s, batch_events_per_s, peak_mib })
}
