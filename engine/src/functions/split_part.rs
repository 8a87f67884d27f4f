//! `split_part(s, delimiter, n)`: DataFusion's, with a faster path for the
//! common call over a string column with a one-byte delimiter and a
//! positive position (`split_part(url, '/', 4)`).
//!
//! DataFusion's version searches each delimiter with a `memmem` finder and
//! grows its output from one byte per row. Over short strings (Nexmark's
//! URLs, q21 and q22) the per-search overhead and the regrowth dominate.
//! This path walks each string's bytes once up to the part it returns and
//! sizes the output from the input. Every other call (a column of
//! delimiters or positions, a longer or empty delimiter, a negative
//! position, `Utf8View` input) goes to DataFusion's function unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, GenericStringArray, GenericStringBuilder, OffsetSizeTrait};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};

/// The `split_part` function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SplitPart {
    inner: Arc<ScalarUDF>,
}

impl Default for SplitPart {
    fn default() -> Self {
        Self { inner: datafusion::functions::string::split_part() }
    }
}

/// The function, for registering in place of DataFusion's.
pub fn split_part_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(SplitPart::default())
}

/// The `n`th (0-based) part of `s` split at byte `delimiter`, or `""`.
fn nth_part(s: &str, delimiter: u8, n: usize) -> &str {
    let bytes = s.as_bytes();
    let mut start = 0;
    for _ in 0..n {
        match bytes[start..].iter().position(|b| *b == delimiter) {
            Some(at) => start += at + 1,
            None => return "",
        }
    }
    let end = bytes[start..].iter().position(|b| *b == delimiter).map_or(bytes.len(), |at| start + at);
    // A one-byte delimiter of a valid UTF-8 string is ASCII: the cuts fall
    // between characters.
    s.get(start..end).unwrap_or("")
}

/// Part `n` (0-based) of every string of `strings`.
fn split_column<O: OffsetSizeTrait>(strings: &GenericStringArray<O>, delimiter: u8, n: usize) -> ArrayRef {
    let mut builder = GenericStringBuilder::<O>::with_capacity(strings.len(), strings.value_data().len());
    for i in 0..strings.len() {
        if strings.is_null(i) {
            builder.append_null();
        } else {
            builder.append_value(nth_part(strings.value(i), delimiter, n));
        }
    }
    Arc::new(builder.finish())
}

impl ScalarUDFImpl for SplitPart {
    fn name(&self) -> &str {
        "split_part"
    }

    described_by!(inner);

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Array(strings), ColumnarValue::Scalar(delimiter), ColumnarValue::Scalar(ScalarValue::Int64(Some(position)))] =
            args.args.as_slice()
        {
            let delimiter = match delimiter {
                ScalarValue::Utf8(Some(d)) | ScalarValue::Utf8View(Some(d)) | ScalarValue::LargeUtf8(Some(d)) => {
                    Some(d.as_bytes())
                }
                _ => None,
            };
            // Part `n` (0-based) of a positive position; 0 and negative ones are DataFusion's.
            let n = position.checked_sub(1).and_then(|n| usize::try_from(n).ok());
            if let (Some(&[delimiter]), Some(n)) = (delimiter, n) {
                match strings.data_type() {
                    DataType::Utf8 => {
                        return Ok(ColumnarValue::Array(split_column(strings.as_string::<i32>(), delimiter, n)))
                    }
                    DataType::LargeUtf8 => {
                        return Ok(ColumnarValue::Array(split_column(strings.as_string::<i64>(), delimiter, n)))
                    }
                    _ => {}
                }
            }
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, LargeStringArray, StringArray};
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{ColumnarValue, ScalarUDFImpl};
    use proptest::prelude::*;

    use super::SplitPart;

    /// Call `f(strings, delimiter, position)` as DataFusion would.
    fn call(f: &dyn ScalarUDFImpl, strings: ArrayRef, delimiter: &str, position: i64) -> ArrayRef {
        let n = strings.len();
        let args = vec![
            ColumnarValue::Array(strings),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(delimiter.into()))),
            ColumnarValue::Scalar(ScalarValue::Int64(Some(position))),
        ];
        crate::functions::invoke_for_tests::invoke(f, args, n)
    }

    proptest! {
        /// Every part of every string, NULLs and missing parts included,
        /// is DataFusion's, for `Utf8` and `LargeUtf8` and any delimiter.
        #[test]
        fn parts_are_datafusion_s(
            strings in prop::collection::vec(prop::option::of("[a/&=é.]{0,12}"), 1..20),
            delimiter in prop::sample::select(vec!["/", "&", "=", "é", "", "//", "a/"]),
            position in prop_oneof![-3i64..6, Just(i64::MIN), Just(i64::MAX)],
        ) {
            prop_assume!(position != 0);
            let ours = SplitPart::default();
            let utf8: ArrayRef = Arc::new(StringArray::from(strings.clone()));
            let large: ArrayRef = Arc::new(LargeStringArray::from(strings));
            for array in [utf8, large] {
                let want = call(ours.inner.inner().as_ref(), Arc::clone(&array), delimiter, position);
                let got = call(&ours, array, delimiter, position);
                prop_assert_eq!(got.as_ref(), want.as_ref(), "delimiter {:?} position {}", delimiter, position);
            }
        }
    }
}
