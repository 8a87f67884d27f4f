//! The interactive shell.

use std::io::{BufRead, Write};

use datafusion::arrow::util::pretty::pretty_format_batches;
use sluice::{execute_sql, Environment, StatementResult};

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

/// Read statements (ending with `;`) from stdin and run them. `\q` quits.
pub async fn repl() -> Result<std::process::ExitCode, String> {
    let env = Environment::default();
    let session = env.default_session();
    println!("Sluice {} — SQL shell. End statements with ';'. \\q quits.", env!("CARGO_PKG_VERSION"));
    let stdin = std::io::stdin();
    let mut buffer = String::new();
    loop {
        print!("{}", if buffer.is_empty() { "sluice> " } else { "   ...> " });
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        if buffer.is_empty() && line.trim() == "\\q" {
            break;
        }
        buffer.push_str(&line);
        if !line.trim_end().ends_with(';') {
            continue;
        }
        match execute_sql(&session, &buffer).await {
            Ok(results) => results.iter().for_each(print_result),
            Err(e) => eprintln!("error: {e}"),
        }
        buffer.clear();
    }
    // A last statement without its `;` still runs.
    if !buffer.trim().is_empty() {
        match execute_sql(&session, &buffer).await {
            Ok(results) => results.iter().for_each(print_result),
            Err(e) => eprintln!("error: {e}"),
        }
    }
    session.stop_all().await.map_err(|e| e.to_string())?;
    Ok(std::process::ExitCode::SUCCESS)
}
