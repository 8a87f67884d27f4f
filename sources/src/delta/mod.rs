//! The `delta` source: a Delta Lake table read as a stream of its commits,
//! or as a table by a batch `SELECT`.
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `path` | required | the table directory (local path or `file://` URL) |
//! | `starting_version` | none | read the changes from this version on, instead of the table as of the start, then its changes |
//! | `max_files_per_trigger` | none | at most this many data files per micro-batch |
//! | `ignore_deletes` | `false` | skip commits that only delete data |
//! | `ignore_changes` | `false` | read the files a commit that rewrites data adds (its remaining rows come again) |
//! | `version` | latest | a batch query: read the table as of this version (time travel) |
//!
//! As Spark's Delta source: without `starting_version`, the first batches
//! read the table as of the version current when the query first started
//! (recorded in the checkpoint), and later ones each commit's added files in
//! commit order. An offset is `{"version": v, "index": i}`: the first `i`
//! data files of version `v` are read. A commit that removes data (a
//! delete, update, merge or overwrite) fails the stream naming the version
//! and operation, unless `ignore_deletes` (for delete-only commits) or
//! `ignore_changes` is set. Compaction (files rewritten without a data
//! change) is not data: it is skipped. The columns come from the table's
//! schema when the source declares none.

mod log;
mod read;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sluice_engine::checkpoint::CheckpointDir;
use sluice_engine::{
    Options, Result, SluiceError, Source, SourceContext, SourceDefinition, SourceFactory, SourceOffset,
};

pub use log::{AddFile, Commit, DeltaLog};

const OPTIONS: &[&str] =
    &["path", "starting_version", "max_files_per_trigger", "ignore_deletes", "ignore_changes", "version"];
const INITIAL: &str = "initial-version.json";

/// Factory of the `delta` source connector.
#[derive(Debug, Default, Clone)]
pub struct DeltaSourceFactory;

/// Parsed options.
#[derive(Debug, Clone)]
struct DeltaOptions {
    root: std::path::PathBuf,
    starting_version: Option<u64>,
    max_files: Option<usize>,
    ignore_deletes: bool,
    ignore_changes: bool,
    version: Option<u64>,
}

impl DeltaOptions {
    fn parse(options: &Options) -> Result<Self> {
        let path = options.get("path").ok_or_else(|| SluiceError::InvalidOption {
            option: "path".into(),
            value: String::new(),
            reason: "the delta source needs path = '<table directory>'".into(),
        })?;
        let local = path.strip_prefix("file://").unwrap_or(path);
        if local.contains("://") {
            return Err(SluiceError::InvalidOption {
                option: "path".into(),
                value: path.into(),
                reason: "the delta connector supports local paths and file:// URLs".into(),
            });
        }
        let max_files = options.parse::<usize>("max_files_per_trigger", "a positive number of files")?;
        if max_files == Some(0) {
            return Err(SluiceError::InvalidOption {
                option: "max_files_per_trigger".into(),
                value: "0".into(),
                reason: "must be a positive number of files".into(),
            });
        }
        Ok(Self {
            root: local.into(),
            starting_version: options.parse("starting_version", "a table version (an integer >= 0)")?,
            max_files,
            ignore_deletes: options.bool("ignore_deletes", false)?,
            ignore_changes: options.bool("ignore_changes", false)?,
            version: options.parse("version", "a table version (an integer >= 0)")?,
        })
    }
}

impl SourceFactory for DeltaSourceFactory {
    fn name(&self) -> &str {
        "delta"
    }

    fn valid_options(&self) -> &[&'static str] {
        OPTIONS
    }

    fn validate(&self, definition: &SourceDefinition) -> Result<()> {
        let options = DeltaOptions::parse(&definition.options)?;
        DeltaLog::new(options.root).versions().map(|_| ())
    }

    fn default_schema(&self, options: &Options) -> Option<SchemaRef> {
        let options = DeltaOptions::parse(options).ok()?;
        table_schema(&options).ok()
    }

