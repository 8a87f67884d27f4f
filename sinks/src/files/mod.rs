//! The `files` sink: writes each micro-batch as data files in a directory,
//! exactly once, through a manifest log (see [`manifest`] for the format).
//!
//! Options:
//!
//! | option         | default   | meaning                                                  |
//! |----------------|-----------|----------------------------------------------------------|
//! | `path`         | required  | output directory: local path or `file://` URL            |
//! | `format`       | `parquet` | `parquet`, `csv` (with header) or `json` (one object per line) |
//! | `partition_by` | none      | comma-separated columns or expressions (`date_format(ts, 'yyyy-MM-dd') AS day`); rows go to `name=value/` subdirectories |
//!
//! Only the append output mode is supported. For each batch the sink writes
//! its data files under fresh names `part-<batch_id>-<uuid>.<ext>` (one per
//! partition directory; none for a batch without rows), then commits the
//! batch by writing the manifest entry `_sluice_manifest/<batch_id>`
//! atomically. A batch whose entry already exists is not written again, so
//! re-sending a batch after a crash is a no-op. Partition columns are not
//! stored in the data files (their values are in the directory names).

pub mod manifest;
mod partition;
mod write;

use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_engine::checkpoint::{CheckpointDir, DurableLocalStore};
use sluice_engine::{OutputMode, Result, Sink, SinkContext, SinkFactory, SluiceError};
use tracing::{debug, info, warn};

pub use manifest::{committed_entries, committed_files, ManifestEntry, ManifestFile, MANIFEST_DIR};
pub use write::{FileFormat, NULL_PARTITION};

const VALID_OPTIONS: &[&str] = &["path", "format", "partition_by"];

/// Factory of the `files` sink connector.
#[derive(Debug, Default, Clone)]
pub struct FilesSinkFactory;

impl SinkFactory for FilesSinkFactory {
    fn name(&self) -> &str {
        "files"
    }

    fn valid_options(&self) -> &[&'static str] {
        VALID_OPTIONS
    }

    /// Append only: files once written are never changed.
    fn supports(&self, mode: OutputMode) -> bool {
        mode == OutputMode::Append
    }

    /// The output outlives the query: a restart must resume its batch ids.
    fn requires_checkpoint(&self) -> bool {
        true
    }

    fn create(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>> {
        ctx.options.check_known("sink", "files", VALID_OPTIONS)?;
        if !self.supports(ctx.output_mode) {
            return Err(SluiceError::unsupported(format!(
                "the files sink does not support {} output mode; use append",
                ctx.output_mode
            )));
        }
        let path = ctx.options.get("path").ok_or_else(|| SluiceError::InvalidOption {
            option: "path".into(),
            value: String::new(),
            reason: "the files sink needs an output directory, e.g. path = '/data/out'".into(),
        })?;
        let format = ctx.options.get("format").map(str::parse::<FileFormat>).transpose()?.unwrap_or_default();
        let partitions = partition::parse(ctx.options.get("partition_by"), &ctx.schema, &ctx.context)?;
        if format == FileFormat::Csv {
            // Refuse at creation what the CSV writer would refuse at the first batch.
            if let Some(f) = ctx.schema.fields().iter().find(|f| f.data_type().is_nested()) {
                return Err(SluiceError::InvalidOption {
                    option: "format".into(),
                    value: "csv".into(),
                    reason: format!(
                        "CSV cannot hold column '{}' of type {}; use format = 'json' or 'parquet', or select scalar \
                         columns (e.g. st.field)",
                        f.name(),
                        f.data_type()
                    ),
                });
            }
        }
        let names = partitions.iter().map(|p| p.name.clone()).collect();
        let mut sink = FilesSink::open(&ctx.name, path, format, names)?.with_query_id(&ctx.query_id);
        sink.partitions = partitions;
        Ok(Arc::new(sink))
    }
}

/// A sink writing data files plus a manifest log, exactly once.
pub struct FilesSink {
    name: String,
    root: PathBuf,
    store: Arc<dyn ObjectStore>,
    manifest: CheckpointDir,
    format: FileFormat,
    partition_by: Vec<String>,
    /// The partition levels: columns, or expressions computed at write time.
    partitions: Vec<partition::PartitionColumn>,
    /// Id of the query writing; recorded in each manifest entry.
    query_id: Option<String>,
    /// Serialises writes; `true` once stale files of a crashed batch were
    /// looked for (done on the first write of this sink instance).
    write_lock: tokio::sync::Mutex<bool>,
}

impl Debug for FilesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilesSink")
            .field("name", &self.name)
            .field("root", &self.root)
            .field("format", &self.format)
            .field("partition_by", &self.partition_by)
            .finish_non_exhaustive()
    }
}

