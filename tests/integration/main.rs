//! Integration tests (one binary): the engine through the public API and SQL.

mod api;
mod bad_input;
mod checkpoint_integrity;
mod connectors;
mod crash;
mod errors;
mod nexmark;
mod properties;
mod query_change;
mod reliability;
mod s3;
mod stt_runner;
