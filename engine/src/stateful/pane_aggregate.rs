//! [`PaneAggregate`]: an append-mode event-time window aggregation whose
//! open windows are live DataFusion group tables, one per window (a pane).
//!
//! Each pane holds a [`GroupValues`] (the interned group keys) and one
//! [`GroupsAccumulator`] per aggregate, the structures DataFusion's own hash
//! aggregation uses. A batch's partial states are merged into the panes of
//! their windows with `merge_batch`, so feeding a batch costs what the final
//! stage of a batch aggregation costs: no stored state is decoded, and no
//! per-group bytes are hashed into a key-value store. When the watermark
//! passes a window's end its pane is evaluated and dropped whole; the panes
//! are ordered by end (a time index), so eviction never scans the state.
//!
//! Durability: at each commit, every pane the batch changed is written to
//! the operator's [`StateStore`](crate::state::StateStore) partition as one
//! entry, keyed by the window end, whose value is the pane's keys and
//! partial states as an Arrow IPC stream (DataFusion's `state(EmitTo::All)`,
//! the Partial stage's schema). A commit's cost follows the panes the batch
//! touched, not the whole state; an evicted pane's entry is removed in the
//! same version. A restart rebuilds each pane by merging its stored states
//! into fresh accumulators.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_arrays, take_record_batch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;

use super::event_time::event_time_micros;
use super::{AggregateParts, BatchContext, EventTimeKey, OperatorState, StateLayout, StatefulOperator};
use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::progress::StateOperatorProgress;
use crate::state::StateStoreConfig;

/// The operator kind recorded in the checkpoint's layout and state schema.
pub const PANE_AGGREGATE: &str = "window_aggregate";

/// One open window: its groups and their accumulators.
struct Pane {
    groups: Box<dyn GroupValues>,
    /// The key columns of every group, in group-id order (batches of the
    /// groups each merge added).
    keys: Vec<RecordBatch>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Groups written to `keys` so far.
    len: usize,
}

impl std::fmt::Debug for Pane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pane").field("groups", &self.len).finish()
    }
}

/// Append-mode windowed aggregation over live panes.
#[derive(Debug)]
pub struct PaneAggregate {
    parts: AggregateParts,
    /// Schema of the partial states (keys, then each aggregate's state).
    partial_schema: SchemaRef,
    key_schema: SchemaRef,
    /// Schema of the emitted rows (keys, then each aggregate's value).
    output_schema: SchemaRef,
    /// Columns of each aggregate's state in `partial_schema`.
    state_columns: Vec<Range<usize>>,
    num_keys: usize,
    event_time: EventTimeKey,
    /// Open panes by window end (µs). (A `Mutex` only to make the operator
    /// `Sync`; it is reached through `&mut self` and never locked.)
    panes: BTreeMap<i64, Mutex<Pane>>,
    /// Panes changed since the last commit.
    changed: BTreeSet<i64>,
    /// Groups evicted since the last commit.
    removed_groups: u64,
    state: OperatorState,
}

impl PaneAggregate {
    /// Whether an aggregation planned with these parts runs on panes: append
    /// mode, grouped by an event-time window whose end closes it, fed with
    /// partial states, and every aggregate has a `GroupsAccumulator` (no
    /// `DISTINCT` or `ORDER BY` inside an aggregate).
    pub fn applies(
        parts: &AggregateParts,
        event_time: Option<&EventTimeKey>,
        mode: OutputMode,
        partial_input: bool,
    ) -> bool {
        let Some(et) = event_time else { return false };
        let window_key = parts.group_by.expr().get(et.index).is_some_and(|(e, name)| {
            matches!(e.data_type(&parts.input_schema), Ok(datafusion::arrow::datatypes::DataType::Struct(_)))
                || name == "window_end"
        });
        mode == OutputMode::Append
            && partial_input
            && window_key
            && parts
                .aggr
                .iter()
                .all(|a| a.groups_accumulator_supported() && !a.is_distinct() && a.order_bys().is_empty())
    }

