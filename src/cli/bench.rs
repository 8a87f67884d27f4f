//! `sluice bench nexmark` and `sluice nexmark generate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice::bench::{generate, load_query, peak_memory_mib, query_names, run_batch, run_stream};

/// Run Nexmark queries over `events` pre-generated events.
pub async fn nexmark(
    queries: &[String],
    events: u64,
    baseline: Option<&str>,
    data: Option<&Path>,
    queries_dir: &Path,
) -> Result<ExitCode, String> {
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
        let ck = tmp.path().join(format!("ck-{name}"));
        let (report, _) = run_stream(&data, &q, &ck, None, false).await.map_err(err)?;
        let rate = events as f64 / report.elapsed.as_secs_f64();
        let (df, ratio) = match (baseline, &q.no_batch_equivalent) {
            (Some("datafusion"), None) => {
                let _ = run_batch(&data, &q).await.map_err(err)?;
                let (t, _) = run_batch(&data, &q).await.map_err(err)?;
                let df = events as f64 / t.as_secs_f64();
                (format!("{df:.0}"), format!("{:.2}", rate / df))
            }
            (Some("datafusion"), Some(_)) => ("n/a".into(), "n/a".into()),
            (Some(other), _) => return Err(format!("unknown baseline '{other}'; the baseline is 'datafusion'")),
            (None, _) => ("-".into(), "-".into()),
        };
        println!(
            "{:<14} {:>12.0} {:>13.0} {:>8} {:>7} {:>7} {:>9.0} {:>14} {:>7}",
            name,
            rate,
            rate / cores,
            report.batches,
            report.p50_ms,
            report.p99_ms,
            peak_memory_mib().unwrap_or(0.0),
            df,
            ratio
        );
    }
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
