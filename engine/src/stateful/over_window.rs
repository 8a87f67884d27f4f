//! [`StreamingOverWindow`]: window functions (`AVG(x) OVER (PARTITION BY k
//! ORDER BY t ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)`, `SUM`, `LAG`,
//! ...) over a stream, in update mode.
//!
//! The state keeps, per partition key, every row of the partition with the
//! values its window functions gave it last (Arrow row format). Each batch
//! applies a partition's new rows to it (a changelog input's retractions
//! remove the row they retract), evaluates the window functions over the
//! whole partition with DataFusion's own window expressions, exactly as a
//! batch query does, and emits the rows whose values changed, new rows
//! included. Any frame works (`ROWS`, `RANGE`, `FOLLOWING` too), since the
//! partition is evaluated whole. A row retracted is not emitted again.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::HashMap;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::window::WindowExpr;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::session::{decode_list, encode_list};
use super::{BatchContext, OperatorState, StateLayout, StatefulOperator};
use crate::error::{Result, SluiceError};
use crate::state::StateStoreConfig;

/// A planned over-window operator.
#[derive(Debug, Clone)]
pub struct OverWindowSpec {
    /// Schema of the input rows (the window functions are planned over it).
    pub schema: SchemaRef,
    /// Schema of the output: the input's data columns, then one column per
    /// window function.
    pub output: SchemaRef,
    /// The input's last column is a changelog sign (`-1` retracts a row).
    pub signed: bool,
    /// `PARTITION BY` expressions over the input.
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// Their names, for `EXPLAIN` and the state layout.
    pub partition_names: Vec<String>,
    /// `ORDER BY` of the window functions.
    pub order: Vec<PhysicalSortExpr>,
    /// The window functions.
    pub windows: Vec<Arc<dyn WindowExpr>>,
    /// State store settings.
    pub config: StateStoreConfig,
}

impl OverWindowSpec {
    /// The number of the input's data columns (all but the sign).
    pub fn data_columns(&self) -> usize {
        self.schema.fields().len() - usize::from(self.signed)
    }
}

/// The over-window operator.
#[derive(Debug)]
pub struct StreamingOverWindow {
    spec: OverWindowSpec,
    key_conv: RowConverter,
    data_conv: RowConverter,
    out_conv: RowConverter,
    order_conv: RowConverter,
    state: OperatorState,
}

fn converter(types: impl Iterator<Item = SortField>) -> Result<RowConverter> {
    RowConverter::new(types.collect()).map_err(|e| {
        SluiceError::unsupported(format!("a window function over these columns cannot keep its rows in state: {e}"))
    })
}

impl StreamingOverWindow {
    /// The operator for `spec`.
    pub fn try_new(spec: OverWindowSpec) -> Result<Self> {
        let n = spec.data_columns();
        let key_types = spec
            .partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&spec.schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let order_types = spec
            .order
            .iter()
            .map(|o| Ok(SortField::new_with_options(o.expr.data_type(&spec.schema)?, o.options)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            key_conv: converter(key_types.into_iter())?,
            data_conv: converter(spec.schema.fields().iter().take(n).map(|f| SortField::new(f.data_type().clone())))?,
            out_conv: converter(spec.output.fields().iter().map(|f| SortField::new(f.data_type().clone())))?,
            order_conv: converter(order_types.into_iter())?,
            state: OperatorState::new("over_window", spec.config),
            spec,
        })
    }

