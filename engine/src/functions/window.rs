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

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, StructArray, TimestampMicrosecondArray};
use datafusion::arrow::buffer::OffsetBuffer;
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

/// The windows `[start, start + size)`, null where `start` is.
fn struct_of(start: TimestampMicrosecondArray, size: i64) -> StructArray {
    // `unary` keeps the null buffer (and maps the values under it too, so
    // the arithmetic wraps rather than overflows on them).
    let end: TimestampMicrosecondArray = start.unary(|s: i64| s.wrapping_add(size));
    let nulls = start.nulls().cloned();
    StructArray::new(window_fields(), vec![Arc::new(start) as ArrayRef, Arc::new(end)], nulls)
}

/// Window starts of one size and alignment, without a hardware division a
/// row (an integer division costs some 40 cycles; this, a few).
#[derive(Debug, Clone, Copy)]
struct WindowStarts {
    size: i64,
    offset: i64,
    inverse: f64,
}

impl WindowStarts {
    /// Windows of `size` (> 0) aligned to `offset`.
    fn new(size: i64, offset: i64) -> Self {
        Self { size, offset, inverse: 1.0 / size as f64 }
    }

    /// The start of the window of each of `times` (a time in the same
    /// window as the one before, the common case, costs a comparison).
    fn over(&self, times: &[i64]) -> Vec<i64> {
        let (mut start, mut end) = (1, 0);
        times
            .iter()
            .map(|t| {
                if !(start <= *t && *t < end) {
                    start = self.of(*t);
                    end = start.saturating_add(self.size);
                }
                start
            })
            .collect()
    }

