//! [`StreamingGroupsWithState`]: `flat_map_groups_with_state` (Spark's
//! `FlatMapGroupsWithStateExec`). Each batch calls the user function once
//! per key with rows, in key order, then once per key whose timeout is due
//! (processing time: the batch time passed it; event time: the watermark
//! passed it), with no rows. A call for a key with rows starts with no
//! timeout, so new data resets a pending one unless the function sets it
//! again. The function's failures and panics fail the batch before anything
//! is committed.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;

use super::{BatchContext, EventTimeKey, OperatorState, StateLayout, StatefulOperator};
use crate::arbitrary::{GroupCall, GroupFunction, GroupKey, GroupStateTimeout, StoredGroup};
use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::state::StateStoreConfig;

/// What a `flat_map_groups_with_state` operator is, as planned.
#[derive(Clone)]
pub struct GroupsWithStateSpec {
    /// Schema of its input rows.
    pub input_schema: SchemaRef,
    /// Schema of the rows the function returns.
    pub output: SchemaRef,
    /// The key expressions (over the input).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The key columns' names.
    pub key_names: Vec<String>,
    /// The user function.
    pub func: Arc<dyn GroupFunction>,
    /// When groups time out.
    pub timeout: GroupStateTimeout,
    /// The input's watermarked column (late rows are dropped with an
    /// event-time timeout, as in Spark).
    pub event_time: Option<EventTimeKey>,
    /// `flat_map_groups_with_state` or `map_groups_with_state`.
    pub operation: &'static str,
    /// Call the function for every key with state in every batch, rows or
    /// not (DStream's `updateStateByKey`).
    pub every_key: bool,
    /// State store settings.
    pub config: StateStoreConfig,
}

impl std::fmt::Debug for GroupsWithStateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupsWithStateSpec")
            .field("operation", &self.operation)
            .field("keys", &self.key_names)
            .field("state", &self.func.state_tag())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The operator of one state partition.
#[derive(Debug)]
pub struct StreamingGroupsWithState {
    spec: GroupsWithStateSpec,
    conv: RowConverter,
    names: Arc<[String]>,
    /// The earliest pending processing-time timeout of this partition.
    next_timer_ms: Option<i64>,
    state: OperatorState,
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_else(|| "a non-text panic".into()),
    }
}

fn describe(schema: &SchemaRef) -> String {
    StateLayout::describe(schema.fields()).join(", ")
}

impl StreamingGroupsWithState {
    /// The operator for `spec`, without state.
    pub fn try_new(spec: GroupsWithStateSpec) -> Result<Self> {
        let fields = spec
            .keys
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&spec.input_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let conv = RowConverter::new(fields)?;
        let names: Arc<[String]> = spec.key_names.clone().into();
        let state = OperatorState::new("flatMapGroupsWithState", spec.config);
        Ok(Self { spec, conv, names, next_timer_ms: None, state })
    }

    fn failed(&self, key: &GroupKey, message: String) -> SluiceError {
        SluiceError::UserFunction { operator: self.spec.operation, key: key.to_string(), message }
    }

    /// `batch` as rows of the declared output schema, or the error naming
    /// both schemas.
    fn conform(&self, key: &GroupKey, batch: RecordBatch) -> Result<RecordBatch> {
        let want = &self.spec.output;
        let got = batch.schema();
        let same = got.fields().len() == want.fields().len()
            && got.fields().iter().zip(want.fields()).all(|(g, w)| g.data_type() == w.data_type());
        if !same {
            return Err(self.failed(
                key,
                format!(
                    "it returned rows of schema ({}), but the operation declared ({}); return batches of the \
                     declared output schema",
                    describe(&got),
                    describe(want)
                ),
            ));
        }
        RecordBatch::try_new(Arc::clone(want), batch.columns().to_vec())
            .map_err(|e| self.failed(key, format!("its rows do not fit the declared output schema: {e}")))
    }

