//! [`StreamingTopN`]: the top N rows per partition of a stream, Flink's
//! Top-N: `ROW_NUMBER()`, `RANK()` or `DENSE_RANK()` `OVER (PARTITION BY k
//! ORDER BY x)` filtered by the rank `<= N`.
//!
//! The state keeps, per partition key, the current top rows in rank order
//! (Arrow row format, prefixed with the partition's event time: the end of
//! its window, for eviction). Each batch merges a partition's new rows into
//! its list, re-ranks it and keeps what ranks within N.
//!
//! - **Update mode:** the rows whose rank changed (or that entered the top
//!   N) are emitted with their new rank, as Flink's update-mode output with
//!   the rank number: a sink upserting on (partition key, rank) holds the
//!   current ranking. A row pushed out of the top N is not retracted.
//! - **Append mode,** partitioned by an event-time window: nothing is
//!   emitted until the watermark passes the window's end; then its final
//!   ranking is emitted once and the partition's state dropped. Rows of a
//!   closed window are late and dropped.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::HashMap;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::event_time::event_time_micros;
use super::session::{decode_list, encode_list};
use super::{BatchContext, EventTimeKey, OperatorState, StateLayout, StatefulOperator};
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::state::StateStoreConfig;

/// Which ranking function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum RankKind {
    /// `ROW_NUMBER()`: 1, 2, 3, ... whatever the ties.
    RowNumber,
    /// `RANK()`: ties share a rank, the next rank skips (1, 1, 3).
    Rank,
    /// `DENSE_RANK()`: ties share a rank, no gaps (1, 1, 2).
    DenseRank,
}

impl RankKind {
    /// The SQL function's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RowNumber => "row_number",
            Self::Rank => "rank",
            Self::DenseRank => "dense_rank",
        }
    }
}

/// A planned Top-N.
#[derive(Debug, Clone)]
pub struct TopNSpec {
    /// Schema of the input rows.
    pub schema: SchemaRef,
    /// Schema of the output: the input's columns, then the rank.
    pub output: SchemaRef,
    /// `PARTITION BY` expressions over the input.
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// Their names, for `EXPLAIN` and the state layout.
    pub partition_names: Vec<String>,
    /// `ORDER BY` of the ranking.
    pub order: Vec<PhysicalSortExpr>,
    /// The ranking function.
    pub kind: RankKind,
    /// Rows ranked above this are dropped.
    pub n: u64,
    /// Output mode.
    pub mode: OutputMode,
    /// The partition key carrying event time (an event-time window).
    pub event_time: Option<EventTimeKey>,
    /// State store settings.
    pub config: StateStoreConfig,
}

/// The Top-N operator.
#[derive(Debug)]
pub struct StreamingTopN {
    spec: TopNSpec,
    key_conv: RowConverter,
    row_conv: RowConverter,
    order_conv: RowConverter,
    state: OperatorState,
}

/// One partition's ranked rows.
struct Ranked {
    /// Stored rows (row format of the input), in rank order.
    rows: Vec<Vec<u8>>,
    ranks: Vec<u64>,
}

impl StreamingTopN {
    /// The operator for `spec`.
    pub fn try_new(spec: TopNSpec) -> Result<Self> {
        if spec.mode == OutputMode::Complete {
            return Err(SluiceError::unsupported(
                "a Top-N (ROW_NUMBER/RANK/DENSE_RANK filtered by rank) over a stream runs in update or append output \
                 mode, not complete; use output_mode = 'update'",
            ));
        }
        let key_types = spec
            .partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&spec.schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let row_types = spec.schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let order_types = spec
            .order
            .iter()
            .map(|o| Ok(SortField::new_with_options(o.expr.data_type(&spec.schema)?, o.options)))
            .collect::<Result<Vec<_>>>()?;
        let unsupported = |e: datafusion::arrow::error::ArrowError| {
            SluiceError::unsupported(format!("a Top-N over these columns cannot keep its rows in state: {e}"))
        };
        Ok(Self {
            key_conv: RowConverter::new(key_types).map_err(unsupported)?,
            row_conv: RowConverter::new(row_types).map_err(unsupported)?,
            order_conv: RowConverter::new(order_types).map_err(unsupported)?,
            state: OperatorState::new("topn", spec.config),
            spec,
        })
    }

