//! The table function `sluice_state('<query>', '<operator>' [, <batch>])`:
//! a query's committed state as a table, live while the query runs or from
//! its checkpoint after it stopped (see [`crate::stateful::inspect`] for
//! the rows of each operator).
//!
//! The first argument is a query of the session (running, or stopped: the
//! session remembers where each query it started kept its checkpoint) or a
//! checkpoint location. The second is the operator: its number as `EXPLAIN`
//! and `sluice state` show it (`'0'`, `'1'`, ...), `'limit'`, or its kind
//! (`'aggregate'`, `'dedup'`, `'join'`, ...) when only one operator has it.
//! The optional third is a batch id, to read an earlier retained version.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};
use crate::stateful::inspect::{read_operator, OperatorStateRows};

/// Where each query a session started keeps its checkpoint, by lower-case
/// name (kept after the query stops). The session fills it; the function
/// reads it.
#[derive(Debug, Default)]
pub struct QueryCheckpoints(parking_lot::Mutex<std::collections::BTreeMap<String, String>>);

impl QueryCheckpoints {
    /// Record that query `name` keeps its checkpoint at `location`.
    pub fn insert(&self, name: &str, location: &str) {
        self.0.lock().insert(name.to_ascii_lowercase(), location.to_string());
    }

    /// The checkpoint location of query `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.lock().get(&name.to_ascii_lowercase()).cloned()
    }

    /// The names recorded.
    pub fn names(&self) -> Vec<String> {
        self.0.lock().keys().cloned().collect()
    }
}

/// The name the function is registered under.
pub const NAME: &str = "sluice_state";

const USAGE: &str = "sluice_state('<query name or checkpoint location>', '<operator>' [, <batch id>])";

/// `sluice_state`, registered on every Sluice session.
#[derive(Debug, Default)]
pub struct StateTableFunction {
    queries: std::sync::Arc<QueryCheckpoints>,
}

impl StateTableFunction {
    /// The function of a session whose queries' checkpoints are `queries`.
    pub fn new(queries: std::sync::Arc<QueryCheckpoints>) -> Self {
        Self { queries }
    }
}

impl TableFunctionImpl for StateTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let rows = self.read(&args)?;
        Ok(Arc::new(MemTable::try_new(rows.schema, vec![rows.batches])?))
    }
}

fn text(e: Option<&Expr>) -> Option<String> {
    match e {
        Some(Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        )) => Some(s.clone()),
        _ => None,
    }
}

impl StateTableFunction {
    fn read(&self, args: &TableFunctionArgs) -> Result<OperatorStateRows> {
        let exprs = args.exprs();
        let bad = |what: String| SluiceError::plan(format!("{what}; call it as {USAGE}"));
        if !(2..=3).contains(&exprs.len()) {
            return Err(bad(format!("{NAME} takes 2 or 3 arguments, not {}", exprs.len())));
        }
        let query = text(exprs.first()).ok_or_else(|| bad(format!("the first argument of {NAME} must be a string")))?;
        let operator =
            text(exprs.get(1)).ok_or_else(|| bad(format!("the second argument of {NAME} must be a string")))?;
        let version = match exprs.get(2) {
            None => None,
            Some(Expr::Literal(v, _)) => match v.cast_to(&datafusion::arrow::datatypes::DataType::UInt64) {
                Ok(ScalarValue::UInt64(Some(b))) => Some(b),
                _ => return Err(bad(format!("the batch argument of {NAME} must be a batch id (an integer >= 0)"))),
            },
            Some(_) => return Err(bad(format!("the batch argument of {NAME} must be a literal batch id"))),
        };
        let session = args.session();
        let location = resolve(&self.queries, &query)?;
        let functions = session.aggregate_functions().clone();
        let task = session.task_ctx();
        // The planner calls table functions synchronously: read on a thread
        // of its own with its own runtime (the files may be in S3).
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let root = CheckpointDir::open(&location)?;
                    read_operator(&root, &operator, version, &|name| functions.get(name).cloned(), task).await
                })
            })
            .join()
            .unwrap_or_else(|_| Err(SluiceError::internal("reading the state panicked")))
        })
    }
}

/// The checkpoint location of `query`: a query this session started, or a
/// checkpoint location.
fn resolve(queries: &QueryCheckpoints, query: &str) -> Result<String> {
    if let Some(location) = queries.get(query) {
        return Ok(location);
    }
    let known = queries.names();
    let is_checkpoint = query.starts_with("s3://")
        || query.starts_with("s3a://")
        || std::path::Path::new(query.strip_prefix("file://").unwrap_or(query)).join("metadata").is_file();
    if is_checkpoint {
        return Ok(query.to_string());
    }
    Err(SluiceError::plan(format!(
        "{NAME}: no query named '{query}' in this session, and '{query}' is not a checkpoint directory; {}",
        if known.is_empty() {
            "no query was started in this session (pass a checkpoint location instead)".to_string()
        } else {
            format!(
                "the queries are {} (SHOW QUERIES lists them)",
                known.iter().map(|q| format!("'{q}'")).collect::<Vec<_>>().join(", ")
            )
        }
    )))
}
