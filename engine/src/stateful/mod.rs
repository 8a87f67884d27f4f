//! Stateful streaming operators: aggregation and deduplication, both over
//! the [`StateStore`](crate::state::StateStore).

mod aggregate;
mod changelog;
mod context;
mod dedup;
mod event_time;
mod groups_with_state;
pub mod inspect;
mod join;
mod limit;
mod live_aggregate;
mod live_chunks;
mod over_window;
mod pane_aggregate;
mod session;
mod spec;
mod topn;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::TaskContext;

pub use aggregate::{drop_late, AggregateParts, StreamingAggregate};
pub use changelog::{ChangelogSpec, StreamingChangelog, SIGN_COLUMN};
pub use context::BatchContext;
pub use dedup::{DedupSpec, StreamingDedup};
pub use event_time::{event_time_micros, EventTime, EventTimeKey};
pub use groups_with_state::{GroupsWithStateSpec, StreamingGroupsWithState};
pub use join::{Evict, JoinSpec, SideSpec, StreamingJoin};
pub use limit::StreamingLimit;
pub use live_aggregate::{LiveAggregate, LIVE_AGGREGATE};
pub use over_window::{OverWindowSpec, StreamingOverWindow};
pub use pane_aggregate::{PaneAggregate, PANE_AGGREGATE};
pub use session::{SessionAggregate, SessionColumns};
pub use spec::{OperatorSpec, RowStoreOperator};
pub use topn::{RankKind, StreamingTopN, TopNSpec};

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::progress::StateOperatorProgress;
use crate::state::{StateStore, StateStoreConfig};

/// An operator that keeps state between micro-batches.
#[async_trait]
pub trait StatefulOperator: Send + Sync + std::fmt::Debug {
    /// The operator's state store, counters and late rows.
    fn state(&mut self) -> &mut OperatorState;
    /// Feed one batch's input; return the rows to emit.
    async fn process(
        &mut self,
        task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>>;
    /// Feed one batch's input of a two-input operator (a join); return the
    /// rows to emit.
    async fn process_join(
        &mut self,
        _task: Arc<TaskContext>,
        _left: Vec<RecordBatch>,
        _right: Vec<RecordBatch>,
        _ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        Err(SluiceError::internal("a one-input stateful operator was given two inputs"))
    }
    /// Whether a watermark advance alone can make output or eviction due.
    fn watermark_driven(&self) -> bool;
    /// What the stored state means: the operator and the layout of its
    /// keys and values. A restart with a different layout is refused.
    fn state_layout(&self) -> StateLayout;

    /// Load state partition `partition` as of `version` (the last committed
    /// batch; `None`: start empty) from the operator's directory `dir`,
    /// accounting its memory in `pool`. With `reset`, start empty at
    /// `version` (the caller has cleared `dir`).
    async fn restore(
        &mut self,
        dir: CheckpointDir,
        version: Option<u64>,
        pool: &Arc<dyn MemoryPool>,
        partition: usize,
        reset: bool,
    ) -> Result<()> {
        self.state().restore(dir, version, pool, partition, reset).await
    }
    /// The earliest processing time (ms) at which a timer of this operator
    /// fires (a `flat_map_groups_with_state` processing-time timeout): a
    /// batch without new data is due once the clock passes it.
    fn next_timer_ms(&self) -> Option<i64> {
        None
    }
    /// Whether this batch's input can change the output (a `LIMIT` whose
    /// rows are all out needs none).
    fn needs_input(&self) -> bool {
        true
    }
    /// Make this batch's state changes durable as `version`.
    async fn commit(&mut self, version: u64) -> Result<StateOperatorProgress> {
        self.state().commit(version).await
    }
    /// Whether the operator's state after a batch follows from its state
    /// before, the batch's input and its [`BatchContext`] alone (no clock,
    /// no user code), so that replaying batches from the source rebuilds
    /// it. Only such operators may skip checkpoints
    /// (`state_checkpoint_interval`, see [`Self::end_uncommitted`]).
    fn rebuilt_by_replay(&self) -> bool {
        false
    }
    /// End a batch whose state changes are not checkpointed (the operator
    /// is [`Self::rebuilt_by_replay`]): keep the changes for the next
    /// [`Self::commit`], which writes them all, and report the batch.
    async fn end_uncommitted(&mut self) -> Result<StateOperatorProgress> {
        Err(SluiceError::internal(format!(
            "stateful operator {:?} cannot skip a checkpoint",
            self.state_layout().operator
        )))
    }
    /// Keep the input rows dropped as late, for [`Self::take_late_rows`].
    fn collect_late_rows(&mut self, on: bool) {
        self.state().late.on = on;
    }
    /// The rows dropped as late since the last call (when collecting).
    fn take_late_rows(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.state().late.rows)
    }
}

