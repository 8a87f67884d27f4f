//! [`LiveAggregate`]: an update- or complete-mode aggregation without an
//! event-time key, whose groups are a live DataFusion group table.
//!
//! The group keys are interned once, in a [`GroupValues`], the structure
//! DataFusion's own hash aggregation uses. Each group's current partial
//! state is a row of an immutable Arrow batch ([`StateChunks`]). A batch:
//! - interns its partial states' keys, and numbers the groups it touches;
//! - gathers those groups' stored states (`interleave` from the chunks),
//!   merges them and the batch's partial states into fresh
//!   `GroupsAccumulator`s over just those groups, and takes their `state`:
//!   the new states, one row per changed group;
//! - writes that batch as one new chunk (one state-store entry, Arrow IPC),
//!   and emits the changed groups' values (update mode) by evaluating a copy.
//!
//! DataFusion's `evaluate` and `state` consume an accumulator; the stored
//! state rows are what lets a group be re-evaluated every batch. The cost of
//! a batch, and of its commit, follows the groups it changed, not the groups
//! in the store.
//!
//! `COUNT(DISTINCT x)` (any aggregate over `DISTINCT x`) keeps its distinct
//! values as an interned `GroupValues` of (group, x) pairs. The values of
//! pairs new in the batch feed the aggregate without `DISTINCT` (its twin),
//! whose state is what the chunks hold. The new pairs are stored as
//! append-only chunks of (keys, x).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{concat_batches, take, take_arrays};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;

use super::live_chunks::{decode, encode, Loc, StateChunks, SMALL_CHUNK_ROWS};
use super::{AggregateParts, BatchContext, EventTimeKey, OperatorState, StateLayout, StatefulOperator};
use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::progress::StateOperatorProgress;
use crate::state::{StateStore, StateStoreConfig};

/// The operator kind recorded in the checkpoint's layout and state schema.
pub const LIVE_AGGREGATE: &str = "live_aggregate";

/// The distinct values of one `DISTINCT` aggregate.
struct DistinctPairs {
    /// The aggregate's position.
    agg: usize,
    /// Interned (group id, value) pairs.
    pairs: Box<dyn GroupValues>,
    /// Schema of the interned pairs: group id, value.
    pair_schema: SchemaRef,
    /// Schema of the stored pairs: the keys, then the value.
    schema: SchemaRef,
    /// Stored pair chunks: id and rows, oldest first.
    chunks: Vec<(u32, RecordBatch)>,
}

/// The interned tables (behind a `Mutex` only to make the operator `Sync`;
/// reached through `&mut self`, never locked).
struct Tables {
    groups: Box<dyn GroupValues>,
    distinct: Vec<DistinctPairs>,
}

/// Update- and complete-mode aggregation over live groups.
pub struct LiveAggregate {
    /// The aggregates as merged: a `DISTINCT` one replaced by its twin.
    merged: Vec<Arc<AggregateFunctionExpr>>,
    /// Schema of the input partial states.
    partial_schema: SchemaRef,
    /// Schema of a group's stored state: keys, then the merged states.
    live_schema: SchemaRef,
    output_schema: SchemaRef,
    /// Columns of each aggregate's state in `partial_schema`.
    input_columns: Vec<Range<usize>>,
    /// Columns of each merged aggregate's state in `live_schema`.
    live_columns: Vec<Range<usize>>,
    num_keys: usize,
    mode: OutputMode,
    key_schema: SchemaRef,
    tables: Mutex<Tables>,
    chunks: StateChunks,
    /// Per group id: its position among the batch's changed groups.
    scratch: Vec<u32>,
    updated: u64,
    state: OperatorState,
}

impl std::fmt::Debug for LiveAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveAggregate").field("groups", &self.chunks.locs.len()).finish()
    }
}

/// `a` without `DISTINCT` (itself when it has none).
fn twin(a: &Arc<AggregateFunctionExpr>, input: &SchemaRef) -> Result<Arc<AggregateFunctionExpr>> {
    if !a.is_distinct() {
        return Ok(Arc::clone(a));
    }
    let built = AggregateExprBuilder::new(Arc::new(a.fun().clone()), a.expressions())
        .schema(Arc::clone(input))
        .alias(a.name())
        .with_ignore_nulls(a.ignore_nulls())
        .build()?;
    Ok(Arc::new(built))
}

