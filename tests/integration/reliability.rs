//! Regression tests of the silent-loss and wrong-result defects a break-it
//! run found (issue 9). Each failed (silently) before its fix. Cases 2
//! (LIMIT) and 3 (CSV header) are also in `tests/stt/sluice/` and the files
//! source's unit tests; case 9 in `checkpoint_integrity`.

use std::path::Path;
use std::sync::Arc;

use sluice::{execute_sql, Environment};
use sluice_engine::checkpoint::{record_durable_writes, slow_down_durable_writes, DurabilityJournal, DurableOp};

use crate::manual_session as session;

fn publish(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let hidden = dir.join(format!(".{name}"));
    std::fs::write(&hidden, body).unwrap();
    std::fs::rename(hidden, dir.join(name)).unwrap();
}

fn csv_source(input: &Path) -> String {
    format!(
        "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'files', path = '{}', format = 'csv', header = 'true')",
        input.display()
    )
}

async fn committed_rows(out: &Path) -> u64 {
    sluice_sinks::files::committed_entries(out.to_str().unwrap())
        .await
        .unwrap()
        .iter()
        .flat_map(|e| e.files.iter().map(|f| f.rows))
        .sum()
}

/// Case 1: a files sink without a checkpoint got a fresh temporary one each
/// run, restarted at batch 0, and the sink skipped the new rows as "already
/// committed" while reporting them written.
#[tokio::test]
async fn files_sink_needs_a_checkpoint_and_another_query_cannot_reuse_its_batch_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    publish(&input, "a.csv", "id,word\n1,a\n2,b\n");
    let env = Environment::default();
    let s = session(&env, tmp.path());
    execute_sql(&s, &csv_source(&input)).await.unwrap();
    let no_checkpoint = format!(
        "CREATE SINK q WITH (connector = 'files', path = '{}', format = 'csv') AS SELECT id, word FROM ev",
        out.display()
    );
    let e = execute_sql(&s, &no_checkpoint).await.unwrap_err().to_string();
    assert!(e.contains("needs a checkpoint") && e.contains("checkpoint = '<dir>'"), "{e}");

    // A first query writes batch 0 with its checkpoint.
    let with = |ck: &str| {
        format!(
            "CREATE SINK q WITH (connector = 'files', path = '{}', format = 'csv', checkpoint = '{}') AS SELECT id, word FROM ev",
            out.display(),
            tmp.path().join(ck).display()
        )
    };
    execute_sql(&s, &with("ck1")).await.unwrap();
    s.query("q").unwrap().process_all_available().await.unwrap();
    s.stop_all().await.unwrap();
    assert_eq!(committed_rows(&out).await, 2);

    // A second query with another checkpoint reaches batch 0 too: its rows
    // must not be skipped as if they were the first query's.
    publish(&input, "b.csv", "id,word\n3,c\n");
    let s = session(&env, tmp.path());
    execute_sql(&s, &csv_source(&input)).await.unwrap();
    execute_sql(&s, &with("ck2")).await.unwrap();
    let e = s.query("q").unwrap().process_all_available().await.unwrap_err().to_string();
    assert!(e.contains("already holds batch 0") && e.contains("another query") && e.contains("new directory"), "{e}");
    s.stop_all().await.ok();
    assert_eq!(committed_rows(&out).await, 2, "nothing half-written");

    // The first query's own checkpoint resumes, and the new file lands.
    let s = session(&env, tmp.path());
    execute_sql(&s, &csv_source(&input)).await.unwrap();
    execute_sql(&s, &with("ck1")).await.unwrap();
    s.query("q").unwrap().process_all_available().await.unwrap();
    s.stop_all().await.unwrap();
    assert_eq!(committed_rows(&out).await, 3);
}

/// Case 4: a watermark on a non-timestamp column was accepted, and then
/// every row was dropped as late.
#[tokio::test]
async fn watermark_on_a_non_timestamp_column_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&Environment::default(), tmp.path());
    let e = execute_sql(
        &s,
        "CREATE SOURCE ev (n BIGINT, WATERMARK FOR n AS n - INTERVAL '1' SECOND) WITH (connector = 'memory')",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("'n'") && e.contains("Int64") && e.contains("TIMESTAMP"), "{e}");
}

/// Case 5: a repeated option silently took its last value.
#[tokio::test]
async fn repeated_option_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&Environment::default(), tmp.path());
    let sql = format!(
        "CREATE SOURCE ev (id BIGINT) WITH (connector = 'files', path = '{}', format = 'csv', format = 'json')",
        tmp.path().display()
    );
    let e = execute_sql(&s, &sql).await.unwrap_err().to_string();
    assert!(e.contains("'format'") && e.contains("twice"), "{e}");
}

