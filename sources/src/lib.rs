//! # sluice-sources
//!
//! Source connectors, one module folder each: `memory`, `files`, `rate`,
//! `socket`, `nexmark`, (feature `kafka`) `kafka` and (feature `delta`)
//! `delta`. [`register_all`] adds them to a registry.
#![warn(missing_docs)]

use std::sync::Arc;

use sluice_engine::ConnectorRegistry;

#[cfg(feature = "delta")]
pub mod delta;
pub mod files;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
pub mod nexmark;
pub mod rate;
pub mod socket;

pub use files::{FilesSource, FilesSourceFactory};
pub use memory::{MemoryStream, MemoryStreams};
pub use rate::{RateSource, RateSourceFactory};
pub use socket::{SocketSource, SocketSourceFactory};

/// Register every source connector of this crate. `memory` is the store of
/// in-memory streams (shared with whoever pushes rows into them).
pub fn register_all(registry: &mut ConnectorRegistry, memory: MemoryStreams) {
    registry.register_source(Arc::new(memory::MemorySourceFactory::new(memory)));
    registry.register_source(Arc::new(nexmark::NexmarkSourceFactory));
    registry.register_source(Arc::new(files::FilesSourceFactory));
    registry.register_source(Arc::new(rate::RateSourceFactory));
    registry.register_source(Arc::new(socket::SocketSourceFactory));
    #[cfg(feature = "kafka")]
    registry.register_source(Arc::new(kafka::KafkaSourceFactory));
    #[cfg(feature = "delta")]
    registry.register_source(Arc::new(delta::DeltaSourceFactory));
}
