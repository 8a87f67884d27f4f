//! Restarting a query on an existing checkpoint after changing it: safe
//! changes are accepted, changes that would misread state are refused with
//! an error naming the operator and the change.

use std::sync::Arc;

use sluice::{execute_sql, Environment, ManualClock, SluiceConfig};

const SOURCES: &str = "CREATE SOURCE ev (word VARCHAR, v BIGINT) WITH (connector = 'memory'); \
                       CREATE SOURCE other (word VARCHAR, v BIGINT) WITH (connector = 'memory')";

/// Start `query` as sink `out` on checkpoint `ck`, push one row, run.
async fn run(env: &Environment, ck: &str, query: &str) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, Arc::new(ManualClock::new(0)));
    execute_sql(&session, SOURCES).await.unwrap();
    let sql =
        format!("CREATE SINK out WITH (connector = 'memory', output_mode = 'update', checkpoint = '{ck}') AS {query}");
    let result = async {
        execute_sql(&session, &sql).await.map_err(|e| e.to_string())?;
        env.streams.get("ev").unwrap().push_rows(&["a,1"]).unwrap();
        session.query("out").unwrap().process_all_available().await.map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    session.stop_all().await.unwrap();
    result
}

const ORIGINAL: &str = "SELECT word, count(*) AS n, sum(v) AS total FROM ev GROUP BY word";

#[tokio::test]
async fn safe_changes_are_accepted() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck").display().to_string();
    run(&env, &ck, ORIGINAL).await.unwrap();
    // A different projection over the same aggregation, and a filter before it.
    run(&env, &ck, "SELECT upper(word) AS w, count(*) * 10 AS n10, sum(v) AS total FROM ev WHERE v > 0 GROUP BY word")
        .await
        .unwrap();
    // The changed output schema makes a new memory sink table: it holds the second run only.
    let rows = env.sinks.get("out").unwrap().table_rows();
    let rendered = sluice::stt::render_batches(&rows).unwrap();
    assert_eq!(rendered, vec!["A,20,2"], "state was reused: count 2 after two runs");
}

#[tokio::test]
async fn state_changing_edits_are_refused_with_the_change() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck").display().to_string();
    run(&env, &ck, ORIGINAL).await.unwrap();

    let e =
        run(&env, &ck, "SELECT word, v, count(*) AS n, sum(v) AS total FROM ev GROUP BY word, v").await.unwrap_err();
    assert!(
        e.contains("stateful operator 0 changed") && e.contains("keys [word: Utf8View]") && e.contains("v: Int64"),
        "{e}"
    );
    assert!(e.contains("new checkpoint location"), "{e}");

    let e = run(&env, &ck, "SELECT word, count(*) AS n, max(v) AS top FROM ev GROUP BY word").await.unwrap_err();
    assert!(e.contains("stateful operator 0 changed") && e.contains("max(ev.v)"), "{e}");

    let e = run(&env, &ck, "SELECT DISTINCT word FROM ev").await.unwrap_err();
    assert!(e.contains("operator 'live_aggregate'") && e.contains("now has operator 'dedup'"), "{e}");

    let e = run(&env, &ck, "SELECT word, count(*) AS n, sum(v) AS total FROM other GROUP BY word").await.unwrap_err();
    assert!(e.contains("sources changed") && e.contains("[ev]") && e.contains("[other]"), "{e}");

    let e = run(&env, &ck, "SELECT word, v FROM ev").await.unwrap_err();
    assert!(e.contains("state of 1 stateful operator(s) but the query now has 0"), "{e}");

    // The original query still runs on the checkpoint.
    run(&env, &ck, ORIGINAL).await.unwrap();
}

