//! Spark / Java `DateTimeFormatter` patterns (`yyyy-MM-dd HH:mm`): the
//! tokens, their chrono translation, and a compiled form that formats
//! numeric fields straight from the epoch value.
//!
//! chrono's formatter (behind DataFusion's `to_char`) parses the format
//! string again for every row; in Nexmark's q10 that was 70% of the query.
//! A pattern made only of numeric fields and literal text is compiled here
//! once per batch, and a row whose value falls in the same day, hour,
//! minute or second as the row before (the finest field of the pattern)
//! reuses that row's text. Anything else (month and day names, AM/PM,
//! zones, years outside 0..=9999) goes to chrono, so the output is
//! chrono's, byte for byte.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};

/// One token of a pattern: a run of one pattern letter, or literal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A letter repeated `n` times (`yyyy` is `Letter('y', 4)`).
    Letter(char, usize),
    /// Text printed as it is (quoted text, punctuation, unknown letters).
    Literal(String),
}

/// Split a Spark pattern into tokens: text in single quotes is literal,
/// `''` is a quote, a run of one ASCII letter is a field, anything else is
/// literal.
pub fn tokens(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let mut j = i + 1;
            if chars.get(j) == Some(&'\'') {
                literal.push('\'');
                i += 2;
                continue;
            }
            loop {
                match (chars.get(j), chars.get(j + 1)) {
                    (None, _) => break,
                    (Some('\''), Some('\'')) => {
                        literal.push('\'');
                        j += 2;
                    }
                    (Some('\''), _) => break,
                    (Some(c), _) => {
                        literal.push(*c);
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
        if c.is_ascii_alphabetic() {
            if !literal.is_empty() {
                out.push(Token::Literal(std::mem::take(&mut literal)));
            }
            out.push(Token::Letter(c, n));
        } else {
            literal.extend(std::iter::repeat_n(c, n));
        }
        i += n;
    }
    if !literal.is_empty() {
        out.push(Token::Literal(literal));
    }
    out
}

/// The chrono specifier for a pattern letter run, or `None` for a letter
/// Sluice prints as itself.
pub fn chrono_spec(letter: char, n: usize) -> Option<&'static str> {
    Some(match (letter, n) {
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
        _ => return None,
    })
}

/// A numeric field of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Year4,
    Year2,
    Month {
        pad: bool,
    },
    Day {
        pad: bool,
    },
    DayOfYear,
    Hour24 {
        pad: bool,
    },
    Hour12 {
        pad: bool,
    },
    Minute {
        pad: bool,
    },
    Second {
        pad: bool,
    },
    /// The fraction of the second in this many digits (3, 6 or 9).
    Fraction(u32),
}

impl Field {
    /// The length of the field's unit in seconds (0: under a second).
    fn granule_seconds(self) -> i64 {
        match self {
            Field::Year4 | Field::Year2 | Field::Month { .. } | Field::Day { .. } | Field::DayOfYear => 86_400,
            Field::Hour24 { .. } | Field::Hour12 { .. } => 3_600,
            Field::Minute { .. } => 60,
            Field::Second { .. } => 1,
            Field::Fraction(_) => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Field(Field),
    Literal(String),
}

/// A pattern of numeric fields and literal text, formatted without chrono.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPattern {
    parts: Vec<Part>,
    /// The finest field's length in seconds (0: a fraction of a second).
    granule_seconds: i64,
}

impl CompiledPattern {
    /// Compile a Spark pattern; `None` when it holds `%` (chrono's own),
    /// names (`MMM`, `E`, `a`) or zones, which chrono formats.
    pub fn new(pattern: &str) -> Option<Self> {
        if pattern.contains('%') {
            return None;
        }
        let mut parts = Vec::new();
        let mut granule_seconds = 86_400;
        for token in tokens(pattern) {
            let (letter, n) = match token {
                Token::Literal(text) => {
                    parts.push(Part::Literal(text));
                    continue;
                }
                Token::Letter(letter, n) => (letter, n),
            };
            let field = match (letter, n) {
                ('y', 2) => Field::Year2,
                ('y', _) => Field::Year4,
                ('M', 1 | 2) => Field::Month { pad: n == 2 },
                ('d', _) => Field::Day { pad: n > 1 },
                ('D', _) => Field::DayOfYear,
                ('H', _) => Field::Hour24 { pad: n > 1 },
                ('h', _) => Field::Hour12 { pad: n > 1 },
                ('m', _) => Field::Minute { pad: n > 1 },
                ('s', _) => Field::Second { pad: n > 1 },
                ('S', 1..=3) => Field::Fraction(3),
                ('S', 4..=6) => Field::Fraction(6),
                ('S', _) => Field::Fraction(9),
                _ if chrono_spec(letter, n).is_some() => return None,
                _ => {
                    parts.push(Part::Literal(std::iter::repeat_n(letter, n).collect()));
                    continue;
                }
            };
            granule_seconds = granule_seconds.min(field.granule_seconds());
            parts.push(Part::Field(field));
        }
        Some(Self { parts, granule_seconds })
    }

