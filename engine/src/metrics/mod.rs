//! Prometheus metrics of a session's queries, served over HTTP at
//! `/metrics` ([`serve`]; `sluice run --metrics ADDR`).
//!
//! [`SessionMetrics`] is a [`StreamingQueryListener`]: it updates its
//! counters and gauges from the queries' events, off their hot path. Every
//! series is labelled with the query's `query` name and `id`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `sluice_input_rows_total` | counter | rows read |
//! | `sluice_output_rows_total` | counter | rows written to the sink |
//! | `sluice_batches_total` | counter | micro-batches run |
//! | `sluice_batch_duration_seconds` | histogram | a batch's trigger execution time |
//! | `sluice_last_batch_id` | gauge | the last batch id |
//! | `sluice_watermark_seconds` | gauge | the event-time watermark (seconds since the epoch) |
//! | `sluice_watermark_lag_seconds` | gauge | processing time minus the watermark, at scrape time |
//! | `sluice_query_up` | gauge | 1 while the query runs, 0 once it terminated |
//! | `sluice_query_failed` | gauge | 1 when the query terminated with an error |
//! | `sluice_source_input_rows_total` | counter | rows read, per `source` |
//! | `sluice_source_offsets_behind_latest` | gauge | records between the last batch and the source's latest offsets (Kafka lag) |
//! | `sluice_state_rows` | gauge | keys held, per stateful `operator` |
//! | `sluice_state_memory_bytes` | gauge | state memory, per operator |
//! | `sluice_state_rows_dropped_by_watermark_total` | counter | input rows dropped as late, per operator |

mod server;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use server::{serve, MetricsServer};

use crate::clock::ClockRef;
use crate::listener::{QueryStartedEvent, QueryTerminatedEvent, StreamingQueryListener};
use crate::progress::StreamingQueryProgress;

/// Labels of a query's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// Query name.
    pub query: String,
    /// Query id.
    pub id: String,
}

/// Labels of a source's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Query name.
    pub query: String,
    /// Query id.
    pub id: String,
    /// Source name.
    pub source: String,
}

/// Labels of a stateful operator's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperatorLabels {
    /// Query name.
    pub query: String,
    /// Query id.
    pub id: String,
    /// Operator name and its position in the plan (`0:aggregate`).
    pub operator: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn batch_histogram() -> Histogram {
    // 1 ms .. about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metrics of a session's queries.
pub struct SessionMetrics {
    registry: Registry,
    input_rows: Family<QueryLabels, Counter>,
    output_rows: Family<QueryLabels, Counter>,
    batches: Family<QueryLabels, Counter>,
    batch_duration: Family<QueryLabels, Histogram, fn() -> Histogram>,
    last_batch_id: Family<QueryLabels, Gauge>,
    watermark: Family<QueryLabels, FloatGauge>,
    watermark_lag: Family<QueryLabels, FloatGauge>,
    up: Family<QueryLabels, Gauge>,
    failed: Family<QueryLabels, Gauge>,
    source_rows: Family<SourceLabels, Counter>,
    source_behind: Family<SourceLabels, Gauge>,
    state_rows: Family<OperatorLabels, Gauge>,
    state_bytes: Family<OperatorLabels, Gauge>,
    state_dropped: Family<OperatorLabels, Counter>,
    /// The last watermark (ms) of each query, for the lag at scrape time.
    watermarks: Mutex<HashMap<QueryLabels, i64>>,
    clock: ClockRef,
}

impl std::fmt::Debug for SessionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMetrics").finish_non_exhaustive()
    }
}