    /// The operator for `parts` (for which [`Self::applies`] holds).
    pub fn try_new(parts: AggregateParts, event_time: EventTimeKey, config: StateStoreConfig) -> Result<Self> {
        let num_keys = parts.group_by.expr().len();
        let probe = |mode, group_by, input: SchemaRef| {
            AggregateExec::try_new(
                mode,
                group_by,
                parts.aggr.clone(),
                vec![None; parts.aggr.len()],
                Arc::new(EmptyExec::new(input)),
                Arc::clone(&parts.input_schema),
            )
            .map(|e| e.schema())
        };
        let partial_schema = probe(AggregateMode::Partial, parts.group_by.clone(), Arc::clone(&parts.input_schema))?;
        let output_schema = probe(AggregateMode::Final, parts.group_by.as_final(), Arc::clone(&partial_schema))?;
        let key_schema = Arc::new(Schema::new(partial_schema.fields()[..num_keys].to_vec()));
        let mut state_columns = vec![];
        let mut at = num_keys;
        for a in &parts.aggr {
            let n = a.state_fields()?.len();
            state_columns.push(at..at + n);
            at += n;
        }
        if at != partial_schema.fields().len() {
            return Err(SluiceError::internal("aggregate state fields do not add up to the partial schema"));
        }
        Ok(Self {
            parts,
            partial_schema,
            key_schema,
            output_schema,
            state_columns,
            num_keys,
            event_time,
            panes: BTreeMap::new(),
            changed: BTreeSet::new(),
            removed_groups: 0,
            state: OperatorState::new("aggregate", config),
        })
    }

    fn new_pane(&self) -> Result<Pane> {
        let accumulators =
            self.parts.aggr.iter().map(|a| Ok(a.create_groups_accumulator()?)).collect::<Result<Vec<_>>>()?;
        Ok(Pane {
            groups: new_group_values(Arc::clone(&self.key_schema), &GroupOrdering::None)?,
            keys: vec![],
            accumulators,
            len: 0,
        })
    }

    /// Merge partial states (rows of `partial_schema`) into their panes.
    fn feed(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ends = event_time_micros(batch.column(self.event_time.index))?;
        let ends = ends.values();
        let first = ends[0];
        if ends.iter().all(|e| *e == first) {
            return self.feed_pane(first, batch);
        }
        let mut rows: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, e) in ends.iter().enumerate() {
            rows.entry(*e).or_default().push(i as u32);
        }
        for (end, idx) in rows {
            self.feed_pane(end, &take_record_batch(batch, &UInt32Array::from(idx))?)?;
        }
        Ok(())
    }

    fn feed_pane(&mut self, end: i64, batch: &RecordBatch) -> Result<()> {
        if !self.panes.contains_key(&end) {
            let pane = self.new_pane()?;
            self.panes.insert(end, Mutex::new(pane));
        }
        let pane = self.panes.get_mut(&end).ok_or_else(|| SluiceError::internal("pane vanished"))?;
        let pane = unlocked(pane)?;
        let keys = &batch.columns()[..self.num_keys];
        let mut groups = Vec::with_capacity(batch.num_rows());
        pane.groups.intern(keys, &mut groups)?;
        let total = pane.groups.len();
        if total > pane.len {
            // Group ids are handed out in order of first appearance: the
            // first row carrying each new id holds its key.
            let mut first = Vec::with_capacity(total - pane.len);
            let mut next = pane.len;
            for (row, g) in groups.iter().enumerate() {
                if *g == next {
                    first.push(row as u32);
                    next += 1;
                }
            }
            let added = take_arrays(keys, &UInt32Array::from(first), None)?;
            pane.keys.push(RecordBatch::try_new(Arc::clone(&self.key_schema), added)?);
            pane.len = total;
        }
        for (acc, cols) in pane.accumulators.iter_mut().zip(&self.state_columns) {
            acc.merge_batch(&batch.columns()[cols.clone()], &groups, total)?;
        }
        self.changed.insert(end);
        Ok(())
    }

    /// The final rows of a closed pane.
    fn fire(&self, mut pane: Pane) -> Result<RecordBatch> {
        let keys = concat_batches(&self.key_schema, &pane.keys)?;
        let mut columns: Vec<ArrayRef> = keys.columns().to_vec();
        for acc in &mut pane.accumulators {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.output_schema), columns)?)
    }

    /// The pane's keys and partial states as one batch, leaving the pane as
    /// it was (DataFusion's `state` empties an accumulator; its output is
    /// merged straight back).
    fn snapshot(&self, pane: &mut Pane) -> Result<RecordBatch> {
        let keys = concat_batches(&self.key_schema, &pane.keys)?;
        pane.keys = vec![keys.clone()];
        let mut columns: Vec<ArrayRef> = keys.columns().to_vec();
        let ids: Vec<usize> = (0..pane.len).collect();
        for acc in &mut pane.accumulators {
            let state = acc.state(EmitTo::All)?;
            acc.merge_batch(&state, &ids, pane.len)?;
            columns.extend(state);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.partial_schema), columns)?)
    }

    fn groups(&mut self) -> Result<u64> {
        self.panes.values_mut().map(|p| Ok(unlocked(p)?.len as u64)).sum()
    }
}