impl FilesSink {
    /// Open a files sink named `name` writing `format` files to `path`
    /// (local path or `file://` URL; created if missing), partitioned by the
    /// columns `partition_by`.
    pub fn open(name: &str, path: &str, format: FileFormat, partition_by: Vec<String>) -> Result<Self> {
        let local = manifest::local_path(path)?;
        std::fs::create_dir_all(&local).map_err(|e| SluiceError::InvalidOption {
            option: "path".into(),
            value: path.into(),
            reason: format!("cannot create the output directory: {e}"),
        })?;
        let root = std::fs::canonicalize(&local)?;
        let store: Arc<dyn ObjectStore> = Arc::new(DurableLocalStore::new(&root)?);
        let manifest = CheckpointDir::open(&root.display().to_string())?.child(MANIFEST_DIR);
        Ok(Self {
            name: name.into(),
            root,
            store,
            manifest,
            format,
            partitions: partition_by
                .iter()
                .map(|name| partition::PartitionColumn { name: name.clone(), expr: None })
                .collect(),
            partition_by,
            query_id: None,
            write_lock: tokio::sync::Mutex::new(false),
        })
    }

    /// Record `query_id` in the manifest entries this sink writes, and refuse
    /// to treat a batch another query committed as already written.
    pub fn with_query_id(mut self, query_id: &str) -> Self {
        self.query_id = Some(query_id.to_string());
        self
    }

    /// The output directory (absolute).
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    fn sink_error(&self, reason: String) -> SluiceError {
        SluiceError::Sink { sink: self.name.clone(), reason }
    }

    /// Delete data files of `batch_id` left by an earlier run that crashed
    /// before committing it (they are not in the manifest).
    async fn remove_stale_files(&self, batch_id: u64) -> Result<()> {
        let prefix = format!("part-{batch_id}-");
        let items: Vec<_> = self.store.list(None).try_collect().await?;
        for item in items {
            let in_manifest = item.location.parts().next().is_some_and(|p| p.as_ref() == MANIFEST_DIR);
            let stale = item.location.filename().is_some_and(|f| f.starts_with(&prefix));
            if stale && !in_manifest {
                warn!(sink = %self.name, file = %item.location, "removing data file of an uncommitted batch");
                match self.store.delete(&item.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Write the data files of one batch; their manifest descriptions.
    async fn write_files(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<Vec<ManifestFile>> {
        let batches =
            batches.iter().map(|b| partition::with_computed(b, &self.partitions)).collect::<Result<Vec<_>>>()?;
        let groups: BTreeMap<String, Vec<RecordBatch>> = write::split_by_partition(&batches, &self.partition_by)?;
        let mut files = Vec::with_capacity(groups.len());
        for (dir, group) in groups {
            let rows: usize = group.iter().map(RecordBatch::num_rows).sum();
            let bytes = write::encode(self.format, &group)
                .map_err(|e| self.sink_error(format!("cannot encode batch {batch_id} as {}: {e}", self.format)))?;
            let file_name = format!("part-{batch_id}-{}.{}", uuid::Uuid::new_v4(), self.format.extension());
            let relative = if dir.is_empty() { file_name } else { format!("{dir}/{file_name}") };
            let location = Path::parse(&relative)
                .map_err(|e| self.sink_error(format!("invalid data file path '{relative}': {e}")))?;
            let size = bytes.len() as u64;
            self.store.put(&location, PutPayload::from(bytes)).await.map_err(|e| {
                self.sink_error(format!(
                    "cannot write data file {relative} of batch {batch_id} ({e}); check that {} is writable by this \
                     user and has free space",
                    self.root.display()
                ))
            })?;
            debug!(sink = %self.name, batch_id, file = %relative, rows, "data file written");
            files.push(ManifestFile { path: relative, rows: rows as u64, size });
        }
        Ok(files)
    }
}

#[async_trait]
impl Sink for FilesSink {
    async fn add_batch(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let mut checked_stale = self.write_lock.lock().await;
        let entry_name = batch_id.to_string();
        if let Some(existing) = self.manifest.read_json::<ManifestEntry>(&entry_name).await? {
            // Idempotence holds only for the same query: the same batch id from
            // another checkpoint is different data, and skipping it would lose it.
            if let (Some(theirs), Some(ours)) = (&existing.query_id, &self.query_id) {
                if theirs != ours {
                    return Err(self.sink_error(format!(
                        "the output directory {} already holds batch {batch_id}, committed by another query (id \
                         {theirs}; this query's id is {ours}): its checkpoint is not the one that wrote this \
                         directory. Restart with the checkpoint that wrote it, or write to a new directory",
                        self.root.display()
                    )));
                }
            }
            debug!(sink = %self.name, batch_id, "files sink: batch already committed, skipping");
            return Ok(());
        }
        if !*checked_stale {
            self.remove_stale_files(batch_id).await?;
            *checked_stale = true;
        }
        let files = self.write_files(batch_id, batches).await?;
        sluice_engine::faults::crash_point("during_sink_write");
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let entry = ManifestEntry { batch_id, format: self.format.to_string(), files, query_id: self.query_id.clone() };
        self.manifest.write_json(&entry_name, &entry).await?;
        info!(sink = %self.name, batch_id, rows, files = entry.files.len(), dir = %self.root.display(), "files sink: batch committed");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
