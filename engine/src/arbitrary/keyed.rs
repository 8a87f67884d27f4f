//! [`KeyedStream`]: a stream grouped by key columns, for
//! `flat_map_groups_with_state` and `map_groups_with_state`.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Column;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::function::{state_tag, TypedGroupFunction};
use super::{GroupKey, GroupState, GroupStateTimeout, GroupsWithStateNode};
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;

/// How an operation over groups calls its function and emits.
struct Shape {
    mode: OutputMode,
    is_map: bool,
    every_key: bool,
    operation: &'static str,
}

/// One row of `values` as a batch of `schema`, or the error naming the
/// mismatch.
fn one_row_batch(schema: &SchemaRef, values: &[ScalarValue]) -> Result<Vec<RecordBatch>> {
    if values.len() != schema.fields().len() {
        return Err(SluiceError::plan(format!(
            "the function returned {} value(s), but the output schema has {} column(s)",
            values.len(),
            schema.fields().len()
        )));
    }
    let columns = values.iter().map(|v| v.to_array_of_size(1)).collect::<datafusion::error::Result<_>>()?;
    Ok(vec![RecordBatch::try_new(Arc::clone(schema), columns)?])
}

/// A stream grouped by key columns (Spark's `KeyValueGroupedDataset`), made
/// by [`group_by_key`].
pub struct KeyedStream {
    df: DataFrame,
    keys: Vec<String>,
    /// Migrations into the state type, each `(from tag, Migration<S>)`.
    migrations: Vec<(String, &'static str, Box<dyn Any + Send + Sync>)>,
}

impl std::fmt::Debug for KeyedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream").field("keys", &self.keys).finish()
    }
}

/// Group the rows of `df` by the columns `keys`, for
/// [`KeyedStream::flat_map_groups_with_state`].
pub fn group_by_key(df: DataFrame, keys: &[&str]) -> Result<KeyedStream> {
    if keys.is_empty() {
        return Err(SluiceError::plan("group_by_key needs at least one key column"));
    }
    for k in keys {
        if df.schema().qualified_field_with_unqualified_name(k).is_err() {
            let names: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
            return Err(SluiceError::plan(format!(
                "group_by_key: no column '{k}'; the stream's columns are {}",
                names.join(", ")
            )));
        }
    }
    Ok(KeyedStream { df, keys: keys.iter().map(|k| k.to_string()).collect(), migrations: vec![] })
}

impl KeyedStream {
    /// Accept state written with the older type `Old`: a stored value of
    /// that type is read as `Old` and turned into the function's state type
    /// `S` by `migrate` (otherwise a restart with another state type is
    /// refused).
    pub fn with_state_migration<Old, S, M>(mut self, migrate: M) -> Self
    where
        Old: DeserializeOwned + 'static,
        S: 'static,
        M: Fn(Old) -> S + Send + Sync + 'static,
    {
        let from = state_tag::<Old>();
        let tag = from.clone();
        let m: super::function::Migration<S> = Arc::new(move |json: &[u8]| {
            let old: Old = serde_json::from_slice(json).map_err(|e| {
                SluiceError::plan(format!("a stored state value does not decode as {tag} for its migration: {e}"))
            })?;
            Ok(migrate(old))
        });
        self.migrations.push((from, std::any::type_name::<S>(), Box::new(m)));
        self
    }

    /// Call `func` once per key with rows in a batch, with the key's rows
    /// and its state, and once per timed-out key (no rows,
    /// `has_timed_out()`). It returns rows of `output_schema`. `output_mode`
    /// is what the rows are (append: final rows; update: rows that replace
    /// earlier ones) and must match the query's, as in Spark.
    pub fn flat_map_groups_with_state<S, F>(
        self,
        output_mode: OutputMode,
        timeout: GroupStateTimeout,
        output_schema: SchemaRef,
        func: F,
    ) -> Result<DataFrame>
    where
        S: Serialize + DeserializeOwned + 'static,
        F: Fn(&GroupKey, &[RecordBatch], &mut GroupState<S>) -> Result<Vec<RecordBatch>> + Send + Sync + 'static,
    {
        if output_mode == OutputMode::Complete {
            return Err(SluiceError::unsupported(
                "flat_map_groups_with_state emits in append or update mode (as in Spark), not complete; declare \
                 OutputMode::Append or OutputMode::Update",
            ));
        }
        let shape =
            Shape { mode: output_mode, is_map: false, every_key: false, operation: "flat_map_groups_with_state" };
        self.build(shape, timeout, output_schema, func)
    }

    /// Call `func` once per key with rows in a batch (and once per
    /// timed-out key); it returns one output row, the values of
    /// `output_schema`'s columns. Update mode only, as in Spark.
    pub fn map_groups_with_state<S, F>(
        self,
        timeout: GroupStateTimeout,
        output_schema: SchemaRef,
        func: F,
    ) -> Result<DataFrame>
    where
        S: Serialize + DeserializeOwned + 'static,
        F: Fn(&GroupKey, &[RecordBatch], &mut GroupState<S>) -> Result<Vec<ScalarValue>> + Send + Sync + 'static,
    {
        let schema = Arc::clone(&output_schema);
        let one_row = move |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<S>| {
            one_row_batch(&schema, &func(key, rows, state)?)
        };
        let shape =
            Shape { mode: OutputMode::Update, is_map: true, every_key: false, operation: "map_groups_with_state" };
        self.build(shape, timeout, output_schema, one_row)
    }

