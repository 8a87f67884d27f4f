//! The terminal features, driven through a pseudo-terminal (rexpect): the
//! shell (line editing, multi-line statements, completion, history, `\d`,
//! Ctrl-C, queries that keep running while the user types) and the live
//! status lines of `sluice run`.

use std::process::Command;

use rexpect::session::PtySession;

fn shell(history: &std::path::Path) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env("SLUICE_HISTORY", history).env("TERM", "xterm").env_remove("RUST_LOG");
    let mut p = rexpect::session::spawn_command(cmd, Some(30_000)).unwrap();
    p.exp_string("\\? for help").unwrap();
    ready(&mut p);
    p
}

/// Wait for the prompt: input typed before the editor is ready is dropped
/// by the terminal as it switches modes.
fn ready(p: &mut PtySession) {
    p.exp_string("sluice> ").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// Run `line` and wait for `expect`, then for the next prompt.
fn run(p: &mut PtySession, line: &str, expect: &str) {
    p.send_line(line).unwrap();
    p.exp_string(expect).unwrap();
    ready(p);
}

#[test]
fn shell_edits_completes_keeps_history_and_ctrl_c_cancels_only_the_typed_statement() {
    let tmp = tempfile::tempdir().unwrap();
    let history = tmp.path().join("history");
    let mut p = shell(&history);
    // A statement over several lines runs once it ends with ';'.
    p.send_line("CREATE SOURCE clicks (user_id VARCHAR)").unwrap();
    run(&mut p, "  WITH (connector = 'memory');", "source 'clicks' created");
    // A query that keeps running while the user types.
    run(&mut p, "CREATE SOURCE ticks WITH (connector = 'rate', rows_per_second = '100');", "source 'ticks' created");
    run(
        &mut p,
        "CREATE SINK counter WITH (connector = 'memory', trigger = 'processing_time', interval = '100 milliseconds') \
         AS SELECT * FROM ticks;",
        "started query 'counter'",
    );
    // Tab completes a table name ("numb" -> "numbers").
    run(&mut p, "CREATE TABLE numbers AS VALUES (1), (2), (3);", "(no rows)");
    p.send("SELECT count(*) AS rows_now FROM numb").unwrap();
    p.send("\t").unwrap();
    p.send_line(";").unwrap();
    p.exp_string("rows_now").unwrap();
    p.exp_string("| 3        |").unwrap();
    ready(&mut p);
    // Ctrl-C drops the statement being typed; the shell and the queries go on.
    p.send("SELECT 'never run' AS x").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("^C").unwrap();
    ready(&mut p);
    // The up arrow recalls the last statement (the completed one).
    p.send("\x1b[A").unwrap();
    run(&mut p, "", "rows_now");
    // \d lists the sources and the running sink.
    p.send_line("\\d").unwrap();
    p.exp_string("clicks (memory): user_id Utf8").unwrap();
    p.exp_string("counter: ").unwrap();
    ready(&mut p);
    // The query ran batches while we typed.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    p.send_line("SHOW QUERIES;").unwrap();
    let (_, shown) = p.exp_regex(r"\| counter \|[^\n]*").unwrap();
    let batch: Option<u64> = shown.split('|').map(str::trim).filter_map(|c| c.parse().ok()).next();
    assert!(batch.is_some_and(|b| b >= 2), "the query did not run on while the shell waited: {shown}");
    ready(&mut p);
    run(&mut p, "\\?", "Ctrl-C");
    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();
    // The history is kept for the next session, without the cancelled line.
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("FROM numbers;"), "{kept}");
    assert!(!kept.contains("never run"), "{kept}");
    // A new shell recalls the last line of the previous one (\q) and runs it.
    let mut p = shell(&history);
    p.send("\x1b[A").unwrap();
    p.send_line("").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn sluice_run_shows_a_live_status_line_per_query_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let sql = tmp.path().join("job.sql");
    std::fs::write(
        &sql,
        "CREATE SOURCE ticks WITH (connector = 'rate', rows_per_second = '200');
         CREATE SINK by_key WITH (connector = 'memory', output_mode = 'update', trigger = 'processing_time', \
           interval = '200 milliseconds') AS SELECT value % 10 AS k, count(*) AS n FROM ticks GROUP BY value % 10;",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("run").arg(&sql).env("TERM", "xterm").env_remove("RUST_LOG");
    let mut p = rexpect::session::spawn_command(cmd, Some(30_000)).unwrap();
    p.exp_string("started query 'by_key'").unwrap();
    // The line is redrawn in place with the query's figures: once the keys
    // are all in the state, it says so.
    let (_, line) = p
        .exp_regex(r"by_key: batch \d+ \| \d+ rows/s in, \d+ rows/s processed \| watermark - \| state 10 rows")
        .unwrap();
    assert!(line.contains("state 10 rows"), "{line}");
    p.exp_string("last batch").unwrap();
    // Ctrl-C stops the queries and the command.
    p.send_control('c').unwrap();
    p.exp_string("stopping...").unwrap();
    p.exp_eof().unwrap();
}
