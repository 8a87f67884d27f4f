//! Crash points for the crash-restart harness (`tests/crash/`). They are
//! compiled into debug builds only (the ones tests use); in release builds
//! `crash_point` is an empty inline function.
//!
//! `crash_point(name)` marks a place where a crash must not lose or
//! duplicate data: after the offset log write, during and after the sink
//! write, during the state commit and snapshot, before the commit log
//! write, during file-source listing. Normally it does nothing (one
//! relaxed check of a value read once). With `SLUICE_CRASH_POINT=<name>`
//! (and optionally `SLUICE_CRASH_AFTER=<n>`, default 1) in the environment,
//! the process aborts at the n-th time it reaches that point, like a
//! `kill -9` there: no destructors, no flushing.

#[cfg(debug_assertions)]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(debug_assertions)]
use std::sync::OnceLock;

/// Every crash point, for the harness to iterate over.
pub const CRASH_POINTS: &[&str] = &[
    "after_offset_log",
    "during_sink_write",
    "after_sink_write",
    "during_state_commit",
    "during_snapshot",
    "before_commit_log",
    "during_source_listing",
    "before_delta_commit",
    "after_delta_commit",
];

#[cfg(debug_assertions)]
static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
#[cfg(debug_assertions)]
static HITS: AtomicU64 = AtomicU64::new(0);

#[cfg(debug_assertions)]
fn armed() -> &'static Option<(String, u64)> {
    ARMED.get_or_init(|| {
        let point = std::env::var("SLUICE_CRASH_POINT").ok()?;
        let nth = std::env::var("SLUICE_CRASH_AFTER").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
        Some((point, nth))
    })
}

/// Abort the process here if the harness armed this point (see the module docs).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Abort the process here if the harness armed this point (see the module docs).
#[cfg(debug_assertions)]
pub fn crash_point(name: &str) {
    if let Some((point, nth)) = armed() {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth {
            eprintln!("sluice: crash point '{name}' reached, aborting (SLUICE_CRASH_POINT)");
            std::process::abort();
        }
    }
}
