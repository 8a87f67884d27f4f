//! # Sluice
//!
//! A Structured Streaming SQL engine in Rust over Apache Arrow and Apache
//! DataFusion. This facade crate re-exports the engine API, the SQL layer and
//! the connectors, and builds sessions with every connector registered.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice::{Environment, StreamingDataFrameExt};
//! let env = Environment::default();
//! let session = env.default_session();
//! sluice::execute_sql(&session, "CREATE SOURCE words (w VARCHAR) WITH (connector = 'memory')").await?;
//! let df = session.context().sql("SELECT upper(w) AS w FROM words").await?;
//! let query = df.write_stream().format("memory").query_name("shout").start().await?;
//! env.streams.get("words").unwrap().push_rows(&["hello"])?;
//! query.process_all_available().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub use sluice_engine::*;
pub use sluice_sinks::{MemorySinkStore, MemorySinks};
pub use sluice_sources::{MemoryStream, MemoryStreams};
pub use sluice_sql::{execute_sql, parse_sql, SqlError, StatementResult};

/// The SQL layer (parser, window rewriting).
pub use sluice_sql as sql;

pub mod bench;
pub mod stt;

/// The in-memory streams and memory sinks a program shares with its
/// sessions (they outlive a session, as a test's data outlives a restart).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Rows pushed into `memory` sources.
    pub streams: MemoryStreams,
    /// What `memory` sinks received.
    pub sinks: MemorySinks,
}

impl Environment {
    /// A registry with every built-in connector.
    pub fn registry(&self) -> ConnectorRegistry {
        let mut registry = ConnectorRegistry::new();
        sluice_sources::register_all(&mut registry, self.streams.clone());
        sluice_sinks::register_all(&mut registry, self.sinks.clone());
        registry
    }

    /// A session with every built-in connector.
    pub fn session(&self, config: SluiceConfig, clock: ClockRef) -> SluiceSession {
        SluiceSession::with_config(self.registry(), config, clock)
    }

    /// A session with default settings and the wall clock.
    pub fn default_session(&self) -> SluiceSession {
        self.session(SluiceConfig::default(), std::sync::Arc::new(SystemClock))
    }
}
