//! `date_format(ts, 'yyyy-MM-dd HH:mm')` with Spark's (and Flink's) pattern
//! letters. DataFusion's own `date_format` is an alias of `to_char`, which
//! takes chrono's `%Y-%m-%d`: a Spark pattern given to it would come back
//! as the letters themselves, the same for every row. This one translates a
//! pattern without `%` to chrono's and then runs `to_char`; a pattern with
//! `%` is chrono's already and passes unchanged. A pattern of numeric
//! fields over a column is formatted by [`CompiledPattern`], without chrono.
//!
//! Sluice's `to_char` is DataFusion's with that same fast path for chrono
//! formats of numeric fields (`%Y-%m-%d`), which chrono otherwise parses
//! again for every row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};

use super::date_pattern::{chrono_spec, tokens, CompiledPattern, Token};

/// The `date_format` function (Spark patterns), or `to_char` (chrono's).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateFormat {
    to_char: Arc<ScalarUDF>,
    /// `date_format`: patterns without `%` are Spark's.
    spark_patterns: bool,
}

impl Default for DateFormat {
    fn default() -> Self {
        Self { to_char: datafusion::functions::datetime::to_char(), spark_patterns: true }
    }
}

/// The `date_format` function, for registering.
pub fn date_format_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(DateFormat::default())
}

/// The `to_char` function (chrono formats), for registering in place of
/// DataFusion's.
pub fn to_char_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(DateFormat { spark_patterns: false, ..DateFormat::default() })
}

/// Translate a Spark / Java `DateTimeFormatter` pattern to chrono's
/// (`yyyy-MM-dd HH:mm:ss.SSS` to `%Y-%m-%d %H:%M:%S%.3f`); text in single
/// quotes is literal, `''` is a quote. A pattern holding `%` is returned as
/// it is (already chrono's).
pub fn spark_to_chrono(pattern: &str) -> String {
    if pattern.contains('%') {
        return pattern.to_string();
    }
    let mut out = String::new();
    for token in tokens(pattern) {
        match token {
            Token::Literal(text) => out.push_str(&text),
            Token::Letter(letter, n) => match chrono_spec(letter, n) {
                Some(spec) => out.push_str(spec),
                None => out.extend(std::iter::repeat_n(letter, n)),
            },
        }
    }
    out
}

