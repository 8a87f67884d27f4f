//! The `nexmark` source: the standard Nexmark auction event stream (person,
//! auction, bid), from the `nexmark` crate's generator.
//!
//! Three sources (`table = 'person' | 'auction' | 'bid'`) share one event
//! stream: offsets count events of the whole stream, and each source keeps
//! its own kind, so the three see consistent ids. The generator is pinned
//! (step 1, fixed base time and event-time rate), so a given `seed` always
//! gives the same events. Event times are `date_time` columns usable with
//! watermarks. Generation runs at about 1.5M events/s per thread: for
//! throughput figures, write the events to files first ([`write_files`]).

mod schema;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use nexmark::config::{NexmarkConfig, RateShape};
use nexmark::event::Event;
use nexmark::EventGenerator;
use parking_lot::Mutex;
use serde_json::json;
use sluice_engine::{
    ClockRef, Options, Result, SluiceError, Source, SourceContext, SourceDefinition, SourceFactory, SourceOffset,
};

pub use schema::{schema_of, Table};

/// Event-time base of the generated stream (2023-11-14 22:13:20 UTC).
pub const DEFAULT_BASE_TIME_MS: u64 = 1_700_000_000_000;
/// Event-time rate of the generated stream, events per second.
pub const DEFAULT_EVENT_RATE: usize = 10_000;

/// Settings of a generated stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Events in the whole stream (all kinds).
    pub events: u64,
    /// First event id (different seeds give different streams).
    pub seed: u64,
    /// Event-time base, ms since the epoch.
    pub base_time_ms: u64,
    /// Event-time rate, events per second.
    pub event_rate: usize,
}

impl StreamSettings {
    fn config(&self) -> NexmarkConfig {
        NexmarkConfig {
            base_time: self.base_time_ms,
            first_rate: self.event_rate,
            next_rate: self.event_rate,
            rate_shape: RateShape::Square,
            first_event_id: self.seed as usize,
            ..Default::default()
        }
    }

    /// The rows of `table` among the stream's events `[start, end)`.
    pub fn rows(&self, table: Table, start: u64, end: u64) -> Result<RecordBatch> {
        let generator = EventGenerator::new(self.config()).with_offset(start).with_step(1);
        let events: Vec<Event> = generator.take(end.saturating_sub(start) as usize).collect();
        schema::to_batch(table, &events)
    }
}

/// Rows per Parquet row group in files written by [`write_files`].
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Write the first `settings.events` events as files of `format` (`parquet`
/// or `csv`) under `dir/person`, `dir/auction` and `dir/bid`, in chunks of
/// `events_per_file`, so other engines can read identical data.
pub fn write_files(dir: &std::path::Path, settings: StreamSettings, format: &str, events_per_file: u64) -> Result<()> {
    for table in [Table::Person, Table::Auction, Table::Bid] {
        let sub = dir.join(table.name());
        std::fs::create_dir_all(&sub)?;
        let mut start = 0;
        let mut part = 0;
        while start < settings.events {
            let end = (start + events_per_file.max(1)).min(settings.events);
            let batch = settings.rows(table, start, end)?;
            let path = sub.join(format!("part-{part:05}.{format}"));
            let file = std::fs::File::create(&path)?;
            match format {
                "parquet" => {
                    // Row groups of 128Ki rows, so readers can decode a file's row groups in parallel.
                    let props = parquet::file::properties::WriterProperties::builder()
                        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                        .build();
                    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))
                        .map_err(|e| SluiceError::plan(e.to_string()))?;
                    w.write(&batch).map_err(|e| SluiceError::plan(e.to_string()))?;
                    w.close().map_err(|e| SluiceError::plan(e.to_string()))?;
                }
                "csv" => {
                    let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(file);
                    w.write(&batch)?;
                }
                other => {
                    return Err(SluiceError::InvalidOption {
                        option: "format".into(),
                        value: other.into(),
                        reason: "use parquet or csv".into(),
                    })
                }
            }
            start = end;
            part += 1;
        }
    }
    Ok(())
}

const OPTIONS: &[&str] = &["table", "events", "rate", "seed", "max_events_per_trigger", "event_rate", "base_time"];

