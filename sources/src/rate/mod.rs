//! The `rate` source: `rows_per_second` generated rows `(timestamp, value)`
//! (Spark's rate source), for tests and benchmarks.
//!
//! Row `i` has `value = i` and `timestamp = start_time + i * 1000 /
//! rows_per_second` ms. The offset is the number of rows available:
//! `floor((now - start_time) * rows_per_second / 1000)`, with `now` read
//! from the query clock. The start time is stored in the source's metadata
//! directory, so a restarted query continues the same sequence and a replay
//! gives the same rows.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, TimestampNanosecondArray};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_engine::checkpoint::CheckpointDir;
use sluice_engine::{
    ClockRef, Options, Result, SluiceError, Source, SourceContext, SourceDefinition, SourceFactory, SourceOffset,
};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// Options of the `rate` connector.
const OPTIONS: &[&str] = &["rows_per_second", "num_partitions", "start_time"];

/// Name of the file holding the start time in the metadata directory.
const START_FILE: &str = "rate_start";

/// Rows per output batch at most.
const MAX_BATCH_ROWS: u64 = 65_536;

/// The largest `rows_per_second` accepted (ten million): more than one
/// machine can generate, let alone process.
pub const MAX_ROWS_PER_SECOND: u64 = 10_000_000;

/// Rows one micro-batch reads at most. A query that fell behind (a pause, or
/// a `start_time` long ago) catches up over several batches instead of
/// building one unbounded batch.
pub const MAX_ROWS_PER_TRIGGER: u64 = 10_000_000;

/// The fixed schema of the `rate` connector.
pub fn rate_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("value", DataType::Int64, true),
    ]))
}

/// The parsed options of a `rate` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateOptions {
    /// Rows generated per second (at least 1).
    pub rows_per_second: u64,
    /// Number of batches each range is split into (at least 1).
    pub num_partitions: usize,
    /// Start time (ms since the epoch); `None`: the clock time at the first
    /// call.
    pub start_time: Option<i64>,
}

impl RateOptions {
    /// Parse and check the connector options.
    pub fn parse(options: &Options) -> Result<Self> {
        let positive = |key: &str| -> Result<Option<u64>> {
            let v = options.parse::<u64>(key, "a positive whole number")?;
            if v == Some(0) {
                return Err(SluiceError::InvalidOption {
                    option: key.into(),
                    value: "0".into(),
                    reason: "expected a positive whole number".into(),
                });
            }
            Ok(v)
        };
        let rows_per_second = positive("rows_per_second")?.unwrap_or(1);
        if rows_per_second > MAX_ROWS_PER_SECOND {
            return Err(SluiceError::InvalidOption {
                option: "rows_per_second".into(),
                value: rows_per_second.to_string(),
                reason: format!("out of range: at most {MAX_ROWS_PER_SECOND} rows per second"),
            });
        }
        let num_partitions = positive("num_partitions")?.unwrap_or(1) as usize;
        let start_time = options.parse::<i64>("start_time", "milliseconds since the Unix epoch")?;
        Ok(Self { rows_per_second, num_partitions, start_time })
    }
}

/// Factory of the `rate` connector.
#[derive(Debug, Clone, Default)]
pub struct RateSourceFactory;

fn check_schema(def: &SourceDefinition) -> Result<()> {
    let fixed = rate_schema();
    for f in def.schema.fields() {
        let ok = fixed
            .fields()
            .iter()
            .find(|g| g.name().eq_ignore_ascii_case(f.name()))
            .is_some_and(|g| can_cast_types(g.data_type(), f.data_type()));
        if !ok {
            return Err(SluiceError::plan(format!(
                "source '{}' (rate connector): column '{}' {} is not produced; the rate source has the columns \
                 `timestamp TIMESTAMP, value BIGINT` (leave the column list out to get them)",
                def.name,
                f.name(),
                f.data_type()
            )));
        }
    }
    Ok(())
}

impl SourceFactory for RateSourceFactory {
    fn name(&self) -> &str {
        "rate"
    }

    fn valid_options(&self) -> &[&'static str] {
        OPTIONS
    }

    fn validate(&self, definition: &SourceDefinition) -> Result<()> {
        RateOptions::parse(&definition.options)?;
        check_schema(definition)
    }

    fn default_schema(&self, _options: &Options) -> Option<SchemaRef> {
        Some(rate_schema())
    }

    fn create(&self, ctx: SourceContext) -> Result<Arc<dyn Source>> {
        let def = ctx.definition;
        let options = RateOptions::parse(&def.options)?;
        check_schema(&def)?;
        let metadata = CheckpointDir::open(&ctx.metadata_path)?;
        Ok(Arc::new(RateSource {
            name: def.name,
            schema: def.schema,
            options,
            clock: ctx.clock,
            metadata,
            start_ms: Mutex::new(None),
            frozen_end: Mutex::new(None),
        }))
    }
}

/// What is stored in the metadata directory.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct StartTime {
    start_time_ms: i64,
}

