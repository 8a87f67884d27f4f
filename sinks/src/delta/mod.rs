//! The `delta` sink: each micro-batch is one Delta Lake commit, exactly once.
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `path` | required | the table: a local path or `file://` URL |
//! | `partition_by` | none | comma-separated columns the table is partitioned by (a new table) |
//! | `merge_keys` | none | update mode: the columns a row is matched on (a MERGE) |
//! | `merge_schema` | `false` | accept new nullable columns into an existing table's schema |
//!
//! Output modes: append (the batch's rows are added), complete (the table is
//! overwritten with the batch's result), update (the rows are merged on
//! `merge_keys`: matched rows updated, the others inserted).
//!
//! Exactly once, as Spark's `DeltaSink`: every commit carries an application
//! transaction (`txn` action) with the query id as app id and the batch id
//! as version. A batch whose version the table already holds for this
//! query is skipped, so a batch re-run after a crash between the Delta
//! commit and the query's commit log is not written twice; one that never
//! reached the table is written again. The commit itself is Delta's atomic
//! log entry: a crash before it leaves no trace readers see.

mod schema;

use std::fmt::{self, Debug};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use sluice_engine::{OutputMode, Result, Sink, SinkContext, SinkFactory, SluiceError};
use tokio::sync::Mutex;
use tracing::info;

const VALID_OPTIONS: &[&str] = &["path", "partition_by", "merge_keys", "merge_schema"];

/// Factory of the `delta` sink connector.
#[derive(Debug, Default, Clone)]
pub struct DeltaSinkFactory;

impl SinkFactory for DeltaSinkFactory {
    fn name(&self) -> &str {
        "delta"
    }

    fn valid_options(&self) -> &[&'static str] {
        VALID_OPTIONS
    }

    fn requires_checkpoint(&self) -> bool {
        true
    }

    fn create(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>> {
        let path = ctx.options.get("path").ok_or_else(|| SluiceError::InvalidOption {
            option: "path".into(),
            value: String::new(),
            reason: "the delta sink needs path = '<table directory>'".into(),
        })?;
        let url = table_url(path)?;
        let partition_by = resolve_columns("partition_by", ctx.options.get("partition_by"), &ctx.schema)?;
        let merge_keys = resolve_columns("merge_keys", ctx.options.get("merge_keys"), &ctx.schema)?;
        let merge_schema = ctx.options.bool("merge_schema", false)?;
        match (ctx.output_mode, merge_keys.is_empty()) {
            (OutputMode::Update, true) => {
                return Err(SluiceError::InvalidOption {
                    option: "merge_keys".into(),
                    value: String::new(),
                    reason: "a delta sink in update mode merges each batch's rows into the table and needs the \
                             columns to match them on: add merge_keys = '<key columns>' (the query's grouping \
                             keys), or use output_mode = 'append' or 'complete'"
                        .into(),
                });
            }
            (OutputMode::Append | OutputMode::Complete, false) => {
                return Err(SluiceError::InvalidOption {
                    option: "merge_keys".into(),
                    value: ctx.options.get("merge_keys").unwrap_or_default().into(),
                    reason: format!(
                        "merge_keys applies to output_mode = 'update' (a MERGE), not to {}: remove it",
                        ctx.output_mode
                    ),
                });
            }
            _ => {}
        }
        if partition_by.len() == ctx.schema.fields().len() {
            return Err(SluiceError::InvalidOption {
                option: "partition_by".into(),
                value: partition_by.join(","),
                reason: "cannot partition by every column: no column would be left in the data files".into(),
            });
        }
        Ok(Arc::new(DeltaSink {
            name: ctx.name,
            url,
            app_id: format!("sluice-{}", ctx.query_id),
            schema: ctx.schema,
            mode: ctx.output_mode,
            partition_by,
            merge_keys,
            merge_schema,
            context: ctx.context,
            table: Mutex::new(None),
        }))
    }
}

/// The table location as a URL (a local path is made absolute; its
/// directory is created).
pub fn table_url(path: &str) -> Result<url::Url> {
    let bad = |reason: String| SluiceError::InvalidOption { option: "path".into(), value: path.into(), reason };
    if let Some(rest) = path.strip_prefix("file://") {
        return table_url(rest);
    }
    if path.contains("://") {
        return Err(bad("the delta connector supports local paths and file:// URLs".into()));
    }
    std::fs::create_dir_all(path).map_err(|e| bad(format!("cannot create the table directory: {e}")))?;
    let abs = std::fs::canonicalize(path).map_err(|e| bad(format!("cannot resolve the path: {e}")))?;
    url::Url::from_directory_path(&abs).map_err(|_| bad("not an absolute directory path".into()))
}

/// A sink writing each batch as one Delta commit.
pub struct DeltaSink {
    name: String,
    url: url::Url,
    app_id: String,
    schema: SchemaRef,
    mode: OutputMode,
    partition_by: Vec<String>,
    merge_keys: Vec<String>,
    merge_schema: bool,
    context: datafusion::prelude::SessionContext,
    /// The table as of the last commit (`None` before the first batch).
    table: Mutex<Option<DeltaTable>>,
}

impl Debug for DeltaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeltaSink").field("name", &self.name).field("url", &self.url.as_str()).finish()
    }
}

impl DeltaSink {
    /// A Delta error as a Sluice one, naming the sink and the table.
    fn error(&self, what: &str, e: deltalake::DeltaTableError) -> SluiceError {
        SluiceError::Sink { sink: self.name.clone(), reason: format!("{what} the Delta table at {}: {e}", self.url) }
    }