/// The pane behind its (never locked) mutex.
fn unlocked(pane: &mut Mutex<Pane>) -> Result<&mut Pane> {
    pane.get_mut().map_err(|_| SluiceError::internal("a window pane was poisoned by a panic"))
}

/// The store key of the pane ending at `end` (µs).
fn pane_key(end: i64) -> [u8; 8] {
    end.to_be_bytes()
}

fn damaged(why: impl std::fmt::Display) -> SluiceError {
    SluiceError::plan(format!(
        "a stored window pane cannot be read ({why}): the state is damaged; restore the checkpoint from a backup or \
         use a new checkpoint location"
    ))
}

/// The batches of a stored pane, checked against `schema`.
pub(crate) fn decode_pane(bytes: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(damaged)?;
    let types = |s: &Schema| s.fields().iter().map(|f| f.data_type().clone()).collect::<Vec<_>>();
    if types(&reader.schema()) != types(schema) {
        return Err(damaged("its columns are not those of this aggregation's state"));
    }
    let mut out = vec![];
    for b in reader {
        let b = b.map_err(damaged)?;
        out.push(RecordBatch::try_new(Arc::clone(schema), b.columns().to_vec()).map_err(damaged)?);
    }
    Ok(out)
}

#[async_trait]
impl StatefulOperator for PaneAggregate {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        _task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        // Late rows were dropped before the partial stage.
        for b in &input {
            self.feed(b)?;
        }
        let mut out = vec![];
        if let Some(wm) = ctx.watermark {
            let wm_us = wm.micros();
            while let Some(entry) = self.panes.first_entry() {
                if *entry.key() > wm_us {
                    break;
                }
                let (end, pane) = entry.remove_entry();
                let pane = pane.into_inner().map_err(|_| SluiceError::internal("a window pane was poisoned"))?;
                self.changed.remove(&end);
                self.removed_groups += pane.len as u64;
                self.state.store_mut()?.remove(&pane_key(end));
                out.push(self.fire(pane)?);
            }
        }
        Ok(out)
    }

    async fn restore(
        &mut self,
        dir: CheckpointDir,
        version: Option<u64>,
        pool: &Arc<dyn MemoryPool>,
        partition: usize,
        reset: bool,
    ) -> Result<()> {
        self.state.restore(dir, version, pool, partition, reset).await?;
        self.panes.clear();
        let mut stored = vec![];
        for (k, v) in self.state.store()?.iter() {
            let end: [u8; 8] = k.try_into().map_err(|_| damaged("its key is not a window end"))?;
            stored.push((i64::from_be_bytes(end), decode_pane(v, &self.partial_schema)?));
        }
        for (end, batches) in stored {
            for b in batches {
                if event_time_micros(b.column(self.event_time.index))?.values().iter().any(|e| *e != end) {
                    return Err(damaged("it holds rows of another window"));
                }
                self.feed_pane(end, &b)?;
            }
        }
        self.changed.clear();
        self.removed_groups = 0;
        Ok(())
    }

    async fn commit(&mut self, version: u64) -> Result<StateOperatorProgress> {
        let mut updated = 0;
        for end in std::mem::take(&mut self.changed) {
            let Some(mut pane) = self.panes.remove(&end) else { continue };
            let snapshot = self.snapshot(unlocked(&mut pane)?);
            self.panes.insert(end, pane);
            let snapshot = snapshot?;
            updated += snapshot.num_rows() as u64;
            self.state.store_mut()?.put(pane_key(end), super::live_chunks::encode(&snapshot)?);
        }
        let mut progress = self.state.commit(version).await?;
        progress.num_rows_total = self.groups()?;
        progress.num_rows_updated = updated;
        progress.num_rows_removed = std::mem::take(&mut self.removed_groups);
        Ok(progress)
    }

    fn rebuilt_by_replay(&self) -> bool {
        true
    }

    async fn end_uncommitted(&mut self) -> Result<StateOperatorProgress> {
        // The changed panes stay marked: the next commit writes each once.
        let mut progress = self.state.uncommitted()?;
        progress.num_rows_total = self.groups()?;
        progress.num_rows_removed = std::mem::take(&mut self.removed_groups);
        Ok(progress)
    }

    fn watermark_driven(&self) -> bool {
        true
    }

    fn state_layout(&self) -> StateLayout {
        let fields = self.partial_schema.fields();
        StateLayout {
            operator: PANE_AGGREGATE.into(),
            keys: StateLayout::describe(&fields[..self.num_keys]),
            values: StateLayout::describe(&fields[self.num_keys..]),
        }
    }
}
