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

    /// The context with every watermark moved by `shift_us` (≤ 0): an
    /// operator after a join judges by the join's output watermark.
    pub fn shifted(self, shift_us: i64) -> Self {
        if shift_us == 0 {
            return self;
        }
        let shift = |w: Option<EventTime>| w.map(|w| EventTime::from_micros(w.micros().saturating_add(shift_us)));
        Self {
            watermark: shift(self.watermark),
            late_watermark: shift(self.late_watermark),
            previous_watermark: shift(self.previous_watermark),
            ..self
        }
    }
}