    fn schema_error(&self, options: &Options) -> Option<SluiceError> {
        let options = match DeltaOptions::parse(options) {
            Ok(o) => o,
            Err(e) => return Some(e),
        };
        DeltaLog::new(options.root.clone()).versions().err().or_else(|| table_schema(&options).err())
    }

    fn create(&self, ctx: SourceContext) -> Result<Arc<dyn Source>> {
        let options = DeltaOptions::parse(&ctx.definition.options)?;
        Ok(Arc::new(DeltaSource {
            name: ctx.definition.name,
            schema: ctx.definition.schema,
            log: DeltaLog::new(options.root.clone()),
            options,
            metadata: CheckpointDir::open(&ctx.metadata_path)?,
            files: Mutex::new(HashMap::new()),
            frozen: Mutex::new(None),
        }))
    }
}

/// The table's schema (as of `version`, else the latest), read with
/// `deltalake` on a thread of its own (the caller may be synchronous).
fn table_schema(options: &DeltaOptions) -> Result<SchemaRef> {
    let root = std::fs::canonicalize(&options.root)?;
    let url = url::Url::from_directory_path(&root)
        .map_err(|_| SluiceError::Plan(format!("{} is not a directory path", root.display())))?;
    let version = options.version;
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let fail = |e: deltalake::DeltaTableError| {
                    SluiceError::Plan(format!("cannot read the Delta table at {url}: {e}"))
                };
                let mut table = deltalake::DeltaTable::try_from_url(url.clone()).await.map_err(fail)?;
                if let Some(v) = version {
                    table.load_version(v).await.map_err(fail)?;
                }
                let state = table.snapshot().map_err(fail)?;
                Ok(state.snapshot().arrow_schema())
            })
        })
        .join()
        .unwrap_or_else(|_| Err(SluiceError::internal("reading the Delta table's schema panicked")))
    })
}

/// Where the stream starts: `version`'s snapshot (`snapshot`) or its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Initial {
    version: u64,
    snapshot: bool,
}

/// A position: the first `index` data files of `version` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    version: u64,
    index: usize,
    /// A batch read of the whole snapshot at `version`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    batch: bool,
}

impl Position {
    fn parse(source: &str, offset: &SourceOffset) -> Result<Self> {
        serde_json::from_value(offset.clone()).map_err(|e| SluiceError::Source {
            source_name: source.into(),
            reason: format!(
                "offset {offset} is not a Delta position ({e}); the checkpoint was written for another source"
            ),
        })
    }