#[tokio::test]
async fn reset_changed_state_keeps_unchanged_operators() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck").display().to_string();
    // Two chained operators: dedup, then a count per word.
    let chain = "SELECT word, count(*) AS n FROM (SELECT DISTINCT word, v FROM ev) AS d GROUP BY word";
    run(&env, &ck, chain).await.unwrap();
    // Change only the outer aggregation (count -> count and max): refused by default...
    let changed = "SELECT word, count(*) AS n, max(v) AS top FROM (SELECT DISTINCT word, v FROM ev) AS d GROUP BY word";
    let e = run(&env, &ck, changed).await.unwrap_err();
    assert!(e.contains("stateful operator 1 changed") && e.contains("reset_changed_state"), "{e}");
    // ...and with the option, the aggregation restarts empty while the dedup keeps its state:
    // ("a",1) was seen before, so it is a duplicate and nothing is counted.
    let tmp2 = tempfile::tempdir().unwrap();
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp2.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, Arc::new(ManualClock::new(0)));
    execute_sql(&session, SOURCES).await.unwrap();
    let sql = format!(
        "CREATE SINK out2 WITH (connector = 'memory', output_mode = 'update', checkpoint = '{ck}', reset_changed_state = 'true') AS {changed}"
    );
    execute_sql(&session, &sql).await.unwrap();
    env.streams.get("ev").unwrap().push_rows(&["a,1", "b,2"]).unwrap();
    session.query("out2").unwrap().process_all_available().await.unwrap();
    let rows = sluice::stt::render_batches(&env.sinks.get("out2").unwrap().table_rows()).unwrap();
    assert_eq!(rows, vec!["b,1,2"], "dedup state kept (a,1 is a duplicate), aggregation state reset");
    session.stop_all().await.unwrap();
}

/// Start `query` (append mode) as sink `out` over two timed sources on
/// checkpoint `ck`, push one row to each, run.
async fn run_join(env: &Environment, ck: &str, query: &str) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let config = SluiceConfig { auto_trigger: false, checkpoint_root: tmp.path().to_path_buf(), ..Default::default() };
    let session = env.session(config, Arc::new(ManualClock::new(0)));
    let sources = "CREATE SOURCE ta (ts TIMESTAMP, word VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE) \
                   WITH (connector = 'memory'); \
                   CREATE SOURCE tb (ts TIMESTAMP, word VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE) \
                   WITH (connector = 'memory')";
    execute_sql(&session, sources).await.unwrap();
    let sql = format!("CREATE SINK out WITH (connector = 'memory', checkpoint = '{ck}') AS {query}");
    let result = async {
        execute_sql(&session, &sql).await.map_err(|e| e.to_string())?;
        for s in ["ta", "tb"] {
            env.streams.get(s).unwrap().push_rows(&["2024-01-01 00:00:00,a"]).unwrap();
        }
        session.query("out").unwrap().process_all_available().await.map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    session.stop_all().await.unwrap();
    result
}

const RANGE: &str = "b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' MINUTE";

#[tokio::test]
async fn join_changes_are_refused_naming_the_key_type_or_side() {
    let env = Environment::default();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck").display().to_string();
    let original = format!("SELECT a.word, b.ts FROM ta a JOIN tb b ON a.word = b.word AND {RANGE}");
    run_join(&env, &ck, &original).await.unwrap();

    let e = run_join(
        &env,
        &ck,
        &format!("SELECT a.word, b.ts FROM ta a JOIN tb b ON upper(a.word) = upper(b.word) AND {RANGE}"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("keys [a.word = b.word") && e.contains("upper(a.word)"), "key change: {e}");

    let e =
        run_join(&env, &ck, &format!("SELECT a.word, b.ts FROM ta a LEFT JOIN tb b ON a.word = b.word AND {RANGE}"))
            .await
            .unwrap_err();
    assert!(e.contains("stream-stream join (Inner)") && e.contains("stream-stream join (Left)"), "type change: {e}");

    let e = run_join(&env, &ck, &format!("SELECT a.word, b.ts FROM tb b JOIN ta a ON a.word = b.word AND {RANGE}"))
        .await
        .unwrap_err();
    assert!(e.contains("left (ta)") && e.contains("left (tb)"), "sides swapped: {e}");

    run_join(&env, &ck, &original).await.unwrap();
}
