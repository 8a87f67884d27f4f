//! Reading an event-time key (a timestamp, or a window struct's `end`) as
//! microseconds, for watermark comparisons.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Result, SluiceError};

/// A point in event time: microseconds since the Unix epoch, the unit of
/// Arrow's `Timestamp(Microsecond)`. Watermarks reach the operators as this
/// one type; milliseconds appear only where the checkpoint and progress
/// reports record them (as Spark's do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

impl EventTime {
    /// The time `ms` milliseconds after the epoch (saturating).
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms.saturating_mul(1000))
    }
    /// The time `us` microseconds after the epoch.
    pub const fn from_micros(us: i64) -> Self {
        Self(us)
    }
    /// Microseconds since the epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }
    /// Milliseconds since the epoch (rounded down).
    pub const fn millis(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

/// How to get a row's event time for watermark decisions.
#[derive(Debug, Clone)]
pub struct EventTimeKey {
    /// Index of the grouping key / column holding event time.
    pub index: usize,
    /// Expression computing it from the operator's input rows.
    pub expr: Arc<dyn PhysicalExpr>,
}

/// Event time in microseconds of each value: a timestamp as is; a window
/// struct by its `end` field (a window is closed when its end <= watermark).
pub fn event_time_micros(values: &ArrayRef) -> Result<Int64Array> {
    let values = match values.data_type() {
        DataType::Struct(_) => values
            .as_struct()
            .column_by_name("end")
            .cloned()
            .ok_or_else(|| SluiceError::internal("event-time window struct has no 'end' field"))?,
        _ => Arc::clone(values),
    };
    let us = cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let us = us.as_primitive::<TimestampMicrosecondType>();
    if us.null_count() == 0 {
        // The values as they are (a shared buffer, no copy).
        return Ok(Int64Array::new(us.values().clone(), None));
    }
    Ok(Int64Array::from_iter_values(us.iter().map(|v| v.unwrap_or(i64::MIN))))
}