/// Case 6: two queries on one checkpoint both ran and interleaved their logs.
#[tokio::test]
async fn two_queries_cannot_share_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let ck = tmp.path().join("shared-ck");
    let sink = |name: &str| {
        format!("CREATE SINK {name} WITH (connector = 'memory', checkpoint = '{}') AS SELECT id FROM ev", ck.display())
    };
    let s1 = session(&env, tmp.path());
    execute_sql(&s1, "CREATE SOURCE ev (id BIGINT) WITH (connector = 'memory')").await.unwrap();
    execute_sql(&s1, &sink("first")).await.unwrap();
    let s2 = session(&env, tmp.path());
    execute_sql(&s2, "CREATE SOURCE ev (id BIGINT) WITH (connector = 'memory')").await.unwrap();
    let e = execute_sql(&s2, &sink("second")).await.unwrap_err().to_string();
    assert!(e.contains("in use by query 'first'") && e.contains("own checkpoint location"), "{e}");
    assert!(!e.contains("delete the checkpoint"), "never advise deleting a healthy checkpoint: {e}");
    // Once the first stops, the checkpoint is free.
    s1.stop_all().await.unwrap();
    execute_sql(&s2, &sink("second")).await.unwrap();
    s2.stop_all().await.unwrap();
}

/// Case 7: `rows_per_second = 10^12` hung with memory climbing.
#[tokio::test]
async fn absurd_rate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&Environment::default(), tmp.path());
    let e = execute_sql(&s, "CREATE SOURCE r WITH (connector = 'rate', rows_per_second = '1000000000000')")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("rows_per_second") && e.contains("at most"), "{e}");
}

/// Case 10: nothing was fsynced. Every local checkpoint and sink write is
/// now synced, and in dependency order: a batch's data file and its
/// directory before the manifest entry naming it, and both before the
/// commit log entry of the batch. The commit log entry, written while the
/// next batch lists its sources, is durable before the next batch's offsets
/// are written, and before `process_all_available` returns; so is the
/// source's seen-files entry, written while the batch is read.
#[tokio::test]
async fn writes_are_durable_in_dependency_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let (input, out, ck) = (root.join("in"), root.join("out"), root.join("ck"));
    // Two files, one a batch: batch 1 starts while batch 0's commit log
    // entry may still be being written.
    publish(&input, "a.csv", "id,word\n1,a\n");
    publish(&input, "b.csv", "id,word\n2,b\n");
    let env = Environment::default();
    let s = session(&env, &root);
    let source = csv_source(&input).replace("header = 'true')", "header = 'true', max_files_per_trigger = '1')");
    execute_sql(&s, &source).await.unwrap();
    let sql = format!(
        "CREATE SINK q WITH (connector = 'files', path = '{}', format = 'csv', checkpoint = '{}') AS SELECT id, word FROM ev",
        out.display(),
        ck.display()
    );
    let journal = DurabilityJournal::default();
    record_durable_writes(Some(Arc::clone(&journal)));
    // Commit log entries are slow to land: batch 1's offsets must still wait
    // for batch 0's commit.
    slow_down_durable_writes(Some((ck.join("commits"), std::time::Duration::from_millis(300))));
    execute_sql(&s, &sql).await.unwrap();
    let progress = s.query("q").unwrap().process_all_available().await.unwrap();
    assert_eq!(progress.len(), 2, "one batch a file");
    // Before the query stops: the second batch's commit is already durable.
    let before_stop: Vec<DurableOp> = journal.lock().iter().cloned().collect();
    s.stop_all().await.unwrap();
    record_durable_writes(None);
    slow_down_durable_writes(None);
    let commits = ck.join("commits");
    let renamed_at = |ops: &[DurableOp], p: &Path| ops.iter().position(|op| *op == DurableOp::Rename(p.to_path_buf()));
    let synced_after = |ops: &[DurableOp], i: usize| {
        ops.iter().enumerate().position(|(j, op)| j > i && *op == DurableOp::SyncDir(commits.clone()))
    };
    let second = renamed_at(&before_stop, &commits.join("1")).expect("batch 1's commit entry before stop");
    assert!(synced_after(&before_stop, second).is_some(), "batch 1's commit durable before stop: {before_stop:?}");
    let first = renamed_at(&before_stop, &commits.join("0")).expect("batch 0's commit entry");
    let first_durable = synced_after(&before_stop, first).expect("batch 0's commit synced");
    let next_offsets = renamed_at(&before_stop, &ck.join("offsets/1")).expect("batch 1's offsets");
    assert!(first_durable < next_offsets, "at most one batch uncommitted: {before_stop:?}");
    // The source's seen-files log entry of batch 1 is durable before the offsets naming it.
    let seen = before_stop
        .iter()
        .position(|op| matches!(op, DurableOp::Rename(p) if p.ends_with("seen_files/1")))
        .expect("seen-files entry 1");
    let seen_dir = match &before_stop[seen] {
        DurableOp::Rename(p) => p.parent().unwrap().to_path_buf(),
        _ => unreachable!(),
    };
    let seen_durable = before_stop
        .iter()
        .enumerate()
        .position(|(i, op)| i > seen && *op == DurableOp::SyncDir(seen_dir.clone()))
        .expect("seen-files directory synced");
    assert!(seen_durable < next_offsets, "source metadata before the offsets: {before_stop:?}");
    let ops: Vec<DurableOp> = journal.lock().iter().cloned().collect();
    let position = |wanted: &dyn Fn(&DurableOp) -> bool, what: &str| -> usize {
        ops.iter().position(wanted).unwrap_or_else(|| panic!("no {what} in {ops:?}"))
    };
    let is_data = |p: &Path| p.parent() == Some(out.as_path()) && p.extension().is_some_and(|x| x == "csv");
    let is_data_staging = |p: &Path| {
        p.parent() == Some(out.as_path()) && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-0-"))
    };
    let data_synced = position(&|op| matches!(op, DurableOp::SyncFile(p) if is_data_staging(p)), "data file sync");
    let data_renamed = position(&|op| matches!(op, DurableOp::Rename(p) if is_data(p)), "data file rename");
    let out_dir_synced = ops
        .iter()
        .enumerate()
        .position(|(i, op)| i > data_renamed && *op == DurableOp::SyncDir(out.clone()))
        .expect("output directory synced after the data file");
    let manifest = out.join("_sluice_manifest/0");
    let manifest_renamed = position(&|op| *op == DurableOp::Rename(manifest.clone()), "manifest entry");
    let commit = ck.join("commits/0");
    let commit_renamed = position(&|op| *op == DurableOp::Rename(commit.clone()), "commit entry");
    let offsets_synced = position(&|op| *op == DurableOp::SyncDir(ck.join("offsets")), "offset log directory sync");
    assert!(data_synced < data_renamed && data_renamed < out_dir_synced, "{ops:?}");
    assert!(out_dir_synced < manifest_renamed, "data before the manifest entry naming it: {ops:?}");
    assert!(manifest_renamed < commit_renamed, "sink before the commit log: {ops:?}");
    assert!(offsets_synced < data_synced, "the offset log entry is durable before the batch runs: {ops:?}");
}

