//! # sluice-sinks
//!
//! Sink connectors, one module folder each: `memory`, `console`, `files` and
//! (feature `kafka`) `kafka`, (feature `delta`) `delta`.
//! [`register_all`] adds them to a registry. (The `foreach_batch` sink is an
//! API adapter and lives in the engine.)
#![warn(missing_docs)]

use std::sync::Arc;

use sluice_engine::ConnectorRegistry;

pub mod console;
#[cfg(feature = "delta")]
pub mod delta;
pub mod files;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;

pub use console::{ConsoleSink, ConsoleSinkFactory};
pub use files::{committed_files, FilesSink, FilesSinkFactory};
pub use memory::{MemorySinkStore, MemorySinks};

/// Register every sink connector of this crate. `memory` holds what memory
/// sinks received (shared with tests, which read it back).
pub fn register_all(registry: &mut ConnectorRegistry, memory: MemorySinks) {
    registry.register_sink(Arc::new(memory::MemorySinkFactory::new(memory)));
    registry.register_sink(Arc::new(console::ConsoleSinkFactory::default()));
    registry.register_sink(Arc::new(files::FilesSinkFactory));
    #[cfg(feature = "kafka")]
    registry.register_sink(Arc::new(kafka::KafkaSinkFactory));
    #[cfg(feature = "delta")]
    registry.register_sink(Arc::new(delta::DeltaSinkFactory));
}
