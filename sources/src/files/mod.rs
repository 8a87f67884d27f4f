//! The `files` source: new files landing in a directory (Spark's
//! `FileStreamSource`).
//!
//! Each call to `latest_offset` lists the directory and assigns the files
//! not seen before to a new entry of the seen-files log (at most
//! `max_files_per_trigger` of them, oldest first unless `latest_first`).
//! The offset is `{"log_offset": N}`; the rows of `(start, end]` are the rows
//! of the files of log entries `start+1 ..= end`, so a replay reads exactly
//! the same files. Files and folders whose name starts with `.` or `_` are
//! ignored.
//!
//! A directory written by the `files` sink (one holding `_sluice_manifest/`,
//! see [`sluice_engine::manifest`]) is read like Spark reads a directory with
//! `_spark_metadata`: only the data files of committed batches are
//! candidates, handed out in manifest order (batch id, then write order;
//! reversed with `latest_first`), and files of uncommitted (crashed) batches
//! are ignored.

mod dir;
mod log;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use serde_json::json;
use sluice_engine::checkpoint::CheckpointDir;
use sluice_engine::{
    Options, Result, SluiceError, Source, SourceContext, SourceDefinition, SourceFactory, SourceOffset,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use dir::{local_path, SourceDir};
use log::SeenFilesLog;
pub use log::{LogEntry, SeenFile};
pub use parse::{check_schema as check_format_schema, parse_file, parse_records, FileFormat, ParseMode, ParseSettings};

/// Options of the `files` connector.
const OPTIONS: &[&str] = &[
    "path",
    "format",
    "header",
    "max_files_per_trigger",
    "latest_first",
    "clean_source",
    "source_archive_dir",
    "mode",
];

/// What to do with a file once the batch that read it is committed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CleanSource {
    /// Leave it.
    #[default]
    Off,
    /// Delete it.
    Delete,
    /// Move it under this directory, keeping its relative path.
    Archive(PathBuf),
}

/// The parsed options of a `files` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesOptions {
    /// The watched directory.
    pub path: PathBuf,
    /// Format, header and malformed-record mode.
    pub settings: ParseSettings,
    /// At most this many new files per batch.
    pub max_files_per_trigger: Option<usize>,
    /// Hand out the newest files first.
    pub latest_first: bool,
    /// Clean-up of committed files.
    pub clean_source: CleanSource,
}

impl FilesOptions {
    /// Parse and check the connector options.
    pub fn parse(options: &Options) -> Result<Self> {
        let path = local_path(
            "path",
            options.get("path").ok_or_else(|| SluiceError::InvalidOption {
                option: "path".into(),
                value: String::new(),
                reason: "the files connector needs `path`, the directory to watch".into(),
            })?,
        )?;
        let format = options.get("format").map(str::parse).transpose()?.unwrap_or_default();
        let mode = options.get("mode").map(str::parse).transpose()?.unwrap_or_default();
        let header = options.bool("header", false)?;
        let max_files_per_trigger = options.parse::<usize>("max_files_per_trigger", "a positive whole number")?;
        if max_files_per_trigger == Some(0) {
            return Err(SluiceError::InvalidOption {
                option: "max_files_per_trigger".into(),
                value: "0".into(),
                reason: "expected a positive whole number".into(),
            });
        }
        let latest_first = options.bool("latest_first", false)?;
        let clean_source = match options.get("clean_source").map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("off") => CleanSource::Off,
            Some("delete") => CleanSource::Delete,
            Some("archive") => {
                let value = options.get("source_archive_dir").ok_or_else(|| SluiceError::InvalidOption {
                    option: "clean_source".into(),
                    value: "archive".into(),
                    reason: "archiving needs `source_archive_dir`, the directory to move files to".into(),
                })?;
                let archive = local_path("source_archive_dir", value)?;
                check_archive_outside(&path, &archive, value)?;
                CleanSource::Archive(std::path::absolute(&archive)?)
            }
            Some(other) => {
                return Err(SluiceError::InvalidOption {
                    option: "clean_source".into(),
                    value: other.into(),
                    reason: "valid values are off, delete, archive".into(),
                })
            }
        };
        Ok(Self {
            path,
            settings: ParseSettings { format, header, mode },
            max_files_per_trigger,
            latest_first,
            clean_source,
        })
    }
}