/// The layout of an operator's stored state, recorded in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateLayout {
    /// Operator kind (`aggregate`, `session_aggregate`, `dedup`).
    pub operator: String,
    /// Key columns, as `name: type`.
    pub keys: Vec<String>,
    /// Stored value columns (aggregate states, or dedup expiry), as `name: type`.
    pub values: Vec<String>,
}

impl StateLayout {
    /// Describe fields as `name: type`.
    pub fn describe(fields: &[datafusion::arrow::datatypes::FieldRef]) -> Vec<String> {
        fields.iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect()
    }
}

/// What every stateful operator keeps besides its logic: its state store,
/// the count of rows dropped as late, and (for `late_rows`) those rows.
#[derive(Debug)]
pub struct OperatorState {
    name: &'static str,
    config: StateStoreConfig,
    store: Option<StateStore>,
    pub(crate) dropped: u64,
    pub(crate) late: LateRows,
    /// Time spent processing this batch's input (reading and updating the
    /// state, evicting), as Spark's `allUpdatesTimeMs`.
    pub(crate) update_time: std::time::Duration,
}

impl OperatorState {
    /// State of the operator called `name` (in progress reports).
    pub fn new(name: &'static str, config: StateStoreConfig) -> Self {
        Self { name, config, store: None, dropped: 0, late: LateRows::default(), update_time: Default::default() }
    }

    async fn restore(
        &mut self,
        dir: CheckpointDir,
        version: Option<u64>,
        pool: &Arc<dyn MemoryPool>,
        partition: usize,
        reset: bool,
    ) -> Result<()> {
        let mut store = StateStore::open_partition(dir, self.config, version, partition, reset).await?;
        store.track_memory(pool, self.name)?;
        self.store = Some(store);
        Ok(())
    }

    /// Drop input rows whose event time is at or below `watermark` (when
    /// both are known), counting them and keeping them for `late_rows`.
    pub(crate) fn drop_late(
        &mut self,
        input: Vec<RecordBatch>,
        event_time: Option<&EventTimeKey>,
        watermark: Option<EventTime>,
    ) -> Result<Vec<RecordBatch>> {
        let (Some(et), Some(wm)) = (event_time, watermark) else { return Ok(input) };
        let (kept, dropped) = aggregate::drop_late(input, et, wm, &mut self.late)?;
        self.dropped += dropped;
        Ok(kept)
    }

    /// The store (after restore).
    pub fn store(&self) -> Result<&StateStore> {
        self.store.as_ref().ok_or_else(|| SluiceError::internal("state store used before restore"))
    }

    /// The store, mutable (after restore).
    pub fn store_mut(&mut self) -> Result<&mut StateStore> {
        self.store.as_mut().ok_or_else(|| SluiceError::internal("state store used before restore"))
    }

    async fn commit(&mut self, version: u64) -> Result<StateOperatorProgress> {
        let m = self.store_mut()?.commit(version).await?;
        self.progress(m)
    }

    /// The progress of a batch whose changes stay in memory until the next
    /// [`Self::commit`] (see [`StatefulOperator::end_uncommitted`]): no
    /// rows written, no commit time.
    fn uncommitted(&mut self) -> Result<StateOperatorProgress> {
        let removal_time = self.store_mut()?.take_removal_time();
        self.progress(crate::state::CommitMetrics { removal_time, ..Default::default() })
    }

    fn progress(&mut self, m: crate::state::CommitMetrics) -> Result<StateOperatorProgress> {
        let dropped = std::mem::take(&mut self.dropped);
        let update_time = std::mem::take(&mut self.update_time);
        let name = self.name;
        let store = self.store()?;
        let removal_ms = m.removal_time.as_millis() as u64;
        let memory = store.memory_bytes() as u64;
        Ok(StateOperatorProgress {
            all_updates_time_ms: (update_time.as_millis() as u64).saturating_sub(removal_ms),
            all_removals_time_ms: removal_ms,
            num_partitions: 1,
            custom_metrics: [
                ("stateOnCurrentVersionSizeBytes".to_string(), memory as i64),
                ("snapshotWritten".to_string(), i64::from(m.snapshot)),
                ("deltaFileRows".to_string(), (m.rows_updated + m.rows_removed) as i64),
            ]
            .into_iter()
            .collect(),
            operator: name.into(),
            num_rows_total: store.len() as u64,
            num_rows_updated: m.rows_updated,
            num_rows_removed: m.rows_removed,
            num_rows_dropped_by_watermark: dropped,
            memory_used_bytes: store.memory_bytes() as u64,
            commit_time_ms: m.commit_ms,
        })
    }
}

/// Late rows kept for the `late_rows` sink option.
#[derive(Debug, Default)]
pub struct LateRows {
    /// Whether to keep them.
    pub on: bool,
    /// The rows kept since the last take.
    pub rows: Vec<RecordBatch>,
}

impl LateRows {
    /// Keep `batch` (when on and not empty).
    pub fn push(&mut self, batch: RecordBatch) {
        if self.on && batch.num_rows() > 0 {
            self.rows.push(batch);
        }
    }
}
