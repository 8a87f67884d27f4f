//! Error type of the Sluice engine.

use datafusion::error::DataFusionError;

/// Result alias used throughout the engine.
pub type Result<T, E = SluiceError> = std::result::Result<T, E>;

/// Every error the engine reports. Messages name the thing at fault and,
/// where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SluiceError {
    /// An error raised while planning or executing a DataFusion plan.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// An Arrow error (casting, IPC, ...).
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Object store I/O (checkpoints, files).
    #[error("{0}")]
    ObjectStore(#[from] object_store::Error),
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A connector name nobody registered.
    #[error("unknown {kind} connector '{name}'; valid connectors are: {valid}")]
    UnknownConnector {
        /// `source` or `sink`.
        kind: &'static str,
        /// The name that was asked for.
        name: String,
        /// Comma-separated list of registered connectors.
        valid: String,
    },
    /// An option the connector does not understand.
    #[error("unknown option '{option}' for {kind} connector '{connector}'; valid options are: {valid}")]
    UnknownOption {
        /// `source` or `sink`.
        kind: &'static str,
        /// Connector name.
        connector: String,
        /// The offending option.
        option: String,
        /// Comma-separated list of valid options.
        valid: String,
    },
    /// An option with a value that cannot be used.
    #[error("invalid value '{value}' for option '{option}': {reason}")]
    InvalidOption {
        /// Option name.
        option: String,
        /// Its value.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A query that the output mode (or streaming in general) cannot run.
    #[error("{0}")]
    Unsupported(String),
    /// A plan-level problem: unknown table, bad query shape...
    #[error("{0}")]
    Plan(String),
    /// A damaged or incompatible checkpoint.
    #[error("checkpoint file '{path}': {reason}")]
    Checkpoint {
        /// The file at fault.
        path: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Malformed input data in failfast mode.
    #[error("malformed record in {location}: {reason}")]
    Malformed {
        /// File and line.
        location: String,
        /// What could not be parsed.
        reason: String,
    },
    /// A source failure (vanished directory, closed socket...).
    #[error("source '{source_name}': {reason}")]
    Source {
        /// The source name.
        source_name: String,
        /// What happened.
        reason: String,
    },
    /// A sink failure.
    #[error("sink '{sink}': {reason}")]
    Sink {
        /// The sink name.
        sink: String,
        /// What happened.
        reason: String,
    },
    /// The query was stopped.
    #[error("query '{0}' was stopped")]
    Stopped(String),
    /// An internal invariant does not hold: a bug in Sluice.
    #[error("internal error: {0}. This is a bug in Sluice; please report it with the query and this message")]
    Internal(String),
    /// A resource ran out: memory, disk, or a configured limit.
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),
    /// An error with what was being done when it happened; the cause stays
    /// in the source chain.
    #[error("{context}: {source}")]
    Context {
        /// What was being done (`restoring state of operator 0`, ...).
        context: String,
        /// The error itself.
        #[source]
        source: Box<SluiceError>,
    },
    /// A query terminated with this error (as kept by the query handle).
    #[error("query '{query}' failed: {source}")]
    QueryFailed {
        /// The query's name.
        query: String,
        /// The error it failed with.
        #[source]
        source: std::sync::Arc<SluiceError>,
    },
    /// An error shared between the query handle that keeps it and the
    /// caller it is returned to; displays as the error itself.
    #[error(transparent)]
    Shared(std::sync::Arc<SluiceError>),
    /// A user function given to a stateful operation
    /// (`flat_map_groups_with_state`, ...) failed, panicked, or returned rows
    /// other than it declared; nothing of the batch was committed.
    #[error("the function given to {operator} failed for key {key}: {message}")]
    UserFunction {
        /// The operation (`flat_map_groups_with_state`).
        operator: &'static str,
        /// The group key it was called for, as text.
        key: String,
        /// What went wrong, and the fix where there is one.
        message: String,
    },
    /// A query with this name is already running.
    #[error("a query named '{0}' is already running; stop it (DROP SINK {0}) or pick another name")]
    DuplicateQuery(String),
}

impl SluiceError {
    /// Shorthand for [`SluiceError::Plan`].
    pub fn plan(msg: impl Into<String>) -> Self {
        Self::Plan(msg.into())
    }
    /// Shorthand for [`SluiceError::Internal`]: an invariant that does not
    /// hold (a bug in Sluice, never bad input).
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into())
    }
    /// Shorthand for [`SluiceError::ResourcesExhausted`].
    pub fn exhausted(msg: impl Into<String>) -> Self {
        Self::ResourcesExhausted(msg.into())
    }
    /// Wrap this error with what was being done when it happened.
    pub fn context(self, context: impl Into<String>) -> Self {
        Self::Context { context: context.into(), source: Box::new(self) }
    }
    /// The innermost error under any [`SluiceError::Context`] wrappers.
    pub fn root(&self) -> &SluiceError {
        match self {
            Self::Context { source, .. } => source.root(),
            Self::QueryFailed { source, .. } | Self::Shared(source) => source.root(),
            other => other,
        }
    }
    /// Shorthand for [`SluiceError::Unsupported`].
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Self::Unsupported(msg.into())
    }
}

impl From<SluiceError> for DataFusionError {
    fn from(e: SluiceError) -> Self {
        match e {
            SluiceError::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Adds [`SluiceError::context`] to results.
pub trait ResultExt<T> {
    /// On error, wrap it with `context` (computed only on error).
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<SluiceError>> ResultExt<T> for std::result::Result<T, E> {
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}
