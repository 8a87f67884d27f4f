//! `sluice run FILE.sql`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::listener::StreamingQueryListener;
use sluice::{execute_sql, Environment, StatementResult, StreamingQuery, StreamingQueryProgress};

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

/// Settings of `sluice run`.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Replace `$NAME` by environment variables.
    pub env_substitute: bool,
    /// Serve Prometheus metrics at this address.
    pub metrics: Option<String>,
    /// Append progress reports to this file as JSON lines.
    pub progress_json: Option<PathBuf>,
}

/// Appends each progress report to a file, one JSON document per line.
struct ProgressJsonWriter(Mutex<std::io::BufWriter<std::fs::File>>, PathBuf);

impl StreamingQueryListener for ProgressJsonWriter {
    fn on_query_progress(&self, p: &StreamingQueryProgress) {
        let mut w = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = writeln!(w, "{}", p.json()).and_then(|_| w.flush()) {
            tracing::warn!("cannot append progress to {}: {e}", self.1.display());
        }
    }
}

/// Run a SQL file; wait for its queries.
pub async fn run_file(file: &Path, options: &RunOptions) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let text = if options.env_substitute { substitute_env(&text) } else { text };
    let env = Environment::default();
    let session = env.default_session();
    let _metrics = match &options.metrics {
        Some(addr) => {
            let server = session.serve_metrics(addr).await.map_err(|e| e.to_string())?;
            eprintln!("metrics at http://{}/metrics", server.local_addr());
            Some(server)
        }
        None => None,
    };
    if let Some(path) = &options.progress_json {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("--progress-json: cannot open {}: {e}", path.display()))?;
        session.add_listener(Arc::new(ProgressJsonWriter(Mutex::new(std::io::BufWriter::new(f)), path.clone())));
    }
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
    // A live line per query on a terminal; plain progress lines otherwise.
    let status = std::io::stderr().is_terminal().then(|| super::status::StatusLines::new(&queries));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                match &status {
                    Some(s) => s.println("stopping..."),
                    None => eprintln!("stopping..."),
                }
                session.stop_all().await.map_err(|e| e.to_string())?;
                session.wait_for_listeners(Duration::from_secs(5));
                return Ok(ExitCode::SUCCESS);
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (i, q) in queries.iter().enumerate() {
            if let Some(status) = &status {
                status.update(i, q);
                continue;
            }
            for p in q.recent_progress() {
                if printed[i].is_none_or(|last| p.batch_id > last) {
                    eprintln!("{}", p.summary());
                    printed[i] = Some(p.batch_id);
                }
            }
        }
        if queries.iter().all(|q| !q.is_active()) {
            // Let listeners (--progress-json) write the last events.
            session.wait_for_listeners(Duration::from_secs(5));
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
