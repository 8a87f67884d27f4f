//! `date_format(ts, 'yyyy-MM-dd HH:mm')` with Spark's (and Flink's) pattern
//! letters. DataFusion's own `date_format` is an alias of `to_char`, which
//! takes chrono's `%Y-%m-%d`: a Spark pattern given to it would come back
//! as the letters themselves, the same for every row. This one translates a
//! pattern without `%` to chrono's and then runs `to_char`; a pattern with
//! `%` is chrono's already and passes unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// The `date_format` function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateFormat {
    to_char: Arc<ScalarUDF>,
}

impl Default for DateFormat {
    fn default() -> Self {
        Self { to_char: datafusion::functions::datetime::to_char() }
    }
}

/// The function, for registering.
pub fn date_format_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(DateFormat::default())
}

/// Translate a Spark / Java `DateTimeFormatter` pattern to chrono's
/// (`yyyy-MM-dd HH:mm:ss.SSS` to `%Y-%m-%d %H:%M:%S%.3f`); text in single
/// quotes is literal, `''` is a quote. A pattern holding `%` is returned as
/// it is (already chrono's).
pub fn spark_to_chrono(pattern: &str) -> String {
    if pattern.contains('%') {
        return pattern.to_string();
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal text.
            let mut j = i + 1;
            if j < chars.len() && chars[j] == '\'' {
                out.push('\'');
                i += 2;
                continue;
            }
            loop {
                match (chars.get(j), chars.get(j + 1)) {
                    (None, _) => break,
                    (Some('\''), Some('\'')) => {
                        out.push('\'');
                        j += 2;
                    }
                    (Some('\''), _) => break,
                    (Some(c), _) => {
                        out.push(*c);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        let spec = match (c, n) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1..=3) => "%3f",
            ('S', 4..=6) => "%6f",
            ('S', _) => "%9f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('Z', _) | ('X', _) | ('x', _) => "%z",
            _ => {
                for _ in 0..n {
                    out.push(c);
                }
                i += n;
                continue;
            }
        };
        out.push_str(spec);
        i += n;
    }
    out
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }

    fn signature(&self) -> &Signature {
        self.to_char.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.to_char.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.to_char.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.to_char.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
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
    use super::spark_to_chrono;

    #[test]
    fn spark_patterns_become_chrono_formats() {
        assert_eq!(spark_to_chrono("yyyy-MM-dd-HH"), "%Y-%m-%d-%H");
        assert_eq!(spark_to_chrono("HH:mm"), "%H:%M");
        assert_eq!(spark_to_chrono("yyyy-MM-dd'T'HH:mm:ss.SSS"), "%Y-%m-%dT%H:%M:%S.%3f");
        assert_eq!(spark_to_chrono("dd MMM yy, EEE"), "%d %b %y, %a");
        assert_eq!(spark_to_chrono("'o''clock' h a"), "o'clock %-I %p");
        assert_eq!(spark_to_chrono("%Y/%m"), "%Y/%m");
    }
}
