//! Errors of the SQL layer.

use sluice_engine::SluiceError;

/// Result alias.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// An error from parsing or running a statement.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// Syntax error.
    #[error("SQL syntax error: {0}")]
    Parse(String),
    /// An engine error.
    #[error("{0}")]
    Engine(#[from] SluiceError),
    /// A DataFusion error.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}
