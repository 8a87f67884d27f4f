//! Event-time watermarks: declaration and tracking.

use std::time::Duration;

/// `WATERMARK FOR <column> AS <column> - INTERVAL ...`: the watermark is the
/// maximum event time seen minus `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// Event-time column.
    pub column: String,
    /// Allowed lateness.
    pub delay: Duration,
}