impl SessionMetrics {
    /// Empty metrics; the watermark lag is measured on `clock`.
    pub fn new(clock: ClockRef) -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let this = Self {
            input_rows: Family::default(),
            output_rows: Family::default(),
            batches: Family::default(),
            batch_duration: Family::new_with_constructor(batch_histogram as fn() -> Histogram),
            last_batch_id: Family::default(),
            watermark: Family::default(),
            watermark_lag: Family::default(),
            up: Family::default(),
            failed: Family::default(),
            source_rows: Family::default(),
            source_behind: Family::default(),
            state_rows: Family::default(),
            state_bytes: Family::default(),
            state_dropped: Family::default(),
            watermarks: Mutex::new(HashMap::new()),
            clock,
            registry: Registry::default(),
        };
        registry.register("input_rows", "Rows read by the query", this.input_rows.clone());
        registry.register("output_rows", "Rows written to the query's sink", this.output_rows.clone());
        registry.register("batches", "Micro-batches run", this.batches.clone());
        registry.register("batch_duration_seconds", "Trigger execution time of a batch", this.batch_duration.clone());
        registry.register("last_batch_id", "Id of the query's last batch", this.last_batch_id.clone());
        registry.register(
            "watermark_seconds",
            "Event-time watermark (seconds since the epoch)",
            this.watermark.clone(),
        );
        registry.register(
            "watermark_lag_seconds",
            "Processing time minus the event-time watermark, at scrape time",
            this.watermark_lag.clone(),
        );
        registry.register("query_up", "1 while the query runs, 0 once it terminated", this.up.clone());
        registry.register("query_failed", "1 when the query terminated with an error", this.failed.clone());
        registry.register("source_input_rows", "Rows read from the source", this.source_rows.clone());
        registry.register(
            "source_offsets_behind_latest",
            "Records between the last batch's end and the source's latest offsets",
            this.source_behind.clone(),
        );
        registry.register("state_rows", "Keys held by the stateful operator", this.state_rows.clone());
        registry.register("state_memory_bytes", "Memory of the operator's state", this.state_bytes.clone());
        registry.register(
            "state_rows_dropped_by_watermark",
            "Input rows the operator dropped as later than the watermark",
            this.state_dropped.clone(),
        );
        Self { registry, ..this }
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let now = self.clock.now_millis();
        for (labels, w) in self.watermarks.lock().iter() {
            self.watermark_lag.get_or_create(labels).set((now - w) as f64 / 1000.0);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        out
    }

    fn labels(id: &str, name: &str) -> QueryLabels {
        QueryLabels { query: name.to_string(), id: id.to_string() }
    }
}

impl StreamingQueryListener for SessionMetrics {
    fn on_query_started(&self, e: &QueryStartedEvent) {
        let l = Self::labels(&e.id, &e.name);
        self.up.get_or_create(&l).set(1);
        self.failed.get_or_create(&l).set(0);
    }

    fn on_query_progress(&self, p: &StreamingQueryProgress) {
        let l = Self::labels(&p.id, &p.name);
        self.up.get_or_create(&l).set(1);
        self.input_rows.get_or_create(&l).inc_by(p.num_input_rows);
        self.output_rows.get_or_create(&l).inc_by(p.sink.num_output_rows);
        self.batches.get_or_create(&l).inc();
        let total_ms = p.duration_ms.get("total").copied().unwrap_or(0);
        self.batch_duration.get_or_create(&l).observe(total_ms as f64 / 1000.0);
        self.last_batch_id.get_or_create(&l).set(p.batch_id as i64);
        if let Some(w) = p.watermark_ms {
            self.watermark.get_or_create(&l).set(w as f64 / 1000.0);
            self.watermarks.lock().insert(l.clone(), w);
        }
        for s in &p.sources {
            let sl = SourceLabels { query: p.name.clone(), id: p.id.clone(), source: s.name.clone() };
            self.source_rows.get_or_create(&sl).inc_by(s.num_input_rows);
            if let Some(behind) = s.metrics.get("offsetsBehindLatest").and_then(|b| b.parse::<i64>().ok()) {
                self.source_behind.get_or_create(&sl).set(behind);
            }
        }
        for (i, op) in p.state_operators.iter().enumerate() {
            let ol =
                OperatorLabels { query: p.name.clone(), id: p.id.clone(), operator: format!("{i}:{}", op.operator) };
            self.state_rows.get_or_create(&ol).set(op.num_rows_total as i64);
            self.state_bytes.get_or_create(&ol).set(op.memory_used_bytes as i64);
            self.state_dropped.get_or_create(&ol).inc_by(op.num_rows_dropped_by_watermark);
        }
    }

    fn on_query_terminated(&self, e: &QueryTerminatedEvent) {
        let l = Self::labels(&e.id, &e.name);
        self.up.get_or_create(&l).set(0);
        self.failed.get_or_create(&l).set(i64::from(e.exception.is_some()));
        self.watermarks.lock().remove(&l);
    }
}