    /// The table at its latest version (`None` version: not created yet).
    async fn latest(&self) -> Result<DeltaTable> {
        let mut guard = self.table.lock().await;
        let table = match guard.take() {
            Some(mut t) if t.version().is_some() => {
                t.update_state().await.map_err(|e| self.error("cannot read", e))?;
                t
            }
            _ => DeltaTable::try_from_url(self.url.clone()).await.map_err(|e| self.error("cannot open", e))?,
        };
        Ok(table)
    }
}

#[async_trait]
impl Sink for DeltaSink {
    async fn add_batch(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let span = tracing::info_span!("delta_sink", sink = %self.name, batch_id);
        let _enter = span.enter();
        let table = self.latest().await?;
        let exists = table.version().is_some();
        let mut partition_by = self.partition_by.clone();
        if exists {
            let state = table.snapshot().map_err(|e| self.error("cannot read", e))?;
            let done = state
                .transaction_version(table.log_store().as_ref(), &self.app_id)
                .await
                .map_err(|e| self.error("cannot read the transactions of", e))?;
            if done.is_some_and(|v| v >= batch_id as i64) {
                info!(table = %self.url, "batch already committed to the Delta table (replay): skipped");
                *self.table.lock().await = Some(table);
                return Ok(());
            }
            schema::check(&self.url, &state.snapshot().arrow_schema(), &self.schema, self.merge_schema)
                .map_err(|reason| SluiceError::Sink { sink: self.name.clone(), reason })?;
            // An existing table keeps its partitioning.
            let existing = state.metadata().partition_columns().to_vec();
            if !partition_by.is_empty() && partition_by != existing {
                return Err(SluiceError::Sink {
                    sink: self.name.clone(),
                    reason: format!(
                        "partition_by = '{}', but the Delta table at {} is partitioned by [{}]: an existing table \
                         keeps its partitioning; remove partition_by or match it, or write to a new table",
                        partition_by.join(","),
                        self.url,
                        existing.join(", ")
                    ),
                });
            }
            partition_by = existing;
        }
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        // An empty append or merge changes nothing and needs no commit; an
        // empty complete-mode result empties the table.
        if rows == 0 && self.mode != OutputMode::Complete {
            *self.table.lock().await = Some(table);
            return Ok(());
        }
        let commit =
            CommitProperties::default().with_application_transaction(Transaction::new(&self.app_id, batch_id as i64));
        sluice_engine::faults::crash_point("before_delta_commit");
        let written = match self.mode {
            OutputMode::Append | OutputMode::Complete => {
                let save = if self.mode == OutputMode::Append { SaveMode::Append } else { SaveMode::Overwrite };
                let mut write = table
                    .write(batches.to_vec())
                    .with_save_mode(save)
                    .with_partition_columns(partition_by.clone())
                    .with_commit_properties(commit);
                if self.merge_schema {
                    write = write.with_schema_mode(SchemaMode::Merge);
                }
                write.await.map_err(|e| self.error("cannot write to", e))?
            }
            OutputMode::Update => {
                if !exists {
                    // A first merge has nothing to match: create the table.
                    table
                        .write(batches.to_vec())
                        .with_save_mode(SaveMode::Append)
                        .with_partition_columns(partition_by.clone())
                        .with_commit_properties(commit)
                        .await
                        .map_err(|e| self.error("cannot write to", e))?
                } else {
                    self.merge(table, batches, commit).await?
                }
            }
        };
        sluice_engine::faults::crash_point("after_delta_commit");
        info!(table = %self.url, version = ?written.version(), rows, "delta sink: batch committed");
        *self.table.lock().await = Some(written);
        Ok(())
    }
}

impl DeltaSink {
    /// MERGE the batch into the table on the merge keys: matched rows take
    /// the batch's values, the others are inserted.
    async fn merge(&self, table: DeltaTable, batches: &[RecordBatch], commit: CommitProperties) -> Result<DeltaTable> {
        let source = self.context.read_batches(batches.to_vec())?;
        let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        let predicate = self
            .merge_keys
            .iter()
            .map(|k| format!("target.{q} IS NOT DISTINCT FROM source.{q}", q = quote(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let columns: Vec<String> = self.schema.fields().iter().map(|f| f.name().clone()).collect();
        let merge = table
            .merge(source, predicate)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_merge_schema(self.merge_schema)
            .with_commit_properties(commit)
            .when_matched_update(|mut u| {
                for c in &columns {
                    u = u.update(quote(c), format!("source.{}", quote(c)));
                }
                u
            })
            .and_then(|m| {
                m.when_not_matched_insert(|mut i| {
                    for c in &columns {
                        i = i.set(quote(c), format!("source.{}", quote(c)));
                    }
                    i
                })
            })
            .map_err(|e| self.error("cannot merge into", e))?;
        let (table, _metrics) = merge.await.map_err(|e| self.error("cannot merge into", e))?;
        Ok(table)
    }
}

/// The columns a comma-separated option `option` names, matched to the
/// query output's columns (exactly, else ignoring case), each once.
fn resolve_columns(option: &str, value: Option<&str>, schema: &arrow::datatypes::Schema) -> Result<Vec<String>> {
    let Some(value) = value else {
        return Ok(vec![]);
    };
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut columns = Vec::new();
    for wanted in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found = names
            .iter()
            .find(|n| n.as_str() == wanted)
            .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(wanted)))
            .ok_or_else(|| SluiceError::InvalidOption {
                option: option.into(),
                value: value.into(),
                reason: format!("no column '{wanted}' in the query output; columns are: {}", names.join(", ")),
            })?;
        if !columns.contains(found) {
            columns.push(found.clone());
        }
    }
    Ok(columns)
}