/// One query's rate source.
#[derive(Debug)]
pub struct RateSource {
    name: String,
    schema: SchemaRef,
    options: RateOptions,
    clock: ClockRef,
    metadata: CheckpointDir,
    start_ms: Mutex<Option<i64>>,
    /// The end an available-now run stops at (rows generated by then).
    frozen_end: Mutex<Option<u64>>,
}

impl RateSource {
    /// The start time: stored, else the option, else now (then stored).
    async fn start_ms(&self) -> Result<i64> {
        let mut guard = self.start_ms.lock().await;
        if let Some(s) = *guard {
            return Ok(s);
        }
        let start = match self.metadata.read_json::<StartTime>(START_FILE).await? {
            Some(stored) => {
                if let Some(opt) = self.options.start_time.filter(|o| *o != stored.start_time_ms) {
                    warn!(source = %self.name, stored = stored.start_time_ms, option = opt,
                        "start_time differs from the one in the checkpoint; keeping the checkpoint's");
                }
                stored.start_time_ms
            }
            None => {
                let start = self.options.start_time.unwrap_or_else(|| self.clock.now_millis());
                self.metadata.write_json(START_FILE, &StartTime { start_time_ms: start }).await?;
                info!(source = %self.name, start_time_ms = start, "rate source started");
                start
            }
        };
        *guard = Some(start);
        Ok(start)
    }

    fn parse_offset(&self, offset: Option<&SourceOffset>) -> Result<u64> {
        let Some(v) = offset else { return Ok(0) };
        v.as_u64().ok_or_else(|| SluiceError::Source {
            source_name: self.name.clone(),
            reason: format!("offset {v} is not a row count; the checkpoint was written by another connector"),
        })
    }

    /// Timestamp (ns since the epoch) of row `i`.
    fn timestamp_ns(&self, start_ms: i64, i: u64) -> i64 {
        let ns = start_ms as i128 * 1_000_000 + i as i128 * 1_000_000_000 / self.options.rows_per_second as i128;
        ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    fn build(&self, start_ms: i64, from: u64, to: u64) -> Result<RecordBatch> {
        let ts: TimestampNanosecondArray = (from..to).map(|i| Some(self.timestamp_ns(start_ms, i))).collect();
        let values = Int64Array::from_iter_values((from..to).map(|i| i as i64));
        let (ts, values): (ArrayRef, ArrayRef) = (Arc::new(ts), Arc::new(values));
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for f in self.schema.fields() {
            let col = if f.name().eq_ignore_ascii_case("timestamp") { &ts } else { &values };
            columns.push(if col.data_type() == f.data_type() { Arc::clone(col) } else { cast(col, f.data_type())? });
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[async_trait]
impl Source for RateSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn latest_offset(&self, start: Option<&SourceOffset>) -> Result<Option<SourceOffset>> {
        let from = self.parse_offset(start)?;
        let start_ms = self.start_ms().await?;
        let elapsed = (self.clock.now_millis() as i128 - start_ms as i128).max(0);
        let rows = (elapsed * self.options.rows_per_second as i128 / 1000).min(i64::MAX as i128) as u64;
        let rows = match *self.frozen_end.lock().await {
            Some(end) => rows.min(end),
            None => rows,
        };
        let rows = rows.clamp(from, from.saturating_add(MAX_ROWS_PER_TRIGGER));
        Ok((rows > 0 || start.is_some()).then(|| json!(rows)))
    }

    /// An available-now run reads the rows generated up to now, then stops.
    /// Before its start time the source has generated none: say so rather
    /// than run and do nothing.
    async fn prepare_for_available_now(&self) -> Result<()> {
        let start_ms = self.start_ms().await?;
        let elapsed = (self.clock.now_millis() as i128 - start_ms as i128).max(0);
        let rows = (elapsed * self.options.rows_per_second as i128 / 1000).min(i64::MAX as i128) as u64;
        if rows == 0 {
            return Err(SluiceError::Source {
                source_name: self.name.clone(),
                reason: "the rate source generates rows as time passes, so an available_now run has none to read at \
                         its start; use trigger = 'processing_time', or a start_time in the past"
                    .into(),
            });
        }
        *self.frozen_end.lock().await = Some(rows);
        Ok(())
    }

    async fn get_batch(&self, start: Option<&SourceOffset>, end: &SourceOffset) -> Result<Vec<RecordBatch>> {
        let (from, to) = (self.parse_offset(start)?, self.parse_offset(Some(end))?);
        if to <= from {
            return Ok(vec![]);
        }
        let start_ms = self.start_ms().await?;
        let parts = self.options.num_partitions as u64;
        let chunk = (to - from).div_ceil(parts).clamp(1, MAX_BATCH_ROWS);
        let mut out = vec![];
        let mut i = from;
        while i < to {
            let j = (i + chunk).min(to);
            out.push(self.build(start_ms, i, j)?);
            i = j;
        }
        Ok(out)
    }
}