/// The aggregation's parts with every `DISTINCT` aggregate replaced by its
/// twin: those whose Partial stage's schema is a live aggregation's stored
/// state.
pub(crate) fn merged_parts(parts: &AggregateParts) -> Result<AggregateParts> {
    Ok(AggregateParts {
        aggr: parts.aggr.iter().map(|a| twin(a, &parts.input_schema)).collect::<Result<_>>()?,
        ..parts.clone()
    })
}

fn stage_schema(
    mode: AggregateMode,
    group_by: PhysicalGroupBy,
    aggr: &[Arc<AggregateFunctionExpr>],
    input: SchemaRef,
    original: &SchemaRef,
) -> Result<SchemaRef> {
    let exec = AggregateExec::try_new(
        mode,
        group_by,
        aggr.to_vec(),
        vec![None; aggr.len()],
        Arc::new(EmptyExec::new(input)),
        Arc::clone(original),
    )?;
    Ok(exec.schema())
}

impl LiveAggregate {
    /// Whether an aggregation planned with these parts runs live: update or
    /// complete mode, no event-time key (no eviction), at least one key,
    /// fed with partial states, every aggregate without `ORDER BY` and with
    /// a `GroupsAccumulator` (a `DISTINCT` one: one argument, and its twin
    /// has one, returning the same type).
    pub fn applies(
        parts: &AggregateParts,
        event_time: Option<&EventTimeKey>,
        mode: OutputMode,
        partial_input: bool,
    ) -> bool {
        let supported = |a: &Arc<AggregateFunctionExpr>| {
            if !a.order_bys().is_empty() {
                return false;
            }
            if !a.is_distinct() {
                return a.groups_accumulator_supported();
            }
            a.expressions().len() == 1
                && twin(a, &parts.input_schema)
                    .is_ok_and(|t| t.groups_accumulator_supported() && t.field().data_type() == a.field().data_type())
        };
        event_time.is_none()
            && matches!(mode, OutputMode::Update | OutputMode::Complete)
            && partial_input
            && !parts.group_by.expr().is_empty()
            && parts.aggr.iter().all(supported)
    }

    /// The operator for `parts` (for which [`Self::applies`] holds).
    pub fn try_new(parts: AggregateParts, mode: OutputMode, config: StateStoreConfig) -> Result<Self> {
        let num_keys = parts.group_by.expr().len();
        let input = Arc::clone(&parts.input_schema);
        let partial_schema =
            stage_schema(AggregateMode::Partial, parts.group_by.clone(), &parts.aggr, Arc::clone(&input), &input)?;
        let output_schema = stage_schema(
            AggregateMode::Final,
            parts.group_by.as_final(),
            &parts.aggr,
            Arc::clone(&partial_schema),
            &input,
        )?;
        let merged = merged_parts(&parts)?.aggr;
        let live_schema =
            stage_schema(AggregateMode::Partial, parts.group_by.clone(), &merged, Arc::clone(&input), &input)?;
        let ranges = |aggr: &[Arc<AggregateFunctionExpr>], total: usize| -> Result<Vec<Range<usize>>> {
            let mut out = vec![];
            let mut at = num_keys;
            for a in aggr {
                let n = a.state_fields()?.len();
                out.push(at..at + n);
                at += n;
            }
            if at != total {
                return Err(SluiceError::internal("aggregate state fields do not add up to the partial schema"));
            }
            Ok(out)
        };
        let input_columns = ranges(&parts.aggr, partial_schema.fields().len())?;
        let live_columns = ranges(&merged, live_schema.fields().len())?;
        let key_schema = Arc::new(Schema::new(partial_schema.fields()[..num_keys].to_vec()));
        let mut distinct = vec![];
        for (i, a) in parts.aggr.iter().enumerate().filter(|(_, a)| a.is_distinct()) {
            let arg = a
                .expressions()
                .first()
                .ok_or_else(|| SluiceError::internal("a DISTINCT aggregate without an argument"))?
                .data_type(&input)?;
            let pair_schema = Arc::new(Schema::new(vec![
                Field::new("group", datafusion::arrow::datatypes::DataType::UInt64, false),
                Field::new("value", arg.clone(), true),
            ]));
            let mut fields = key_schema.fields().to_vec();
            fields.push(Arc::new(Field::new(format!("__distinct{i}"), arg, true)));
            distinct.push(DistinctPairs {
                agg: i,
                pairs: new_group_values(Arc::clone(&pair_schema), &GroupOrdering::None)?,
                pair_schema,
                schema: Arc::new(Schema::new(fields)),
                chunks: vec![],
            });
        }
        Ok(Self {
            merged,
            partial_schema,
            live_schema,
            output_schema,
            input_columns,
            live_columns,
            num_keys,
            mode,
            tables: Mutex::new(Tables {
                groups: new_group_values(Arc::clone(&key_schema), &GroupOrdering::None)?,
                distinct,
            }),
            key_schema,
            chunks: StateChunks::default(),
            scratch: vec![],
            updated: 0,
            state: OperatorState::new("aggregate", config),
        })
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.merged.iter().map(|a| Ok(a.create_groups_accumulator()?)).collect()
    }

