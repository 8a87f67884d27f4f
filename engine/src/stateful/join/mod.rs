//! [`StreamingJoin`]: the stream-stream symmetric hash join, with Spark's
//! semantics (`StreamingSymmetricHashJoinExec`).
//!
//! Each batch, per state partition (both inputs are hash-partitioned on the
//! join keys):
//! 1. Rows late for their side (event time <= the watermark) are dropped.
//! 2. The new left rows join the stored right rows, and are stored.
//! 3. The new right rows join the stored left rows (this batch's included,
//!    so every pair is found once), and are stored unless the watermark
//!    evicts them at once.
//! 4. State the watermark has passed is evicted; outer joins emit their
//!    evicted rows that never matched, NULL-padded, exactly once.

mod chunk;
mod columns;
mod side;
pub(crate) use columns::stored_rows;
pub(crate) use side::{value_matched, value_row, value_time};

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;

use super::event_time::event_time_micros;
use super::{BatchContext, OperatorState, StateLayout, StatefulOperator};
use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::progress::StateOperatorProgress;
use crate::state::StateStoreConfig;
use chunk::KeyHashes;
use columns::ColumnSide;
use side::SideState;

const LEFT: usize = 0;
const RIGHT: usize = 1;

/// How the watermark evicts one side's state: a row goes when `time`
/// (over the side's rows; a window by its end) <= watermark + `offset_us`.
#[derive(Debug, Clone)]
pub struct Evict {
    /// The eviction time of a row.
    pub time: Arc<dyn PhysicalExpr>,
    /// Offset to the watermark, in microseconds.
    pub offset_us: i64,
    /// The rule as `EXPLAIN` shows it.
    pub describe: String,
}

/// One input of a join.
#[derive(Debug, Clone)]
pub struct SideSpec {
    /// The sources it reads (for the state layout: a swap of sides is a
    /// change).
    pub sources: String,
    /// Schema of its rows.
    pub schema: SchemaRef,
    /// Equi-key expressions over its rows.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The key columns, for `EXPLAIN` and the state layout.
    pub key_names: Vec<String>,
    /// The conjuncts of the condition that read only this side.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The watermarked event-time column: rows at or below the watermark
    /// are late.
    pub event_time: Option<usize>,
    /// State eviction (`None`: kept for ever).
    pub evict: Option<Evict>,
}

/// A planned stream-stream join.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// Inner, left/right/full outer or left semi.
    pub join_type: JoinType,
    /// Left input.
    pub left: SideSpec,
    /// Right input.
    pub right: SideSpec,
    /// The rest of the condition, over [`Self::joined_schema`].
    pub pair_filter: Option<Arc<dyn PhysicalExpr>>,
    /// Left fields then right fields, all nullable: the schema of pairs
    /// (and of the rows dropped as late, the other side NULL).
    pub joined_schema: SchemaRef,
    /// Output schema.
    pub output: SchemaRef,
    /// State store settings.
    pub config: StateStoreConfig,
}

impl JoinSpec {
    /// Left fields then right fields, all nullable.
    pub fn joined(left: &Schema, right: &Schema) -> SchemaRef {
        let fields: Vec<Field> =
            left.fields().iter().chain(right.fields().iter()).map(|f| f.as_ref().clone().with_nullable(true)).collect();
        Arc::new(Schema::new(fields))
    }

    fn side(&self, side: usize) -> &SideSpec {
        if side == LEFT {
            &self.left
        } else {
            &self.right
        }
    }

    /// Whether the side's rows are emitted without a match (outer side).
    fn preserves(&self, side: usize) -> bool {
        match self.join_type {
            JoinType::Left => side == LEFT,
            JoinType::Right => side == RIGHT,
            JoinType::Full => true,
            _ => false,
        }
    }

    /// Whether a stored row's matched flag is needed.
    pub(crate) fn tracks_matches(&self, side: usize) -> bool {
        self.preserves(side) || (self.join_type == JoinType::LeftSemi && side == LEFT)
    }

