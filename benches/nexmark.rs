//! `cargo bench --bench nexmark`: the Nexmark queries through the same
//! runner as `sluice bench nexmark` (SLUICE_BENCH_EVENTS, default 1,000,000),
//! each next to DataFusion's batch execution of the same query.

use std::path::Path;

use sluice::bench::{compare, generate, load_query, query_names};

/// The same allocator as the `sluice` binary (`sluice bench nexmark`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            let c = compare(&data, tmp.path(), &q, events, true, 1).await.expect("run");
            match c.batch_events_per_s {
                Some(df) => println!("{name:<14} {:>14.0} {df:>14.0} {:>7.2}", c.events_per_s, c.events_per_s / df),
                None => println!("{name:<14} {:>14.0} {:>14} {:>7}", c.events_per_s, "n/a", "n/a"),
            }
        }
    });
}
