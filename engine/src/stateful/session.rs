//! [`SessionAggregate`]: aggregation over session windows.
//!
//! Each input row carries its own session `[ts, ts + gap)`. Per group of the
//! other grouping keys, the stored sessions and the batch's partial states
//! are sorted by start and swept: rows whose session starts at or before the
//! current session's end (overlap or touch) join it. The merged pieces'
//! states are combined by DataFusion's `PartialReduce`, so sessions merge
//! within a batch and across batches, including when a late-but-allowed row
//! bridges two open sessions. The store keeps, per group, the list of its
//! open sessions' state rows.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StructArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{HashMap, HashSet};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::AggregateMode;

use super::aggregate::AggStages;
use super::BatchContext;
use super::{AggregateParts, EventTimeKey, OperatorState, StatefulOperator};
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::state::StateStoreConfig;

/// Where the session bounds are among the grouping keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionColumns {
    /// One struct key with `start` and `end` fields (`session_window(...)`).
    Struct(usize),
    /// Two keys (`window_start`, `window_end` of the `SESSION` TVF).
    Pair {
        /// Index of the start key.
        start: usize,
        /// Index of the end key.
        end: usize,
    },
}

impl SessionColumns {
    /// Whether grouping key `i` is one of the session bounds.
    pub fn contains(&self, i: usize) -> bool {
        match *self {
            SessionColumns::Struct(s) => s == i,
            SessionColumns::Pair { start, end } => i == start || i == end,
        }
    }
}

/// Session-window aggregation over the state store.
#[derive(Debug)]
pub struct SessionAggregate {
    stages: AggStages,
    session: SessionColumns,
    other_keys: Vec<usize>,
    key_conv: RowConverter,
    value_conv: RowConverter,
    event_time: Option<EventTimeKey>,
    mode: OutputMode,
    state: OperatorState,
}

fn micros(a: &ArrayRef) -> Result<Vec<i64>> {
    let us = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(us.as_primitive::<TimestampMicrosecondType>().iter().map(|v| v.unwrap_or(i64::MIN)).collect())
}