    /// Whether the watermark evicts state (a no-data batch can have work).
    pub fn watermark_driven(&self) -> bool {
        self.left.evict.is_some() || self.right.evict.is_some()
    }

    /// How far behind the input watermark the join's output rows may be in
    /// event time (≤ 0): an operator after the join judges by the watermark
    /// shifted by it (Spark's `produceOutputWatermark`).
    pub fn output_watermark_offset_us(&self) -> i64 {
        [&self.left.evict, &self.right.evict].into_iter().flatten().map(|e| e.offset_us).fold(0, i64::min)
    }

    /// The rule by which the watermark evicts state, for `EXPLAIN`.
    pub fn watermark_rule(&self) -> String {
        let one = |name: &str, s: &SideSpec| match &s.evict {
            Some(e) => format!("{name}: {}", e.describe),
            None => format!("{name}: never (state grows without bound)"),
        };
        format!("[{}; {}]", one("left", &self.left), one("right", &self.right))
    }
}

/// The suffix of the layout operator of a join whose state is in chunks.
const IN_CHUNKS: &str = " in chunks";

/// Whether a stored layout's operator is that of a join whose state is in
/// the row store (written before chunks).
pub fn is_row_store_layout(operator: &str) -> bool {
    operator.starts_with("stream-stream join (") && !operator.ends_with(IN_CHUNKS)
}

/// The stored rows of the other side that a probe found.
#[derive(Debug, Default)]
pub(super) struct Probe {
    /// Probe row and found row of each candidate pair.
    pair_this: Vec<u32>,
    pair_other: Vec<u32>,
    /// The found rows.
    stored: Option<RecordBatch>,
    /// Whether each found row had matched before.
    matched: Vec<bool>,
    /// An id of each found row (equal for the same stored row).
    ids: Vec<u64>,
    /// Each found row's store key (row store only).
    keys: Vec<Vec<u8>>,
}

/// Both sides' state: in chunks, or (checkpoints from before) in the row
/// store.
#[derive(Debug)]
enum Sides {
    Columns([ColumnSide; 2]),
    Rows([SideState; 2]),
}

/// The stream-stream join of one state partition.
#[derive(Debug)]
pub struct StreamingJoin {
    spec: JoinSpec,
    key_convs: [datafusion::arrow::row::RowConverter; 2],
    sides: Sides,
    state: OperatorState,
    /// Sequence number of the next row stored (batch id << 32, counting up).
    seq: u64,
}

/// Rows of one side, which of them pass its own conjuncts, and which of
/// those have no NULL key (can match).
struct Input {
    batch: RecordBatch,
    keys: KeyHashes,
    /// The keys in row format (the row store's keys only).
    rows: Option<datafusion::arrow::row::Rows>,
    passes: Vec<bool>,
    joinable: Vec<bool>,
}

impl StreamingJoin {
    /// The join `spec` describes, without state, keeping it in chunks.
    pub fn try_new(spec: JoinSpec) -> Result<Self> {
        let side = |s: usize| {
            let (schema, keys) = (&spec.side(s).schema, &spec.side(s).keys);
            ColumnSide::try_new(s as u8, schema, keys, spec.tracks_matches(s))
        };
        let sides = Sides::Columns([side(LEFT)?, side(RIGHT)?]);
        Self::with_sides(spec, sides)
    }

    /// The join `spec` describes, without state, keeping it in the row
    /// store (as Sluice did before chunks: a checkpoint written then).
    pub fn try_new_row_store(spec: JoinSpec) -> Result<Self> {
        let sides = Sides::Rows([
            SideState::try_new(LEFT as u8, &spec.left.schema)?,
            SideState::try_new(RIGHT as u8, &spec.right.schema)?,
        ]);
        Self::with_sides(spec, sides)
    }

