//! `state_checkpoint_interval`: the operators' state checkpointed every few
//! batches, rebuilt at restart by replaying the batches since from the
//! sources. Each query runs twice over the same rows, with the option and
//! without it (the oracle, state checkpointed every batch); their outputs
//! must agree batch by batch through restarts and a cut-short batch.

use sluice::execute_sql;
use sluice::Environment;

/// The queries, each as `{name}` (every 3 batches) and `{name}_oracle`.
const QUERIES: &[(&str, &str, &str)] = &[
    ("totals", "update", "SELECT k, count(*) AS n, sum(v) AS s, count(DISTINCT v) AS d FROM ev GROUP BY k"),
    (
        "windows",
        "append",
        "SELECT window.start AS ws, k, count(*) AS n, max(v) AS m FROM ev GROUP BY window(ts, '10 seconds'), k",
    ),
    (
        "pairs",
        "append",
        "SELECT l.k, l.v AS lv, r.v AS rv FROM ev l JOIN rv r \
         ON l.k = r.k AND r.ts BETWEEN l.ts AND l.ts + INTERVAL '5' SECOND",
    ),
    (
        "sessions",
        "append",
        "SELECT k, window_start AS ws, window_end AS we, count(*) AS n, sum(v) AS s \
         FROM SESSION(ev, ts, INTERVAL '3' SECOND) GROUP BY k, window_start, window_end",
    ),
    ("dedup", "append", "SELECT DISTINCT ts, k, v % 3 AS b FROM ev"),
    (
        "top",
        "update",
        "SELECT * FROM (SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM ev) WHERE rn <= 2",
    ),
];

fn ddl(ck: &std::path::Path) -> String {
    let mut sql = "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
                   WITH (connector = 'memory');
                   CREATE SOURCE rv (ts TIMESTAMP, k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
                   WITH (connector = 'memory');"
        .to_string();
    for (name, mode, select) in QUERIES {
        for (suffix, interval) in [("", "3"), ("_oracle", "1")] {
            sql.push_str(&format!(
                "CREATE SINK {name}{suffix} WITH (connector = 'memory', output_mode = '{mode}', \
                 state_checkpoint_interval = '{interval}', checkpoint = '{}') AS {select};",
                ck.join(format!("{name}{suffix}")).display()
            ));
        }
    }
    sql
}

/// Rows of round `r`: event times move on 4 s a round, with a late row.
fn rows(r: u64) -> Vec<String> {
    let t = |s: u64| format!("2026-01-01T00:{:02}:{:02}", s / 60, s % 60);
    let base = 4 * r;
    vec![
        format!("{},k{},{}", t(base), r % 3, r),
        format!("{},k{},{}", t(base + 1), (r + 1) % 3, r % 4),
        format!("{},k{},{}", t(base + 3), r % 2, 10 + r),
        format!("{},k0,{}", t(base.saturating_sub(7)), r % 5),
    ]
}

/// Every query's sink output since `marks`, sorted per sink, moving `marks`.
fn take_new(env: &Environment, marks: &mut std::collections::BTreeMap<String, usize>) -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    for (name, _, _) in QUERIES {
        for suffix in ["", "_oracle"] {
            let sink = format!("{name}{suffix}");
            let store = env.sinks.get(&sink).unwrap();
            let mark = marks.entry(sink.clone()).or_insert(0);
            let mut rows = sluice::stt::render_batches(&store.received_since(*mark)).unwrap();
            *mark = store.received_count();
            rows.sort();
            out.push((sink, rows));
        }
    }
    out
}