/// `[min_end: i64][count: u32]([len: u32][row])*`
pub(super) fn encode_list(min_end: i64, rows: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + rows.iter().map(|r| r.len() + 4).sum::<usize>());
    out.extend_from_slice(&min_end.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for r in rows {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

pub(super) fn decode_list(v: &[u8]) -> Result<Vec<&[u8]>> {
    let bad = || {
        SluiceError::plan("a stored session state entry is damaged; restore the checkpoint from a backup or use a new checkpoint location")
    };
    let count = u32::from_le_bytes(v.get(8..12).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let mut out = Vec::with_capacity(count);
    let mut pos = 12;
    for _ in 0..count {
        let len = u32::from_le_bytes(v.get(pos..pos + 4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
        out.push(v.get(pos + 4..pos + 4 + len).ok_or_else(bad)?);
        pos += 4 + len;
    }
    Ok(out)
}

fn min_end(v: &[u8]) -> i64 {
    v.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes).unwrap_or(i64::MIN)
}

impl SessionAggregate {
    /// A session aggregation emitting in `mode` (append or complete).
    pub fn try_new(
        parts: AggregateParts,
        session: SessionColumns,
        event_time: Option<EventTimeKey>,
        mode: OutputMode,
        store_config: StateStoreConfig,
    ) -> Result<Self> {
        if mode == OutputMode::Update {
            return Err(SluiceError::unsupported(
                "session windows support the append and complete output modes (as in Spark), not update; \
                 use output_mode = 'append' (with a watermark) or 'complete'",
            ));
        }
        let num_keys = parts.group_by.expr().len();
        let stages = AggStages::try_new(parts)?;
        let schema = Arc::clone(&stages.partial_schema);
        let other_keys: Vec<usize> = (0..num_keys).filter(|i| !session.contains(*i)).collect();
        let key_conv = RowConverter::new(
            other_keys.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect(),
        )?;
        let value_conv =
            RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        Ok(Self {
            stages,
            session,
            other_keys,
            key_conv,
            value_conv,
            event_time,
            mode,
            state: OperatorState::new("session_aggregate", store_config),
        })
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.stages.partial_schema)
    }

    fn keys_of(&self, batch: &RecordBatch) -> Result<datafusion::arrow::row::Rows> {
        let cols: Vec<ArrayRef> = self.other_keys.iter().map(|i| Arc::clone(batch.column(*i))).collect();
        Ok(self.key_conv.convert_columns(&cols)?)
    }

    fn bounds(&self, batch: &RecordBatch) -> Result<(Vec<i64>, Vec<i64>)> {
        match self.session {
            SessionColumns::Struct(i) => {
                let s = batch.column(i).as_struct();
                let field = |n: &str| {
                    s.column_by_name(n)
                        .cloned()
                        .ok_or_else(|| SluiceError::internal(format!("session struct has no '{n}'")))
                };
                Ok((micros(&field("start")?)?, micros(&field("end")?)?))
            }
            SessionColumns::Pair { start, end } => Ok((micros(batch.column(start))?, micros(batch.column(end))?)),
        }
    }

    fn with_bounds(&self, batch: &RecordBatch, starts: Vec<i64>, ends: Vec<i64>) -> Result<RecordBatch> {
        let mut cols = batch.columns().to_vec();
        let ts = |v: Vec<i64>, t: &DataType| -> Result<ArrayRef> {
            Ok(cast(&(Arc::new(TimestampMicrosecondArray::from(v)) as ArrayRef), t)?)
        };
        match self.session {
            SessionColumns::Struct(i) => {
                let DataType::Struct(fields) = batch.column(i).data_type().clone() else {
                    return Err(SluiceError::internal("session key is not a struct"));
                };
                let arrays = fields
                    .iter()
                    .map(|f| ts(if f.name() == "start" { starts.clone() } else { ends.clone() }, f.data_type()))
                    .collect::<Result<Vec<_>>>()?;
                cols[i] = Arc::new(StructArray::try_new(fields, arrays, None)?);
            }
            SessionColumns::Pair { start, end } => {
                cols[start] = ts(starts, batch.column(start).data_type())?;
                cols[end] = ts(ends, batch.column(end).data_type())?;
            }
        }
        Ok(RecordBatch::try_new(batch.schema(), cols)?)
    }

    fn decode(&self, rows: &[&[u8]]) -> Result<RecordBatch> {
        let parser = self.value_conv.parser();
        let arrays = self.value_conv.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
        Ok(RecordBatch::try_new(self.schema(), arrays)?)
    }

    /// Merge a batch of partial states into the stored sessions.
    async fn merge(&mut self, partial: RecordBatch, task: &Arc<TaskContext>) -> Result<()> {
        let keys = self.keys_of(&partial)?;
        let mut touched: Vec<Vec<u8>> = vec![];
        let mut seen = HashSet::new();
        for i in 0..partial.num_rows() {
            let k = keys.row(i).data();
            if seen.insert(k) {
                touched.push(k.to_vec());
            }
        }
        let store = self.state.store()?;
        let mut old_rows: Vec<&[u8]> = vec![];
        for k in &touched {
            if let Some(v) = store.get(k) {
                old_rows.extend(decode_list(v)?);
            }
        }
        let old = self.decode(&old_rows)?;
        let combined = concat_batches(&self.schema(), &[old, partial])?;
        let keys = self.keys_of(&combined)?;
        let (starts, ends) = self.bounds(&combined)?;
        let mut groups: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for i in 0..combined.num_rows() {
            groups.entry(keys.row(i).data()).or_default().push(i);
        }
        let (mut new_starts, mut new_ends) = (starts.clone(), ends.clone());
        for members in groups.values_mut() {
            members.sort_by_key(|i| (starts[*i], ends[*i]));
            let mut current: Option<(i64, i64, Vec<usize>)> = None;
            let mut flush = |c: Option<(i64, i64, Vec<usize>)>| {
                if let Some((s, e, ms)) = c {
                    for m in ms {
                        new_starts[m] = s;
                        new_ends[m] = e;
                    }
                }
            };
            for &i in members.iter() {
                match current.as_mut() {
                    Some((_, e, ms)) if starts[i] <= *e => {
                        *e = (*e).max(ends[i]);
                        ms.push(i);
                    }
                    _ => {
                        flush(current.take());
                        current = Some((starts[i], ends[i], vec![i]));
                    }
                }
            }
            flush(current.take());
        }
        let combined = self.with_bounds(&combined, new_starts, new_ends)?;
        let merged = self.stages.run(AggregateMode::PartialReduce, vec![combined], task).await?;
        let merged = concat_batches(&self.schema(), &merged)?;
        let keys = self.keys_of(&merged)?;
        let values = self.value_conv.convert_columns(merged.columns())?;
        let (_, ends) = self.bounds(&merged)?;
        let mut per_key: HashMap<Vec<u8>, (i64, Vec<&[u8]>)> = HashMap::new();
        for i in 0..merged.num_rows() {
            let e = per_key.entry(keys.row(i).as_ref().to_vec()).or_insert((i64::MAX, vec![]));
            e.0 = e.0.min(ends[i]);
            e.1.push(values.row(i).data());
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> =
            per_key.into_iter().map(|(k, (min, rows))| (k, encode_list(min, &rows))).collect();
        let store = self.state.store_mut()?;
        for (k, v) in encoded {
            store.put(k, v);
        }
        Ok(())
    }

    /// Remove sessions that end at or before the watermark; return their rows.
    fn evict(&mut self, wm_us: i64) -> Result<Vec<Vec<u8>>> {
        let parser_conv = &self.value_conv;
        let schema = Arc::clone(&self.stages.partial_schema);
        let store = self.state.store_mut()?;
        let candidates: Vec<(Vec<u8>, Vec<u8>)> =
            store.iter().filter(|(_, v)| min_end(v) <= wm_us).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        let mut closed = vec![];
        for (k, v) in candidates {
            let rows = decode_list(&v)?;
            let parser = parser_conv.parser();
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                parser_conv.convert_rows(rows.iter().map(|r| parser.parse(r)))?,
            )?;
            let ends: Vec<i64> = match self.session {
                SessionColumns::Struct(i) => {
                    let e = batch.column(i).as_struct().column_by_name("end").cloned();
                    micros(&e.ok_or_else(|| SluiceError::internal("session struct has no 'end'"))?)?
                }
                SessionColumns::Pair { end, .. } => micros(batch.column(end))?,
            };
            let (mut keep, mut keep_min) = (vec![], i64::MAX);
            for (r, e) in rows.iter().zip(ends) {
                if e <= wm_us {
                    closed.push(r.to_vec());
                } else {
                    keep.push(*r);
                    keep_min = keep_min.min(e);
                }
            }
            if keep.is_empty() {
                store.remove(&k);
            } else {
                store.put(k, encode_list(keep_min, &keep));
            }
        }
        Ok(closed)
    }
}

#[async_trait]
impl StatefulOperator for SessionAggregate {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let event_time = self.event_time.as_ref().filter(|_| self.mode != OutputMode::Complete);
        let input = self.state.drop_late(input, event_time, ctx.late_watermark)?;
        if input.iter().any(|b| b.num_rows() > 0) {
            let partial = self.stages.partial(input, &task).await?;
            self.merge(partial, &task).await?;
        }
        let states = match self.mode {
            OutputMode::Complete => {
                let store = self.state.store()?;
                let mut rows = vec![];
                for (_, v) in store.iter() {
                    rows.extend(decode_list(v)?);
                }
                self.decode(&rows)?
            }
            _ => match ctx.watermark {
                Some(wm) if self.event_time.is_some() => {
                    let closed = self.evict(wm.micros())?;
                    let refs: Vec<&[u8]> = closed.iter().map(Vec::as_slice).collect();
                    self.decode(&refs)?
                }
                _ => return Ok(vec![]),
            },
        };
        if states.num_rows() == 0 {
            return Ok(vec![]);
        }
        self.stages.run(AggregateMode::Final, vec![states], &task).await
    }

    fn rebuilt_by_replay(&self) -> bool {
        // The row store keeps the keys changed since its last commit; the
        // next commit writes them all.
        true
    }

    async fn end_uncommitted(&mut self) -> Result<crate::progress::StateOperatorProgress> {
        self.state.uncommitted()
    }

    fn watermark_driven(&self) -> bool {
        self.event_time.is_some() && self.mode == OutputMode::Append
    }

    fn state_layout(&self) -> super::StateLayout {
        let schema = self.schema();
        let fields = schema.fields();
        let num_keys = self.stages.parts.group_by.expr().len();
        super::StateLayout {
            operator: "session_aggregate".into(),
            keys: super::StateLayout::describe(&fields[..num_keys]),
            values: super::StateLayout::describe(&fields[num_keys..]),
        }
    }
}