    fn damaged(&self, reason: String) -> SluiceError {
        SluiceError::Checkpoint {
            path: format!("state of {}", self.spec.operation),
            reason: format!(
                "{reason}; the checkpoint is damaged: restore it from a backup or use a new checkpoint location"
            ),
        }
    }

    /// Call the function for the group `key_bytes` and apply what it did
    /// to the store (Spark's rule: a removed value without a timeout is
    /// deleted; a changed value or timeout is written). Returns its rows and
    /// the timeout it set.
    fn call_group(
        &mut self,
        key_bytes: &[u8],
        key: &GroupKey,
        rows: &[RecordBatch],
        has_timed_out: bool,
        ctx: &BatchContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<Option<i64>> {
        let stored = match self.state.store()?.get(key_bytes) {
            Some(bytes) => Some(StoredGroup::decode(bytes).map_err(|e| self.damaged(e))?),
            None => None,
        };
        let previous_timeout = stored.as_ref().and_then(|g| g.timeout_ms);
        let call = GroupCall {
            key,
            rows,
            stored: stored.as_ref().and_then(|g| g.value.as_ref()).map(|(t, j)| (t.as_str(), j.as_slice())),
            has_timed_out,
            batch_time_ms: ctx.batch_timestamp_ms,
            watermark_ms: ctx.watermark.map(|w| w.micros().div_euclid(1000)),
        };
        let func = Arc::clone(&self.spec.func);
        let outcome = match catch_unwind(AssertUnwindSafe(|| func.call(call))) {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => return Err(self.failed(key, e.to_string())),
            Err(panic) => return Err(self.failed(key, format!("it panicked: {}", panic_message(panic)))),
        };
        for batch in outcome.rows {
            if batch.num_rows() > 0 {
                out.push(self.conform(key, batch)?);
            }
        }
        let store = self.state.store_mut()?;
        if outcome.removed && outcome.timeout_ms.is_none() {
            if stored.is_some() {
                store.remove(key_bytes);
            }
        } else if outcome.updated || outcome.removed || outcome.timeout_ms != previous_timeout {
            let group = StoredGroup { timeout_ms: outcome.timeout_ms, value: outcome.value };
            store.put(key_bytes, group.encode());
        }
        Ok(outcome.timeout_ms)
    }

    /// The key of stored group `key_bytes`, decoded.
    fn key_of(&self, key_bytes: &[u8]) -> Result<GroupKey> {
        let parser = self.conv.parser();
        let arrays = self.conv.convert_rows([parser.parse(key_bytes)])?;
        let values =
            arrays.iter().map(|a| ScalarValue::try_from_array(a, 0)).collect::<datafusion::error::Result<_>>()?;
        Ok(GroupKey::new(Arc::clone(&self.names), values))
    }

    /// Call the function for every group with rows in `input`, in key
    /// order; returns their keys.
    fn process_rows(
        &mut self,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<Vec<Vec<u8>>> {
        let batch = concat_batches(&self.spec.input_schema, &input)?;
        if batch.num_rows() == 0 {
            return Ok(vec![]);
        }
        let columns: Vec<ArrayRef> = self
            .spec
            .keys
            .iter()
            .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(batch.num_rows())))
            .collect::<datafusion::error::Result<_>>()?;
        let rows = self.conv.convert_columns(&columns)?;
        let mut groups: BTreeMap<&[u8], Vec<u32>> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            groups.entry(rows.row(i).data()).or_default().push(i as u32);
        }
        let called = groups.keys().map(|k| k.to_vec()).collect();
        for (key_bytes, indices) in groups {
            let values = columns
                .iter()
                .map(|c| ScalarValue::try_from_array(c, indices[0] as usize))
                .collect::<datafusion::error::Result<_>>()?;
            let key = GroupKey::new(Arc::clone(&self.names), values);
            let taken = take_record_batch(&batch, &UInt32Array::from(indices))?;
            self.call_group(key_bytes, &key, &[taken], false, ctx, out)?;
        }
        Ok(called)
    }

    /// Call the function, with no rows, for every stored group not in
    /// `called` (sorted), in key order.
    fn process_idle_keys(&mut self, called: &[Vec<u8>], ctx: &BatchContext, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut idle: Vec<Vec<u8>> = self
            .state
            .store()?
            .iter()
            .map(|(k, _)| k)
            .filter(|k| called.binary_search_by(|c| c.as_slice().cmp(k)).is_err())
            .map(|k| k.to_vec())
            .collect();
        idle.sort();
        for key_bytes in idle {
            let key = self.key_of(&key_bytes)?;
            self.call_group(&key_bytes, &key, &[], false, ctx, out)?;
        }
        Ok(())
    }

    /// Call the function for every group whose timeout is before
    /// `threshold` (ms), in key order; note the earliest timeout left.
    fn process_timeouts(&mut self, threshold: i64, ctx: &BatchContext, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut due = vec![];
        let mut next: Option<i64> = None;
        for (k, v) in self.state.store()?.iter() {
            let group = StoredGroup::decode(v).map_err(|e| self.damaged(e))?;
            match group.timeout_ms {
                Some(t) if t < threshold => due.push(k.to_vec()),
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        due.sort();
        for key_bytes in due {
            let key = self.key_of(&key_bytes)?;
            if let Some(t) = self.call_group(&key_bytes, &key, &[], true, ctx, out)? {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        self.next_timer_ms = next;
        Ok(())
    }
}

#[async_trait]
impl StatefulOperator for StreamingGroupsWithState {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        _task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let input = match self.spec.timeout {
            GroupStateTimeout::EventTime => {
                self.state.drop_late(input, self.spec.event_time.as_ref(), ctx.late_watermark)?
            }
            _ => input,
        };
        let mut out = vec![];
        let called = self.process_rows(input, ctx, &mut out)?;
        if self.spec.every_key {
            self.process_idle_keys(&called, ctx, &mut out)?;
        }
        let threshold = match self.spec.timeout {
            GroupStateTimeout::NoTimeout => None,
            GroupStateTimeout::ProcessingTime => Some(ctx.batch_timestamp_ms),
            GroupStateTimeout::EventTime => ctx.watermark.map(|w| w.micros().div_euclid(1000)),
        };
        if let Some(threshold) = threshold {
            self.process_timeouts(threshold, ctx, &mut out)?;
        }
        Ok(out)
    }

    fn watermark_driven(&self) -> bool {
        self.spec.timeout == GroupStateTimeout::EventTime
    }

    fn next_timer_ms(&self) -> Option<i64> {
        match self.spec.timeout {
            GroupStateTimeout::ProcessingTime => self.next_timer_ms,
            _ => None,
        }
    }

    fn state_layout(&self) -> StateLayout {
        let keys = self
            .spec
            .keys
            .iter()
            .zip(&self.spec.key_names)
            .map(|(e, n)| match e.data_type(&self.spec.input_schema) {
                Ok(t) => format!("{n}: {t}"),
                Err(_) => n.clone(),
            })
            .collect();
        StateLayout {
            operator: self.spec.operation.into(),
            keys,
            values: vec!["state: JSON (its type recorded per group)".into(), format!("timeout: {}", self.spec.timeout)],
        }
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
        // A state type the function cannot read is refused now, before any
        // call; the earliest processing-time timeout is noted.
        let mut next: Option<i64> = None;
        for (_, v) in self.state.store()?.iter() {
            let group = StoredGroup::decode(v).map_err(|e| self.damaged(e))?;
            if let Some((tag, json)) = &group.value {
                self.spec.func.check_stored(tag, json)?;
            }
            if let Some(t) = group.timeout_ms {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        self.next_timer_ms = next;
        Ok(())
    }
}
