//! [`BatchState`]: the per-batch runtime handle stateful nodes reach their
//! state through.
//!
//! The plan is immutable and built once. The runtime that owns the
//! operators' state attaches a `BatchState` to the task context of each
//! micro-batch (as DataFusion session-config extensions are attached), and
//! each [`StatefulExec`](super::StatefulExec) partition takes its operator
//! instance from it.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Result, SluiceError};
use crate::stateful::{BatchContext, LateRows, StatefulOperator};

/// One operator instance: the state of one state partition.
pub type OperatorCell = Arc<tokio::sync::Mutex<Box<dyn StatefulOperator>>>;

/// The operators' instances, by operator id, then by state partition.
pub type OperatorInstances = Arc<Vec<Vec<OperatorCell>>>;

/// The rows an operator's watermark filter dropped as late (run before the
/// operator's partial stage, on every partition at once).
#[derive(Debug, Default)]
pub struct LateCollector {
    dropped: AtomicU64,
    rows: parking_lot::Mutex<LateRows>,
}

impl LateCollector {
    /// Count `n` dropped rows.
    pub fn count(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
    /// Keep `batch` of dropped rows (when keeping is on).
    pub fn keep(&self, batch: RecordBatch) {
        self.rows.lock().push(batch);
    }
    /// Whether dropped rows are kept.
    pub fn keeping(&self) -> bool {
        self.rows.lock().on
    }
    /// Keep dropped rows from now on (the `late_rows` sink option).
    pub fn keep_rows(&self, on: bool) {
        self.rows.lock().on = on;
    }
    /// The count of rows dropped since the last take, and the rows kept
    /// since the last [`Self::take_rows`].
    pub fn take(&self) -> (u64, Vec<RecordBatch>) {
        (self.dropped.swap(0, Ordering::Relaxed), self.take_rows())
    }
    /// The rows kept since the last take (the count stays).
    pub fn take_rows(&self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.rows.lock().rows)
    }
}

/// The operators' late-row collectors, by operator id.
pub type LateCollectors = Arc<Vec<Arc<LateCollector>>>;

/// What a stateful node needs at run time for one batch.
#[derive(Debug)]
pub struct BatchState {
    /// Batch id, watermarks and batch time.
    pub batch: BatchContext,
    operators: OperatorInstances,
    late: LateCollectors,
}

impl BatchState {
    /// The handle for `batch` over the runtime's `operators` and their
    /// late-row collectors.
    pub fn new(batch: BatchContext, operators: OperatorInstances, late: LateCollectors) -> Self {
        Self { batch, operators, late }
    }

    /// The late-row collector of operator `id`.
    pub fn late(&self, id: usize) -> Result<Arc<LateCollector>> {
        self.late
            .get(id)
            .cloned()
            .ok_or_else(|| SluiceError::internal(format!("stateful operator {id} has no late-row collector")))
    }

    /// The instance of operator `id` for state partition `partition`.
    pub fn operator(&self, id: usize, partition: usize) -> Result<OperatorCell> {
        self.operators.get(id).and_then(|parts| parts.get(partition)).cloned().ok_or_else(|| {
            SluiceError::internal(format!(
                "stateful operator {id} partition {partition} has no state instance (the runtime holds {} \
                 operators)",
                self.operators.len()
            ))
        })
    }
}