    /// DStream's `updateStateByKey`: in every batch, `update` is called for
    /// every key with rows and every key with state (rows or not) with the
    /// key's rows and its state; it returns the new state, `None` to drop
    /// it. Emits, in update mode, every key's state after the batch: the key
    /// columns and `state` (of type `state_type`).
    pub fn update_state_by_key<S, F>(self, state_type: DataType, update: F) -> Result<DataFrame>
    where
        S: Serialize + DeserializeOwned + Clone + Into<ScalarValue> + 'static,
        F: Fn(&GroupKey, &[RecordBatch], Option<S>) -> Result<Option<S>> + Send + Sync + 'static,
    {
        let mut fields = vec![];
        for k in &self.keys {
            let (_, f) = self.df.schema().qualified_field_with_unqualified_name(k)?;
            fields.push(Field::new(k, f.data_type().clone(), true));
        }
        fields.push(Field::new("state", state_type, true));
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let out = Arc::clone(&schema);
        let func = move |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<S>| {
            let new = update(key, rows, state.get_option().cloned())?;
            let Some(new) = new else {
                state.remove();
                return Ok(vec![]);
            };
            state.update(new.clone());
            let mut values = key.values().to_vec();
            values.push(new.into());
            one_row_batch(&out, &values)
        };
        let shape =
            Shape { mode: OutputMode::Update, is_map: false, every_key: true, operation: "update_state_by_key" };
        self.build(shape, GroupStateTimeout::NoTimeout, schema, func)
    }

    /// DStream's `mapWithState`: `func` is called once per input row (in
    /// arrival order) with the key, the row and the key's state, and returns
    /// one output row of `output_schema`. With `idle_timeout`
    /// (`"30 minutes"`), a key without rows for that long (processing time)
    /// is called once more with no row and `has_timed_out()`; its state is
    /// then dropped unless the function updates it. Emits in append mode.
    pub fn map_with_state<S, F>(
        self,
        idle_timeout: Option<&str>,
        output_schema: SchemaRef,
        func: F,
    ) -> Result<DataFrame>
    where
        S: Serialize + DeserializeOwned + 'static,
        F: Fn(&GroupKey, Option<&RecordBatch>, &mut GroupState<S>) -> Result<Vec<ScalarValue>> + Send + Sync + 'static,
    {
        let idle = idle_timeout.map(|d| crate::options::parse_duration(d).map(|d| d.as_millis() as i64)).transpose()?;
        let out = Arc::clone(&output_schema);
        let per_row = move |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<S>| {
            let mut batches = vec![];
            if state.has_timed_out() {
                let values = func(key, None, state)?;
                if !state.is_updated() {
                    state.remove();
                }
                batches.extend(one_row_batch(&out, &values)?);
                return Ok(batches);
            }
            for b in rows {
                for i in 0..b.num_rows() {
                    let values = func(key, Some(&b.slice(i, 1)), state)?;
                    batches.extend(one_row_batch(&out, &values)?);
                }
            }
            if let (Some(ms), true) = (idle, state.exists()) {
                state.set_timeout_duration_ms(ms)?;
            }
            Ok(batches)
        };
        let timeout = if idle.is_some() { GroupStateTimeout::ProcessingTime } else { GroupStateTimeout::NoTimeout };
        let shape = Shape { mode: OutputMode::Append, is_map: false, every_key: false, operation: "map_with_state" };
        self.build(shape, timeout, output_schema, per_row)
    }

    /// Spark 4's `transformWithState`: `processor` is called per key with
    /// rows (`handle_input_rows`) and per due timer
    /// (`handle_expired_timer`), with the key's named state variables
    /// ([`super::ValueState`], [`super::ListState`], [`super::MapState`],
    /// each with an optional TTL) and timers. Emits rows of
    /// `output_schema` in `output_mode` (append or update, matching the
    /// query's).
    pub fn transform_with_state<P: super::StatefulProcessor>(
        self,
        processor: P,
        time_mode: super::TimeMode,
        output_mode: OutputMode,
        output_schema: SchemaRef,
    ) -> Result<DataFrame> {
        if output_mode == OutputMode::Complete {
            return Err(SluiceError::unsupported(
                "transform_with_state emits in append or update mode (as in Spark), not complete; declare \
                 OutputMode::Append or OutputMode::Update",
            ));
        }
        let func = move |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<super::ProcessorStore>| {
            super::processor::run_processor(&processor, time_mode, key, rows, state)
        };
        let shape = Shape { mode: output_mode, is_map: false, every_key: false, operation: "transform_with_state" };
        self.build(shape, time_mode.timeout(), output_schema, func)
    }

