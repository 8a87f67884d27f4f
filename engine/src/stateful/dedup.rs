//! [`StreamingDedup`]: `SELECT DISTINCT` on a stream, as Spark's
//! `dropDuplicates`: each distinct row is emitted once, the first time it
//! is seen. With an event-time column carrying a watermark, rows at or below
//! the watermark are dropped as late and keys older than it are forgotten.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;

use super::event_time::event_time_micros;
use super::BatchContext;
use super::{EventTimeKey, OperatorState, StatefulOperator};
use crate::error::Result;
use crate::state::StateStoreConfig;

/// Which rows count as duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DedupSpec {
    /// Key columns (input indices); empty means the whole row.
    pub keys: Vec<usize>,
    /// Output columns (input indices); empty means the whole row.
    pub outputs: Vec<usize>,
    /// Spark's `dropDuplicatesWithinWatermark`: a key is forgotten once the
    /// watermark passes its first event time plus this delay (microseconds).
    pub within_watermark_us: Option<i64>,
}

/// Streaming deduplication by key columns (the whole row by default).
#[derive(Debug)]
pub struct StreamingDedup {
    conv: RowConverter,
    key_fields: Vec<String>,
    spec: DedupSpec,
    event_time: Option<EventTimeKey>,
    state: OperatorState,
}

impl StreamingDedup {
    /// Deduplicate rows of `schema` as `spec` says; `event_time` is the
    /// watermarked column, if any.
    pub fn try_new(
        schema: &SchemaRef,
        mut spec: DedupSpec,
        event_time: Option<EventTimeKey>,
        store_config: StateStoreConfig,
    ) -> Result<Self> {
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        if spec.keys.is_empty() {
            spec.keys = all.clone();
        }
        if spec.outputs.is_empty() {
            spec.outputs = all;
        }
        if spec.within_watermark_us.is_some() && event_time.is_none() {
            return Err(crate::error::SluiceError::unsupported(
                "drop_duplicates_within_watermark needs a watermark on an event-time column of its input",
            ));
        }
        let conv = RowConverter::new(
            spec.keys.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect(),
        )?;
        let key_fields = spec
            .keys
            .iter()
            .map(|i| format!("{}: {}", schema.field(*i).name(), schema.field(*i).data_type()))
            .collect();
        Ok(Self { conv, key_fields, spec, event_time, state: OperatorState::new("dedup", store_config) })
    }
}

#[async_trait]
impl StatefulOperator for StreamingDedup {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        _task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let wm_us = ctx.late_watermark.map(|w| w.micros());
        let evict_us = ctx.watermark.map(|w| w.micros());
        let mut out = vec![];
        for batch in input {
            let key_cols: Vec<_> = self.spec.keys.iter().map(|i| Arc::clone(batch.column(*i))).collect();
            let rows = self.conv.convert_columns(&key_cols)?;
            let expiry_extra = self.spec.within_watermark_us.unwrap_or(0);
            let times = match &self.event_time {
                Some(et) => Some(event_time_micros(batch.column(et.index))?),
                None => None,
            };
            let mut keep = vec![];
            let mut late = vec![];
            let mut dropped = 0;
            let store = self.state.store_mut()?;
            for i in 0..batch.num_rows() {
                let t = times.as_ref().map(|t| t.value(i)).unwrap_or(i64::MAX);
                if wm_us.is_some_and(|w| t <= w) {
                    dropped += 1;
                    late.push(i as u32);
                    continue;
                }
                let key = rows.row(i);
                if store.get(key.as_ref()).is_none() {
                    // The key is forgotten once the watermark passes this time.
                    store.put(key.as_ref().to_vec(), t.saturating_add(expiry_extra).to_le_bytes().to_vec());
                    keep.push(i as u32);
                }
            }
            self.state.dropped += dropped;
            if self.state.late.on && !late.is_empty() {
                self.state.late.push(take_record_batch(&batch, &UInt32Array::from(late))?);
            }
            if !keep.is_empty() {
                let kept = take_record_batch(&batch, &UInt32Array::from(keep))?;
                out.push(kept.project(&self.spec.outputs)?);
            }
        }
        if let (Some(_), Some(w)) = (&self.event_time, evict_us) {
            self.state
                .store_mut()?
                .evict(|_, v| v.len() == 8 && i64::from_le_bytes(v.try_into().unwrap_or([0xff; 8])) <= w);
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
        self.event_time.is_some()
    }

    fn state_layout(&self) -> super::StateLayout {
        let expiry =
            if self.spec.within_watermark_us.is_some() { "first seen + watermark delay" } else { "event time" };
        super::StateLayout {
            operator: "dedup".into(),
            keys: self.key_fields.clone(),
            values: vec![format!("expiry: {expiry}")],
        }
    }
}
