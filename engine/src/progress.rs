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
    /// The latest offset the source knows of, past its rate limits
    /// (Spark's `latestOffset`), when it reports one.
    pub latest_offset: Option<SourceOffset>,
    /// Input rows per second of processing time since the previous batch.
    pub input_rows_per_second: f64,
    /// Input rows per second of time spent processing this batch.
    pub processed_rows_per_second: f64,
    /// The source's own metrics (Kafka: offsets behind latest).
    pub metrics: BTreeMap<String, String>,
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
    /// Time spent reading and updating the state (Spark's `allUpdatesTimeMs`).
    pub all_updates_time_ms: u64,
    /// Time spent evicting state (Spark's `allRemovalsTimeMs`).
    pub all_removals_time_ms: u64,
    /// State partitions (Spark's `numShufflePartitions` and
    /// `numStateStoreInstances`: one store per partition).
    pub num_partitions: u64,
    /// Store-specific metrics (Spark's `customMetrics`):
    /// `stateOnCurrentVersionSizeBytes`, `snapshotWritten`, `deltaFileRows`.
    pub custom_metrics: BTreeMap<String, i64>,
}

/// Event times of a batch's input rows (over the watermarked columns).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct EventTimeStats {
    /// Earliest event time (ms since the epoch).
    pub min_ms: i64,
    /// Latest event time (ms since the epoch).
    pub max_ms: i64,
    /// Sum of the event times (ms), for the average.
    pub sum_ms: i128,
    /// Rows with an event time.
    pub count: u64,
}

impl EventTimeStats {
    /// The stats of both sets of rows.
    pub fn merge(self, other: Self) -> Self {
        Self {
            min_ms: self.min_ms.min(other.min_ms),
            max_ms: self.max_ms.max(other.max_ms),
            sum_ms: self.sum_ms + other.sum_ms,
            count: self.count + other.count,
        }
    }
    /// Average event time (ms since the epoch).
    pub fn avg_ms(&self) -> Option<i64> {
        (self.count > 0).then(|| (self.sum_ms / i128::from(self.count)) as i64)
    }
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
    /// Time per phase in ms: `latest_offset`, `wal_commit` (the wait for the
    /// offset log write, which runs alongside `read` and `execute`), `plan`
    /// (per-batch plan preparation; the plan is built once), `read`,
    /// `execute`, `sink`, `commit`, `total`.
    pub duration_ms: BTreeMap<String, u64>,
    /// Event-time watermark the batch ran under (ms since the epoch).
    pub watermark_ms: Option<i64>,
    /// Event times of the batch's input rows, when a source has a watermark.
    pub event_time: Option<EventTimeStats>,
    /// Id of this run of the query (new at every start; Spark's `runId`).
    pub run_id: String,
    /// Per-source progress.
    pub sources: Vec<SourceProgress>,
    /// Sink progress.
    pub sink: SinkProgress,
    /// Stateful operators.
    pub state_operators: Vec<StateOperatorProgress>,
    /// Under the continuous trigger: the epoch's chunks and their latency
    /// (`None` for a micro-batch).
    pub epoch: Option<EpochProgress>,
}

/// One continuous epoch's chunks: how many ran, and how long each took from
/// the moment its rows were read to their delivery at the sink.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EpochProgress {
    /// Chunks run in the epoch.
    pub chunks: u64,
    /// Median chunk latency (microseconds).
    pub latency_p50_us: u64,
    /// 99th percentile chunk latency (microseconds).
    pub latency_p99_us: u64,
    /// 99.9th percentile chunk latency (microseconds).
    pub latency_p999_us: u64,
    /// Slowest chunk (microseconds).
    pub latency_max_us: u64,
}

impl EpochProgress {
    /// The figures of `latencies_us` (one per chunk, any order).
    pub fn of(mut latencies_us: Vec<u64>) -> Self {
        latencies_us.sort_unstable();
        let at = |q: f64| -> u64 {
            if latencies_us.is_empty() {
                return 0;
            }
            let i = ((latencies_us.len() as f64 * q).ceil() as usize).clamp(1, latencies_us.len()) - 1;
            latencies_us[i]
        };
        Self {
            chunks: latencies_us.len() as u64,
            latency_p50_us: at(0.5),
            latency_p99_us: at(0.99),
            latency_p999_us: at(0.999),
            latency_max_us: latencies_us.last().copied().unwrap_or(0),
        }
    }
}

