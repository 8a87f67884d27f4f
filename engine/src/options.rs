//! Output modes, triggers and the duration syntax shared by SQL and the API.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Result, SluiceError};

/// How a query's result table is written to its sink (Spark's output modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputMode {
    /// Only new rows; rows are never changed once written.
    #[default]
    Append,
    /// Rows that changed in the batch.
    Update,
    /// The whole result table after every batch.
    Complete,
}

impl FromStr for OutputMode {
    type Err = SluiceError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "append" => Ok(Self::Append),
            "update" => Ok(Self::Update),
            "complete" => Ok(Self::Complete),
            _ => Err(SluiceError::InvalidOption {
                option: "output_mode".into(),
                value: s.into(),
                reason: "valid output modes are append, update, complete".into(),
            }),
        }
    }
}

impl fmt::Display for OutputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Append => "append",
            Self::Update => "update",
            Self::Complete => "complete",
        })
    }
}

/// When a query runs its micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Fixed intervals; a zero interval means "as soon as the previous batch
    /// ends" (Spark's default trigger).
    ProcessingTime(Duration),
    /// One batch over all available data, then stop.
    Once,
    /// All data available at start, in as many batches as rate limits need,
    /// then stop.
    AvailableNow,
    /// Continuous processing with the given checkpoint interval: rows run
    /// through the query as they arrive, and every interval an epoch is
    /// committed (see [`MicroBatchExecution::run_epoch`](crate::execution::MicroBatchExecution::run_epoch)).
    Continuous(Duration),
}

impl Default for Trigger {
    fn default() -> Self {
        Self::ProcessingTime(Duration::ZERO)
    }
}

impl Trigger {
    /// Parse a trigger name (`processing_time`, `once`, `available_now`,
    /// `continuous`) and an optional interval.
    pub fn parse(name: &str, interval: Option<&str>) -> Result<Self> {
        let written = interval;
        let interval = interval.map(|i| parse_duration_option("interval", i)).transpose()?;
        let name_lower = name.trim().to_ascii_lowercase();
        if interval.is_some() && matches!(name_lower.as_str(), "once" | "available_now" | "availablenow") {
            return Err(SluiceError::InvalidOption {
                option: "interval".into(),
                value: written.unwrap_or_default().to_string(),
                reason: format!(
                    "an interval applies to the processing_time and continuous triggers, not to trigger = '{name}' \
                     (it runs what is available and stops); remove the interval, or use trigger = 'processing_time'"
                ),
            });
        }
        match name_lower.as_str() {
            "processing_time" | "processingtime" | "default" => {
                Ok(Self::ProcessingTime(interval.unwrap_or(Duration::ZERO)))
            }
            "once" => Ok(Self::Once),
            "available_now" | "availablenow" => Ok(Self::AvailableNow),
            "continuous" => Ok(Self::Continuous(interval.unwrap_or(Duration::from_secs(1)))),
            _ => Err(SluiceError::InvalidOption {
                option: "trigger".into(),
                value: name.into(),
                reason: "valid triggers are processing_time, once, available_now, continuous".into(),
            }),
        }
    }
}

/// Parse a duration written as a Spark string (`'10 minutes'`,
/// `'1 hour 30 seconds'`) or as a SQL interval literal body
/// (`INTERVAL '10' MINUTE` arrives here as `10 MINUTE`).
///
/// ```
/// use sluice_engine::options::parse_duration;
/// assert_eq!(parse_duration("1 hour 30 seconds").unwrap().as_secs(), 3630);
/// assert_eq!(parse_duration("500 ms").unwrap().as_millis(), 500);
/// ```
pub fn parse_duration(text: &str) -> Result<Duration> {
    parse_duration_option("duration", text)
}