    fn to_offset(self) -> SourceOffset {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A Delta table as a stream of one query.
#[derive(Debug)]
pub struct DeltaSource {
    name: String,
    schema: SchemaRef,
    log: DeltaLog,
    options: DeltaOptions,
    metadata: CheckpointDir,
    /// The data files of each version read so far.
    files: Mutex<HashMap<u64, Arc<Vec<AddFile>>>>,
    /// The last version an available-now run reads.
    frozen: Mutex<Option<u64>>,
}

impl DeltaSource {
    async fn initial(&self) -> Result<Option<Initial>> {
        if let Some(stored) = self.metadata.read_json::<Initial>(INITIAL).await? {
            return Ok(Some(stored));
        }
        let initial = match self.options.starting_version {
            Some(v) => Initial { version: v, snapshot: false },
            None => match self.log.latest()? {
                Some(v) => Initial { version: v, snapshot: true },
                None => return Ok(None),
            },
        };
        self.metadata.create_json(INITIAL, &initial).await?;
        Ok(self.metadata.read_json::<Initial>(INITIAL).await?.or(Some(initial)))
    }

    /// The data files version `version` contributes to the stream.
    fn files_of(&self, initial: Initial, version: u64) -> Result<Arc<Vec<AddFile>>> {
        if let Some(f) = self.files.lock().get(&version) {
            return Ok(Arc::clone(f));
        }
        let files = if initial.snapshot && version == initial.version {
            self.log.snapshot(version)?
        } else {
            let commit = self.log.commit(version)?;
            if !commit.data_removes.is_empty() {
                let delete_only = commit.adds.iter().all(|a| !a.data_change);
                let allowed = self.options.ignore_changes || (self.options.ignore_deletes && delete_only);
                if !allowed {
                    return Err(SluiceError::Source {
                        source_name: self.name.clone(),
                        reason: format!(
                            "version {version} of the Delta table at {} {} data (operation {}, {} file(s) removed): \
                             a stream reads appended data only. Set ignore_deletes = 'true' to skip commits that \
                             only delete, or ignore_changes = 'true' to read the rewritten files again (their \
                             unchanged rows come again too)",
                            self.log.root().display(),
                            if delete_only { "deletes" } else { "rewrites" },
                            commit.operation.as_deref().unwrap_or("unknown"),
                            commit.data_removes.len()
                        ),
                    });
                }
            }
            commit.adds.into_iter().filter(|a| a.data_change).collect()
        };
        let files = Arc::new(files);
        self.files.lock().insert(version, Arc::clone(&files));
        Ok(files)
    }
}

#[async_trait]
impl Source for DeltaSource {
    fn continuous_refusal(&self) -> Option<String> {
        Some(
            "the delta source reads a table's commits as whole versions, not record by record; use a micro-batch \
             trigger (trigger = 'processing_time') to stream from a Delta table"
                .into(),
        )
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn latest_offset(&self, start: Option<&SourceOffset>) -> Result<Option<SourceOffset>> {
        let Some(initial) = self.initial().await? else { return Ok(None) };
        let Some(mut latest) = self.log.latest()? else { return Ok(start.cloned()) };
        if let Some(cap) = *self.frozen.lock() {
            latest = latest.min(cap);
        }
        let mut pos = match start {
            Some(s) => Position::parse(&self.name, s)?,
            None => Position { version: initial.version, index: 0, batch: false },
        };
        let mut budget = self.options.max_files.unwrap_or(usize::MAX);
        let begin = pos;
        while pos.version <= latest && budget > 0 {
            let files = self.files_of(initial, pos.version)?;
            let take = (files.len() - pos.index.min(files.len())).min(budget);
            pos.index += take;
            budget -= take;
            if pos.index >= files.len() && pos.version < latest && budget > 0 {
                pos = Position { version: pos.version + 1, index: 0, batch: false };
            } else {
                break;
            }
        }
        if pos == begin && start.is_none() && pos.index == 0 {
            // Nothing to read yet.
            return Ok(None);
        }
        Ok(Some(pos.to_offset()))
    }

    async fn get_batch(&self, start: Option<&SourceOffset>, end: &SourceOffset) -> Result<Vec<RecordBatch>> {
        let end = Position::parse(&self.name, end)?;
        if end.batch {
            let files = self.log.snapshot(end.version)?;
            return read::read_files(&self.name, &self.log, &files, &self.schema);
        }
        let Some(initial) = self.initial().await? else { return Ok(vec![]) };
        let start = match start {
            Some(s) => Position::parse(&self.name, s)?,
            None => Position { version: initial.version, index: 0, batch: false },
        };
        let mut wanted = vec![];
        for v in start.version..=end.version {
            let files = self.files_of(initial, v)?;
            let from = if v == start.version { start.index.min(files.len()) } else { 0 };
            let to = if v == end.version { end.index.min(files.len()) } else { files.len() };
            wanted.extend(files[from..to.max(from)].iter().cloned());
        }
        read::read_files(&self.name, &self.log, &wanted, &self.schema)
    }

    async fn prepare_for_available_now(&self) -> Result<()> {
        *self.frozen.lock() = self.log.latest()?;
        Ok(())
    }

    async fn batch_range(&self) -> Result<Option<(Option<SourceOffset>, SourceOffset)>> {
        let version = match self.options.version {
            Some(v) => v,
            None => match self.log.latest()? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        Ok(Some((None, Position { version, index: 0, batch: true }.to_offset())))
    }
}
