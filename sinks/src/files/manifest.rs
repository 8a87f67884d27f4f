//! The manifest log of a `files` sink output directory.
//!
//! The format and the readers live in the engine
//! ([`sluice_engine::manifest`]), so that sources and batch tables can read
//! only committed files without depending on this crate; they are
//! re-exported here for existing callers.

pub use sluice_engine::manifest::{committed_entries, committed_files, ManifestEntry, ManifestFile, MANIFEST_DIR};

pub(crate) use sluice_engine::manifest::local_path;