    /// DStream's `reduceByKeyAndWindow` over processing time: every
    /// `slide` (`"10 seconds"`), for each key with values in the last
    /// `window` of batch time, `reduce` folds the values of `value_column`
    /// in that window. Emits the keys, `window_start`, `window_end` and
    /// `value`, in append mode. The window must be a multiple of the slide.
    pub fn reduce_by_key_and_window<V, R>(
        self,
        value_column: &str,
        window: &str,
        slide: &str,
        reduce: R,
    ) -> Result<DataFrame>
    where
        V: Clone + Serialize + DeserializeOwned + TryFrom<ScalarValue> + Into<ScalarValue> + Send + 'static,
        R: Fn(V, V) -> V + Send + Sync + 'static,
    {
        self.reduce_window(value_column, window, slide, Arc::new(reduce), None)
    }

    /// [`reduce_by_key_and_window`](Self::reduce_by_key_and_window) with
    /// `inverse` ("subtract" a value from a total): each window's total is
    /// the previous one's, with the slice that left taken out by `inverse`
    /// and the slice that entered added, as DStream's incremental form.
    pub fn reduce_by_key_and_window_inverse<V, R, I>(
        self,
        value_column: &str,
        window: &str,
        slide: &str,
        reduce: R,
        inverse: I,
    ) -> Result<DataFrame>
    where
        V: Clone + Serialize + DeserializeOwned + TryFrom<ScalarValue> + Into<ScalarValue> + Send + 'static,
        R: Fn(V, V) -> V + Send + Sync + 'static,
        I: Fn(V, V) -> V + Send + Sync + 'static,
    {
        self.reduce_window(value_column, window, slide, Arc::new(reduce), Some(Arc::new(inverse)))
    }

    fn reduce_window<V>(
        self,
        value_column: &str,
        window: &str,
        slide: &str,
        reduce: super::Reduce<V>,
        inverse: Option<super::Reduce<V>>,
    ) -> Result<DataFrame>
    where
        V: Clone + Serialize + DeserializeOwned + TryFrom<ScalarValue> + Into<ScalarValue> + Send + 'static,
    {
        let ms = |d: &str| crate::options::parse_duration(d).map(|d| d.as_millis() as i64);
        let (window_ms, slide_ms) = (ms(window)?, ms(slide)?);
        if slide_ms <= 0 || window_ms <= 0 || window_ms % slide_ms != 0 {
            return Err(SluiceError::plan(format!(
                "reduce_by_key_and_window: the window ({window}) must be a positive multiple of the slide ({slide})"
            )));
        }
        let schema = self.df.schema();
        let value_index = schema.index_of_column_by_name(None, value_column).ok_or_else(|| {
            SluiceError::plan(format!(
                "reduce_by_key_and_window: no column '{value_column}'; the stream's columns are {}",
                schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let value_type = schema.field(value_index).data_type().clone();
        let mut keys = vec![];
        for k in &self.keys {
            let (_, f) = schema.qualified_field_with_unqualified_name(k)?;
            keys.push(Field::new(k, f.data_type().clone(), true));
        }
        let out = super::window::output_schema(keys, value_type);
        let spec =
            super::window::WindowReduce { window_ms, slide_ms, value_index, reduce, inverse, schema: Arc::clone(&out) };
        let func = move |key: &GroupKey, rows: &[RecordBatch], state: &mut GroupState<super::WindowSlices<V>>| {
            spec.call(key, rows, state)
        };
        let shape =
            Shape { mode: OutputMode::Append, is_map: false, every_key: false, operation: "reduce_by_key_and_window" };
        self.build(shape, GroupStateTimeout::ProcessingTime, out, func)
    }

    fn build<S, F>(
        self,
        shape: Shape,
        timeout: GroupStateTimeout,
        output_schema: SchemaRef,
        func: F,
    ) -> Result<DataFrame>
    where
        S: Serialize + DeserializeOwned + 'static,
        F: Fn(&GroupKey, &[RecordBatch], &mut GroupState<S>) -> Result<Vec<RecordBatch>> + Send + Sync + 'static,
    {
        let mut migrations = vec![];
        for (from, into, m) in self.migrations {
            let m = m.downcast::<super::function::Migration<S>>().map_err(|_| {
                SluiceError::plan(format!(
                    "the state migration from {from} produces {into}, not the function's state type {}",
                    std::any::type_name::<S>()
                ))
            })?;
            migrations.push((from, *m));
        }
        let func = Arc::new(TypedGroupFunction::new(func, timeout, migrations));
        let (state, plan) = self.df.into_parts();
        let schema = Arc::new(DFSchema::try_from(output_schema.as_ref().clone())?);
        let node = GroupsWithStateNode {
            input: plan,
            keys: self.keys.iter().map(|k| Expr::Column(Column::from_name(k.as_str()))).collect(),
            schema,
            func,
            mode: shape.mode,
            is_map: shape.is_map,
            every_key: shape.every_key,
            operation: shape.operation,
            timeout,
            id: 0,
            downstream: false,
        };
        Ok(DataFrame::new(state, LogicalPlan::Extension(Extension { node: Arc::new(node) })))
    }
}
