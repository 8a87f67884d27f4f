//! [`StreamingChangelog`]: the changing rows of an update-mode operator (an
//! aggregation's changed groups) made into a changelog a further operator
//! can apply: each row replaces the last one emitted for its key, so it is
//! emitted as a retraction of that row (`__sluice_sign = -1`) followed by
//! the row itself (`+1`). A row equal to the one it replaces is a no-op.
//!
//! This is Flink's upsert-to-retract conversion. The state keeps, per key,
//! the last row emitted (Arrow row format); it is kept for every key, as
//! the update-mode aggregation before it keeps every group.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::HashMap;
use datafusion::execution::TaskContext;

use super::session::{decode_list, encode_list};
use super::{BatchContext, OperatorState, StateLayout, StatefulOperator};
use crate::error::{Result, SluiceError};
use crate::state::StateStoreConfig;

/// Name of the column that says whether a changelog row is added (`+1`) or
/// retracted (`-1`).
pub const SIGN_COLUMN: &str = "__sluice_sign";

/// A planned changelog conversion.
#[derive(Debug, Clone)]
pub struct ChangelogSpec {
    /// Schema of the input rows (the update-mode operator's output).
    pub schema: SchemaRef,
    /// Schema of the output: the input's columns, then [`SIGN_COLUMN`].
    pub output: SchemaRef,
    /// The columns (input indices) identifying a row: the upstream
    /// aggregation's grouping columns.
    pub keys: Vec<usize>,
    /// State store settings.
    pub config: StateStoreConfig,
}

/// The changelog operator.
#[derive(Debug)]
pub struct StreamingChangelog {
    spec: ChangelogSpec,
    key_conv: RowConverter,
    row_conv: RowConverter,
    state: OperatorState,
}

impl StreamingChangelog {
    /// The operator for `spec`.
    pub fn try_new(spec: ChangelogSpec) -> Result<Self> {
        let field = |i: &usize| SortField::new(spec.schema.field(*i).data_type().clone());
        let unsupported = |e: datafusion::arrow::error::ArrowError| {
            SluiceError::unsupported(format!("the changing rows of these columns cannot be kept in state: {e}"))
        };
        let all: Vec<usize> = (0..spec.schema.fields().len()).collect();
        Ok(Self {
            key_conv: RowConverter::new(spec.keys.iter().map(field).collect()).map_err(unsupported)?,
            row_conv: RowConverter::new(all.iter().map(field).collect()).map_err(unsupported)?,
            state: OperatorState::new("changelog", spec.config),
            spec,
        })
    }

    /// The rows `rows` (row format) with `signs`, as output.
    fn output(&self, rows: &[Vec<u8>], signs: Vec<i64>) -> Result<RecordBatch> {
        let parser = self.row_conv.parser();
        let mut columns = self.row_conv.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
        columns.push(Arc::new(Int64Array::from(signs)) as ArrayRef);
        Ok(RecordBatch::try_new(Arc::clone(&self.spec.output), columns)?)
    }
}

#[async_trait]
impl StatefulOperator for StreamingChangelog {
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
        let keys: Vec<ArrayRef> = self.spec.keys.iter().map(|i| Arc::clone(batch.column(*i))).collect();
        let key_rows = self.key_conv.convert_columns(&keys)?;
        let rows = self.row_conv.convert_columns(batch.columns())?;
        // The row each key holds now, this batch's changes first.
        let mut current: HashMap<Vec<u8>, Vec<u8>> = HashMap::default();
        let (mut out, mut signs) = (vec![], vec![]);
        for i in 0..batch.num_rows() {
            let key = key_rows.row(i).data();
            let row = rows.row(i).data();
            let old = match current.get(key) {
                Some(r) => Some(r.clone()),
                None => match self.state.store()?.get(key) {
                    Some(v) => Some(decode_list(v)?.first().map(|r| r.to_vec()).ok_or_else(damaged)?),
                    None => None,
                },
            };
            if old.as_deref() == Some(row) {
                continue;
            }
            if let Some(old) = old {
                out.push(old);
                signs.push(-1);
            }
            out.push(row.to_vec());
            signs.push(1);
            current.insert(key.to_vec(), row.to_vec());
        }
        let store = self.state.store_mut()?;
        for (key, row) in &current {
            store.put(key, encode_list(i64::MAX, &[row.as_slice()]));
        }
        if out.is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![self.output(&out, signs)?])
    }

    fn watermark_driven(&self) -> bool {
        false
    }

    fn state_layout(&self) -> StateLayout {
        StateLayout {
            operator: "changelog".into(),
            keys: self.spec.keys.iter().map(|i| self.spec.schema.field(*i).name().clone()).collect(),
            values: StateLayout::describe(self.spec.schema.fields()),
        }
    }
}

fn damaged() -> SluiceError {
    SluiceError::plan(
        "a stored changelog entry holds no row: the state is damaged; restore the checkpoint from a backup or use a \
         new checkpoint location",
    )
}
