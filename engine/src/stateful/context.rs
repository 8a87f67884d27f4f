//! [`BatchContext`]: the facts about the running micro-batch a stateful
//! operator decides by.

use super::EventTime;

/// Facts about the micro-batch being run.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext {
    /// Batch id.
    pub batch_id: u64,
    /// Event-time watermark in force for this batch: state it has passed
    /// is evicted.
    pub watermark: Option<EventTime>,
    /// Watermark late input rows are judged against (the batch's for the
    /// first stateful operator, the previous batch's for later ones).
    pub late_watermark: Option<EventTime>,
    /// Watermark of the previous batch.
    pub previous_watermark: Option<EventTime>,
    /// Processing time of the batch (ms since the epoch).
    pub batch_timestamp_ms: i64,
}

impl BatchContext {
    /// The context as an operator fed by another stateful operator sees it:
    /// rows its upstream emitted under the current watermark are on time
    /// for it, so lateness is judged by the previous batch's watermark
    /// (Spark 3.5+).
    pub fn downstream(self) -> Self {
        Self { late_watermark: self.previous_watermark, ..self }
    }
}