    fn eval(&self, exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        exprs.iter().map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?)).collect()
    }

    /// The input-schema batch of data rows `rows` (a sign of `+1` added).
    fn input_batch(&self, rows: &[Vec<u8>]) -> Result<RecordBatch> {
        let parser = self.data_conv.parser();
        let mut columns = self.data_conv.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
        if self.spec.signed {
            columns.push(Arc::new(Int64Array::from(vec![1i64; rows.len()])) as ArrayRef);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.spec.schema), columns)?)
    }

    /// The partition's rows `rows` sorted, with their window values (output
    /// schema).
    fn evaluate(&self, rows: &[Vec<u8>]) -> Result<RecordBatch> {
        let batch = self.input_batch(rows)?;
        let order: Vec<Arc<dyn PhysicalExpr>> = self.spec.order.iter().map(|o| Arc::clone(&o.expr)).collect();
        let keys = self.order_conv.convert_columns(&self.eval(&order, &batch)?)?;
        let mut idx: Vec<u32> = (0..batch.num_rows() as u32).collect();
        idx.sort_by(|a, b| keys.row(*a as usize).cmp(&keys.row(*b as usize)));
        let sorted = take_record_batch(&batch, &UInt32Array::from(idx))?;
        let mut columns: Vec<ArrayRef> = sorted.columns()[..self.spec.data_columns()].to_vec();
        for w in &self.spec.windows {
            columns.push(w.evaluate(&sorted)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.spec.output), columns)?)
    }

    /// Apply `new` (rows of partition `key`, input schema) to its stored
    /// rows; returns the rows whose window values changed.
    fn merge(&mut self, key: &[u8], new: &RecordBatch) -> Result<Option<RecordBatch>> {
        let n = self.spec.data_columns();
        let old: Vec<Vec<u8>> = match self.state.store()?.get(key) {
            Some(v) => decode_list(v)?.into_iter().map(<[u8]>::to_vec).collect(),
            None => vec![],
        };
        let mut working: Vec<Vec<u8>> = vec![];
        if !old.is_empty() {
            let parser = self.out_conv.parser();
            let old_batch = self.out_conv.convert_rows(old.iter().map(|r| parser.parse(r)))?;
            let data = self.data_conv.convert_columns(&old_batch[..n])?;
            working.extend(data.iter().map(|r| r.data().to_vec()));
        }
        let new_rows = self.data_conv.convert_columns(&new.columns()[..n])?;
        let signs = match self.spec.signed {
            true => Some(
                new.column(n)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| SluiceError::internal("a changelog sign column that is not Int64"))?
                    .clone(),
            ),
            false => None,
        };
        for i in 0..new.num_rows() {
            let row = new_rows.row(i).data();
            if signs.as_ref().is_some_and(|s| s.value(i) < 0) {
                if let Some(p) = working.iter().position(|w| w.as_slice() == row) {
                    working.remove(p);
                }
            } else {
                working.push(row.to_vec());
            }
        }
        if working.is_empty() {
            self.state.store_mut()?.remove(key);
            return Ok(None);
        }
        let out = self.evaluate(&working)?;
        let encoded = self.out_conv.convert_columns(out.columns())?;
        let mut before: HashMap<&[u8], usize> = HashMap::default();
        for r in &old {
            *before.entry(r.as_slice()).or_default() += 1;
        }
        let mut changed = vec![];
        for (i, r) in encoded.iter().enumerate() {
            match before.get_mut(r.data()) {
                Some(c) if *c > 0 => *c -= 1,
                _ => changed.push(i as u32),
            }
        }
        let rows: Vec<&[u8]> = encoded.iter().map(|r| r.data()).collect();
        self.state.store_mut()?.put(key, encode_list(i64::MAX, &rows));
        if changed.is_empty() {
            return Ok(None);
        }
        Ok(Some(take_record_batch(&out, &UInt32Array::from(changed))?))
    }
}

#[async_trait]
impl StatefulOperator for StreamingOverWindow {
    fn state(&mut self) -> &mut OperatorState {
        &mut self.state
    }

    async fn process(
        &mut self,
        _task: Arc<TaskContext>,
        input: Vec<RecordBatch>,
        _ctx: &BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let batch = concat_batches(&self.spec.schema, &input)?;
        if batch.num_rows() == 0 {
            return Ok(vec![]);
        }
        let keys = self.eval(&self.spec.partition, &batch)?;
        let key_rows = self.key_conv.convert_columns(&keys)?;
        // Rows by partition, partitions in order of first arrival.
        let mut groups: HashMap<&[u8], usize> = HashMap::default();
        let mut members: Vec<(Vec<u8>, Vec<u32>)> = vec![];
        for i in 0..batch.num_rows() {
            let k: &[u8] = if self.spec.partition.is_empty() { &[] } else { key_rows.row(i).data() };
            let g = *groups.entry(k).or_insert_with(|| {
                members.push((k.to_vec(), vec![]));
                members.len() - 1
            });
            members[g].1.push(i as u32);
        }
        let mut out = vec![];
        for (key, idx) in members {
            let rows = take_record_batch(&batch, &UInt32Array::from(idx))?;
            out.extend(self.merge(&key, &rows)?);
        }
        Ok(out)
    }

    fn watermark_driven(&self) -> bool {
        false
    }

    fn state_layout(&self) -> StateLayout {
        StateLayout {
            operator: format!(
                "over_window ({})",
                self.spec.windows.iter().map(|w| w.name().to_string()).collect::<Vec<_>>().join(", ")
            ),
            keys: self.spec.partition_names.clone(),
            values: StateLayout::describe(self.spec.output.fields()),
        }
    }
}