/// The pattern of a constant format argument, if it is one.
fn constant_pattern(format: &ColumnarValue) -> Option<&str> {
    match format {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(p)) | ScalarValue::Utf8View(Some(p)) | ScalarValue::LargeUtf8(Some(p)),
        ) => Some(p),
        _ => None,
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        match self.spark_patterns {
            true => "date_format",
            false => "to_char",
        }
    }

    described_by!(to_char);

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Array(values), format] = args.args.as_slice() {
            let compiled = constant_pattern(format).and_then(|p| match self.spark_patterns && !p.contains('%') {
                true => CompiledPattern::new(p),
                false => CompiledPattern::from_chrono(p),
            });
            if let Some(formatted) = compiled.and_then(|pattern| pattern.format(values.as_ref())) {
                return Ok(ColumnarValue::Array(formatted));
            }
        }
        if !self.spark_patterns {
            return self.to_char.invoke_with_args(args);
        }
        if let Some(format) = args.args.get_mut(1) {
            let translated = match &*format {
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(p))) => {
                    ColumnarValue::Scalar(ScalarValue::Utf8(Some(spark_to_chrono(p))))
                }
                ColumnarValue::Scalar(ScalarValue::Utf8View(Some(p))) => {
                    ColumnarValue::Scalar(ScalarValue::Utf8View(Some(spark_to_chrono(p))))
                }
                ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some(p))) => {
                    ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some(spark_to_chrono(p))))
                }
                ColumnarValue::Array(a) => {
                    let strings = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                    let strings = strings
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .cloned()
                        .unwrap_or_else(|| StringArray::new_null(a.len()));
                    let translated: StringArray = strings.iter().map(|p| p.map(spark_to_chrono)).collect();
                    ColumnarValue::Array(datafusion::arrow::compute::cast(
                        &(Arc::new(translated) as Arc<dyn Array>),
                        a.data_type(),
                    )?)
                }
                other => other.clone(),
            };
            *format = translated;
        }
        self.to_char.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Date32Array, Date64Array, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
        TimestampNanosecondArray, TimestampSecondArray,
    };
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{ColumnarValue, ScalarUDFImpl};
    use proptest::prelude::*;

    use super::{spark_to_chrono, to_char_udf, CompiledPattern, DateFormat};

    /// Call `f(values, pattern)` as DataFusion would.
    fn call(f: &dyn ScalarUDFImpl, values: ArrayRef, pattern: &str) -> StringArray {
        let n = values.len();
        let args = vec![ColumnarValue::Array(values), ColumnarValue::Scalar(ScalarValue::Utf8(Some(pattern.into())))];
        let out = crate::functions::invoke_for_tests::invoke(f, args, n);
        out.as_any().downcast_ref::<StringArray>().expect("strings").clone()
    }

    /// `date_format` and chrono (DataFusion's `to_char` given the translated
    /// pattern) agree on `values`; so do Sluice's `to_char` and
    /// DataFusion's given the chrono format.
    fn agrees(values: ArrayRef, pattern: &str, chrono_format: &str) -> Result<(), TestCaseError> {
        let datafusion = DateFormat::default().to_char;
        let want = call(datafusion.inner().as_ref(), Arc::clone(&values), &spark_to_chrono(pattern));
        let fast = call(&DateFormat::default(), Arc::clone(&values), pattern);
        prop_assert_eq!(fast, want, "date_format pattern {}", pattern);
        let want = call(datafusion.inner().as_ref(), Arc::clone(&values), chrono_format);
        let fast = call(to_char_udf().inner().as_ref(), values, chrono_format);
        prop_assert_eq!(fast, want, "to_char format {}", chrono_format);
        Ok(())
    }

    #[test]
    fn spark_patterns_become_chrono_formats() {
        assert_eq!(spark_to_chrono("yyyy-MM-dd-HH"), "%Y-%m-%d-%H");
        assert_eq!(spark_to_chrono("HH:mm"), "%H:%M");
        assert_eq!(spark_to_chrono("yyyy-MM-dd'T'HH:mm:ss.SSS"), "%Y-%m-%dT%H:%M:%S.%3f");
        assert_eq!(spark_to_chrono("dd MMM yy, EEE"), "%d %b %y, %a");
        assert_eq!(spark_to_chrono("'o''clock' h a"), "o'clock %-I %p");
        assert_eq!(spark_to_chrono("%Y/%m"), "%Y/%m");
    }

    #[test]
    fn names_zones_and_chrono_patterns_are_left_to_chrono() {
        for pattern in ["dd MMM yyyy", "EEE HH:mm", "h a", "HH:mm Z", "%Y-%m"] {
            assert_eq!(CompiledPattern::new(pattern), None, "{pattern}");
        }
        for format in ["%b %d", "%A", "%p", "%z", "%e", "%.f", "%3d", "%", "%-Y", "%Y %Z"] {
            assert_eq!(CompiledPattern::from_chrono(format), None, "{format}");
        }
        let compiled = CompiledPattern::new("yyyy-MM-dd").expect("numeric pattern");
        // Year 10000 is printed by chrono with a sign; the compiled form declines.
        let far = TimestampSecondArray::from(vec![253_402_300_800]);
        assert!(compiled.format(&far).is_none());
        let zoned = TimestampSecondArray::from(vec![0]).with_timezone("+01:00");
        assert!(compiled.format(&zoned).is_none());
    }

    fn pattern() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "yyyy",
            "yy",
            "y",
            "M",
            "MM",
            "d",
            "dd",
            "D",
            "DDD",
            "H",
            "HH",
            "h",
            "hh",
            "m",
            "mm",
            "s",
            "ss",
            "S",
            "SSS",
            "SSSSSS",
            "SSSSSSSSS",
            "-",
            ":",
            " ",
            "'T'",
            "''",
            "'at' ",
            "q",
            "/",
        ]);
        prop::collection::vec(piece, 1..7).prop_map(|p| p.concat())
    }

    fn chrono_format() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "%Y", "%y", "%m", "%-m", "%d", "%-d", "%j", "%H", "%-H", "%I", "%-I", "%M", "%-M", "%S", "%-S", "%3f",
            "%6f", "%9f", "%.3f", "%.6f", "%.9f", "%F", "%T", "%R", "%%", "-", ":", " ", "T", "yyyy", "'", "é",
        ]);
        prop::collection::vec(piece, 1..7).prop_map(|p| p.concat())
    }

    proptest! {
        /// Every numeric pattern formats as chrono does, in every unit, with
        /// NULLs, runs of equal days and minutes, and times before 1970.
        #[test]
        fn compiled_patterns_format_as_chrono_does(
            pattern in pattern(),
            format in chrono_format(),
            start in -62_167_219_200i64..253_402_300_000,
            steps in prop::collection::vec(prop_oneof![Just(0i64), 0i64..2, 0i64..90, 0i64..100_000, 0i64..50_000_000], 1..40),
            nulls in prop::collection::vec(any::<bool>(), 40),
            sub in 0i64..1_000_000_000,
        ) {
            let mut seconds = Vec::new();
            let mut t = start;
            for (i, step) in steps.iter().enumerate() {
                t = (t + step).min(253_402_300_799);
                seconds.push((!nulls[i] || i == 0).then_some(t));
            }
            let scaled = |k: i64, frac: i64| -> Vec<Option<i64>> {
                seconds.iter().map(|s| s.map(|s| s * k + frac)).collect()
            };
            agrees(Arc::new(TimestampSecondArray::from(scaled(1, 0))), &pattern, &format)?;
            agrees(Arc::new(TimestampMillisecondArray::from(scaled(1_000, sub / 1_000_000))), &pattern, &format)?;
            agrees(Arc::new(TimestampMicrosecondArray::from(scaled(1_000_000, sub / 1_000))), &pattern, &format)?;
            if start.abs() < 7_000_000_000 {
                agrees(Arc::new(TimestampNanosecondArray::from(scaled(1_000_000_000, sub))), &pattern, &format)?;
            }
            agrees(Arc::new(Date64Array::from(scaled(1_000, sub / 1_000_000))), &pattern, &format)?;
            let days: Vec<Option<i32>> = seconds.iter().map(|s| s.map(|s| s.div_euclid(86_400) as i32)).collect();
            agrees(Arc::new(Date32Array::from(days)), &pattern, &format)?;
        }
    }
}
