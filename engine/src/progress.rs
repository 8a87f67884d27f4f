//! Per-batch progress reports, as Spark's `StreamingQueryProgress`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::connector::SourceOffset;

/// Progress of one source in one batch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceProgress {
    /// Source name.
    pub name: String,
    /// Offset before the batch.
    pub start_offset: Option<SourceOffset>,
    /// Offset after the batch.
    pub end_offset: Option<SourceOffset>,
    /// Rows read from this source.
    pub num_input_rows: u64,
}

/// Progress of the sink in one batch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkProgress {
    /// Sink description (connector name).
    pub description: String,
    /// Rows written.
    pub num_output_rows: u64,
}

/// Metrics of one stateful operator in one batch.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct StateOperatorProgress {
    /// Operator name.
    pub operator: String,
    /// Keys held after the batch.
    pub num_rows_total: u64,
    /// Keys written in the batch.
    pub num_rows_updated: u64,
    /// Keys removed (evicted) in the batch.
    pub num_rows_removed: u64,
    /// Input rows dropped as later than the watermark.
    pub num_rows_dropped_by_watermark: u64,
    /// Approximate memory of the state, in bytes.
    pub memory_used_bytes: u64,
    /// Time to commit the state, in ms.
    pub commit_time_ms: u64,
}

/// Progress of one micro-batch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamingQueryProgress {
    /// Query id.
    pub id: String,
    /// Query name.
    pub name: String,
    /// Batch id.
    pub batch_id: u64,
    /// Processing time of the batch (ms since the epoch).
    pub timestamp_ms: i64,
    /// Rows read in the batch (all sources).
    pub num_input_rows: u64,
    /// Input rows per second of processing time since the previous batch.
    pub input_rows_per_second: f64,
    /// Input rows per second of time spent processing this batch.
    pub processed_rows_per_second: f64,
    /// Time per phase in ms: `latest_offset`, `wal_commit`, `plan` (per-batch plan preparation;
    /// the plan is built once), `read`, `execute`, `sink`, `commit`, `total`.
    pub duration_ms: BTreeMap<String, u64>,
    /// Event-time watermark the batch ran under (ms since the epoch).
    pub watermark_ms: Option<i64>,
    /// Per-source progress.
    pub sources: Vec<SourceProgress>,
    /// Sink progress.
    pub sink: SinkProgress,
    /// Stateful operators.
    pub state_operators: Vec<StateOperatorProgress>,
}

impl StreamingQueryProgress {
    /// A one-line summary for logs and the CLI.
    pub fn summary(&self) -> String {
        let phases: Vec<String> = ["read", "execute", "sink", "commit"]
            .iter()
            .filter_map(|k| self.duration_ms.get(*k).map(|ms| format!("{k} {ms}")))
            .collect();
        let watermark = self
            .watermark_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| format!(", watermark {}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")))
            .unwrap_or_default();
        format!(
            "query '{}' batch {}: {} rows in, {} rows out, {:.0} rows/s, {} ms ({}){watermark}",
            self.name,
            self.batch_id,
            self.num_input_rows,
            self.sink.num_output_rows,
            self.processed_rows_per_second,
            self.duration_ms.get("total").copied().unwrap_or(0),
            phases.join(", ")
        )
    }
}

/// Status of a query right now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueryStatus {
    /// Human-readable state: `Initializing`, `Waiting for data`, `Processing batch N`, `Stopped`, `Failed`.
    pub message: String,
    /// Whether a batch is running.
    pub is_trigger_active: bool,
    /// Whether the last check found new data.
    pub is_data_available: bool,
}