    fn with_sides(spec: JoinSpec, sides: Sides) -> Result<Self> {
        let key_convs = [
            SideState::key_converter(&spec.left.schema, &spec.left.keys)?,
            SideState::key_converter(&spec.right.schema, &spec.right.keys)?,
        ];
        let state = OperatorState::new("symmetricHashJoin", spec.config);
        Ok(Self { spec, key_convs, sides, state, seq: 0 })
    }

    /// `batches` of `side` without the rows late for it, which are counted
    /// and kept (NULL-padded) for `late_rows`.
    fn on_time(&mut self, side: usize, batches: Vec<RecordBatch>, late: Option<i64>) -> Result<RecordBatch> {
        let spec = self.spec.side(side);
        let batch = match <[RecordBatch; 1]>::try_from(batches) {
            Ok([one]) => one,
            Err(batches) => concat_batches(&spec.schema, &batches)?,
        };
        let (Some(column), Some(wm)) = (spec.event_time, late) else { return Ok(batch) };
        let values = batch.column(column);
        let times = event_time_micros(values)?;
        // A NULL event time is never late (as in Spark).
        let nulls = values.logical_nulls();
        let times = times.values();
        let keep = BooleanArray::new(
            BooleanBuffer::collect_bool(batch.num_rows(), |i| {
                times[i] > wm || nulls.as_ref().is_some_and(|n| n.is_null(i))
            }),
            None,
        );
        if keep.true_count() == batch.num_rows() {
            return Ok(batch);
        }
        let kept = filter_record_batch(&batch, &keep)?;
        let dropped = batch.num_rows() - kept.num_rows();
        if dropped > 0 {
            self.state.dropped += dropped as u64;
            if self.state.late.on {
                let late = filter_record_batch(&batch, &datafusion::arrow::compute::not(&keep)?)?;
                let padded = self.padded(side, &late)?;
                self.state.late.push(RecordBatch::try_new(Arc::clone(&self.spec.joined_schema), padded)?);
            }
        }
        Ok(kept)
    }

    fn prepare(&self, side: usize, batch: RecordBatch) -> Result<Input> {
        let spec = self.spec.side(side);
        let n = batch.num_rows();
        let keys = KeyHashes::of(&spec.keys, &batch)?;
        let rows = match self.sides {
            Sides::Rows(_) => Some(self.key_convs[side].convert_columns(&keys.arrays)?),
            Sides::Columns(_) => None,
        };
        let passes = match &spec.filter {
            Some(f) => Some(f.evaluate(&batch)?.into_array(n)?),
            None => None,
        };
        let passes: Vec<bool> = match passes.as_ref().map(|a| a.as_boolean()) {
            Some(p) => (0..n).map(|i| p.is_valid(i) && p.value(i)).collect(),
            None => vec![true; n],
        };
        let key_nulls: Vec<_> = keys.arrays.iter().filter_map(|a| a.logical_nulls()).collect();
        let joinable = if key_nulls.is_empty() {
            passes.clone()
        } else {
            (0..n).map(|i| passes[i] && key_nulls.iter().all(|k| k.is_valid(i))).collect()
        };
        Ok(Input { batch, keys, rows, passes, joinable })
    }

    /// Columns of `rows` of `side` in the output layout, the other side NULL.
    fn padded(&self, side: usize, rows: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = rows.num_rows();
        let other = self.spec.side(1 - side);
        let nulls: Vec<ArrayRef> = other.schema.fields().iter().map(|f| new_null_array(f.data_type(), n)).collect();
        Ok(if side == LEFT {
            rows.columns().iter().cloned().chain(nulls).collect()
        } else {
            nulls.into_iter().chain(rows.columns().iter().cloned()).collect()
        })
    }

    fn emit(&self, columns: Vec<ArrayRef>, out: &mut Vec<RecordBatch>) -> Result<()> {
        let batch = RecordBatch::try_new(Arc::clone(&self.spec.output), columns)?;
        if batch.num_rows() > 0 {
            out.push(batch);
        }
        Ok(())
    }

    /// Emit `rows` of `side` without a match: NULL-padded (outer joins).
    fn emit_unmatched(&self, side: usize, rows: &RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        if rows.num_rows() > 0 && self.spec.preserves(side) {
            self.emit(self.padded(side, rows)?, out)?;
        }
        Ok(())
    }

