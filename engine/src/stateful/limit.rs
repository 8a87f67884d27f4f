//! `LIMIT` / `OFFSET` on a stream: the first rows ever, not per batch.
//!
//! As Spark's `StreamingGlobalLimitExec`, the operator keeps one number as
//! state: how many rows the query produced before the limit so far. Each
//! batch passes on the rows whose position in the whole stream lies in
//! `[skip, skip + fetch)`, and the count is checkpointed with the batch, so
//! a restart (or a replay) continues where the committed batches stopped.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::logical_expr::{FetchType, LogicalPlan, SkipType};

use async_trait::async_trait;
use datafusion::execution::TaskContext;

use super::BatchContext;
use super::{OperatorState, StateLayout, StatefulOperator};
use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::state::StateStoreConfig;

const COUNT_KEY: &[u8] = b"rows_seen";

/// The streaming `LIMIT fetch OFFSET skip` over a query's output.
#[derive(Debug)]
pub struct StreamingLimit {
    skip: u64,
    fetch: Option<u64>,
    /// Rows before the limit in the committed batches plus this one.
    seen: u64,
    state: OperatorState,
}

impl StreamingLimit {
    /// The limit of `skip` and `fetch` rows.
    pub fn new(skip: u64, fetch: Option<u64>, config: StateStoreConfig) -> Self {
        // One key: a single partition.
        let config = StateStoreConfig { num_partitions: 1, ..config };
        Self { skip, fetch, seen: 0, state: OperatorState::new("limit", config) }
    }

    /// Split a plan whose outermost operation (under projections) is a
    /// `LIMIT` into the plan without it and the limit's `(skip, fetch)`.
    pub fn strip(plan: &LogicalPlan) -> Result<Option<(LogicalPlan, u64, Option<u64>)>> {
        match plan {
            LogicalPlan::Limit(limit) => {
                let skip = match limit.get_skip_type()? {
                    SkipType::Literal(n) => n as u64,
                    SkipType::UnsupportedExpr => {
                        return Err(SluiceError::unsupported("OFFSET on a stream must be a constant number of rows"))
                    }
                };
                let fetch = match limit.get_fetch_type()? {
                    FetchType::Literal(n) => n.map(|n| n as u64),
                    FetchType::UnsupportedExpr => {
                        return Err(SluiceError::unsupported("LIMIT on a stream must be a constant number of rows"))
                    }
                };
                Ok(Some((limit.input.as_ref().clone(), skip, fetch)))
            }
            LogicalPlan::Projection(_) => {
                let Some(input) = plan.inputs().first().copied() else { return Ok(None) };
                let Some((input, skip, fetch)) = Self::strip(input)? else { return Ok(None) };
                Ok(Some((plan.with_new_exprs(plan.expressions(), vec![input])?, skip, fetch)))
            }
            _ => Ok(None),
        }
    }

    /// Whether every row the limit will ever pass has been passed.
    pub fn exhausted(&self) -> bool {
        self.fetch.is_some_and(|f| self.seen >= self.skip.saturating_add(f))
    }

    /// Pass on the rows of this batch's output that fall in the limit.
    pub fn apply(&mut self, output: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let end = self.fetch.map(|f| self.skip.saturating_add(f)).unwrap_or(u64::MAX);
        let mut out = vec![];
        for batch in output {
            let (first, rows) = (self.seen, batch.num_rows() as u64);
            self.seen = self.seen.saturating_add(rows);
            // This batch covers stream positions [first, first + rows).
            let from = self.skip.max(first);
            let to = end.min(first + rows);
            if from < to {
                out.push(batch.slice((from - first) as usize, (to - from) as usize));
            }
        }
        let seen = self.seen.min(end);
        self.seen = seen;
        self.state.store_mut()?.put(COUNT_KEY, seen.to_le_bytes().to_vec());
        Ok(out)
    }
}

#[async_trait]
impl StatefulOperator for StreamingLimit {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        _task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        _ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        self.apply(input)
    }

    fn watermark_driven(&self) -> bool {
        false
    }

    fn needs_input(&self) -> bool {
        !self.exhausted()
    }

    fn state_layout(&self) -> StateLayout {
        StateLayout { operator: "limit".into(), keys: vec![], values: vec!["rows_seen: UInt64".into()] }
    }

    /// Load the count as of `version` from `dir`.
    async fn restore(
        &mut self,
        dir: CheckpointDir,
        version: Option<u64>,
        pool: &Arc<dyn MemoryPool>,
        partition: usize,
        reset: bool,
    ) -> Result<()> {
        self.state.restore(dir, version, pool, partition, reset).await?;
        self.seen = match self.state.store()?.get(COUNT_KEY) {
            None => 0,
            Some(bytes) => {
                let array: [u8; 8] = bytes.try_into().map_err(|_| SluiceError::Checkpoint {
                    path: "state/limit".into(),
                    reason: format!(
                        "the stored row count has {} bytes instead of 8; the checkpoint is damaged: restore it \
                         from a backup, or use a new checkpoint location",
                        bytes.len()
                    ),
                })?;
                u64::from_le_bytes(array)
            }
        };
        Ok(())
    }
}
