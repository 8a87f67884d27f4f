//! The `socket` source: UTF-8 lines read from a TCP server (Spark's socket
//! source), one row `value VARCHAR` per line. For tests and demos only: the
//! lines live in memory and are gone after a restart, so it is not
//! replayable.
//!
//! A background task connects to `host:port` when the source is created and
//! buffers every line received. The offset is the number of lines; after a
//! restart the new connection's lines are numbered on from the checkpoint's
//! offset. Committed lines are dropped from the buffer.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;
use sluice_engine::{
    Options, Result, SluiceError, Source, SourceContext, SourceDefinition, SourceFactory, SourceOffset,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Options of the `socket` connector.
const OPTIONS: &[&str] = &["host", "port"];

/// The fixed schema of the `socket` connector: one `value VARCHAR` column.
pub fn socket_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, true)]))
}

/// The parsed options of a `socket` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
}

impl SocketOptions {
    /// Parse and check the connector options.
    pub fn parse(options: &Options) -> Result<Self> {
        let missing = |option: &str| SluiceError::InvalidOption {
            option: option.into(),
            value: String::new(),
            reason: "the socket connector needs `host` and `port`, the TCP server to read lines from".into(),
        };
        let host = options.get("host").map(str::trim).filter(|h| !h.is_empty()).ok_or_else(|| missing("host"))?;
        let port = options.parse::<u16>("port", "a TCP port number (1-65535)")?.ok_or_else(|| missing("port"))?;
        Ok(Self { host: host.to_string(), port })
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn check_schema(def: &SourceDefinition) -> Result<()> {
    let fields = def.schema.fields();
    if fields.len() != 1 || !can_cast_types(&DataType::Utf8, fields[0].data_type()) {
        return Err(SluiceError::plan(format!(
            "source '{}' (socket connector): the socket source has one column `value VARCHAR` (leave the column \
             list out to get it)",
            def.name
        )));
    }
    Ok(())
}

/// Factory of the `socket` connector.
#[derive(Debug, Clone, Default)]
pub struct SocketSourceFactory;

impl SourceFactory for SocketSourceFactory {
    fn name(&self) -> &str {
        "socket"
    }

    fn valid_options(&self) -> &[&'static str] {
        OPTIONS
    }

    fn validate(&self, definition: &SourceDefinition) -> Result<()> {
        SocketOptions::parse(&definition.options)?;
        check_schema(definition)
    }

    fn default_schema(&self, _options: &Options) -> Option<SchemaRef> {
        Some(socket_schema())
    }

    fn create(&self, ctx: SourceContext) -> Result<Arc<dyn Source>> {
        let def = ctx.definition;
        let options = SocketOptions::parse(&def.options)?;
        check_schema(&def)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SluiceError::Source {
            source_name: def.name.clone(),
            reason: "the socket source must be created inside a tokio runtime".into(),
        })?;
        warn!(
            source = %def.name,
            address = %options.address(),
            "the socket source is not replayable (lines are lost on failure or restart) and is meant for testing only"
        );
        let buffer = Arc::new(Mutex::new(Buffer::default()));
        let settled = Arc::new(tokio::sync::Notify::new());
        let task =
            runtime.spawn(read_lines(def.name.clone(), options.address(), Arc::clone(&buffer), Arc::clone(&settled)));
        Ok(Arc::new(SocketSource {
            name: def.name,
            schema: def.schema,
            options,
            buffer,
            settled,
            task: Mutex::new(Some(task)),
        }))
    }
}

/// How long the first trigger waits for the connection attempt.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Lines received and not yet committed.
#[derive(Debug, Default)]
struct Buffer {
    /// Buffered lines; `lines[0]` is the `dropped`-th line received.
    lines: VecDeque<String>,
    /// Lines received on this connection.
    received: u64,
    /// Lines dropped after a commit.
    dropped: u64,
    /// Offset of the first line of this connection (the checkpoint's
    /// offset at the first `latest_offset` call).
    origin: Option<u64>,
    /// Connection or read failure.
    error: Option<String>,
    /// Whether the connection attempt has succeeded or failed.
    settled: bool,
}

async fn read_lines(name: String, address: String, buffer: Arc<Mutex<Buffer>>, settled: Arc<tokio::sync::Notify>) {
    let connected = TcpStream::connect(&address).await;
    let stream = {
        let mut b = buffer.lock();
        b.settled = true;
        match connected {
            Ok(s) => Some(s),
            Err(e) => {
                b.error = Some(format!(
                    "cannot connect to {address}: {e}; start the server first (for example `nc -lk <port>`) and \
                     check the `host` and `port` options"
                ));
                None
            }
        }
    };
    settled.notify_waiters();
    let Some(stream) = stream else { return };
    info!(source = %name, %address, "socket source connected");
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => {
                info!(source = %name, %address, "the server closed the connection; no more lines");
                return;
            }
            Ok(_) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                let mut b = buffer.lock();
                b.lines.push_back(String::from_utf8_lossy(text).into_owned());
                b.received += 1;
            }
            Err(e) => {
                warn!(source = %name, %address, error = %e, "socket read failed; no more lines");
                buffer.lock().error = Some(format!("reading from {address} failed: {e}"));
                return;
            }
        }
    }
}