    /// Join the new rows of `this` side with the other side's state, emit
    /// the pairs, and store the rows.
    fn join_input(
        &mut self,
        this: usize,
        input: Input,
        evict_wm: Option<i64>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let n = input.batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let other = 1 - this;
        let semi = self.spec.join_type == JoinType::LeftSemi;
        // Rows failing this side's own conjuncts can never match: NULL-padded
        // now if this side is kept (as Spark's pre-join filter).
        let never: Vec<u32> = (0..n as u32).filter(|i| !input.passes[*i as usize]).collect();
        if !never.is_empty() {
            let rows = datafusion::arrow::compute::take_record_batch(&input.batch, &UInt32Array::from(never))?;
            self.emit_unmatched(this, &rows, out)?;
        }
        // Probe the other side's state.
        let probe = {
            let store = self.state.store()?;
            let rows: Vec<usize> = (0..n).filter(|i| input.joinable[*i]).collect();
            match (&mut self.sides, &input.rows) {
                (Sides::Columns(s), _) => s[other].probe(&input.keys, &rows)?,
                (Sides::Rows(s), Some(keys)) => s[other].probe(store, keys, &rows)?,
                (Sides::Rows(_), None) => return Err(SluiceError::internal("a row-store join probe without key rows")),
            }
        };
        let stored =
            probe.stored.clone().ok_or_else(|| SluiceError::internal("a join probe returned no stored rows"))?;
        let stored_matched = &probe.matched;
        let (pair_this, pair_other) = (probe.pair_this.clone(), probe.pair_other.clone());
        // The pairs that satisfy the rest of the condition.
        let (pair_this, pair_other) = (UInt32Array::from(pair_this), UInt32Array::from(pair_other));
        let (l_rows, l_idx, r_rows, r_idx) = if this == LEFT {
            (&input.batch, &pair_this, &stored, &pair_other)
        } else {
            (&stored, &pair_other, &input.batch, &pair_this)
        };
        let mut columns =
            l_rows.columns().iter().map(|c| take(c, l_idx, None)).collect::<std::result::Result<Vec<_>, _>>()?;
        columns
            .extend(r_rows.columns().iter().map(|c| take(c, r_idx, None)).collect::<std::result::Result<Vec<_>, _>>()?);
        let pairs = RecordBatch::try_new(Arc::clone(&self.spec.joined_schema), columns)?;
        let keep: BooleanArray = match &self.spec.pair_filter {
            Some(f) => {
                let v = f.evaluate(&pairs)?.into_array(pairs.num_rows())?;
                v.as_boolean().iter().map(|b| Some(b.unwrap_or(false))).collect()
            }
            None => BooleanArray::from(vec![true; pairs.num_rows()]),
        };
        let mut this_matched = vec![false; n];
        let mut other_hit = vec![false; stored.num_rows()];
        for (p, ok) in keep.iter().enumerate() {
            if ok == Some(true) {
                this_matched[pair_this.value(p) as usize] = true;
                other_hit[pair_other.value(p) as usize] = true;
            }
        }
        // Output.
        if semi && this == LEFT {
            let rows: Vec<u32> = (0..n as u32).filter(|i| this_matched[*i as usize]).collect();
            let rows = datafusion::arrow::compute::take_record_batch(&input.batch, &UInt32Array::from(rows))?;
            self.emit(rows.columns().to_vec(), out)?;
        } else if semi {
            // Stored left rows matched for the first time, each once.
            let mut seen = datafusion::common::HashSet::new();
            let first: Vec<u32> = (0..stored.num_rows() as u32)
                .filter(|j| {
                    let j = *j as usize;
                    other_hit[j] && !stored_matched[j] && seen.insert(probe.ids[j])
                })
                .collect();
            let rows = datafusion::arrow::compute::take_record_batch(&stored, &UInt32Array::from(first))?;
            self.emit(rows.columns().to_vec(), out)?;
        } else {
            let matched = filter_record_batch(&pairs, &keep)?;
            self.emit(matched.columns().to_vec(), out)?;
        }
        let store = self.state.store_mut()?;
        if self.spec.tracks_matches(other) {
            let hits = (0..stored.num_rows()).filter(|j| other_hit[*j] && !stored_matched[*j]);
            match &mut self.sides {
                Sides::Columns(s) => s[other].mark_matched(store, hits.map(|j| probe.ids[j])),
                Sides::Rows(_) => {
                    for j in hits {
                        SideState::set_matched(store, &probe.keys[j]);
                    }
                }
            }
        }
        // Store this side's rows.
        let times = self.evict_times(this, &input.batch)?;
        let bound = match (&self.spec.side(this).evict, evict_wm) {
            (Some(e), Some(wm)) => Some(wm.saturating_add(e.offset_us)),
            _ => None,
        };
        let store = self.state.store_mut()?;
        // A row with a NULL key never matches; a kept side stores it all
        // the same, to be emitted unmatched at eviction (as Spark does).
        let kept = self.spec.preserves(this);
        let keep_row = |i: usize| {
            // A right row the watermark evicts at once is not kept (the left
            // rows of this batch have all met it), unless it is still to be
            // emitted unmatched.
            let evicted_now = bound.is_some_and(|b| times[i] <= b);
            (input.joinable[i] || (input.passes[i] && kept))
                && !(semi && this == LEFT && this_matched[i])
                && !(this == RIGHT && evicted_now && !(self.spec.preserves(RIGHT) && !this_matched[i]))
        };
        let rows: Vec<u32> = (0..n).filter(|i| keep_row(*i)).map(|i| i as u32).collect();
        match &mut self.sides {
            Sides::Columns(s) => s[this].insert(store, &input.batch, rows, &times, &this_matched)?,
            Sides::Rows(s) => {
                let keys = input
                    .rows
                    .as_ref()
                    .ok_or_else(|| SluiceError::internal("a row-store join insert without key rows"))?;
                let encoded = s[this].encode(&input.batch)?;
                for i in rows.into_iter().map(|i| i as usize) {
                    let seq = self.seq;
                    self.seq += 1;
                    s[this].insert(store, keys.row(i).data(), seq, times[i], this_matched[i], encoded.row(i).data());
                }
            }
        }
        Ok(())
    }