    /// Merge one batch of partial states; returns the changed groups' new
    /// stored states (rows of `live_schema`).
    fn feed(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let tables = self.tables.get_mut().map_err(|_| SluiceError::internal("the group table was poisoned"))?;
        let keys = &batch.columns()[..self.num_keys];
        let before = tables.groups.len();
        let mut gids = Vec::with_capacity(batch.num_rows());
        tables.groups.intern(keys, &mut gids)?;
        if tables.groups.len() > u32::MAX as usize {
            return Err(SluiceError::unsupported("an aggregation state partition holds more than 4 billion groups"));
        }
        // Number the changed groups in order of first appearance.
        self.scratch.resize(tables.groups.len(), u32::MAX);
        let mut changed: Vec<usize> = vec![];
        let mut first_row: Vec<u32> = vec![];
        let mut local = Vec::with_capacity(gids.len());
        for (row, g) in gids.iter().enumerate() {
            if self.scratch[*g] == u32::MAX {
                self.scratch[*g] = changed.len() as u32;
                changed.push(*g);
                first_row.push(row as u32);
            }
            local.push(self.scratch[*g] as usize);
        }
        let k = changed.len();
        let mut accs = self.merged.iter().map(|a| Ok(a.create_groups_accumulator()?)).collect::<Result<Vec<_>>>()?;
        // Their stored states.
        let (stored, stored_local): (Vec<usize>, Vec<usize>) =
            changed.iter().enumerate().filter(|(_, g)| **g < before).map(|(l, g)| (*g, l)).unzip();
        if !stored.is_empty() {
            let old = self.chunks.gather(&stored, self.num_keys..self.live_schema.fields().len())?;
            for (acc, cols) in accs.iter_mut().zip(&self.live_columns) {
                let cols = (cols.start - self.num_keys)..(cols.end - self.num_keys);
                acc.merge_batch(&old[cols], &stored_local, k)?;
            }
        }
        // The batch's partial states.
        let key_rows = UInt32Array::from(first_row);
        let changed_keys = take_arrays(keys, &key_rows, None)?;
        for (i, acc) in accs.iter_mut().enumerate() {
            let cols = &batch.columns()[self.input_columns[i].clone()];
            match tables.distinct.iter_mut().find(|d| d.agg == i) {
                None => acc.merge_batch(cols, &local, k)?,
                Some(d) => {
                    let lists = cols
                        .first()
                        .ok_or_else(|| SluiceError::internal("a DISTINCT aggregate's partial state has no column"))?;
                    let new = new_distinct(d, lists, &gids, &local, keys)?;
                    // An accumulator sizes its state by the groups it was
                    // told of: every changed group, even with no new value.
                    let none = datafusion::arrow::array::new_empty_array(d.pair_schema.field(1).data_type());
                    acc.update_batch(&[none], &[], None, k)?;
                    if let Some((values, owners, stored)) = new {
                        acc.update_batch(&[values], &owners, None, k)?;
                        let id = self.chunks.take_id()?;
                        let store = self.state.store_mut()?;
                        store.put_batch_blob(pair_key(d.agg, id), stored.clone(), encode);
                        d.chunks.push((id, stored));
                        merge_pair_chunks(d, store, &mut self.chunks)?;
                    }
                }
            }
        }
        for g in &changed {
            self.scratch[*g] = u32::MAX;
        }
        let mut columns = changed_keys;
        for acc in &mut accs {
            columns.extend(acc.state(EmitTo::All)?);
        }
        let states = RecordBatch::try_new(Arc::clone(&self.live_schema), columns)?;
        let id = self.chunks.take_id()?;
        let groups = changed.iter().map(|g| *g as u32).collect();
        self.chunks.install(id, states.clone(), groups, self.state.store_mut()?)?;
        self.updated += k as u64;
        Ok(states)
    }