/// A data-path error loses nothing: a malformed row in failfast mode fails
/// the batch before it commits; once the file is fixed, a restart on the
/// same checkpoint re-reads it and every row arrives exactly once.
#[tokio::test]
async fn a_fixed_restart_after_a_malformed_row_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, ck) = (tmp.path().join("in"), tmp.path().join("out"), tmp.path().join("ck"));
    publish(&input, "a.csv", "id,word\n1,a\n2,b\n");
    let env = Environment::default();
    let start = || async {
        let s = session(&env, tmp.path());
        let source = format!(
            "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'files', path = '{}', format = 'csv', \
             header = 'true', mode = 'failfast', max_files_per_trigger = 1)",
            input.display()
        );
        execute_sql(&s, &source).await.unwrap();
        let sink = format!(
            "CREATE SINK q WITH (connector = 'files', path = '{}', format = 'csv', checkpoint = '{}') AS SELECT id, word FROM ev",
            out.display(),
            ck.display()
        );
        execute_sql(&s, &sink).await.unwrap();
        s
    };
    let s = start().await;
    s.query("q").unwrap().process_all_available().await.unwrap();
    publish(&input, "b.csv", "id,word\n3,c\nfour,d\n5,e\n");
    let e = s.query("q").unwrap().process_all_available().await.unwrap_err().to_string();
    assert!(e.contains("b.csv:3") && e.contains("'four'"), "{e}");
    s.stop_all().await.ok();
    assert_eq!(committed_rows(&out).await, 2, "the failed batch committed nothing");
    // Fix the file in place and restart: the batch is replayed from the offset log.
    std::fs::write(input.join("b.csv"), "id,word\n3,c\n4,d\n5,e\n").unwrap();
    let s = start().await;
    s.query("q").unwrap().process_all_available().await.unwrap();
    s.stop_all().await.unwrap();
    assert_eq!(committed_rows(&out).await, 5);
}

/// A panic inside a batch (here a panicking UDF) fails the query with the
/// panic's message: it neither crashes the caller nor leaves
/// `await_termination` waiting forever.
#[tokio::test]
async fn a_panicking_udf_fails_the_query_instead_of_hanging_it() {
    use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let config = sluice::SluiceConfig {
        auto_trigger: true,
        checkpoint_root: tmp.path().join("ck"),
        target_partitions: 2,
        ..Default::default()
    };
    let s = env.session(config, Arc::new(sluice::ManualClock::new(0)));
    let boom = create_udf(
        "boom",
        vec![arrow::datatypes::DataType::Int64],
        arrow::datatypes::DataType::Int64,
        Volatility::Immutable,
        Arc::new(|_args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> { panic!("boom at row 1") }),
    );
    s.context().register_udf(boom);
    execute_sql(&s, "CREATE SOURCE ev (id BIGINT) WITH (connector = 'memory')").await.unwrap();
    let started = execute_sql(&s, "CREATE SINK q AS SELECT boom(id) AS b FROM ev").await.unwrap();
    let Some(sluice::StatementResult::Started(q)) = started.into_iter().next() else { panic!("no query") };
    env.streams.get("ev").unwrap().push_rows(&["1"]).unwrap();
    let ended = q.await_termination_timeout(std::time::Duration::from_secs(30)).await;
    let e = match ended {
        Err(e) => e.to_string(),
        Ok(done) => panic!("the query should have failed (terminated: {done})"),
    };
    assert!(e.contains("panicked") && e.contains("boom at row 1"), "{e}");
    assert!(!q.is_active());
}