/// The archive directory must not be inside the watched one, or archived
/// files would be picked up again.
fn check_archive_outside(source: &std::path::Path, archive: &std::path::Path, value: &str) -> Result<()> {
    let norm = |p: &std::path::Path| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p));
    let (src, arc) = (norm(source)?, norm(archive)?);
    if arc.starts_with(&src) || src.starts_with(&arc) {
        return Err(SluiceError::InvalidOption {
            option: "source_archive_dir".into(),
            value: value.into(),
            reason: "must not overlap the source `path` (archived files would be read again); pick a directory \
                     outside it"
                .into(),
        });
    }
    Ok(())
}

/// Factory of the `files` connector.
#[derive(Debug, Clone, Default)]
pub struct FilesSourceFactory;

fn plan_error(def: &SourceDefinition, reason: String) -> SluiceError {
    SluiceError::plan(format!("source '{}' (files connector): {reason}", def.name))
}

impl SourceFactory for FilesSourceFactory {
    fn name(&self) -> &str {
        "files"
    }

    fn valid_options(&self) -> &[&'static str] {
        OPTIONS
    }

    fn validate(&self, definition: &SourceDefinition) -> Result<()> {
        let options = FilesOptions::parse(&definition.options)?;
        if definition.options.get("format").is_none() {
            tracing::warn!(
                source = %definition.name,
                "no `format` given: the files are read as Parquet (the default); set format = 'csv', 'json', 'text' \
                 or 'parquet' to say so"
            );
        }
        parse::check_schema(options.settings.format, &definition.schema).map_err(|r| plan_error(definition, r))
    }

    fn default_schema(&self, options: &Options) -> Option<SchemaRef> {
        let text = options.get("format").and_then(|f| f.parse::<FileFormat>().ok()) == Some(FileFormat::Text);
        text.then(|| Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, true)])))
    }

    fn create(&self, ctx: SourceContext) -> Result<Arc<dyn Source>> {
        let def = ctx.definition;
        let options = FilesOptions::parse(&def.options)?;
        parse::check_schema(options.settings.format, &def.schema).map_err(|r| plan_error(&def, r))?;
        let metadata = CheckpointDir::open(&ctx.metadata_path)?.child("seen_files");
        Ok(Arc::new(FilesSource::new(&def.name, Arc::clone(&def.schema), options, metadata)))
    }
}

/// One query's reader of a directory of files.
#[derive(Debug)]
pub struct FilesSource {
    name: String,
    schema: SchemaRef,
    options: FilesOptions,
    state: Mutex<State>,
    /// Seen-files log entries being written (see [`Source::metadata_durable`]).
    log_writes: parking_lot::Mutex<Vec<JoinHandle<Result<()>>>>,
}

#[derive(Debug)]
struct State {
    dir: SourceDir,
    metadata: CheckpointDir,
    log: Option<SeenFilesLog>,
    /// Available-now: the only files that may still be handed out.
    frozen: Option<HashSet<String>>,
    /// Last log entry whose files were cleaned.
    cleaned_through: Option<u64>,
}

impl State {
    async fn log(&mut self) -> Result<&mut SeenFilesLog> {
        if self.log.is_none() {
            self.log = Some(SeenFilesLog::load(self.metadata.clone()).await?);
        }
        self.log.as_mut().ok_or_else(|| SluiceError::internal("seen-files log used before it was loaded"))
    }
}

fn offset_of(n: u64) -> SourceOffset {
    json!({ "log_offset": n })
}

impl FilesSource {
    /// A source over `options.path`, keeping its seen-files log in `metadata`.
    pub fn new(name: &str, schema: SchemaRef, options: FilesOptions, metadata: CheckpointDir) -> Self {
        let dir = SourceDir::new(name, options.path.clone());
        let state = State { dir, metadata, log: None, frozen: None, cleaned_through: None };
        Self { name: name.into(), schema, options, state: Mutex::new(state), log_writes: Default::default() }
    }

