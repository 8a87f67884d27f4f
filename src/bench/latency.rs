//! `sluice bench latency`: end-to-end latency of a query under a trigger.
//!
//! A generator thread pushes rows into a `memory` source at a fixed rate,
//! about every millisecond, stamping each row with its creation time (µs
//! since the Unix epoch). The query's `foreach_batch` sink takes the time
//! from creation to delivery of every input row: for the filter, of every
//! row it gets; for the count, of every input row a new count covers (key
//! `k` is `id % 1000`, so a count `n` of key `k` covers ids up to
//! `(n - 1) * 1000 + k`, and the generator's log of pushes gives each id's
//! creation time). Rows created during the warm-up are not counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::prelude::{col, lit};
use sluice_engine::{OutputMode, SluiceConfig, StreamingDataFrameExt, Trigger};

use super::BenchResult;
use crate::Environment;

/// The query measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyQuery {
    /// A filter and a projection (stateless).
    Filter,
    /// An update-mode count by key (1000 keys).
    Count,
}

/// One latency run.
#[derive(Debug, Clone)]
pub struct LatencyConfig {
    /// The trigger the query runs under.
    pub trigger: Trigger,
    /// Rows generated per second.
    pub rate: u64,
    /// Seconds measured (after the warm-up).
    pub seconds: u64,
    /// Seconds of warm-up, not measured.
    pub warmup_seconds: u64,
    /// The query.
    pub query: LatencyQuery,
}

/// What a run measured (milliseconds, and rows per second generated).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyReport {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Rows per second the generator achieved over the measured seconds.
    pub rate: f64,
    /// Latencies sampled.
    pub samples: u64,
}

impl LatencyReport {
    /// The report's last line: `p50_ms=… p99_ms=… p999_ms=… max_ms=… rate=…`.
    pub fn line(&self) -> String {
        format!(
            "p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} rate={:.0}",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms, self.rate
        )
    }
}

/// Latencies counted in 10 µs buckets up to 60 s.
struct Histogram {
    buckets: Vec<u64>,
    max_us: u64,
    count: u64,
}

const BUCKET_US: u64 = 10;

impl Histogram {
    fn new() -> Self {
        Self { buckets: vec![0; 6_000_000], max_us: 0, count: 0 }
    }