/// Factory of the `nexmark` connector.
#[derive(Debug, Default)]
pub struct NexmarkSourceFactory;

fn table_of(options: &Options) -> Result<Table> {
    let name = options.get("table").ok_or_else(|| SluiceError::InvalidOption {
        option: "table".into(),
        value: String::new(),
        reason: "the nexmark connector needs table = 'person', 'auction' or 'bid'".into(),
    })?;
    Table::parse(name)
}

fn settings_of(options: &Options) -> Result<StreamSettings> {
    Ok(StreamSettings {
        events: options.parse("events", "a number of events")?.unwrap_or(1_000_000),
        seed: options.parse("seed", "a number")?.unwrap_or(0),
        base_time_ms: options.parse("base_time", "ms since the epoch")?.unwrap_or(DEFAULT_BASE_TIME_MS),
        event_rate: options.parse("event_rate", "events per second")?.unwrap_or(DEFAULT_EVENT_RATE).max(1),
    })
}

impl SourceFactory for NexmarkSourceFactory {
    fn name(&self) -> &str {
        "nexmark"
    }

    fn valid_options(&self) -> &[&'static str] {
        OPTIONS
    }

    fn default_schema(&self, options: &Options) -> Option<SchemaRef> {
        table_of(options).ok().map(schema_of)
    }

    fn validate(&self, def: &SourceDefinition) -> Result<()> {
        let table = table_of(&def.options)?;
        settings_of(&def.options)?;
        if def.schema.fields() != schema_of(table).fields() {
            return Err(SluiceError::plan(format!(
                "nexmark table '{}' has the columns {:?}; declare no columns (CREATE SOURCE {} WITH (...)) or exactly those",
                table.name(),
                schema_of(table).fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>(),
                def.name
            )));
        }
        Ok(())
    }

    fn create(&self, ctx: SourceContext) -> Result<Arc<dyn Source>> {
        let options = &ctx.definition.options;
        let rate = match options.get("rate") {
            None => None,
            Some(r) if r.eq_ignore_ascii_case("unlimited") => None,
            Some(_) => Some(options.parse::<u64>("rate", "events per second or 'unlimited'")?.unwrap_or(1).max(1)),
        };
        Ok(Arc::new(NexmarkSource {
            table: table_of(options)?,
            settings: settings_of(options)?,
            rate,
            max_per_trigger: options.parse("max_events_per_trigger", "a number of events")?.unwrap_or(1_000_000),
            clock: ctx.clock,
            started_ms: Mutex::new(None),
        }))
    }
}

/// One query's reader of the stream.
#[derive(Debug)]
pub struct NexmarkSource {
    table: Table,
    settings: StreamSettings,
    rate: Option<u64>,
    max_per_trigger: u64,
    clock: ClockRef,
    started_ms: Mutex<Option<i64>>,
}

fn offset(v: Option<&SourceOffset>) -> Result<u64> {
    match v {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| SluiceError::Source {
            source_name: "nexmark".into(),
            reason: format!("offset {v} is not an event count"),
        }),
    }
}

#[async_trait]
impl Source for NexmarkSource {
    fn schema(&self) -> SchemaRef {
        schema_of(self.table)
    }

    async fn latest_offset(&self, start: Option<&SourceOffset>) -> Result<Option<SourceOffset>> {
        let start = offset(start)?;
        let available = match self.rate {
            None => self.settings.events,
            Some(rate) => {
                let now = self.clock.now_millis();
                let started = *self.started_ms.lock().get_or_insert(now);
                (((now - started).max(0) as u64).saturating_mul(rate) / 1000).min(self.settings.events)
            }
        };
        let end = available.min(start.saturating_add(self.max_per_trigger.max(1)));
        Ok((end > 0).then(|| json!(end.max(start))))
    }

    async fn get_batch(&self, start: Option<&SourceOffset>, end: &SourceOffset) -> Result<Vec<RecordBatch>> {
        let (start, end) = (offset(start)?, offset(Some(end))?);
        let settings = self.settings;
        let table = self.table;
        let batch = tokio::task::spawn_blocking(move || settings.rows(table, start, end))
            .await
            .map_err(|e| SluiceError::plan(format!("nexmark generator failed: {e}")))??;
        Ok(vec![batch])
    }
}