/// One query's reader of a TCP server's lines.
#[derive(Debug)]
pub struct SocketSource {
    name: String,
    schema: SchemaRef,
    options: SocketOptions,
    buffer: Arc<Mutex<Buffer>>,
    /// Notified when the connection attempt settles.
    settled: Arc<tokio::sync::Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl SocketSource {
    fn parse_offset(&self, offset: Option<&SourceOffset>) -> Result<u64> {
        let Some(v) = offset else { return Ok(0) };
        v.as_u64().ok_or_else(|| {
            self.error(format!("offset {v} is not a line count; the checkpoint was written by another connector"))
        })
    }

    fn error(&self, reason: String) -> SluiceError {
        SluiceError::Source { source_name: self.name.clone(), reason }
    }
}

#[async_trait]
impl Source for SocketSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn latest_offset(&self, start: Option<&SourceOffset>) -> Result<Option<SourceOffset>> {
        let from = self.parse_offset(start)?;
        // The first trigger waits (a bounded time) for the connection
        // attempt, so a refused connection is reported at once rather than
        // as a source with no lines yet.
        let wait = self.settled.notified();
        if !self.buffer.lock().settled {
            let _ = tokio::time::timeout(CONNECT_WAIT, wait).await;
        }
        let mut b = self.buffer.lock();
        if b.received == 0 {
            if let Some(e) = &b.error {
                return Err(self.error(e.clone()));
            }
        }
        let origin = *b.origin.get_or_insert(from);
        let end = (origin + b.received).max(from);
        Ok((b.received > 0 || start.is_some()).then(|| json!(end)))
    }

    async fn get_batch(&self, start: Option<&SourceOffset>, end: &SourceOffset) -> Result<Vec<RecordBatch>> {
        let (from, to) = (self.parse_offset(start)?, self.parse_offset(Some(end))?);
        let values: Vec<String> = {
            let b = self.buffer.lock();
            let origin = b.origin.unwrap_or(0);
            let (first, last) = (from.saturating_sub(origin), to.saturating_sub(origin).min(b.received));
            if first < b.dropped && first < last {
                return Err(self.error(format!(
                    "lines {from}..{to} were already committed and dropped; the socket source cannot replay them"
                )));
            }
            if first >= last {
                return Ok(vec![]);
            }
            let skip = (first - b.dropped) as usize;
            b.lines.iter().skip(skip).take((last - first) as usize).cloned().collect()
        };
        debug!(source = %self.name, lines = values.len(), "socket batch");
        let column: ArrayRef = Arc::new(StringArray::from(values));
        let field = self.schema.field(0);
        let column = if field.data_type() == &DataType::Utf8 { column } else { cast(&column, field.data_type())? };
        Ok(vec![RecordBatch::try_new(Arc::clone(&self.schema), vec![column])?])
    }

    async fn commit(&self, end: &SourceOffset) -> Result<()> {
        let to = self.parse_offset(Some(end))?;
        let mut b = self.buffer.lock();
        let upto = to.saturating_sub(b.origin.unwrap_or(0)).min(b.received);
        while b.dropped < upto {
            b.lines.pop_front();
            b.dropped += 1;
        }
        Ok(())
    }

    fn replayable(&self) -> bool {
        false
    }

    async fn stop(&self) -> Result<()> {
        if let Some(task) = self.task.lock().take() {
            task.abort();
            info!(source = %self.name, address = %self.options.address(), "socket source stopped");
        }
        Ok(())
    }
}

impl Drop for SocketSource {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}
