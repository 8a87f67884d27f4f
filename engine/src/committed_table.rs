//! `CREATE EXTERNAL TABLE ... LOCATION '<dir>'` over a `files` sink output
//! directory reads only the committed data files (like Spark with
//! `_spark_metadata`).
//!
//! [`CommittedFilesTableFactory`] wraps the session's table factory of a
//! file type. It lets DataFusion build its `ListingTable` as usual (format
//! options, partition columns, ordering), then, when the location is a
//! directory holding a [`MANIFEST_DIR`](crate::manifest::MANIFEST_DIR),
//! rebuilds the table over exactly the files named by the committed manifest
//! entries (see [`crate::manifest`]) that DataFusion would have listed; files
//! of uncommitted (crashed) batches are never read. When the schema is
//! inferred it is inferred from the committed files only.
//!
//! The committed files are those of the batches committed when the table is
//! created; re-create the table (`CREATE OR REPLACE EXTERNAL TABLE`) to see
//! later batches. Single files, other object stores and directories without
//! a manifest are left to DataFusion unchanged.

use std::path::{Path as LocalPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::provider::DefaultTableFactory;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::prelude::SessionContext;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use tracing::debug;

use crate::error::{Result, SluiceError};
use crate::manifest;

/// File types (`STORED AS ...`) whose table factories [`register`] wraps.
pub const FILE_TYPES: &[&str] = &["PARQUET", "CSV", "JSON", "NDJSON"];

/// A table factory that reads only the committed files of a `files` sink
/// output directory, and delegates everything else to `inner`.
#[derive(Debug)]
pub struct CommittedFilesTableFactory {
    inner: Arc<dyn TableProviderFactory>,
}

impl CommittedFilesTableFactory {
    /// Wrap `inner` (typically DataFusion's default listing table factory).
    pub fn new(inner: Arc<dyn TableProviderFactory>) -> Self {
        Self { inner }
    }
}

/// Wrap the table factory of each of [`FILE_TYPES`] in `ctx` (DataFusion's
/// default one when none is registered) with a [`CommittedFilesTableFactory`].
pub fn register(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let factories = state.table_factories_mut();
    for file_type in FILE_TYPES {
        let inner = factories
            .get(*file_type)
            .cloned()
            .unwrap_or_else(|| Arc::new(DefaultTableFactory::new()) as Arc<dyn TableProviderFactory>);
        factories.insert((*file_type).to_string(), Arc::new(CommittedFilesTableFactory::new(inner)));
    }
}

#[async_trait]
impl TableProviderFactory for CommittedFilesTableFactory {
    async fn create(&self, state: &dyn Session, cmd: &CreateExternalTable) -> DfResult<Arc<dyn TableProvider>> {
        let provider = self.inner.create(state, cmd).await?;
        let Some(listing) = provider.downcast_ref::<ListingTable>() else {
            return Ok(provider);
        };
        let Some((url, dir)) = output_directory(listing) else {
            return Ok(provider);
        };
        Ok(committed_table(state, cmd, listing, url, &dir).await?)
    }
}

/// The single location of `listing` when it is a local directory holding a
/// manifest: its URL and local path.
fn output_directory(listing: &ListingTable) -> Option<(&ListingTableUrl, PathBuf)> {
    let [url] = listing.table_paths().as_slice() else {
        return None;
    };
    if url.scheme() != "file" || !url.is_collection() {
        return None;
    }
    let dir = url.get_url().to_file_path().ok()?;
    manifest::has_manifest(&dir).then_some((url, dir))
}

/// A committed data file: its path relative to the output directory and its
/// object-store path.
struct Committed {
    relative: String,
    location: Path,
}

/// The table of `listing` restricted to the committed files of `dir`.
async fn committed_table(
    state: &dyn Session,
    cmd: &CreateExternalTable,
    listing: &ListingTable,
    url: &ListingTableUrl,
    dir: &LocalPath,
) -> Result<Arc<dyn TableProvider>> {
    let options = listing.options().clone();
    let ignore_subdirectory = state.config().options().execution.listing_table_ignore_subdirectory;
    let mut files = Vec::new();
    for entry in manifest::read_entries(dir).await? {
        for file in entry.files {
            let text = match url.prefix().as_ref() {
                "" => file.path.clone(),
                prefix => format!("{prefix}/{}", file.path),
            };
            let location = Path::parse(&text).map_err(|e| {
                SluiceError::plan(format!("manifest of '{}' names an invalid file '{}': {e}", dir.display(), file.path))
            })?;
            // Only files DataFusion would have listed (glob, extension, subdirectories).
            if url.contains(&location, ignore_subdirectory) && text.ends_with(&options.file_extension) {
                files.push(Committed { relative: file.path, location });
            }
        }
    }
    debug!(table = %cmd.name, dir = %dir.display(), files = files.len(), "external table over committed files");
    if files.is_empty() {
        return Ok(Arc::new(EmptyTable::new(listing.schema())));
    }
    let partitioned = !options.table_partition_cols.is_empty();
    let urls = files
        .iter()
        .map(|f| file_url(url, dir, f, partitioned).map(|u| u.with_table_ref(cmd.name.clone())))
        .collect::<Result<Vec<_>>>()?;
    let file_schema = if cmd.schema.fields().is_empty() {
        infer_schema(state, &options, &urls[0], &files).await?
    } else {
        file_schema(listing)
    };
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(file_schema);
    let table = ListingTable::try_new(config)?
        .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache())
        .with_definition(cmd.definition.clone())
        .with_constraints(cmd.constraints.clone())
        .with_column_defaults(cmd.column_defaults.clone());
    Ok(Arc::new(table))
}

/// The table URL reading exactly one committed file. Unpartitioned: the
/// file itself. Partitioned: the output directory with a glob matching only
/// the file, so partition values are still parsed from `col=value/` folders.
fn file_url(url: &ListingTableUrl, dir: &LocalPath, file: &Committed, partitioned: bool) -> Result<ListingTableUrl> {
    if partitioned {
        let name: Vec<&str> = file.relative.split('/').filter(|s| !s.contains('=')).collect();
        return Ok(ListingTableUrl::try_new(url.get_url().clone(), None)?.with_glob(&escape_glob(&name.join("/")))?);
    }
    let path = dir.join(&file.relative);
    let file_url = url::Url::from_file_path(&path)
        .map_err(|()| SluiceError::plan(format!("cannot turn '{}' into a file:// URL", path.display())))?;
    Ok(ListingTableUrl::try_new(file_url, None)?)
}

/// Escape the glob metacharacters of `text` so the pattern matches it
/// literally.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '?' | '*' | '[' | ']' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

/// The schema of the committed files (empty ones skipped), partition
/// columns excluded.
async fn infer_schema(
    state: &dyn Session,
    options: &datafusion::datasource::listing::ListingOptions,
    url: &ListingTableUrl,
    files: &[Committed],
) -> Result<SchemaRef> {
    let store = state.runtime_env().object_store(url)?;
    let mut objects = Vec::with_capacity(files.len());
    for file in files {
        let meta = store.head(&file.location).await?;
        if meta.size > 0 {
            objects.push(meta);
        }
    }
    Ok(options.format.infer_schema(state, &store, &objects).await?)
}

/// The schema of the data files of `listing`: its schema without the
/// partition columns (which `ListingTable` appends last).
fn file_schema(listing: &ListingTable) -> SchemaRef {
    let schema = listing.schema();
    let n = schema.fields().len().saturating_sub(listing.options().table_partition_cols.len());
    let fields: Vec<_> = schema.fields().iter().take(n).cloned().collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests;