async fn run_rounds(env: &Environment, session: &sluice::SluiceSession, rounds: std::ops::Range<u64>) {
    for r in rounds {
        env.streams.get("ev").unwrap().push_rows(&rows(r).iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let right: Vec<String> = rows(r + 1).iter().take(2).cloned().collect();
        env.streams.get("rv").unwrap().push_rows(&right.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        for (name, _, _) in QUERIES {
            for suffix in ["", "_oracle"] {
                session.query(&format!("{name}{suffix}")).unwrap().process_all_available().await.unwrap();
            }
        }
    }
}

async fn stop_all(session: &sluice::SluiceSession) {
    for (name, _, _) in QUERIES {
        for suffix in ["", "_oracle"] {
            session.stop_query(&format!("{name}{suffix}")).await.unwrap();
        }
    }
}

/// Check that each query agrees with its oracle since `marks`; adds the
/// queries that emitted rows to `emitted`.
fn assert_agree(
    env: &Environment,
    marks: &mut std::collections::BTreeMap<String, usize>,
    emitted: &mut std::collections::BTreeSet<String>,
    when: &str,
) {
    let new = take_new(env, marks);
    for pair in new.chunks(2) {
        let ((checked, got), (_, want)) = (&pair[0], &pair[1]);
        assert_eq!(got, want, "{checked} disagrees with its oracle {when}");
        if !got.is_empty() {
            emitted.insert(checked.clone());
        }
    }
    assert!(new.iter().any(|(_, rows)| !rows.is_empty()), "the queries emitted nothing {when}");
}

/// Aggregations on live groups and panes, a stream-stream join, session
/// windows, deduplication and a Top-N give the same output with the state
/// checkpointed every third batch as with it checkpointed every batch,
/// across restarts between checkpoints and a batch cut short before its
/// commit.
#[tokio::test]
async fn state_checkpointed_every_few_batches_is_rebuilt_by_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let env = Environment::default();
    let mut marks = Default::default();
    let mut emitted = std::collections::BTreeSet::new();

    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl(&ck)).await.unwrap();
    // Batches 0..=4: the state is checkpointed at batch 2, not at 3 and 4.
    run_rounds(&env, &session, 0..5).await;
    assert_agree(&env, &mut marks, &mut emitted, "before any restart");
    stop_all(&session).await;
    // A log file is a version line, a checksum line and the JSON.
    let commit = std::fs::read_to_string(ck.join("totals/commits/4")).unwrap();
    let commit: serde_json::Value = serde_json::from_str(commit.lines().nth(2).unwrap()).unwrap();
    assert_eq!(commit["replay_from"], 3, "{commit}");
    for query in ["windows", "pairs", "sessions", "dedup", "top"] {
        let commit = std::fs::read_to_string(ck.join(query).join("commits/4")).unwrap();
        assert!(commit.contains("\"replay_from\":3"), "{query}: {commit}");
    }
    let oracle = std::fs::read_to_string(ck.join("totals_oracle/commits/4")).unwrap();
    assert!(!oracle.contains("replay_from"), "{oracle}");
    // The first delta of each partition follows nothing; none was written for batches 0, 1, 3, 4.
    for p in ["0", "1"] {
        let mut names: Vec<String> = std::fs::read_dir(ck.join("totals/state/0").join(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".delta"))
            .collect();
        names.sort();
        assert_eq!(names, vec!["2.base.delta"], "partition {p}");
    }

    // A restart between checkpoints: batches 3 and 4 are replayed.
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl(&ck)).await.unwrap();
    run_rounds(&env, &session, 5..9).await;
    assert_agree(&env, &mut marks, &mut emitted, "after a restart that replays two batches");
    let state = |query: &'static str| {
        let session = session.clone();
        async move {
            let sql = format!("SELECT * FROM sluice_state('{query}', 'aggregate') ORDER BY k");
            let batches = session.context().sql(&sql).await.unwrap().collect().await.unwrap();
            sluice::stt::render_batches(&batches).unwrap()
        }
    };
    let (rows, oracle) = (state("totals").await, state("totals_oracle").await);
    assert!(!rows.is_empty());
    assert_eq!(rows, oracle);
    stop_all(&session).await;

    // A batch cut short after its offset log entry: the commit of the last
    // batch is lost. The restart replays what the state checkpoint lacks,
    // then runs that batch again (the sink already has its rows).
    let last = std::fs::read_dir(ck.join("windows/commits"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    std::fs::remove_file(ck.join("windows/commits").join(last.to_string())).unwrap();
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl(&ck)).await.unwrap();
    run_rounds(&env, &session, 9..16).await;
    assert_agree(&env, &mut marks, &mut emitted, "after a restart that re-runs an uncommitted batch");
    let progress = session.query("windows").unwrap().recent_progress();
    let last = progress.last().unwrap();
    assert!(last.state_operators[0].num_rows_total > 0, "{last:?}");
    stop_all(&session).await;
    let all: std::collections::BTreeSet<String> = QUERIES.iter().map(|(name, _, _)| name.to_string()).collect();
    assert_eq!(emitted, all, "every query emitted rows");
}

/// The option is refused where replay cannot rebuild the state, and where
/// its value is not a number of batches.
#[tokio::test]
async fn state_checkpoint_interval_is_refused_where_replay_cannot_rebuild_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, v BIGINT) WITH (connector = 'memory')")
        .await
        .unwrap();
    let start = |options: &str, select: &str| {
        format!("CREATE SINK q WITH (connector = 'memory', output_mode = 'update', {options}) AS {select}")
    };
    // A global aggregate keeps the row store, which is checkpointed every batch.
    let e = execute_sql(&session, &start("state_checkpoint_interval = '4'", "SELECT count(*) AS n FROM ev"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("state_checkpoint_interval") && e.contains("aggregate") && e.contains("remove the option"),
        "{e}"
    );
    for bad in ["0", "often", "-2"] {
        let e = execute_sql(
            &session,
            &start(&format!("state_checkpoint_interval = '{bad}'"), "SELECT k, count(*) AS n FROM ev GROUP BY k"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("state_checkpoint_interval") && e.contains(bad), "{bad}: {e}");
    }
    // A stateless query has nothing to defer: the option is accepted.
    execute_sql(
        &session,
        "CREATE SINK s WITH (connector = 'memory', state_checkpoint_interval = '5') AS SELECT k FROM ev WHERE v > 1",
    )
    .await
    .unwrap();
}
