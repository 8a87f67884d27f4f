//! `cargo bench --bench nexmark`: the Nexmark queries through the same
//! runner as `sluice bench nexmark` (SLUICE_BENCH_EVENTS, default 1,000,000),
//! each next to DataFusion's batch execution of the same query.

use std::path::Path;

use sluice::bench::{generate, load_query, query_names, run_batch, run_stream};

fn main() {
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("events");
    generate(&data, events).expect("generate");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark");
    println!("nexmark, {events} events (Parquet, one file per batch)");
    println!("{:<14} {:>14} {:>14} {:>7}", "query", "sluice ev/s", "datafusion ev/s", "ratio");
    rt.block_on(async {
        for name in query_names(&dir).expect("queries") {
            let q = load_query(&dir, &name).expect("query");
            let (report, _) =
                run_stream(&data, &q, &tmp.path().join(format!("ck-{name}")), None, false).await.expect("run");
            let rate = events as f64 / report.elapsed.as_secs_f64();
            if q.no_batch_equivalent.is_some() {
                println!("{name:<14} {rate:>14.0} {:>14} {:>7}", "n/a", "n/a");
                continue;
            }
            let _ = run_batch(&data, &q).await.expect("warm-up");
            let (t, _) = run_batch(&data, &q).await.expect("batch");
            let df = events as f64 / t.as_secs_f64();
            println!("{name:<14} {rate:>14.0} {df:>14.0} {:>7.2}", rate / df);
        }
    });
}
