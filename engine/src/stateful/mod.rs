//! Stateful streaming operators: aggregation and deduplication, both over
//! the [`StateStore`](crate::state::StateStore).

mod aggregate;
mod dedup;
mod event_time;
mod session;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::TaskContext;

pub use aggregate::{AggregateParts, StreamingAggregate};
pub use dedup::StreamingDedup;
pub use event_time::EventTimeKey;
pub use session::{SessionAggregate, SessionColumns};

use crate::checkpoint::CheckpointDir;
use crate::error::Result;
use crate::plan::BatchContext;
use crate::progress::StateOperatorProgress;

/// An operator that keeps state between micro-batches.
#[async_trait]
pub trait StatefulOperator: Send + Sync + std::fmt::Debug {
    /// Load the state as of `version` (the last committed batch; `None`:
    /// start empty) from `dir`, accounting its memory in `pool`.
    async fn restore(&mut self, dir: CheckpointDir, version: Option<u64>, pool: &Arc<dyn MemoryPool>) -> Result<()>;
    /// Feed one batch's input; return the rows to emit.
    async fn process(
        &mut self,
        task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>>;
    /// Make this batch's state changes durable as `version`.
    async fn commit(&mut self, version: u64) -> Result<StateOperatorProgress>;
    /// Whether a watermark advance alone can make output or eviction due.
    fn watermark_driven(&self) -> bool;
    /// Keep the input rows dropped as late, for [`Self::take_late_rows`].
    fn collect_late_rows(&mut self, on: bool);
    /// The rows dropped as late since the last call (when collecting).
    fn take_late_rows(&mut self) -> Vec<RecordBatch>;
}

/// Late rows kept for the `late_rows` sink option.
#[derive(Debug, Default)]
pub(crate) struct LateRows {
    pub on: bool,
    pub rows: Vec<RecordBatch>,
}

impl LateRows {
    pub fn push(&mut self, batch: RecordBatch) {
        if self.on && batch.num_rows() > 0 {
            self.rows.push(batch);
        }
    }
}
