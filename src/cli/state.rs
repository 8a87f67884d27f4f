//! `sluice state CHECKPOINT_DIR`: a checkpoint's stateful operators, and
//! one operator's committed state queried with SQL as the table `state`.

use std::process::ExitCode;
use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use sluice::checkpoint::CheckpointDir;
use sluice::stateful::inspect::{list_operators, read_operator};
use sluice::Environment;

/// What `sluice state` was asked.
#[derive(Debug)]
pub struct StateArgs {
    /// The checkpoint location.
    pub checkpoint: String,
    /// The operator to read (its number, `limit`, or its kind).
    pub operator: Option<String>,
    /// SQL over the table `state`.
    pub sql: Option<String>,
    /// The batch whose version to read (default: the last committed).
    pub batch: Option<u64>,
}

/// List the operators, or query one.
pub async fn state(args: &StateArgs) -> Result<ExitCode, String> {
    let local = args.checkpoint.strip_prefix("file://").unwrap_or(&args.checkpoint);
    if !args.checkpoint.contains("://") && !std::path::Path::new(local).join("metadata").is_file() {
        return Err(format!(
            "{} is not a Sluice checkpoint (it has no metadata file); pass the checkpoint directory of a query",
            args.checkpoint
        ));
    }
    let root = CheckpointDir::open(&args.checkpoint).map_err(|e| e.to_string())?;
    let Some(operator) = &args.operator else {
        if args.sql.is_some() || args.batch.is_some() {
            return Err("--sql and --batch need --operator N (the operators are listed without them)".into());
        }
        let ops = list_operators(&root).await.map_err(|e| e.to_string())?;
        if ops.is_empty() {
            println!("{}: no stateful operator has state", args.checkpoint);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<9} {:<18} {:<10} {:<14} {:>10}  keys / state",
            "operator", "kind", "partitions", "versions", "bytes"
        );
        for o in ops {
            let kind = &o.kind;
            let (keys, values) = match &o.layout {
                Some(l) => (l.keys.join(", "), l.values.join(", ")),
                None => (String::new(), String::new()),
            };
            let versions = o.versions.map_or("-".to_string(), |(a, b)| format!("{a}..{b}"));
            println!(
                "{:<9} {:<18} {:<10} {:<14} {:>10}  [{keys}] / [{values}]",
                o.name, kind, o.partitions, versions, o.bytes
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let env = Environment::default();
    let session = env.default_session();
    let ctx = session.context();
    let state = ctx.state();
    let functions = state.aggregate_functions().clone();
    let rows = read_operator(&root, operator, args.batch, &|n| functions.get(n).cloned(), state.task_ctx())
        .await
        .map_err(|e| e.to_string())?;
    let table = MemTable::try_new(rows.schema, vec![rows.batches]).map_err(|e| e.to_string())?;
    ctx.register_table("state", Arc::new(table)).map_err(|e| e.to_string())?;
    let sql = args.sql.as_deref().unwrap_or("SELECT * FROM state");
    let df = ctx.sql(sql).await.map_err(|e| format!("--sql: {e}"))?;
    let batches = df.collect().await.map_err(|e| format!("--sql: {e}"))?;
    eprintln!("operator {} at batch {}", rows.operator, rows.version);
    println!("{}", pretty_format_batches(&batches).map_err(|e| e.to_string())?);
    Ok(ExitCode::SUCCESS)
}
