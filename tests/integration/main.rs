//! Integration tests (one binary): the engine through the public API and SQL.

mod api;
mod arbitrary;
mod bad_input;
mod checkpoint_integrity;
mod connectors;
mod continuous;
mod crash;
#[cfg(feature = "delta")]
mod delta;
mod dstream;
mod errors;
mod explain;
#[cfg(feature = "kafka")]
mod kafka;
mod nexmark;
mod observe;
mod processor;
mod progress;
mod properties;
mod query_change;
mod reliability;
mod replay;
mod s3;
mod shell;
mod state;
mod stt_runner;

/// A session driven by hand (no background trigger) on a manual clock at 0,
/// with 2 partitions, keeping default checkpoints under `root`.
pub(crate) fn manual_session(env: &sluice::Environment, root: &std::path::Path) -> sluice::SluiceSession {
    let config = sluice::SluiceConfig {
        auto_trigger: false,
        checkpoint_root: root.join("default-checkpoints"),
        target_partitions: 2,
        ..Default::default()
    };
    env.session(config, std::sync::Arc::new(sluice::ManualClock::new(0)))
}
