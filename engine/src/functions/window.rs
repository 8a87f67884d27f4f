//! Event-time window assignment as scalar functions. The SQL layer rewrites
//! `window(...)`, `session_window(...)` and the `TUMBLE` / `HOP` / `SESSION`
//! table functions into calls of these (durations in microseconds):
//!
//! - `sluice_tumble(ts, size, offset)`: the tumbling window containing `ts`;
//! - `sluice_windows(ts, size, slide, offset)`: every sliding window
//!   containing `ts`, as a list (unnested by the rewrite);
//! - `sluice_session(ts, gap)`: the session `[ts, ts + gap)` of one event,
//!   merged with its neighbours by the streaming aggregation.
//!
//! Each returns a struct `{start, end}` of microsecond timestamps. Windows
//! are aligned to the Unix epoch plus the offset; a row belongs to every
//! window whose `[start, end)` contains its time.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Builder, ListArray, StructArray, TimestampMicrosecondArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// Name of the tumbling-window function.
pub const TUMBLE: &str = "sluice_tumble";
/// Name of the sliding-window function.
pub const WINDOWS: &str = "sluice_windows";
/// Name of the session-window function.
pub const SESSION: &str = "sluice_session";
/// Name of Spark's `window_time(window)`: a window's event time, its end
/// minus one microsecond (the time of a row emitted for the window).
pub const WINDOW_TIME: &str = "window_time";

/// The `{start, end}` struct type of a window.
pub fn window_fields() -> Fields {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    Fields::from(vec![Field::new("start", ts.clone(), true), Field::new("end", ts, true)])
}

fn window_type() -> DataType {
    DataType::Struct(window_fields())
}

/// Which window function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Tumble,
    Windows,
    Session,
    WindowTime,
}

/// A window-assignment function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFunction {
    kind: Kind,
    signature: Signature,
}

impl WindowFunction {
    fn new(kind: Kind) -> Self {
        let arity = match kind {
            Kind::Tumble => 3,
            Kind::Windows => 4,
            Kind::Session => 2,
            Kind::WindowTime => 1,
        };
        Self { kind, signature: Signature::any(arity, Volatility::Immutable) }
    }
}

/// The three window functions, ready to register.
pub fn window_udfs() -> Vec<ScalarUDF> {
    [Kind::Tumble, Kind::Windows, Kind::Session, Kind::WindowTime]
        .into_iter()
        .map(|k| ScalarUDF::new_from_impl(WindowFunction::new(k)))
        .collect()
}

/// One of the window functions by name (`sluice_tumble`, `sluice_windows`,
/// `sluice_session`).
pub fn window_udf(name: &str) -> Option<ScalarUDF> {
    window_udfs().into_iter().find(|u| u.name() == name)
}

fn int_arg(v: &ColumnarValue, what: &str) -> Result<i64> {
    match v {
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(n)) => Ok(n),
            _ => plan_err!("window {what} must be a constant duration"),
        },
        ColumnarValue::Array(_) => plan_err!("window {what} must be a constant duration"),
    }
}

fn struct_of(start: Vec<Option<i64>>, size: impl Fn(i64) -> i64) -> StructArray {
    let end: TimestampMicrosecondArray = start.iter().map(|s| s.map(&size)).collect();
    let nulls = NullBuffer::from(start.iter().map(Option::is_some).collect::<Vec<_>>());
    let start: TimestampMicrosecondArray = start.into_iter().collect();
    StructArray::new(window_fields(), vec![Arc::new(start) as ArrayRef, Arc::new(end)], Some(nulls))
}

impl ScalarUDFImpl for WindowFunction {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Tumble => TUMBLE,
            Kind::Windows => WINDOWS,
            Kind::Session => SESSION,
            Kind::WindowTime => WINDOW_TIME,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if self.kind == Kind::WindowTime {
            return match args.first() {
                Some(DataType::Struct(f)) if f.iter().any(|f| f.name() == "end") => {
                    Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
                }
                _ => plan_err!("window_time() takes a window struct (with an 'end' field)"),
            };
        }
        match args.first() {
            Some(DataType::Timestamp(_, _))
            | Some(DataType::Date32)
            | Some(DataType::Date64)
            | Some(DataType::Null) => {}
            Some(other) => return plan_err!("window time column must be a TIMESTAMP, found {other}"),
            None => return plan_err!("window function needs a time column"),
        }
        Ok(match self.kind {
            Kind::Windows => DataType::List(Arc::new(Field::new_list_field(window_type(), true))),
            _ => window_type(),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        if self.kind == Kind::WindowTime {
            let w = args.args[0].clone().into_array(n)?;
            let end = w.as_struct().column_by_name("end").cloned();
            let Some(end) = end else { return exec_err!("window_time() needs a window struct") };
            let end = cast(&end, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let out: TimestampMicrosecondArray =
                end.as_primitive::<TimestampMicrosecondType>().iter().map(|e| e.map(|e| e - 1)).collect();
            return Ok(ColumnarValue::Array(Arc::new(out)));
        }
        let ts = args.args[0].clone().into_array(n)?;
        let ts = cast(&ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let out: ArrayRef = match self.kind {
            Kind::Tumble => {
                let (size, offset) = (int_arg(&args.args[1], "size")?, int_arg(&args.args[2], "offset")?);
                if size <= 0 {
                    return exec_err!("window size must be positive");
                }
                let starts = ts.iter().map(|t| t.map(|t| t - (t - offset).rem_euclid(size))).collect();
                Arc::new(struct_of(starts, |s| s + size))
            }
            Kind::Session => {
                let gap = int_arg(&args.args[1], "gap")?;
                if gap <= 0 {
                    return exec_err!("session gap must be positive");
                }
                Arc::new(struct_of(ts.iter().collect(), |s| s + gap))
            }
            Kind::WindowTime => return exec_err!("unreachable: window_time handled above"),
            Kind::Windows => {
                let (size, slide, offset) = (
                    int_arg(&args.args[1], "size")?,
                    int_arg(&args.args[2], "slide")?,
                    int_arg(&args.args[3], "offset")?,
                );
                if size <= 0 || slide <= 0 {
                    return exec_err!("window size and slide must be positive");
                }
                let mut starts = Int64Builder::new();
                let mut offsets = vec![0i32];
                let mut valid = Vec::with_capacity(n);
                for t in ts.iter() {
                    if let Some(t) = t {
                        let last = t - (t - offset).rem_euclid(slide);
                        let count = (size + slide - 1) / slide;
                        let mut these: Vec<i64> =
                            (0..count).map(|i| last - i * slide).filter(|s| *s <= t && t < s + size).collect();
                        these.reverse();
                        for s in &these {
                            starts.append_value(*s);
                        }
                        offsets.push(offsets.last().copied().unwrap_or(0) + these.len() as i32);
                    } else {
                        offsets.push(offsets.last().copied().unwrap_or(0));
                    }
                    valid.push(t.is_some());
                }
                let values = struct_of(starts.finish().iter().collect(), |s| s + size);
                Arc::new(ListArray::new(
                    Arc::new(Field::new_list_field(window_type(), true)),
                    OffsetBuffer::new(offsets.into()),
                    Arc::new(values),
                    Some(NullBuffer::from(valid)),
                ))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}
