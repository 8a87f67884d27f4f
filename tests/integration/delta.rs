//! The Delta Lake connector: the sink in each output mode, exactly once
//! (a batch replayed after a crash before the commit log is skipped by its
//! application transaction), its schema checks, and the source as a stream
//! (with a restart and a commit that rewrites data) and as a batch table
//! with time travel.

use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use sluice::{execute_sql, Environment, SluiceSession, StatementResult};

async fn sql(session: &SluiceSession, text: &str) -> String {
    let out = execute_sql(session, text).await.unwrap_or_else(|e| panic!("{text}: {e}"));
    let batches: Vec<RecordBatch> = out
        .into_iter()
        .filter_map(|r| match r {
            StatementResult::Rows(b) => Some(b),
            _ => None,
        })
        .flatten()
        .collect();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// A batch query over the Delta table at `table` (declared as `name`).
async fn read_table(session: &SluiceSession, name: &str, table: &Path, query: &str) -> String {
    sql(
        session,
        &format!("CREATE SOURCE IF NOT EXISTS {name} WITH (connector = 'delta', path = '{}')", table.display()),
    )
    .await;
    sql(session, query).await
}

/// The commit files of a Delta table.
fn commits(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count()
}

async fn append_query(session: &SluiceSession, table: &Path, ck: &Path) {
    execute_sql(
        session,
        &format!(
            "CREATE SOURCE IF NOT EXISTS ev (id BIGINT, word VARCHAR) WITH (connector = 'memory');
             CREATE SINK out WITH (connector = 'delta', path = '{}', partition_by = 'word', checkpoint = '{}') AS \
             SELECT id, word FROM ev",
            table.display(),
            ck.display()
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn delta_sink_appends_each_batch_once_even_when_replayed_and_a_batch_query_reads_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let (table, ck) = (tmp.path().join("table"), tmp.path().join("ck"));
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    append_query(&session, &table, &ck).await;
    let ev = env.streams.get("ev").unwrap();
    let q = session.query("out").unwrap();
    ev.push_rows(&["1,a", "2,b", "3,a"]).unwrap();
    q.process_all_available().await.unwrap();
    ev.push_rows(&["4,c"]).unwrap();
    q.process_all_available().await.unwrap();
    // An empty batch commits nothing.
    q.process_all_available().await.unwrap();
    assert_eq!(commits(&table), 2);
    assert!(table.join("word=a").is_dir(), "partitioned by word");
    session.stop_all().await.unwrap();
    // A crash after the Delta commit of batch 1 but before the query's
    // commit log: the batch is run again at restart, and skipped by the sink.
    std::fs::remove_file(ck.join("commits").join("1")).unwrap();
    let session = crate::manual_session(&env, tmp.path());
    append_query(&session, &table, &ck).await;
    session.query("out").unwrap().process_all_available().await.unwrap();
    assert_eq!(commits(&table), 2, "the replayed batch was committed again");
    let rows = read_table(&session, "t", &table, "SELECT id, word FROM t ORDER BY id").await;
    assert_eq!(
        rows,
        "\
+----+------+
| id | word |
+----+------+
| 1  | a    |
| 2  | b    |
| 3  | a    |
| 4  | c    |
+----+------+"
    );
    // Time travel: the table as of its first commit (version 0).
    let old = read_table(&session, "t0", &table, "SELECT count(*) AS n FROM t0").await;
    assert!(old.contains("| 4 |"), "{old}");
    execute_sql(
        &session,
        &format!("CREATE SOURCE v0 WITH (connector = 'delta', path = '{}', version = 0)", table.display()),
    )
    .await
    .unwrap();
    let v0 = sql(&session, "SELECT count(*) AS n FROM v0").await;
    assert!(v0.contains("| 3 |"), "{v0}");
    session.stop_all().await.unwrap();
}

#[tokio::test]
async fn delta_sink_overwrites_in_complete_mode_and_merges_in_update_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    let (complete, update) = (tmp.path().join("complete"), tmp.path().join("update"));
    execute_sql(
        &session,
        &format!(
            "CREATE SOURCE words (word VARCHAR) WITH (connector = 'memory');
             CREATE SINK totals WITH (connector = 'delta', path = '{}', output_mode = 'complete', checkpoint = '{}') AS \
               SELECT word, count(*) AS n FROM words GROUP BY word;
             CREATE SINK latest WITH (connector = 'delta', path = '{}', output_mode = 'update', merge_keys = 'word', \
               checkpoint = '{}') AS SELECT word, count(*) AS n FROM words GROUP BY word",
            complete.display(),
            tmp.path().join("ck1").display(),
            update.display(),
            tmp.path().join("ck2").display()
        ),
    )
    .await
    .unwrap();
    let words = env.streams.get("words").unwrap();
    for rows in [&["a", "b", "a"][..], &["a", "c"][..]] {
        words.push_rows(rows).unwrap();
        for q in ["totals", "latest"] {
            session.query(q).unwrap().process_all_available().await.unwrap();
        }
    }
    let expected = "\
+------+---+
| word | n |
+------+---+
| a    | 3 |
| b    | 1 |
| c    | 1 |
+------+---+";
    assert_eq!(read_table(&session, "c", &complete, "SELECT word, n FROM c ORDER BY word").await, expected);
    assert_eq!(read_table(&session, "u", &update, "SELECT word, n FROM u ORDER BY word").await, expected);
    // The merge updated 'a' in place: one row per word, two commits.
    assert_eq!(commits(&update), 2);
    session.stop_all().await.unwrap();
}

#[tokio::test]
async fn delta_sink_checks_an_existing_table_s_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let table = tmp.path().join("table");
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    append_query(&session, &table, &tmp.path().join("ck")).await;
    env.streams.get("ev").unwrap().push_rows(&["1,a"]).unwrap();
    session.query("out").unwrap().process_all_available().await.unwrap();
    // A new column: refused, then accepted with merge_schema.
    let start = |name: &str, select: &str, extra: &str| {
        format!(
            "CREATE SINK {name} WITH (connector = 'delta', path = '{}', checkpoint = '{}'{extra}) AS {select}",
            table.display(),
            tmp.path().join(name).display()
        )
    };
    execute_sql(&session, &start("wider", "SELECT id, word, id * 10 AS score FROM ev", "")).await.unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["2,b"]).unwrap();
    let e = session.query("wider").unwrap().process_all_available().await.unwrap_err().to_string();
    assert!(e.contains("'score'") && e.contains("merge_schema = 'true'"), "{e}");
    execute_sql(&session, &start("wider2", "SELECT id, word, id * 10 AS score FROM ev", ", merge_schema = 'true'"))
        .await
        .unwrap();
    session.query("wider2").unwrap().process_all_available().await.unwrap();
    let rows = read_table(&session, "t", &table, "SELECT id, word, score FROM t ORDER BY id").await;
    assert!(rows.contains("| 1  | a    |       |") && rows.contains("| 2  | b    | 20    |"), "{rows}");
    // Another type for a column: refused, naming it and both types.
    execute_sql(&session, &start("retyped", "SELECT CAST(id AS VARCHAR) AS id, word FROM ev", "")).await.unwrap();
    ev.push_rows(&["3,c"]).unwrap();
    let e = session.query("retyped").unwrap().process_all_available().await.unwrap_err().to_string();
    assert!(e.contains("column 'id' is Int64 in the table but Utf8"), "{e}");
    // merge_keys outside update mode, update mode without them.
    let e = execute_sql(&session, &start("bad", "SELECT id, word FROM ev", ", merge_keys = 'id'")).await.unwrap_err();
    assert!(e.to_string().contains("merge_keys applies to output_mode = 'update'"), "{e}");
    session.stop_all().await.unwrap();
}

