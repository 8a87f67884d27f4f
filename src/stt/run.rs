//! Running one `.stt` file against a fresh engine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sluice_engine::{parse_duration, ManualClock, SluiceConfig, SluiceSession};
use sluice_sql::{execute_sql, StatementResult};

use super::parse::{parse_stt, with_restart_after_triggers, Located, Record};
use super::render::{render_batches, render_timestamp_micros};
use crate::Environment;

/// How to run a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Insert a `restart` after every `trigger`.
    pub restart_every_batch: bool,
}

struct Runner {
    env: Environment,
    clock: Arc<ManualClock>,
    session: SluiceSession,
    tmp: tempfile::TempDir,
    history: Vec<String>,
    marks: HashMap<String, usize>,
}

fn new_session(env: &Environment, clock: &Arc<ManualClock>, tmp: &Path) -> SluiceSession {
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp.join("default-checkpoints"),
        target_partitions: 2,
        ..Default::default()
    };
    env.session(config, Arc::clone(clock) as _)
}

impl Runner {
    fn substitute(&self, text: &str) -> String {
        text.replace("$TMP", &self.tmp.path().display().to_string())
    }

    async fn exec(&self, sql: &str) -> Result<Vec<StatementResult>, String> {
        execute_sql(&self.session, &self.substitute(sql)).await.map_err(|e| e.to_string())
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.session.stop_all().await.map_err(|e| format!("stopping queries: {e}"))?;
        self.session = new_session(&self.env, &self.clock, self.tmp.path());
        for sql in self.history.clone() {
            self.exec(&sql).await.map_err(|e| format!("replaying DDL after restart: {e}"))?;
        }
        Ok(())
    }

    async fn step(&mut self, rec: &Record) -> Result<(), String> {
        match rec {
            Record::StatementOk { sql } => {
                self.exec(sql).await?;
                self.history.push(sql.clone());
            }
            Record::StatementError { expected, sql } => match self.exec(sql).await {
                Ok(_) => return Err(format!("statement succeeded, expected an error containing '{expected}'")),
                Err(e) if e.to_lowercase().contains(&expected.to_lowercase()) => {}
                Err(e) => return Err(format!("error '{e}' does not contain '{expected}'")),
            },
            Record::Insert { source, rows } => {
                let stream = self.env.streams.get(source).ok_or_else(|| format!("no memory source '{source}'"))?;
                stream.push_rows(rows).map_err(|e| e.to_string())?;
            }
            Record::File { path, lines } => {
                let target = self.tmp.path().join(path);
                let dir = target.parent().ok_or("bad file path")?;
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                let name = target.file_name().and_then(|n| n.to_str()).ok_or("bad file name")?;
                let hidden = dir.join(format!(".{name}.tmp"));
                let mut text = lines.join("\n");
                text.push('\n');
                std::fs::write(&hidden, text).map_err(|e| e.to_string())?;
                std::fs::rename(&hidden, &target).map_err(|e| e.to_string())?;
            }
            Record::Trigger => {
                for q in self.session.queries() {
                    if let Some(store) = self.env.sinks.get(q.name()) {
                        self.marks.insert(q.name().to_ascii_lowercase(), store.received_count());
                    }
                }
                for q in self.session.queries().into_iter().filter(|q| q.is_active()) {
                    q.process_all_available().await.map_err(|e| format!("query '{}' failed: {e}", q.name()))?;
                }
            }
            Record::Check { sink, ordered, rows } => {
                let store = self.env.sinks.get(sink).ok_or_else(|| format!("no memory sink '{sink}'"))?;
                let mark = self.marks.get(&sink.to_ascii_lowercase()).copied().unwrap_or(0);
                let got = render_batches(&store.received_since(mark))?;
                compare(rows, got, *ordered)?;
            }
            Record::Query { sql, ordered, rows } => {
                let mut got = vec![];
                for r in self.exec(sql).await? {
                    if let StatementResult::Rows(b) = r {
                        got.extend(render_batches(&b)?);
                    }
                }
                compare(rows, got, *ordered)?;
            }
            Record::Watermark { sink, expected } => {
                let q = self.session.query(sink).ok_or_else(|| format!("no query '{sink}'"))?;
                let got =
                    q.watermark_ms().map(|ms| render_timestamp_micros(ms * 1000)).unwrap_or_else(|| "NULL".into());
                if &got != expected {
                    return Err(format!("watermark: expected {expected}, got {got}"));
                }
            }
            Record::Restart => self.restart().await?,
            Record::Advance { interval } => {
                self.clock.advance(parse_duration(interval).map_err(|e| e.to_string())?);
            }
        }
        Ok(())
    }
}

fn compare(expected: &[String], mut got: Vec<String>, ordered: bool) -> Result<(), String> {
    let mut want = expected.to_vec();
    if !ordered {
        want.sort();
        got.sort();
    }
    if want == got {
        Ok(())
    } else {
        Err(format!("rows differ\n  expected:\n{}\n  got:\n{}", indent(&want), indent(&got)))
    }
}

fn indent(rows: &[String]) -> String {
    if rows.is_empty() {
        return "    (no rows)".into();
    }
    rows.iter().map(|r| format!("    {r}")).collect::<Vec<_>>().join("\n")
}

/// Run one file; `Err` carries the first failure with its line number.
pub async fn run_file(path: &Path, options: RunOptions) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut records = parse_stt(&text)?;
    if options.restart_every_batch {
        records = with_restart_after_triggers(records);
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let env = Environment::default();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let session = new_session(&env, &clock, tmp.path());
    let mut runner = Runner { env, clock, session, tmp, history: vec![], marks: HashMap::new() };
    let mut result = Ok(());
    for Located { line, record } in &records {
        if let Err(e) = runner.step(record).await {
            result = Err(format!("line {line}: {e}"));
            break;
        }
    }
    let _ = runner.session.stop_all().await;
    result
}
