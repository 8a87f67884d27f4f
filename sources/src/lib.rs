//! # sluice-sources
//!
//! Source connectors, one module folder each: `memory`, `files`, `rate`,
//! `socket`. [`register_all`] adds them to a registry.
#![warn(missing_docs)]

use std::sync::Arc;

use sluice_engine::ConnectorRegistry;

pub mod memory;

pub use memory::{MemoryStream, MemoryStreams};

/// Register every source connector of this crate. `memory` is the store of
/// in-memory streams (shared with whoever pushes rows into them).
pub fn register_all(registry: &mut ConnectorRegistry, memory: MemoryStreams) {
    registry.register_source(Arc::new(memory::MemorySourceFactory::new(memory)));
}