    fn parse_offset(&self, offset: Option<&SourceOffset>) -> Result<Option<u64>> {
        let Some(v) = offset else { return Ok(None) };
        v.get("log_offset").and_then(|n| n.as_u64()).map(Some).ok_or_else(|| SluiceError::Source {
            source_name: self.name.clone(),
            reason: format!("offset {v} is not a files-source offset; the checkpoint was written by another connector"),
        })
    }

    fn missing_entry(&self, log: &SeenFilesLog, id: u64, why: &str) -> SluiceError {
        SluiceError::Checkpoint {
            path: format!("{}/{id}", log.location()),
            reason: format!(
                "seen-files log entry {id} is missing ({why}); the source metadata was deleted or belongs to \
                 another query: restore it or delete the whole checkpoint to start again"
            ),
        }
    }

    /// The rows of the files of log entries `(start, end]`, only `columns`
    /// when given. Each file is decoded on a blocking thread.
    async fn read(
        &self,
        start: Option<&SourceOffset>,
        end: &SourceOffset,
        columns: Option<&[usize]>,
    ) -> Result<Vec<RecordBatch>> {
        let from = self.parse_offset(start)?.map_or(0, |s| s + 1);
        let Some(to) = self.parse_offset(Some(end))? else { return Ok(vec![]) };
        let mut state = self.state.lock().await;
        let log = state.log().await?;
        let mut files = vec![];
        for id in from..=to {
            let entry = log.entry(id).ok_or_else(|| self.missing_entry(log, id, "a batch needs its files"))?;
            files.extend(entry.files.iter().map(|f| f.path.clone()));
        }
        let columns: Option<Arc<[usize]>> = columns.map(Arc::from);
        type Decode = Box<dyn FnOnce() -> Result<Vec<RecordBatch>> + Send + 'static>;
        let mut jobs: Vec<Decode> = Vec::with_capacity(files.len());
        for rel in files {
            let file = state.dir.display_file(&rel);
            debug!(source = %self.name, %file, "reading");
            let (schema, settings, columns) = (Arc::clone(&self.schema), self.options.settings, columns.clone());
            jobs.push(if settings.format == FileFormat::Parquet {
                let path = state.dir.local_file(&rel)?;
                Box::new(move || parse::read_parquet_file(&path, &file, &schema, columns.as_deref()))
            } else {
                let bytes = state.dir.read(&rel).await?;
                Box::new(move || parse::parse_file(bytes, &file, &schema, &settings, columns.as_deref()))
            });
        }
        // Decode up to one file per core at once, keeping the files' order.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut jobs = jobs.into_iter();
        let mut running: std::collections::VecDeque<_> =
            jobs.by_ref().take(cores).map(tokio::task::spawn_blocking).collect();
        let mut out = vec![];
        while let Some(task) = running.pop_front() {
            let batches = task.await.map_err(|e| SluiceError::Source {
                source_name: self.name.clone(),
                reason: format!("the file reader stopped: {e}"),
            })??;
            running.extend(jobs.next().map(tokio::task::spawn_blocking));
            out.extend(batches.into_iter().filter(|b| b.num_rows() > 0));
        }
        Ok(out)
    }

    /// Newly listed files in hand-out order, at most `max_files_per_trigger`.
    async fn new_files(&self, state: &mut State) -> Result<Vec<SeenFile>> {
        let listed = state.dir.list().await?;
        let log = state.log().await?;
        let mut new: Vec<SeenFile> = listed.files.into_iter().filter(|f| !log.contains(&f.path)).collect();
        if let Some(frozen) = &state.frozen {
            new.retain(|f| frozen.contains(&f.path));
        }
        if !listed.manifest_order {
            new.sort_by(|a, b| a.modified_ms.cmp(&b.modified_ms).then_with(|| a.path.cmp(&b.path)));
        }
        if self.options.latest_first {
            new.reverse();
        }
        if let Some(max) = self.options.max_files_per_trigger {
            new.truncate(max);
        }
        Ok(new)
    }
}