    fn add(&mut self, us: u64, n: u64) {
        let i = ((us / BUCKET_US) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += n;
        self.max_us = self.max_us.max(us);
        self.count += n;
    }

    /// The `q` quantile in ms (upper edge of its bucket).
    fn quantile_ms(&self, q: f64) -> f64 {
        let target = ((self.count as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return (((i as u64 + 1) * BUCKET_US).min(self.max_us.max(BUCKET_US))) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }
}

/// What the sink measures with, shared with the generator.
struct Recorder {
    histogram: Histogram,
    /// Rows created before this (µs) are the warm-up's.
    measure_from: u64,
    /// Newest creation time delivered (µs).
    newest: u64,
    /// Per push: its first id and creation time (ascending).
    pushes: Vec<(i64, u64)>,
    /// Count query: the last count delivered per key.
    counts: std::collections::HashMap<i64, i64>,
}

impl Recorder {
    fn created_of(&self, id: i64) -> Option<u64> {
        let i = self.pushes.partition_point(|(first, _)| *first <= id);
        i.checked_sub(1).map(|i| self.pushes[i].1)
    }

    fn record(&mut self, now: u64, created: u64, n: u64) {
        self.newest = self.newest.max(created);
        if created >= self.measure_from {
            self.histogram.add(now.saturating_sub(created), n);
        }
    }

    /// The filter's rows: each carries its creation time.
    fn rows(&mut self, now: u64, batch: &RecordBatch) {
        let Some(created) = batch.column_by_name("created_us") else { return };
        let created = created.as_primitive::<Int64Type>();
        // Rows of one push share their creation time: count runs.
        let mut run: Option<(u64, u64)> = None;
        for c in created.values().iter().map(|c| *c as u64) {
            match run {
                Some((t, n)) if t == c => run = Some((t, n + 1)),
                _ => {
                    if let Some((t, n)) = run {
                        self.record(now, t, n);
                    }
                    run = Some((c, 1));
                }
            }
        }
        if let Some((t, n)) = run {
            self.record(now, t, n);
        }
    }

    /// The count's rows `(k, n)`: every id the new count covers.
    fn counts(&mut self, now: u64, batch: &RecordBatch) {
        let (Some(k), Some(n)) = (batch.column_by_name("k"), batch.column_by_name("n")) else { return };
        let (k, n) = (k.as_primitive::<Int64Type>(), n.as_primitive::<Int64Type>());
        for (k, n) in k.values().iter().zip(n.values().iter()) {
            let before = self.counts.insert(*k, *n).unwrap_or(0);
            for ordinal in before..*n {
                if let Some(created) = self.created_of(ordinal * 1000 + k) {
                    self.record(now, created, 1);
                }
            }
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("created_us", DataType::Int64, false),
    ]))
}

/// Run the query under `cfg` and measure it.
pub async fn run_latency(cfg: &LatencyConfig) -> BenchResult<LatencyReport> {
    let env = Environment::default();
    let tmp = tempfile::tempdir()?;
    let config = SluiceConfig { checkpoint_root: tmp.path().to_path_buf(), ..Default::default() };
    let session = env.session(config, Arc::new(sluice_engine::clock::SystemClock));
    let df = session.read_stream().format("memory").schema(schema()).name("events").load().await?;
    let (df, mode) = match cfg.query {
        LatencyQuery::Filter => (
            df.filter((col("k") % lit(10i64)).not_eq(lit(9i64)))?.select(vec![
                col("id"),
                (col("k") * lit(2i64)).alias("k2"),
                col("created_us"),
            ])?,
            OutputMode::Append,
        ),
        LatencyQuery::Count => (df.aggregate(vec![col("k")], vec![count(col("id")).alias("n")])?, OutputMode::Update),
    };
    let recorder = Arc::new(Mutex::new(Recorder {
        histogram: Histogram::new(),
        measure_from: u64::MAX,
        newest: 0,
        pushes: vec![],
        counts: Default::default(),
    }));
    let sink_recorder = Arc::clone(&recorder);
    let is_count = cfg.query == LatencyQuery::Count;
    let query = df
        .write_stream()
        .query_name("latency")
        .output_mode(mode)
        .trigger(cfg.trigger)
        .option("checkpoint", tmp.path().join("ck").display().to_string())
        .foreach_batch(move |_, batches| {
            let now = now_us();
            let mut r =
                sink_recorder.lock().map_err(|_| sluice_engine::SluiceError::internal("latency recorder poisoned"))?;
            for b in batches {
                if is_count {
                    r.counts(now, b);
                } else {
                    r.rows(now, b);
                }
            }
            Ok(())
        })
        .start()
        .await?;
    let events = env.streams.get("events").ok_or("the events stream was not registered")?;
    let stop = Arc::new(AtomicBool::new(false));
    let generated = Arc::new(AtomicU64::new(0));
    let (rate, warmup, seconds) = (cfg.rate, cfg.warmup_seconds, cfg.seconds);
    let (gen_stop, gen_count, gen_recorder) = (Arc::clone(&stop), Arc::clone(&generated), Arc::clone(&recorder));
    let generator = std::thread::spawn(move || -> Result<(u64, f64), String> {
        let schema = schema();
        let start = std::time::Instant::now();
        let mut sent: u64 = 0;
        let mut measured_start: Option<(u64, std::time::Instant)> = None;
        while !gen_stop.load(Ordering::Relaxed) {
            let elapsed = start.elapsed();
            if measured_start.is_none() && elapsed >= Duration::from_secs(warmup) {
                gen_recorder.lock().map_err(|_| "latency recorder poisoned")?.measure_from = now_us();
                measured_start = Some((sent, std::time::Instant::now()));
            }
            if elapsed >= Duration::from_secs(warmup + seconds) {
                break;
            }
            let target = (elapsed.as_micros() as u128 * rate as u128 / 1_000_000) as u64;
            if target > sent {
                let n = (target - sent) as usize;
                let created = now_us() as i64;
                gen_recorder
                    .lock()
                    .map_err(|_| "latency recorder poisoned")?
                    .pushes
                    .push((sent as i64, created as u64));
                let ids: Int64Array = (sent as i64..target as i64).collect();
                let keys: Int64Array = (sent as i64..target as i64).map(|i| i % 1000).collect();
                let batch = RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(ids), Arc::new(keys), Arc::new(Int64Array::from(vec![created; n]))],
                )
                .map_err(|e| e.to_string())?;
                events.push(batch).map_err(|e| e.to_string())?;
                sent = target;
                gen_count.store(sent, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_micros(900));
        }
        let (from_rows, at) = measured_start.unwrap_or((0, start));
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        Ok((sent, (sent - from_rows) as f64 / secs))
    });
    let (_, achieved) =
        tokio::task::spawn_blocking(move || generator.join()).await?.map_err(|_| "the generator thread panicked")??;
    // Let the query deliver what was generated (at most 30 s).
    let last = now_us();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let newest = || recorder.lock().map(|r| r.newest).unwrap_or(u64::MAX);
    while newest() + 5_000 < last && std::time::Instant::now() < deadline {
        if query.error().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(e) = query.error() {
        return Err(format!("the query failed: {e}").into());
    }
    query.stop().await?;
    let r = recorder.lock().map_err(|_| "latency recorder poisoned")?;
    let h = &r.histogram;
    Ok(LatencyReport {
        p50_ms: h.quantile_ms(0.5),
        p99_ms: h.quantile_ms(0.99),
        p999_ms: h.quantile_ms(0.999),
        max_ms: h.max_us as f64 / 1000.0,
        rate: achieved,
        samples: h.count,
    })
}
