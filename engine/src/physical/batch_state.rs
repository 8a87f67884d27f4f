//! [`BatchState`]: the per-batch runtime handle stateful nodes reach their
//! state through.
//!
//! The plan is immutable and built once. The runtime that owns the
//! operators' state attaches a `BatchState` to the task context of each
//! micro-batch (as DataFusion session-config extensions are attached), and
//! each [`StatefulExec`](super::StatefulExec) partition takes its operator
//! instance from it.

use std::sync::Arc;

use crate::error::{Result, SluiceError};
use crate::stateful::{BatchContext, StatefulOperator};

/// One operator instance: the state of one state partition.
pub type OperatorCell = Arc<tokio::sync::Mutex<Box<dyn StatefulOperator>>>;

/// The operators' instances, by operator id, then by state partition.
pub type OperatorInstances = Arc<Vec<Vec<OperatorCell>>>;

/// What a stateful node needs at run time for one batch.
#[derive(Debug)]
pub struct BatchState {
    /// Batch id, watermarks and batch time.
    pub batch: BatchContext,
    operators: OperatorInstances,
}

impl BatchState {
    /// The handle for `batch` over the runtime's `operators`.
    pub fn new(batch: BatchContext, operators: OperatorInstances) -> Self {
        Self { batch, operators }
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