    /// Compile a chrono format (`%Y-%m-%d %H:%M`, as `to_char` takes);
    /// `None` when it holds a specifier other than the numeric ones
    /// (`%Y %y %m %d %j %H %I %M %S`, with `-` for no padding), `%3f`,
    /// `%6f`, `%9f`, `%.3f`, `%.6f`, `%.9f`, `%F`, `%T`, `%R` and `%%`.
    pub fn from_chrono(format: &str) -> Option<Self> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut granule_seconds = 86_400;
        let mut chars = format.chars().peekable();
        let mut fields = |parts: &mut Vec<Part>, literal: &mut String, list: &[Field]| {
            for field in list {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(literal)));
                }
                granule_seconds = granule_seconds.min(field.granule_seconds());
                parts.push(Part::Field(*field));
            }
        };
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let pad = chars.next_if_eq(&'-').is_none();
            let spec = chars.next()?;
            let one = match (spec, pad) {
                ('%', true) => {
                    literal.push('%');
                    continue;
                }
                ('Y', true) => Field::Year4,
                ('y', true) => Field::Year2,
                ('m', _) => Field::Month { pad },
                ('d', _) => Field::Day { pad },
                ('j', true) => Field::DayOfYear,
                ('H', _) => Field::Hour24 { pad },
                ('I', _) => Field::Hour12 { pad },
                ('M', _) => Field::Minute { pad },
                ('S', _) => Field::Second { pad },
                ('F', true) => {
                    let (m, d) = (Field::Month { pad: true }, Field::Day { pad: true });
                    fields(&mut parts, &mut literal, &[Field::Year4]);
                    literal.push('-');
                    fields(&mut parts, &mut literal, &[m]);
                    literal.push('-');
                    fields(&mut parts, &mut literal, &[d]);
                    continue;
                }
                ('T' | 'R', true) => {
                    fields(&mut parts, &mut literal, &[Field::Hour24 { pad: true }]);
                    literal.push(':');
                    fields(&mut parts, &mut literal, &[Field::Minute { pad: true }]);
                    if spec == 'T' {
                        literal.push(':');
                        fields(&mut parts, &mut literal, &[Field::Second { pad: true }]);
                    }
                    continue;
                }
                ('.', true) => {
                    let digits = chars.next()?.to_digit(10).filter(|d| matches!(d, 3 | 6 | 9))?;
                    chars.next_if_eq(&'f')?;
                    literal.push('.');
                    Field::Fraction(digits)
                }
                (d @ ('3' | '6' | '9'), true) => {
                    chars.next_if_eq(&'f')?;
                    Field::Fraction(d.to_digit(10)?)
                }
                _ => return None,
            };
            fields(&mut parts, &mut literal, &[one]);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Some(Self { parts, granule_seconds })
    }

    /// Format a date or timezone-less timestamp array; `None` for other
    /// types or a year outside 0..=9999 (chrono then formats the array).
    pub fn format(&self, values: &dyn Array) -> Option<ArrayRef> {
        let (ticks, per_second) = match values.data_type() {
            DataType::Timestamp(unit, None) => {
                let per_second = match unit {
                    TimeUnit::Second => 1,
                    TimeUnit::Millisecond => 1_000,
                    TimeUnit::Microsecond => 1_000_000,
                    TimeUnit::Nanosecond => 1_000_000_000,
                };
                let ticks = match unit {
                    TimeUnit::Second => values.as_primitive::<TimestampSecondType>().reinterpret_cast::<Int64Type>(),
                    TimeUnit::Millisecond => {
                        values.as_primitive::<TimestampMillisecondType>().reinterpret_cast::<Int64Type>()
                    }
                    TimeUnit::Microsecond => {
                        values.as_primitive::<TimestampMicrosecondType>().reinterpret_cast::<Int64Type>()
                    }
                    TimeUnit::Nanosecond => {
                        values.as_primitive::<TimestampNanosecondType>().reinterpret_cast::<Int64Type>()
                    }
                };
                (ticks, per_second)
            }
            DataType::Date32 => {
                let days = values.as_primitive::<Date32Type>();
                (days.unary::<_, Int64Type>(|d| i64::from(d) * 86_400), 1)
            }
            DataType::Date64 => (values.as_primitive::<Date64Type>().reinterpret_cast::<Int64Type>(), 1_000),
            _ => return None,
        };
        let granule = (self.granule_seconds * per_second).max(1);
        let mut builder = StringBuilder::with_capacity(ticks.len(), ticks.len() * 12);
        let mut text = String::new();
        let mut last_key = None;
        for i in 0..ticks.len() {
            if ticks.is_null(i) {
                builder.append_null();
                continue;
            }
            let value = ticks.value(i);
            let key = value.div_euclid(granule);
            if last_key != Some(key) {
                text.clear();
                self.write(value, per_second, &mut text)?;
                last_key = Some(key);
            }
            builder.append_value(&text);
        }
        Some(Arc::new(builder.finish()))
    }

    /// Write one value (`ticks` at `per_second` to the second since the
    /// epoch); `None` when its year is outside 0..=9999.
    fn write(&self, ticks: i64, per_second: i64, out: &mut String) -> Option<()> {
        let seconds = ticks.div_euclid(per_second);
        let nanos = ticks.rem_euclid(per_second) * (1_000_000_000 / per_second);
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let (hour, minute, second) = (of_day / 3_600, of_day / 60 % 60, of_day % 60);
        for part in &self.parts {
            let field = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Field(field) => *field,
            };
            match field {
                Field::Year4 => push_digits(out, year, 4),
                Field::Year2 => push_digits(out, year % 100, 2),
                Field::Month { pad } => push_digits(out, month, if pad { 2 } else { 1 }),
                Field::Day { pad } => push_digits(out, day, if pad { 2 } else { 1 }),
                Field::DayOfYear => push_digits(out, days - days_from_civil(year, 1, 1) + 1, 3),
                Field::Hour24 { pad } => push_digits(out, hour, if pad { 2 } else { 1 }),
                Field::Hour12 { pad } => {
                    let h = if hour % 12 == 0 { 12 } else { hour % 12 };
                    push_digits(out, h, if pad { 2 } else { 1 })
                }
                Field::Minute { pad } => push_digits(out, minute, if pad { 2 } else { 1 }),
                Field::Second { pad } => push_digits(out, second, if pad { 2 } else { 1 }),
                Field::Fraction(digits) => push_digits(out, nanos / 10_i64.pow(9 - digits), digits as usize),
            }
        }
        Some(())
    }
}

/// Push a non-negative number, zero-padded to `width` digits.
fn push_digits(out: &mut String, value: i64, width: usize) {
    let mut digits = [0u8; 20];
    let mut n = value;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push('0');
    }
    for d in digits[..len].iter().rev() {
        out.push(char::from(*d));
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01 (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
