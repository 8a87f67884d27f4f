//! The interactive shell.

use std::io::{BufRead, IsTerminal};

use datafusion::arrow::util::pretty::pretty_format_batches;
use rustyline::error::ReadlineError;
use sluice::{execute_sql, Environment, SluiceSession, StatementResult};

use super::shell::ShellHelper;

/// Print a statement's result.
pub fn print_result(r: &StatementResult) {
    match r {
        StatementResult::Done(msg) => println!("{msg}"),
        StatementResult::Rows(b) if b.iter().all(|b| b.num_rows() == 0) => println!("(no rows)"),
        StatementResult::Rows(b) => match pretty_format_batches(b) {
            Ok(t) => println!("{t}"),
            Err(e) => eprintln!("error: cannot print rows: {e}"),
        },
        StatementResult::Started(q) => println!("started query '{}' (id {})", q.name(), q.id()),
    }
}

/// The shell's `\?` text.
const HELP: &str = "\
Statements end with ';' and may span lines. Queries keep running while you type.
  \\d          list sources, sinks (queries) and tables with their schemas
  \\d NAME     the columns of one source or table
  \\q          quit (stops the running queries)
  \\?          this help
  Ctrl-C      cancel the statement being typed; Ctrl-D quits
History is kept in ~/.sluice_history (SLUICE_HISTORY overrides).";

/// The interactive shell: a line editor with history and completion on a
/// terminal, plain lines otherwise (piped input).
pub async fn repl() -> Result<std::process::ExitCode, String> {
    let env = Environment::default();
    let session = env.default_session();
    println!("Sluice {} — SQL shell. End statements with ';'. \\? for help, \\q quits.", env!("CARGO_PKG_VERSION"));
    let result = if std::io::stdin().is_terminal() { edit_loop(&session).await } else { plain_loop(&session).await };
    session.stop_all().await.map_err(|e| e.to_string())?;
    result.map(|()| std::process::ExitCode::SUCCESS)
}

/// Run one input: a `\` command or SQL. Returns false to quit.
async fn run_input(session: &SluiceSession, input: &str) -> bool {
    let t = input.trim();
    if let Some(cmd) = t.strip_prefix('\\') {
        let (name, arg) = cmd.split_once(char::is_whitespace).map_or((cmd, ""), |(n, a)| (n, a.trim()));
        match name {
            "q" | "quit" => return false,
            "?" | "h" | "help" => println!("{HELP}"),
            "d" => describe(session, arg.trim_end_matches(';')).await,
            other => eprintln!("error: unknown command \\{other}; \\? lists the commands"),
        }
        return true;
    }
    if t.is_empty() {
        return true;
    }
    match execute_sql(session, input).await {
        Ok(results) => results.iter().for_each(print_result),
        Err(e) => eprintln!("error: {e}"),
    }
    true
}

fn columns(schema: &datafusion::arrow::datatypes::Schema) -> String {
    schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

/// `\d` and `\d NAME`.
async fn describe(session: &SluiceSession, name: &str) {
    let sources = session.sources();
    let tables = super::shell::table_names(session);
    if !name.is_empty() {
        if let Some(s) = sources.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
            println!("source {} ({}): {}", s.name, s.connector, columns(&s.schema));
        } else if let Some(q) = session.query(name) {
            println!("sink {}: {}", q.name(), q.status().message);
        } else if tables.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            let schema = session.context().table(name).await.map(|t| t.schema().as_arrow().clone());
            match schema {
                Ok(s) => println!("table {name}: {}", columns(&s)),
                Err(e) => eprintln!("error: {e}"),
            }
        } else {
            eprintln!("error: no source, sink or table named '{name}'; \\d lists them");
        }
        return;
    }
    println!("Sources:");
    for s in &sources {
        let wm = s.watermark.as_ref().map(|w| format!("  [watermark on {}]", w.column)).unwrap_or_default();
        println!("  {} ({}): {}{wm}", s.name, s.connector, columns(&s.schema));
    }
    println!("Sinks:");
    for q in session.queries() {
        let last = q.last_progress().map(|p| format!(", last batch {}", p.batch_id)).unwrap_or_default();
        println!("  {}: {}{last}", q.name(), q.status().message);
    }
    println!("Tables:");
    for t in tables.iter().filter(|t| !sources.iter().any(|s| s.name.eq_ignore_ascii_case(t))) {
        println!("  {t}");
    }
}

fn history_path() -> Option<std::path::PathBuf> {
    match std::env::var_os("SLUICE_HISTORY") {
        Some(p) => Some(p.into()),
        None => std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".sluice_history")),
    }
}

/// The terminal shell (rustyline).
async fn edit_loop(session: &SluiceSession) -> Result<(), String> {
    let config = rustyline::Config::builder().auto_add_history(false).build();
    let mut editor: rustyline::Editor<ShellHelper, rustyline::history::FileHistory> =
        rustyline::Editor::with_config(config).map_err(|e| format!("cannot start the line editor: {e}"))?;
    editor.set_helper(Some(ShellHelper::new(session.clone())));
    let history = history_path();
    if let Some(h) = &history {
        // A first run has no history yet.
        let _ = editor.load_history(h);
    }
    loop {
        // The editor blocks its thread; the queries run on the others.
        let line = tokio::task::block_in_place(|| editor.readline("sluice> "));
        match line {
            Ok(input) => {
                if !input.trim().is_empty() {
                    let _ = editor.add_history_entry(input.as_str());
                    if let Some(h) = &history {
                        if let Err(e) = editor.save_history(h) {
                            tracing::warn!("cannot save the shell history to {}: {e}", h.display());
                        }
                    }
                }
                if !run_input(session, &input).await {
                    return Ok(());
                }
            }
            // Ctrl-C: drop what was typed; the queries go on.
            Err(ReadlineError::Interrupted) => println!("^C"),
            Err(ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(format!("the line editor failed: {e}")),
        }
    }
}

/// Piped input: statements end with `;`.
async fn plain_loop(session: &SluiceSession) -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut buffer = String::new();
    loop {
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        buffer.push_str(&line);
        if !super::shell::is_complete(&buffer) {
            continue;
        }
        let input = std::mem::take(&mut buffer);
        if !run_input(session, &input).await {
            return Ok(());
        }
    }
    // A last statement without its `;` still runs.
    run_input(session, &buffer).await;
    Ok(())
}