async fn stream_query(session: &SluiceSession, table: &Path, ck: &Path, extra: &str) {
    execute_sql(
        session,
        &format!(
            "CREATE SOURCE IF NOT EXISTS changes WITH (connector = 'delta', path = '{}', max_files_per_trigger = 1{extra});
             CREATE SINK seen WITH (connector = 'memory', checkpoint = '{}') AS SELECT id, word FROM changes",
            table.display(),
            ck.display()
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn delta_source_streams_the_snapshot_then_each_commit_and_resumes_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (table, ck) = (tmp.path().join("table"), tmp.path().join("ck-read"));
    let env = Environment::default();
    let writer = crate::manual_session(&env, tmp.path());
    append_query(&writer, &table, &tmp.path().join("ck-write")).await;
    let ev = env.streams.get("ev").unwrap();
    let w = writer.query("out").unwrap();
    ev.push_rows(&["1,a", "2,b"]).unwrap();
    w.process_all_available().await.unwrap();
    // The reader starts: the snapshot (two files, one per partition), one
    // file per batch.
    let reader = crate::manual_session(&env, tmp.path());
    stream_query(&reader, &table, &ck, "").await;
    let r = reader.query("seen").unwrap();
    let batches = r.process_all_available().await.unwrap();
    assert_eq!(batches.iter().filter(|p| p.num_input_rows > 0).count(), 2, "max_files_per_trigger = 1");
    ev.push_rows(&["3,c"]).unwrap();
    w.process_all_available().await.unwrap();
    r.process_all_available().await.unwrap();
    let seen = sql(&reader, "SELECT id FROM seen ORDER BY id").await;
    assert_eq!(seen.matches("| ").count(), 4, "{seen}");
    reader.stop_all().await.unwrap();
    // More commits while the reader is down; it resumes where it stopped.
    ev.push_rows(&["4,d"]).unwrap();
    w.process_all_available().await.unwrap();
    let env2 = Environment::default();
    let reader = crate::manual_session(&env2, tmp.path());
    stream_query(&reader, &table, &ck, "").await;
    let p = reader.query("seen").unwrap().process_all_available().await.unwrap();
    assert_eq!(p.iter().map(|p| p.num_input_rows).sum::<u64>(), 1, "only the new commit after the restart");
    let offsets = std::fs::read_to_string(ck.join("offsets").join("3")).unwrap();
    assert!(offsets.contains("\"version\""), "the table version is in the offset log: {offsets}");
    reader.stop_all().await.unwrap();
    writer.stop_all().await.unwrap();
}

#[tokio::test]
async fn delta_source_fails_on_a_commit_that_rewrites_data_unless_told_to_ignore_it() {
    let tmp = tempfile::tempdir().unwrap();
    let table = tmp.path().join("totals");
    let env = Environment::default();
    let writer = crate::manual_session(&env, tmp.path());
    execute_sql(
        &writer,
        &format!(
            "CREATE SOURCE words (word VARCHAR) WITH (connector = 'memory');
             CREATE SINK totals WITH (connector = 'delta', path = '{}', output_mode = 'complete', checkpoint = '{}') AS \
             SELECT word, count(*) AS n FROM words GROUP BY word",
            table.display(),
            tmp.path().join("ck-w").display()
        ),
    )
    .await
    .unwrap();
    let words = env.streams.get("words").unwrap();
    words.push_rows(&["a"]).unwrap();
    writer.query("totals").unwrap().process_all_available().await.unwrap();
    let read = |extra: &'static str, ck: &'static str| {
        let (env, tmp, table) = (Environment::default(), tmp.path().to_path_buf(), table.clone());
        async move {
            let s = crate::manual_session(&env, &tmp);
            execute_sql(
                &s,
                &format!(
                    "CREATE SOURCE t WITH (connector = 'delta', path = '{}'{extra});
                     CREATE SINK r WITH (connector = 'memory', checkpoint = '{}') AS SELECT word, n FROM t",
                    table.display(),
                    tmp.join(ck).display()
                ),
            )
            .await
            .unwrap();
            let q = s.query("r").unwrap();
            q.process_all_available().await.unwrap();
            (s, q)
        }
    };
    let (plain, pq) = read("", "ck-r1").await;
    let (lenient, lq) = read(", ignore_changes = 'true'", "ck-r2").await;
    // The complete-mode overwrite removes the old file.
    words.push_rows(&["b"]).unwrap();
    writer.query("totals").unwrap().process_all_available().await.unwrap();
    let e = pq.process_all_available().await.unwrap_err().to_string();
    assert!(e.contains("version 1") && e.contains("rewrites") && e.contains("ignore_changes = 'true'"), "{e}");
    lq.process_all_available().await.unwrap();
    let rows = sql(&lenient, "SELECT word, n FROM r ORDER BY word, n").await;
    assert!(rows.contains("| a    | 1 |") && rows.contains("| b    | 1 |"), "{rows}");
    plain.stop_all().await.ok();
    lenient.stop_all().await.unwrap();
    writer.stop_all().await.unwrap();
}