    /// Each row's eviction time (µs; `i64::MAX` when the side is never
    /// evicted or the time is NULL).
    fn evict_times(&self, side: usize, batch: &RecordBatch) -> Result<Vec<i64>> {
        let n = batch.num_rows();
        let Some(e) = &self.spec.side(side).evict else { return Ok(vec![i64::MAX; n]) };
        let values = e.time.evaluate(batch)?.into_array(n)?;
        let times = event_time_micros(&values)?;
        Ok(match values.logical_nulls() {
            None => times.values().to_vec(),
            Some(nulls) => (0..n).map(|i| if nulls.is_null(i) { i64::MAX } else { times.value(i) }).collect(),
        })
    }

    /// Evict the state the watermark has passed; outer sides emit their
    /// evicted rows that never matched.
    fn evict(&mut self, wm: Option<i64>, out: &mut Vec<RecordBatch>) -> Result<()> {
        let Some(wm) = wm else { return Ok(()) };
        for side in [LEFT, RIGHT] {
            let Some(e) = &self.spec.side(side).evict else { continue };
            let bound = wm.saturating_add(e.offset_us);
            let store = self.state.store_mut()?;
            let preserves = self.spec.preserves(side);
            let unmatched = match &mut self.sides {
                Sides::Columns(s) => s[side].evict(store, bound, preserves)?,
                Sides::Rows(s) => {
                    let removed = s[side].evict(store, bound);
                    let unmatched = removed.iter().filter(|v| !side::value_matched(v)).map(Vec::as_slice);
                    if preserves {
                        vec![s[side].decode(unmatched)?]
                    } else {
                        vec![]
                    }
                }
            };
            for rows in unmatched {
                self.emit_unmatched(side, &rows, out)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StatefulOperator for StreamingJoin {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        _task: Arc<TaskContext>,
        _input: Vec<RecordBatch>,
        _ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        Err(SluiceError::internal("a stream-stream join was given one input instead of two"))
    }

    async fn process_join(
        &mut self,
        _task: Arc<TaskContext>,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let late = ctx.late_watermark.map(|w| w.micros());
        let evict = ctx.watermark.map(|w| w.micros());
        self.seq = ctx.batch_id << 32;
        let left = self.on_time(LEFT, left, late)?;
        let right = self.on_time(RIGHT, right, late)?;
        let left = self.prepare(LEFT, left)?;
        let right = self.prepare(RIGHT, right)?;
        let mut out = vec![];
        self.join_input(LEFT, left, evict, &mut out)?;
        self.join_input(RIGHT, right, evict, &mut out)?;
        self.evict(evict, &mut out)?;
        Ok(out)
    }

    fn watermark_driven(&self) -> bool {
        self.spec.watermark_driven()
    }

    fn state_layout(&self) -> StateLayout {
        let fields = |s: &SideSpec| format!("({}): {}", s.sources, StateLayout::describe(s.schema.fields()).join(", "));
        let keys = self
            .spec
            .left
            .key_names
            .iter()
            .zip(&self.spec.right.key_names)
            .zip(&self.spec.left.keys)
            .map(|((l, r), k)| {
                let t = k.data_type(&self.spec.left.schema).map(|t| t.to_string()).unwrap_or_default();
                format!("{l} = {r}: {t}")
            })
            .collect();
        let chunks = if matches!(self.sides, Sides::Columns(_)) { IN_CHUNKS } else { "" };
        StateLayout {
            operator: format!("stream-stream join ({}){chunks}", self.spec.join_type),
            keys,
            values: vec![format!("left {}", fields(&self.spec.left)), format!("right {}", fields(&self.spec.right))],
        }
    }

    async fn restore(
        &mut self,
        dir: CheckpointDir,
        version: Option<u64>,
        pool: &Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
        partition: usize,
        reset: bool,
    ) -> Result<()> {
        self.state.restore(dir, version, pool, partition, reset).await?;
        let store = self.state.store()?;
        match &mut self.sides {
            Sides::Columns(sides) => {
                for side in sides {
                    side.restore(store).await?;
                }
            }
            Sides::Rows(sides) => {
                for side in sides {
                    side.rebuild(store)?;
                }
            }
        }
        Ok(())
    }

    async fn commit(&mut self, version: u64) -> Result<StateOperatorProgress> {
        let progress = self.state.commit(version).await?;
        Ok(self.side_progress(progress))
    }

    fn rebuilt_by_replay(&self) -> bool {
        // The chunked sides keep their rows as blobs put at each batch; the
        // row store (checkpoints from before chunks) keeps its per-batch
        // commits.
        matches!(self.sides, Sides::Columns(_))
    }

    async fn end_uncommitted(&mut self) -> Result<StateOperatorProgress> {
        let progress = self.state.uncommitted()?;
        Ok(self.side_progress(progress))
    }
}

impl StreamingJoin {
    /// `progress` with the chunked sides' row counts and memory.
    fn side_progress(&mut self, mut progress: StateOperatorProgress) -> StateOperatorProgress {
        if let Sides::Columns(sides) = &mut self.sides {
            progress.num_rows_total = sides.iter().map(|s| s.num_rows() as u64).sum();
            progress.num_rows_updated = sides.iter_mut().map(|s| std::mem::take(&mut s.updated)).sum();
            progress.num_rows_removed = sides.iter_mut().map(|s| std::mem::take(&mut s.removed)).sum();
            progress.memory_used_bytes += sides.iter().map(|s| s.memory_bytes() as u64).sum::<u64>();
        }
        progress
    }
}