/// [`parse_duration`] for the option (or clause) `option`, which errors name.
pub fn parse_duration_option(option: &str, text: &str) -> Result<Duration> {
    let bad =
        |reason: &str| SluiceError::InvalidOption { option: option.into(), value: text.into(), reason: reason.into() };
    let cleaned = text.trim().trim_start_matches("interval").trim_start_matches("INTERVAL");
    let tokens: Vec<String> = cleaned.replace('\'', " ").split_whitespace().map(str::to_ascii_lowercase).collect();
    if tokens.is_empty() {
        return Err(bad("empty duration; write e.g. '10 seconds'"));
    }
    let mut total_us: f64 = 0.0;
    let mut i = 0;
    while i < tokens.len() {
        let number: f64 =
            tokens[i].parse().map_err(|_| bad("expected a number followed by a unit, e.g. '10 minutes'"))?;
        let unit = tokens.get(i + 1).map(String::as_str).unwrap_or("second");
        let scale_us = match unit.trim_end_matches('s') {
            "microsecond" | "u" | "us" | "micro" => 1.0,
            "millisecond" | "m" if unit == "ms" => 1_000.0,
            "millisecond" | "milli" => 1_000.0,
            "second" | "sec" | "" => 1_000_000.0,
            "minute" | "min" => 60_000_000.0,
            "hour" | "h" => 3_600_000_000.0,
            "day" | "d" => 86_400_000_000.0,
            "week" => 7.0 * 86_400_000_000.0,
            _ => {
                return Err(bad("unknown unit; use microseconds, milliseconds, seconds, minutes, hours, days or weeks"))
            }
        };
        total_us += number * scale_us;
        i += 2;
    }
    if total_us < 0.0 {
        return Err(bad("durations must not be negative"));
    }
    Ok(Duration::from_micros(total_us.round() as u64))
}

/// Connector options: case-insensitive keys, kept in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options(BTreeMap<String, String>);

impl Options {
    /// Empty options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Set an option (key lower-cased).
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<String>) {
        self.0.insert(key.as_ref().to_ascii_lowercase(), value.into());
    }
    /// Read an option.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(&key.to_ascii_lowercase()).map(String::as_str)
    }
    /// Remove and return an option.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(&key.to_ascii_lowercase())
    }
    /// Iterate over the options.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
    /// Parse an option into any `FromStr` type, with a clear error.
    pub fn parse<T: FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse::<T>().map(Some).map_err(|_| SluiceError::InvalidOption {
                option: key.into(),
                value: v.into(),
                reason: format!("expected {expected}"),
            }),
        }
    }
    /// A boolean option (`true`/`false`).
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        Ok(self.parse::<bool>(key, "true or false")?.unwrap_or(default))
    }
    /// The options whose key starts with `prefix`, the prefix cut off
    /// (`kafka.` options passed through to a client library).
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0.iter().filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_str())))
    }
    /// Check that every key is one of `valid`; otherwise an error naming the
    /// bad key and listing the valid ones. An entry ending in `.*` (such as
    /// `kafka.*`) accepts every key with that prefix.
    pub fn check_known(&self, kind: &'static str, connector: &str, valid: &[&str]) -> Result<()> {
        let known = |key: &str| {
            valid.iter().any(|v| match v.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix) && key.len() > prefix.len(),
                None => *v == key,
            })
        };
        for key in self.0.keys() {
            if !known(key) {
                let valid = if valid.is_empty() { "(none)".to_string() } else { valid.join(", ") };
                return Err(SluiceError::UnknownOption {
                    kind,
                    connector: connector.into(),
                    option: key.clone(),
                    valid,
                });
            }
        }
        Ok(())
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Options {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut o = Options::new();
        for (k, v) in iter {
            o.insert(k, v);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10 minutes").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("10 MINUTE").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("'5' second").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn unknown_option_lists_valid() {
        let o: Options = [("pathh", "x")].into_iter().collect();
        let e = o.check_known("source", "files", &["path", "format"]).unwrap_err().to_string();
        assert!(e.contains("pathh") && e.contains("path, format"), "{e}");
    }
}
