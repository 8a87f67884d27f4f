//! The `foreach_batch` sink: hand each micro-batch to user code.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;

use crate::connector::Sink;
use crate::error::Result;

/// The user function behind [`ForeachBatchSink`]: `(batch_id, rows)`.
pub type ForeachBatchFn = Arc<dyn Fn(u64, &[RecordBatch]) -> Result<()> + Send + Sync>;

/// Calls a function with every micro-batch's output and its batch id.
///
/// After a crash the last batch may be delivered again with the same id:
/// the function makes its effect idempotent by batch id for exactly-once
/// results (as with Spark's `foreachBatch`).
pub struct ForeachBatchSink {
    f: ForeachBatchFn,
}

impl ForeachBatchSink {
    /// Wrap a function.
    pub fn new(f: ForeachBatchFn) -> Self {
        Self { f }
    }
}

impl fmt::Debug for ForeachBatchSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForeachBatchSink")
    }
}

#[async_trait]
impl Sink for ForeachBatchSink {
    async fn add_batch(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        (self.f)(batch_id, batches)
    }
    fn exactly_once(&self) -> bool {
        false
    }
    /// Under the continuous trigger the function gets each chunk as it is
    /// produced, with its epoch id (several calls per epoch).
    async fn add_chunk(&self, epoch: u64, batches: &[RecordBatch]) -> Result<bool> {
        (self.f)(epoch, batches)?;
        Ok(true)
    }
}
