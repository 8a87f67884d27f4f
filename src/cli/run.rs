//! `sluice run FILE.sql`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use sluice::{execute_sql, Environment, StatementResult, StreamingQuery};

use super::repl::print_result;

/// Replace `$NAME` / `${NAME}` by environment variables that are set.
pub fn substitute_env(text: &str) -> String {
    let mut out = text.to_string();
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), &v).replace(&format!("${k}"), &v);
    }
    out
}

/// Run a SQL file; wait for its queries.
pub async fn run_file(file: &Path, env_substitute: bool) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let text = if env_substitute { substitute_env(&text) } else { text };
    let env = Environment::default();
    let session = env.default_session();
    let results = execute_sql(&session, &text).await.map_err(|e| e.to_string())?;
    let mut queries: Vec<StreamingQuery> = vec![];
    for r in results {
        match r {
            StatementResult::Started(q) => {
                eprintln!("started query '{}' (id {})", q.name(), q.id());
                queries.push(q);
            }
            StatementResult::Rows(b) if b.iter().all(|b| b.num_rows() == 0) => {}
            other => print_result(&other),
        }
    }
    if queries.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut printed = vec![None; queries.len()];
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopping...");
                session.stop_all().await.map_err(|e| e.to_string())?;
                return Ok(ExitCode::SUCCESS);
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (i, q) in queries.iter().enumerate() {
            for p in q.recent_progress() {
                if printed[i].is_none_or(|last| p.batch_id > last) {
                    eprintln!("{}", p.summary());
                    printed[i] = Some(p.batch_id);
                }
            }
        }
        if queries.iter().all(|q| !q.is_active()) {
            let mut code = ExitCode::SUCCESS;
            for q in &queries {
                // The failure itself was logged once, when it happened.
                if q.exception().is_some() {
                    code = ExitCode::FAILURE;
                }
            }
            return Ok(code);
        }
    }
}
