//! DStream's `reduceByKeyAndWindow` over processing time: a user reduce
//! function over the values of each key in the last `window` of batch time,
//! emitted every `slide`, with an optional inverse function that updates the
//! window's total incrementally (add the slice that enters, "subtract" the
//! one that leaves) instead of reducing every slice again.
//!
//! Runs on the `flat_map_groups_with_state` operator with processing-time
//! timeouts: each key keeps one partial reduction per slide-long slice of
//! batch time, and is called back at every slide boundary while its window
//! holds values.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{GroupKey, GroupState};
use crate::error::{Result, SluiceError};

/// A reduce (or inverse) function over two values.
pub type Reduce<V> = Arc<dyn Fn(V, V) -> V + Send + Sync>;

/// A key's slices and the window total last emitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowSlices<V> {
    /// Partial reduction per slice start (ms).
    slices: BTreeMap<i64, V>,
    /// The last boundary a window was emitted at.
    emitted_to: Option<i64>,
    /// The total of the window ending at `emitted_to` (with an inverse).
    total: Option<V>,
}

/// The settings of one `reduce_by_key_and_window`.
pub(crate) struct WindowReduce<V> {
    pub window_ms: i64,
    pub slide_ms: i64,
    pub value_index: usize,
    pub reduce: Reduce<V>,
    pub inverse: Option<Reduce<V>>,
    pub schema: SchemaRef,
}

/// The output schema: the keys, `window_start`, `window_end` and `value`.
pub(crate) fn output_schema(keys: Vec<Field>, value_type: DataType) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut fields = keys;
    fields.push(Field::new("window_start", ts.clone(), false));
    fields.push(Field::new("window_end", ts, false));
    fields.push(Field::new("value", value_type, true));
    Arc::new(Schema::new(fields))
}

fn reduce_all<V: Clone>(f: &Reduce<V>, values: impl Iterator<Item = V>) -> Option<V> {
    values.fold(None, |acc, v| {
        Some(match acc {
            None => v,
            Some(a) => f(a, v),
        })
    })
}

impl<V> WindowReduce<V>
where
    V: Clone + Serialize + DeserializeOwned + TryFrom<ScalarValue> + Into<ScalarValue> + Send + 'static,
{
    fn value_of(&self, batch: &RecordBatch, row: usize) -> Result<Option<V>> {
        let scalar = ScalarValue::try_from_array(batch.column(self.value_index), row)?;
        if scalar.is_null() {
            return Ok(None);
        }
        let text = scalar.to_string();
        V::try_from(scalar).map(Some).map_err(|_| {
            SluiceError::plan(format!(
                "reduce_by_key_and_window: the value {text} does not convert to {}",
                std::any::type_name::<V>()
            ))
        })
    }

    /// The total of the window `[end - window, end)` from the slices.
    fn window_total(&self, w: &WindowSlices<V>, end: i64) -> Option<V> {
        reduce_all(&self.reduce, w.slices.range(end - self.window_ms..end).map(|(_, v)| v.clone()))
    }

    /// With an inverse: the total of the window ending at `end`, from the
    /// one ending `slide` earlier.
    fn slide_total(&self, inverse: &Reduce<V>, w: &WindowSlices<V>, end: i64) -> Option<V> {
        let previous_end = end - self.slide_ms;
        let entering = w.slices.range(previous_end..end).map(|(_, v)| v.clone());
        let leaving = w.slices.range(previous_end - self.window_ms..end - self.window_ms).map(|(_, v)| v.clone());
        let mut total = w.total.clone();
        for v in leaving {
            total = total.map(|t| inverse(t, v));
        }
        for v in entering {
            total = Some(match total {
                None => v,
                Some(t) => (self.reduce)(t, v),
            });
        }
        total
    }

    pub(crate) fn call(
        &self,
        key: &GroupKey,
        rows: &[RecordBatch],
        state: &mut GroupState<WindowSlices<V>>,
    ) -> Result<Vec<RecordBatch>> {
        let now = state.current_processing_time_ms();
        let mut w = state.get_option().cloned().unwrap_or(WindowSlices {
            slices: BTreeMap::new(),
            emitted_to: None,
            total: None,
        });
        let slice = now.div_euclid(self.slide_ms) * self.slide_ms;
        for b in rows {
            for i in 0..b.num_rows() {
                if let Some(v) = self.value_of(b, i)? {
                    let merged = match w.slices.remove(&slice) {
                        None => v,
                        Some(prev) => (self.reduce)(prev, v),
                    };
                    w.slices.insert(slice, merged);
                }
            }
        }
        // Emit every window whose end (a slide boundary) the batch time has
        // reached since the last one emitted.
        let mut out = vec![];
        let first_slice = w.slices.keys().next().copied();
        let mut end = match (w.emitted_to, first_slice) {
            (Some(e), _) => e + self.slide_ms,
            (None, Some(s)) => s + self.slide_ms,
            (None, None) => now + self.slide_ms,
        };
        while end <= now {
            let has_values = w.slices.range(end - self.window_ms..end).next().is_some();
            let total = match (&self.inverse, w.emitted_to) {
                _ if !has_values => None,
                (Some(inverse), Some(prev)) if prev == end - self.slide_ms => self.slide_total(inverse, &w, end),
                _ => self.window_total(&w, end),
            };
            if let Some(t) = &total {
                let mut values = key.values().to_vec();
                values.push(ScalarValue::TimestampMillisecond(Some(end - self.window_ms), None));
                values.push(ScalarValue::TimestampMillisecond(Some(end), None));
                values.push(t.clone().into());
                let columns = values.iter().map(|v| v.to_array_of_size(1)).collect::<datafusion::error::Result<_>>()?;
                out.push(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
            }
            w.total = total;
            w.emitted_to = Some(end);
            end += self.slide_ms;
        }
        // Keep the slices the next window needs (and, with an inverse, the
        // ones leaving it).
        let mut keep_from = end - self.window_ms;
        if self.inverse.is_some() {
            keep_from -= self.slide_ms;
        }
        w.slices.retain(|k, _| *k >= keep_from);
        if w.slices.is_empty() {
            state.remove();
        } else {
            state.update(w);
            // Called back at the next boundary (fires once the batch time
            // reaches it).
            state.set_timeout_unchecked(end - 1);
        }
        Ok(out)
    }
}