    /// The start of the window containing `t`.
    #[inline]
    fn of(&self, t: i64) -> i64 {
        let x = t.wrapping_sub(self.offset);
        // In [0, 2^52) the quotient through f64 (truncated: one
        // instruction, where `floor` is a call) is off by at most one, which
        // the remainder's check mends; elsewhere, divide.
        if !(0..1 << 52).contains(&x) {
            return t.wrapping_sub(x.rem_euclid(self.size));
        }
        let q = (x as f64 * self.inverse) as i64;
        let mut r = x.wrapping_sub(q.wrapping_mul(self.size));
        if r < 0 {
            r += self.size;
        } else if r >= self.size {
            r -= self.size;
        }
        t.wrapping_sub(r)
    }
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
                let starts = WindowStarts::new(size, offset).over(ts.values());
                let starts = TimestampMicrosecondArray::new(starts.into(), ts.nulls().cloned());
                Arc::new(struct_of(starts, size))
            }
            Kind::Session => {
                let gap = int_arg(&args.args[1], "gap")?;
                if gap <= 0 {
                    return exec_err!("session gap must be positive");
                }
                Arc::new(struct_of(ts.clone(), gap))
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
                // Each time is in at most ceil(size / slide) windows: those
                // starting at the latest slide boundary at or before it, and
                // every slide before that whose window still holds it. They
                // are written earliest first.
                let Some(count) = size.checked_add(slide - 1).map(|s| s / slide) else {
                    return exec_err!(
                        "window size {size} µs and slide {slide} µs are too large; use shorter intervals"
                    );
                };
                let mut starts: Vec<i64> = Vec::with_capacity(n * count.clamp(1, 64) as usize);
                let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
                offsets.push(0);
                let slides = WindowStarts::new(slide, offset);
                for (i, t) in ts.values().iter().enumerate() {
                    if ts.is_valid(i) {
                        let last = slides.of(*t);
                        for k in (0..count).rev() {
                            let s = last.wrapping_sub(k.wrapping_mul(slide));
                            if *t < s.wrapping_add(size) {
                                starts.push(s);
                            }
                        }
                    }
                    let len = i32::try_from(starts.len()).map_err(|_| {
                        datafusion::common::DataFusionError::Execution(
                            "a batch assigns more than 2^31 sliding windows; use smaller batches".into(),
                        )
                    })?;
                    offsets.push(len);
                }
                let values = struct_of(TimestampMicrosecondArray::from(starts), size);
                Arc::new(ListArray::new(
                    Arc::new(Field::new_list_field(window_type(), true)),
                    OffsetBuffer::new(offsets.into()),
                    Arc::new(values),
                    ts.nulls().cloned(),
                ))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::ListArray;
    use proptest::prelude::*;

    /// Call window function `kind` on `ts` with the integer arguments `ints`.
    fn call(kind: Kind, ts: Vec<Option<i64>>, ints: &[i64]) -> ArrayRef {
        let n = ts.len();
        let mut args = vec![ColumnarValue::Array(Arc::new(TimestampMicrosecondArray::from(ts)))];
        args.extend(ints.iter().map(|i| ColumnarValue::Scalar(ScalarValue::Int64(Some(*i)))));
        crate::functions::invoke_for_tests::invoke(&WindowFunction::new(kind), args, n)
    }

    /// (start, end) per window, `None` for a null window.
    fn windows(a: &StructArray) -> Vec<Option<(i64, i64)>> {
        let s = a.column(0).as_primitive::<TimestampMicrosecondType>();
        let e = a.column(1).as_primitive::<TimestampMicrosecondType>();
        (0..a.len()).map(|i| a.is_valid(i).then(|| (s.value(i), e.value(i)))).collect()
    }

    proptest! {
        /// The division-free window start equals the Euclidean one, for
        /// times near the epoch, around 2^52 (where it switches to dividing)
        /// and at the ends of the range.
        #[test]
        fn window_starts_match_euclidean_division(
            t in prop_oneof![
                -10_000_000_000_000_000i64..10_000_000_000_000_000,
                (1i64 << 52) - 1000..(1i64 << 52) + 1000,
                -(1i64 << 52) - 1000..-(1i64 << 52) + 1000,
                i64::MIN / 2..i64::MIN / 2 + 1000,
                i64::MAX / 2 - 1000..i64::MAX / 2,
                -1000i64..1000,
            ],
            size in prop_oneof![1i64..100, 1i64..10_000_000_000, Just(86_400_000_000i64), Just(1i64 << 40)],
            offset in -1_000_000i64..1_000_000,
        ) {
            let want = t.wrapping_sub(t.wrapping_sub(offset).rem_euclid(size));
            let starts = WindowStarts::new(size, offset);
            prop_assert_eq!(starts.of(t), want);
            // Over a run of times, each in the window of the one before or not.
            let run = [t, t.saturating_add(1), t.saturating_add(size / 2), t.saturating_add(size), t.saturating_sub(size), t];
            let want: Vec<i64> = run.iter().map(|t| t.wrapping_sub(t.wrapping_sub(offset).rem_euclid(size))).collect();
            prop_assert_eq!(starts.over(&run), want);
        }

        /// Tumbling and sliding windows agree with a by-definition reference:
        /// every aligned `[start, start + size)` holding the time, earliest
        /// first; null times give null windows.
        #[test]
        fn windows_hold_exactly_their_times(
            ts in proptest::collection::vec(proptest::option::weighted(0.9, -10_000i64..10_000), 0..40),
            size in 1i64..50,
            slide in 1i64..50,
            offset in 0i64..20,
        ) {
            let tumble = call(Kind::Tumble, ts.clone(), &[size, offset]);
            let got = windows(tumble.as_struct());
            for (t, w) in ts.iter().zip(&got) {
                let want = t.map(|t| {
                    let s = (t - offset).div_euclid(size) * size + offset;
                    (s, s + size)
                });
                prop_assert_eq!(*w, want);
            }
            let hop = call(Kind::Windows, ts.clone(), &[size, slide, offset]);
            let hop: &ListArray = hop.as_list();
            for (i, t) in ts.iter().enumerate() {
                let Some(t) = t else {
                    prop_assert!(hop.is_null(i));
                    continue;
                };
                let got = windows(hop.value(i).as_struct());
                let first = (t - offset).div_euclid(slide) * slide + offset - (size / slide + 2) * slide;
                let want: Vec<Option<(i64, i64)>> = (0..(size / slide + 3))
                    .map(|k| first + k * slide)
                    .filter(|s| *s <= *t && *t < s + size)
                    .map(|s| Some((s, s + size)))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