    fn eval(&self, exprs: impl Iterator<Item = Arc<dyn PhysicalExpr>>, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        exprs.map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?)).collect()
    }

    fn decode(&self, rows: &[&[u8]]) -> Result<RecordBatch> {
        let parser = self.row_conv.parser();
        let columns = self.row_conv.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
        Ok(RecordBatch::try_new(Arc::clone(&self.spec.schema), columns)?)
    }

    /// Rank `batch`'s rows (a partition's old and new rows, old first):
    /// sorted by the order keys (ties keep their arrival order), the ranks,
    /// and only what ranks within N.
    fn rank(&self, batch: &RecordBatch) -> Result<(Vec<u32>, Vec<u64>)> {
        let keys =
            self.order_conv.convert_columns(&self.eval(self.spec.order.iter().map(|o| Arc::clone(&o.expr)), batch)?)?;
        let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
        order.sort_by(|a, b| keys.row(*a as usize).cmp(&keys.row(*b as usize)));
        let (mut kept, mut ranks) = (vec![], vec![]);
        let (mut rank, mut dense) = (0u64, 0u64);
        for (i, idx) in order.iter().enumerate() {
            let tie = i > 0 && keys.row(order[i - 1] as usize) == keys.row(*idx as usize);
            if !tie {
                dense += 1;
                rank = i as u64 + 1;
            }
            let r = match self.spec.kind {
                RankKind::RowNumber => i as u64 + 1,
                RankKind::Rank => rank,
                RankKind::DenseRank => dense,
            };
            if r > self.spec.n {
                break;
            }
            kept.push(*idx);
            ranks.push(r);
        }
        Ok((kept, ranks))
    }

    /// The output rows: `batch`'s rows `idx` with their ranks.
    fn output(&self, batch: &RecordBatch, idx: Vec<u32>, ranks: Vec<u64>) -> Result<RecordBatch> {
        let rows = take_record_batch(batch, &UInt32Array::from(idx))?;
        let mut columns = rows.columns().to_vec();
        let rank_type = self.spec.output.field(self.spec.output.fields().len() - 1).data_type();
        columns.push(cast(&(Arc::new(UInt64Array::from(ranks)) as ArrayRef), rank_type)?);
        Ok(RecordBatch::try_new(Arc::clone(&self.spec.output), columns)?)
    }

    /// A partition's stored ranking.
    fn stored(&self, value: Option<&[u8]>) -> Result<Ranked> {
        let Some(v) = value else { return Ok(Ranked { rows: vec![], ranks: vec![] }) };
        let rows: Vec<Vec<u8>> = decode_list(v)?.into_iter().map(<[u8]>::to_vec).collect();
        let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        let (_, ranks) = self.rank(&self.decode(&refs)?)?;
        Ok(Ranked { rows, ranks })
    }

    /// Merge `new` (rows of one partition `key`) into its ranking; returns
    /// the rows to emit in update mode.
    fn merge(&mut self, key: &[u8], time: i64, new: RecordBatch) -> Result<Option<RecordBatch>> {
        let old = self.stored(self.state.store()?.get(key))?;
        let refs: Vec<&[u8]> = old.rows.iter().map(Vec::as_slice).collect();
        let all = concat_batches(&self.spec.schema, &[self.decode(&refs)?, new])?;
        let (kept, ranks) = self.rank(&all)?;
        let encoded: Rows = self.row_conv.convert_columns(all.columns())?;
        let rows: Vec<&[u8]> = kept.iter().map(|i| encoded.row(*i as usize).data()).collect();
        self.state.store_mut()?.put(key, encode_list(time, &rows));
        if self.spec.mode != OutputMode::Update {
            return Ok(None);
        }
        // The ranks whose row or rank changed.
        let (mut idx, mut out_ranks) = (vec![], vec![]);
        for (p, (row, rank)) in rows.iter().zip(&ranks).enumerate() {
            let same = old.rows.get(p).is_some_and(|o| o.as_slice() == *row) && old.ranks.get(p) == Some(rank);
            if !same {
                idx.push(kept[p]);
                out_ranks.push(*rank);
            }
        }
        if idx.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.output(&all, idx, out_ranks)?))
    }
}

#[async_trait]
impl StatefulOperator for StreamingTopN {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        _task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let event_time = self.spec.event_time.clone();
        let input = self.state.drop_late(input, event_time.as_ref(), ctx.late_watermark)?;
        let batch = concat_batches(&self.spec.schema, &input)?;
        let mut out = vec![];
        if batch.num_rows() > 0 {
            let keys = self.eval(self.spec.partition.iter().cloned(), &batch)?;
            let times = match &event_time {
                Some(et) => {
                    event_time_micros(&et.expr.evaluate(&batch)?.into_array(batch.num_rows())?)?.values().to_vec()
                }
                None => vec![i64::MAX; batch.num_rows()],
            };
            let key_rows = self.key_conv.convert_columns(&keys)?;
            // Rows by partition, partitions in order of first arrival.
            let mut groups: HashMap<&[u8], usize> = HashMap::default();
            let mut members: Vec<(Vec<u8>, i64, Vec<u32>)> = vec![];
            for i in 0..batch.num_rows() {
                let k: &[u8] = if self.spec.partition.is_empty() { &[] } else { key_rows.row(i).data() };
                let g = *groups.entry(k).or_insert_with(|| {
                    members.push((k.to_vec(), times[i], vec![]));
                    members.len() - 1
                });
                members[g].2.push(i as u32);
            }
            for (key, time, idx) in members {
                let rows = take_record_batch(&batch, &UInt32Array::from(idx))?;
                out.extend(self.merge(&key, time, rows)?);
            }
        }
        // The watermark closes windows: emit their final ranking (append
        // mode) and drop their state.
        if let (Some(_), Some(wm)) = (&event_time, ctx.watermark) {
            let wm_us = wm.micros();
            let evicted = self.state.store_mut()?.evict(|_, v| {
                v.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes).is_some_and(|t| t <= wm_us)
            });
            if self.spec.mode == OutputMode::Append {
                for v in evicted {
                    let rows = decode_list(&v)?;
                    let batch = self.decode(&rows)?;
                    let (kept, ranks) = self.rank(&batch)?;
                    out.push(self.output(&batch, kept, ranks)?);
                }
            }
        }
        Ok(out)
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
        self.spec.event_time.is_some()
    }

    fn state_layout(&self) -> StateLayout {
        StateLayout {
            operator: format!("topn ({} <= {})", self.spec.kind.name(), self.spec.n),
            keys: self.spec.partition_names.clone(),
            values: StateLayout::describe(self.spec.schema.fields()),
        }
    }
}