#[async_trait]
impl Source for FilesSource {
    fn continuous_refusal(&self) -> Option<String> {
        Some(
            "the files source lists its directory and reads whole files, which a query under the continuous trigger \
             would do every millisecond; read the directory with a micro-batch trigger (trigger = 'processing_time'), \
             or feed the files through Kafka"
                .into(),
        )
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn latest_offset(&self, start: Option<&SourceOffset>) -> Result<Option<SourceOffset>> {
        let start = self.parse_offset(start)?;
        let mut state = self.state.lock().await;
        let log = state.log().await?;
        let max = log.max_offset();
        if let Some(s) = start {
            if max.is_none_or(|m| m < s) {
                return Err(self.missing_entry(log, s, "the query's offset log refers to it"));
            }
        }
        let next = start.map_or(0, |s| s + 1);
        if let Some(m) = max.filter(|m| *m >= next) {
            // Entries written before a restart but not yet run: hand them out first.
            let end = if self.options.max_files_per_trigger.is_some() { next } else { m };
            return Ok(Some(offset_of(end)));
        }
        let new = self.new_files(&mut state).await?;
        if new.is_empty() {
            return Ok(start.map(offset_of));
        }
        let count = new.len();
        let (id, write) = state.log().await?.append(new);
        self.log_writes.lock().push(write);
        // Files are in the seen-files log but not yet in the query's offset log.
        sluice_engine::faults::crash_point("during_source_listing");
        info!(source = %self.name, log_offset = id, files = count, "new files assigned to the seen-files log");
        Ok(Some(offset_of(id)))
    }

    async fn stop(&self) -> Result<()> {
        // No seen-files log write outlives the query.
        self.metadata_durable().await
    }

    async fn metadata_durable(&self) -> Result<()> {
        let writes = std::mem::take(&mut *self.log_writes.lock());
        for write in writes {
            write.await.map_err(|e| SluiceError::Source {
                source_name: self.name.clone(),
                reason: format!("the seen-files log writer stopped: {e}"),
            })??;
        }
        Ok(())
    }

    async fn get_batch(&self, start: Option<&SourceOffset>, end: &SourceOffset) -> Result<Vec<RecordBatch>> {
        self.read(start, end, None).await
    }

    async fn get_batch_columns(
        &self,
        start: Option<&SourceOffset>,
        end: &SourceOffset,
        columns: &[usize],
    ) -> Result<Vec<RecordBatch>> {
        self.read(start, end, Some(columns)).await
    }

    async fn commit(&self, end: &SourceOffset) -> Result<()> {
        if self.options.clean_source == CleanSource::Off {
            return Ok(());
        }
        let Some(to) = self.parse_offset(Some(end))? else { return Ok(()) };
        let mut state = self.state.lock().await;
        let from = state.cleaned_through.map_or(0, |c| c + 1);
        let log = state.log().await?;
        let files: Vec<String> =
            (from..=to).filter_map(|id| log.entry(id)).flat_map(|e| e.files.iter().map(|f| f.path.clone())).collect();
        for rel in files {
            let result = match &self.options.clean_source {
                CleanSource::Off => Ok(()),
                CleanSource::Delete => state.dir.delete(&rel).await,
                CleanSource::Archive(to) => state.dir.archive(&rel, to).await,
            };
            if let Err(e) = result {
                let file = state.dir.display_file(&rel);
                warn!(source = %self.name, %file, error = %e, "cannot clean up a committed file");
            }
        }
        state.cleaned_through = Some(to);
        Ok(())
    }

    async fn prepare_for_available_now(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        let listed = state.dir.list().await?;
        let log = state.log().await?;
        let frozen: HashSet<String> = listed.files.into_iter().map(|f| f.path).filter(|p| !log.contains(p)).collect();
        info!(source = %self.name, files = frozen.len(), "available-now: the files listed now are the last ones read");
        state.frozen = Some(frozen);
        Ok(())
    }
}