/// ISO-8601 in UTC with milliseconds, as Spark writes times in progress.
fn iso(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

impl StreamingQueryProgress {
    /// The progress as a JSON document in Spark's shape
    /// (`StreamingQueryProgress.json`): Spark's field names and nesting, so
    /// dashboards and parsers made for Spark read it. Fields that do not
    /// apply are absent, as in Spark. Sluice's own phase durations (`read`,
    /// `execute`, `sink`, `commit`) stay in `durationMs` under those names.
    pub fn json_value(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let d = |k: &str| self.duration_ms.get(k).copied();
        let mut duration = Map::new();
        let mut put = |name: &str, v: Option<u64>| {
            if let Some(v) = v {
                duration.insert(name.into(), json!(v));
            }
        };
        put("latestOffset", d("latest_offset"));
        put("queryPlanning", d("plan"));
        put("getBatch", d("read"));
        put("addBatch", d("execute").zip(d("sink")).map(|(a, b)| a + b));
        put("walCommit", d("wal_commit"));
        put("commitOffsets", d("commit"));
        put("triggerExecution", d("total"));
        for (k, v) in &self.duration_ms {
            if matches!(k.as_str(), "read" | "execute" | "sink" | "commit") {
                duration.insert(k.clone(), json!(v));
            }
        }
        let mut event_time = Map::new();
        if let Some(e) = &self.event_time {
            event_time.insert("min".into(), json!(iso(e.min_ms)));
            event_time.insert("max".into(), json!(iso(e.max_ms)));
            if let Some(avg) = e.avg_ms() {
                event_time.insert("avg".into(), json!(iso(avg)));
            }
        }
        if let Some(w) = self.watermark_ms.and_then(iso) {
            event_time.insert("watermark".into(), json!(w));
        }
        let state: Vec<Value> = self
            .state_operators
            .iter()
            .map(|s| {
                json!({
                    "operatorName": s.operator,
                    "numRowsTotal": s.num_rows_total,
                    "numRowsUpdated": s.num_rows_updated,
                    "numRowsRemoved": s.num_rows_removed,
                    "numRowsDroppedByWatermark": s.num_rows_dropped_by_watermark,
                    "allUpdatesTimeMs": s.all_updates_time_ms,
                    "allRemovalsTimeMs": s.all_removals_time_ms,
                    "commitTimeMs": s.commit_time_ms,
                    "memoryUsedBytes": s.memory_used_bytes,
                    "numShufflePartitions": s.num_partitions,
                    "numStateStoreInstances": s.num_partitions,
                    "customMetrics": s.custom_metrics,
                })
            })
            .collect();
        let sources: Vec<Value> = self
            .sources
            .iter()
            .map(|s| {
                let mut v = json!({
                    "description": s.name,
                    "startOffset": s.start_offset,
                    "endOffset": s.end_offset,
                    "numInputRows": s.num_input_rows,
                    "inputRowsPerSecond": s.input_rows_per_second,
                    "processedRowsPerSecond": s.processed_rows_per_second,
                });
                // Present, null when unknown, as in Spark.
                v["latestOffset"] = s.latest_offset.clone().unwrap_or(Value::Null);
                if !s.metrics.is_empty() {
                    v["metrics"] = json!(s.metrics);
                }
                v
            })
            .collect();
        let mut doc = json!({
            "id": self.id,
            "runId": self.run_id,
            "name": self.name,
            "timestamp": iso(self.timestamp_ms),
            "batchId": self.batch_id,
            "batchDuration": d("total"),
            "numInputRows": self.num_input_rows,
            "inputRowsPerSecond": self.input_rows_per_second,
            "processedRowsPerSecond": self.processed_rows_per_second,
            "durationMs": duration,
            "stateOperators": state,
            "sources": sources,
            "sink": { "description": self.sink.description, "numOutputRows": self.sink.num_output_rows },
        });
        if !event_time.is_empty() {
            doc["eventTime"] = Value::Object(event_time);
        }
        if let Some(e) = &self.epoch {
            doc["epoch"] = json!({
                "chunks": e.chunks,
                "latencyP50Us": e.latency_p50_us,
                "latencyP99Us": e.latency_p99_us,
                "latencyP999Us": e.latency_p999_us,
                "latencyMaxUs": e.latency_max_us,
            });
        }
        doc
    }

    /// [`Self::json_value`] as compact JSON (one line).
    pub fn json(&self) -> String {
        self.json_value().to_string()
    }

    /// [`Self::json_value`] as indented JSON, as Spark's `prettyJson`.
    pub fn pretty_json(&self) -> String {
        serde_json::to_string_pretty(&self.json_value()).unwrap_or_else(|_| self.json())
    }

    /// A one-line summary for logs and the CLI.
    pub fn summary(&self) -> String {
        let phases: Vec<String> = ["read", "execute", "sink", "commit"]
            .iter()
            .filter_map(|k| self.duration_ms.get(*k).map(|ms| format!("{k} {ms}")))
            .collect();
        let watermark = self.watermark_ms.and_then(iso).map(|t| format!(", watermark {t}")).unwrap_or_default();
        let (unit, latency) = match &self.epoch {
            Some(e) => ("epoch", format!(", {} chunks, p99 {:.2} ms", e.chunks, e.latency_p99_us as f64 / 1000.0)),
            None => ("batch", String::new()),
        };
        format!(
            "query '{}' {unit} {}: {} rows in, {} rows out, {:.0} rows/s, {} ms ({}){latency}{watermark}",
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
