//! The `console` sink: prints every micro-batch to stdout, like Spark's
//! console sink, for debugging and demos.
//!
//! Options:
//!
//! | option     | default | meaning                                              |
//! |------------|---------|------------------------------------------------------|
//! | `num_rows` | `20`    | at most this many rows are printed per batch         |
//! | `truncate` | `true`  | cut cell text longer than 20 characters (Spark rule) |
//!
//! Each batch is printed as
//!
//! ```text
//! -------------------------------------------
//! Batch: 3
//! -------------------------------------------
//! +------+---+
//! | word | n |
//! +------+---+
//! | a    | 2 |
//! +------+---+
//! only showing top 1 rows
//! ```
//!
//! (the last line only when rows were cut), followed by an empty line. The
//! table comes from Arrow's pretty printer. The sink is at-least-once: a
//! batch re-sent after a restart is printed again. Within one running query
//! a batch id already printed is skipped.

mod render;

use std::fmt::{self, Debug};
use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use sluice_engine::{Result, Sink, SinkContext, SinkFactory, SluiceError};
use tracing::debug;

pub use render::{format_batch, truncate_cell};

/// Where console sinks write: any shared writer (stdout by default; a test
/// can pass an `Arc<Mutex<Vec<u8>>>` and read back what was printed).
pub type ConsoleTarget = Arc<Mutex<dyn Write + Send>>;

/// Default value of the `num_rows` option.
pub const DEFAULT_NUM_ROWS: usize = 20;

/// Width to which cells are cut when `truncate` is on (Spark's default).
pub const TRUNCATE_WIDTH: usize = 20;

const VALID_OPTIONS: &[&str] = &["num_rows", "truncate"];

/// Factory of the `console` sink connector.
#[derive(Clone)]
pub struct ConsoleSinkFactory {
    target: ConsoleTarget,
}

impl Default for ConsoleSinkFactory {
    /// A factory whose sinks print to the process's stdout.
    fn default() -> Self {
        Self { target: Arc::new(Mutex::new(std::io::stdout())) }
    }
}

impl Debug for ConsoleSinkFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleSinkFactory").finish_non_exhaustive()
    }
}

impl ConsoleSinkFactory {
    /// A factory whose sinks write to `target` instead of stdout.
    pub fn with_target(target: ConsoleTarget) -> Self {
        Self { target }
    }
}

impl SinkFactory for ConsoleSinkFactory {
    fn name(&self) -> &str {
        "console"
    }

    fn valid_options(&self) -> &[&'static str] {
        VALID_OPTIONS
    }

    fn create(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>> {
        ctx.options.check_known("sink", "console", VALID_OPTIONS)?;
        let num_rows =
            ctx.options.parse::<usize>("num_rows", "a non-negative number of rows")?.unwrap_or(DEFAULT_NUM_ROWS);
        let truncate = ctx.options.bool("truncate", true)?;
        Ok(Arc::new(ConsoleSink {
            name: ctx.name,
            schema: ctx.schema,
            num_rows,
            truncate,
            target: Arc::clone(&self.target),
            last_batch_id: Mutex::new(None),
        }))
    }
}

/// A sink printing each micro-batch as a table (at-least-once).
pub struct ConsoleSink {
    name: String,
    schema: SchemaRef,
    num_rows: usize,
    truncate: bool,
    target: ConsoleTarget,
    last_batch_id: Mutex<Option<u64>>,
}

impl Debug for ConsoleSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleSink")
            .field("name", &self.name)
            .field("num_rows", &self.num_rows)
            .field("truncate", &self.truncate)
            .finish_non_exhaustive()
    }
}

impl ConsoleSink {
    /// Number of rows printed per batch at most.
    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// Whether long cells are cut to [`TRUNCATE_WIDTH`] characters.
    pub fn truncate(&self) -> bool {
        self.truncate
    }
}

#[async_trait]
impl Sink for ConsoleSink {
    async fn add_batch(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        {
            let mut last = self.last_batch_id.lock();
            if last.is_some_and(|l| batch_id <= l) {
                debug!(sink = %self.name, batch_id, "console sink: batch already printed, skipping");
                return Ok(());
            }
            *last = Some(batch_id);
        }
        let text = format_batch(&format!("Batch: {batch_id}"), &self.schema, batches, self.num_rows, self.truncate)?;
        self.write(&text)
    }

    fn exactly_once(&self) -> bool {
        false
    }

    /// Under the continuous trigger each chunk is printed as it arrives,
    /// under its epoch's id.
    async fn add_chunk(&self, epoch: u64, batches: &[RecordBatch]) -> Result<bool> {
        if batches.iter().any(|b| b.num_rows() > 0) {
            let text = format_batch(&format!("Epoch: {epoch}"), &self.schema, batches, self.num_rows, self.truncate)?;
            self.write(&text)?;
        }
        Ok(true)
    }
}

impl ConsoleSink {
    /// Write `text` to the target and flush it.
    fn write(&self, text: &str) -> Result<()> {
        let sink_error = |e: std::io::Error| SluiceError::Sink {
            sink: self.name.clone(),
            reason: format!("cannot write to the console: {e}"),
        };
        let mut out = self.target.lock();
        out.write_all(text.as_bytes()).map_err(sink_error)?;
        out.flush().map_err(sink_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