    /// The output rows of stored states (rows of `live_schema`).
    fn evaluate(&self, states: &RecordBatch) -> Result<RecordBatch> {
        let n = states.num_rows();
        let ids: Vec<usize> = (0..n).collect();
        let mut columns: Vec<ArrayRef> = states.columns()[..self.num_keys].to_vec();
        for (mut acc, cols) in self.accumulators()?.into_iter().zip(&self.live_columns) {
            acc.merge_batch(&states.columns()[cols.clone()], &ids, n)?;
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.output_schema), columns)?)
    }

    fn memory_bytes(&mut self) -> usize {
        let tables = match self.tables.get_mut() {
            Ok(t) => {
                t.groups.size()
                    + t.distinct
                        .iter()
                        .map(|d| {
                            d.pairs.size() + d.chunks.iter().map(|(_, b)| b.get_array_memory_size()).sum::<usize>()
                        })
                        .sum::<usize>()
            }
            Err(_) => 0,
        };
        tables + self.chunks.memory_bytes() + self.scratch.len() * 4
    }
}

/// The store key of pair chunk `id` of aggregate `agg`.
fn pair_key(agg: usize, id: u32) -> Vec<u8> {
    let mut k = vec![b'd'];
    k.extend_from_slice(&(agg as u32).to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Intern a batch's distinct values of one aggregate (its partial state, a
/// list of values per row); returns the values of pairs not seen before,
/// their groups' batch positions, and the new pairs to store (keys, value).
#[allow(clippy::type_complexity)]
fn new_distinct(
    d: &mut DistinctPairs,
    lists: &ArrayRef,
    gids: &[usize],
    local: &[usize],
    keys: &[ArrayRef],
) -> Result<Option<(ArrayRef, Vec<usize>, RecordBatch)>> {
    let lists = lists
        .as_list_opt::<i32>()
        .ok_or_else(|| SluiceError::internal("a DISTINCT aggregate's partial state is not a list"))?;
    let offsets = lists.value_offsets();
    let mut value_rows = vec![];
    let mut owner_rows = vec![];
    for row in 0..lists.len() {
        if lists.is_null(row) {
            continue;
        }
        for j in offsets[row]..offsets[row + 1] {
            value_rows.push(j as u32);
            owner_rows.push(row as u32);
        }
    }
    if value_rows.is_empty() {
        return Ok(None);
    }
    let values = take(lists.values(), &UInt32Array::from(value_rows), None)?;
    let owners: ArrayRef = Arc::new(UInt64Array::from_iter_values(owner_rows.iter().map(|r| gids[*r as usize] as u64)));
    let before = d.pairs.len();
    let mut ids = vec![];
    d.pairs.intern(&[owners, Arc::clone(&values)], &mut ids)?;
    if d.pairs.len() == before {
        return Ok(None);
    }
    let mut new_rows = vec![];
    let mut next = before;
    for (j, id) in ids.iter().enumerate() {
        if *id == next {
            new_rows.push(j as u32);
            next += 1;
        }
    }
    let new_rows = UInt32Array::from(new_rows);
    let new_values = take(&values, &new_rows, None)?;
    let new_owner_rows: Vec<u32> = new_rows.values().iter().map(|j| owner_rows[*j as usize]).collect();
    let new_local = new_owner_rows.iter().map(|r| local[*r as usize]).collect();
    let mut columns = take_arrays(keys, &UInt32Array::from(new_owner_rows), None)?;
    columns.push(Arc::clone(&new_values));
    let stored = RecordBatch::try_new(Arc::clone(&d.schema), columns)?;
    Ok(Some((new_values, new_local, stored)))
}

/// Merge the newest pair chunks like a binary counter while they are small.
fn merge_pair_chunks(d: &mut DistinctPairs, store: &mut StateStore, ids: &mut StateChunks) -> Result<()> {
    while d.chunks.len() >= 2 {
        let (b, rb) = &d.chunks[d.chunks.len() - 1];
        let (a, ra) = &d.chunks[d.chunks.len() - 2];
        let (ra, rb) = (ra.num_rows(), rb.num_rows());
        if ra >= SMALL_CHUNK_ROWS || rb >= SMALL_CHUNK_ROWS || rb * 2 < ra {
            break;
        }
        let (a, b) = (*a, *b);
        let batches: Vec<RecordBatch> = d.chunks.drain(d.chunks.len() - 2..).map(|(_, b)| b).collect();
        let merged = concat_batches(&d.schema, &batches)?;
        store.remove(&pair_key(d.agg, a));
        store.remove(&pair_key(d.agg, b));
        let id = ids.take_id()?;
        store.put_batch_blob(pair_key(d.agg, id), merged.clone(), encode);
        d.chunks.push((id, merged));
    }
    Ok(())
}

#[async_trait]
impl StatefulOperator for LiveAggregate {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        _task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        _ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let input = concat_batches(&self.partial_schema, &input)?;
        let mut out = vec![];
        if input.num_rows() > 0 {
            let states = self.feed(&input)?;
            if self.mode == OutputMode::Update {
                out.push(self.evaluate(&states)?);
            }
        }
        if self.mode == OutputMode::Complete {
            for states in self.chunks.live_batches()? {
                out.push(self.evaluate(&states)?);
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
        self.chunks.clear();
        let tables = self.tables.get_mut().map_err(|_| SluiceError::internal("the group table was poisoned"))?;
        tables.groups = new_group_values(Arc::clone(&self.key_schema), &GroupOrdering::None)?;
        let mut state_chunks = vec![];
        let mut pair_chunks = vec![];
        let unknown = || {
            SluiceError::plan(
                "a stored aggregation state entry has an unknown key: the state is damaged, or was written by another \
             operator; restore the checkpoint from a backup or use a new checkpoint location",
            )
        };
        let store = self.state.store()?;
        if store.iter().next().is_some() {
            return Err(unknown());
        }
        for k in store.blob_keys() {
            let v = store.read_blob(&k).await?.ok_or_else(unknown)?;
            let v = v.as_slice();
            match k.as_slice() {
                [b'c', id @ ..] => {
                    let id = u32::from_be_bytes(id.try_into().map_err(|_| unknown())?);
                    state_chunks.push((id, decode(v, &self.live_schema, "aggregation state chunk")?));
                }
                [b'd', rest @ ..] if rest.len() == 8 => {
                    let agg = u32::from_be_bytes(rest[..4].try_into().map_err(|_| unknown())?) as usize;
                    let id = u32::from_be_bytes(rest[4..].try_into().map_err(|_| unknown())?);
                    let d = tables.distinct.iter().position(|d| d.agg == agg).ok_or_else(unknown)?;
                    pair_chunks.push((d, id, decode(v, &tables.distinct[d].schema, "distinct-value chunk")?));
                }
                _ => return Err(unknown()),
            }
        }
        state_chunks.sort_by_key(|(id, _)| *id);
        pair_chunks.sort_by_key(|(_, id, _)| *id);
        let mut next = 0;
        let mut gids = vec![];
        for (id, batch) in state_chunks {
            tables.groups.intern(&batch.columns()[..self.num_keys], &mut gids)?;
            let groups: Vec<u32> = gids.iter().map(|g| *g as u32).collect();
            for (row, g) in gids.iter().enumerate() {
                if *g >= self.chunks.locs.len() {
                    self.chunks.locs.resize(*g + 1, Loc::NONE);
                }
                let old = self.chunks.locs[*g];
                if let Some(c) = self.chunks.chunks.get_mut(&old.chunk) {
                    c.live -= 1;
                }
                self.chunks.locs[*g] = Loc { chunk: id, row: row as u32 };
            }
            let live = batch.num_rows();
            self.chunks.chunks.insert(id, super::live_chunks::Chunk { batch, groups, live });
            next = next.max(id + 1);
        }
        for d in &mut tables.distinct {
            d.pairs = new_group_values(Arc::clone(&d.pair_schema), &GroupOrdering::None)?;
            d.chunks.clear();
        }
        for (d, id, batch) in pair_chunks {
            tables.groups.intern(&batch.columns()[..self.num_keys], &mut gids)?;
            let owners: ArrayRef = Arc::new(UInt64Array::from_iter_values(gids.iter().map(|g| *g as u64)));
            let pairs = &mut tables.distinct[d];
            let mut ids = vec![];
            pairs.pairs.intern(&[owners, Arc::clone(batch.column(self.num_keys))], &mut ids)?;
            pairs.chunks.push((id, batch));
            next = next.max(id + 1);
        }
        if tables.groups.len() != self.chunks.locs.len() || self.chunks.locs.contains(&Loc::NONE) {
            return Err(SluiceError::plan(
                "the stored aggregation state has distinct values of a group with no state: the state is damaged; \
                 restore the checkpoint from a backup or use a new checkpoint location",
            ));
        }
        self.chunks.next_id = next;
        self.scratch.clear();
        self.updated = 0;
        Ok(())
    }

    async fn commit(&mut self, version: u64) -> Result<StateOperatorProgress> {
        let mut progress = self.state.commit(version).await?;
        progress.num_rows_total = self.chunks.locs.len() as u64;
        progress.num_rows_updated = std::mem::take(&mut self.updated);
        progress.num_rows_removed = 0;
        progress.memory_used_bytes += self.memory_bytes() as u64;
        Ok(progress)
    }

    fn rebuilt_by_replay(&self) -> bool {
        true
    }

    async fn end_uncommitted(&mut self) -> Result<StateOperatorProgress> {
        // New chunks stay pending in the store until the next commit; one
        // superseded before then is never written.
        let mut progress = self.state.uncommitted()?;
        progress.num_rows_total = self.chunks.locs.len() as u64;
        progress.num_rows_updated = std::mem::take(&mut self.updated);
        progress.num_rows_removed = 0;
        progress.memory_used_bytes += self.memory_bytes() as u64;
        Ok(progress)
    }

    fn watermark_driven(&self) -> bool {
        false
    }

    fn state_layout(&self) -> StateLayout {
        let fields = self.live_schema.fields();
        let mut values = StateLayout::describe(&fields[self.num_keys..]);
        if let Ok(tables) = self.tables.lock() {
            for d in &tables.distinct {
                values.extend(StateLayout::describe(&d.schema.fields()[self.num_keys..]));
            }
        }
        StateLayout { operator: LIVE_AGGREGATE.into(), keys: StateLayout::describe(&fields[..self.num_keys]), values }
    }
}

/// The current stored state of every group in `store` (rows of
/// `live_schema`: keys, then the merged aggregates' states), for reading
/// the state without the operator.
pub(crate) async fn stored_states(
    store: &StateStore,
    live_schema: &SchemaRef,
    num_keys: usize,
) -> Result<Vec<RecordBatch>> {
    use datafusion::arrow::row::{RowConverter, SortField};
    let mut chunks = vec![];
    for k in store.blob_keys() {
        if let [b'c', id @ ..] = k.as_slice() {
            let v = store.read_blob(&k).await?.ok_or_else(|| {
                SluiceError::plan("a stored aggregation state chunk is missing: the state is damaged")
            })?;
            let v = v.as_slice();
            let id: [u8; 4] =
                id.try_into().map_err(|_| SluiceError::plan("a stored aggregation state key is damaged"))?;
            chunks.push((u32::from_be_bytes(id), decode(v, live_schema, "aggregation state chunk")?));
        }
    }
    // Newest first: a group's first row seen is its current state.
    chunks.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    let conv = RowConverter::new(
        live_schema.fields()[..num_keys].iter().map(|f| SortField::new(f.data_type().clone())).collect(),
    )?;
    let mut seen = datafusion::common::HashSet::new();
    let mut out = vec![];
    for (_, batch) in chunks {
        let rows = conv.convert_columns(&batch.columns()[..num_keys])?;
        let keep: Vec<u32> =
            (0..batch.num_rows()).filter(|i| seen.insert(rows.row(*i).owned())).map(|i| i as u32).collect();
        out.push(datafusion::arrow::compute::take_record_batch(&batch, &UInt32Array::from(keep))?);
    }
    Ok(out)
}
