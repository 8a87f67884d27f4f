//! `sluice bench nexmark`, `sluice bench latency` and `sluice nexmark generate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice::bench::{compare, generate, load_query, query_names};

/// Run Nexmark queries over `events` pre-generated events.
pub async fn nexmark(
    queries: &[String],
    events: u64,
    baseline: Option<&str>,
    data: Option<&Path>,
    queries_dir: &Path,
    state_checkpoint_interval: u64,
) -> Result<ExitCode, String> {
    if let Some(other) = baseline.filter(|b| *b != "datafusion") {
        return Err(format!("unknown baseline '{other}'; the baseline is 'datafusion'"));
    }
    let err = |e: Box<dyn std::error::Error + Send + Sync>| e.to_string();
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data: PathBuf = match data {
        Some(d) => d.to_path_buf(),
        None => {
            let d = tmp.path().join("events");
            eprintln!("generating {events} events as Parquet under {}", d.display());
            generate(&d, events).map_err(err)?;
            d
        }
    };
    let names = if queries.is_empty() { query_names(queries_dir).map_err(err)? } else { queries.to_vec() };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    println!(
        "{:<14} {:>12} {:>13} {:>8} {:>7} {:>7} {:>9} {:>14} {:>7}",
        "query", "events/s", "events/s/core", "batches", "p50 ms", "p99 ms", "peak MiB", "datafusion/s", "ratio"
    );
    for name in names {
        let q = load_query(queries_dir, &name).map_err(err)?;
        let c =
            compare(&data, tmp.path(), &q, events, baseline.is_some(), state_checkpoint_interval).await.map_err(err)?;
        let (df, ratio) = match (baseline, c.batch_events_per_s) {
            (None, _) => ("-".to_string(), "-".to_string()),
            (Some(_), None) => ("n/a".to_string(), "n/a".to_string()),
            (Some(_), Some(df)) => (format!("{df:.0}"), format!("{:.2}", c.events_per_s / df)),
        };
        println!(
            "{:<14} {:>12.0} {:>13.0} {:>8} {:>7} {:>7} {:>9.0} {:>14} {:>7}",
            name,
            c.events_per_s,
            c.events_per_s / cores,
            c.stream.batches,
            c.stream.p50_ms,
            c.stream.p99_ms,
            c.peak_mib.unwrap_or(0.0),
            df,
            ratio
        );
        let phases: Vec<String> = c.stream.phase_ms.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!("  {name} ms per phase over {} batches: {}", c.stream.batches, phases.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Measure end-to-end latency under a trigger (see [`sluice::bench::latency`]).
pub async fn latency(
    trigger: &str,
    interval: Option<&str>,
    rate: u64,
    seconds: u64,
    warmup: u64,
    query: &str,
) -> Result<ExitCode, String> {
    use sluice::bench::latency::{run_latency, LatencyConfig, LatencyQuery};
    let query = match query {
        "filter" => LatencyQuery::Filter,
        "count" => LatencyQuery::Count,
        other => return Err(format!("unknown --query '{other}'; the queries are filter and count")),
    };
    let trigger = match trigger {
        "default" => {
            if interval.is_some() {
                return Err("--interval does not apply to --trigger default (batches back to back); use \
                            --trigger processing_time"
                    .into());
            }
            sluice::Trigger::ProcessingTime(std::time::Duration::ZERO)
        }
        "continuous" | "processing_time" => {
            let interval = interval.unwrap_or(if trigger == "continuous" { "1 second" } else { "100 ms" });
            sluice::Trigger::parse(trigger, Some(interval)).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!("unknown --trigger '{other}'; the triggers are continuous, default, processing_time"))
        }
    };
    if rate == 0 || seconds == 0 {
        return Err("--rate and --seconds must be positive".into());
    }
    let cfg = LatencyConfig { trigger, rate, seconds, warmup_seconds: warmup, query };
    eprintln!("measuring {query:?} under {trigger:?} at {rate} rows/s for {seconds} s (after {warmup} s of warm-up)");
    let report = run_latency(&cfg).await.map_err(|e| e.to_string())?;
    println!("samples={}", report.samples);
    println!("{}", report.line());
    Ok(ExitCode::SUCCESS)
}

/// Write events as files for other engines.
pub fn generate_files(events: u64, out: &Path, format: &str) -> Result<ExitCode, String> {
    let settings = sluice_sources::nexmark::StreamSettings {
        events,
        seed: 0,
        base_time_ms: sluice_sources::nexmark::DEFAULT_BASE_TIME_MS,
        event_rate: sluice_sources::nexmark::DEFAULT_EVENT_RATE,
    };
    sluice_sources::nexmark::write_files(out, settings, format, (events / 20).max(10_000))
        .map_err(|e| e.to_string())?;
    println!("wrote {events} events as {format} under {}/{{person,auction,bid}}", out.display());
    Ok(ExitCode::SUCCESS)
}
