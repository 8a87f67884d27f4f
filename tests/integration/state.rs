//! Live state as SQL: `sluice_state('<query>', '<operator>' [, batch])` and
//! `sluice state CHECKPOINT_DIR`, on an aggregation, a dedup, a session
//! window and a stream-stream join, live and after the query stopped.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use sluice::stt::render_batches;
use sluice::{execute_sql, Environment, SluiceSession};

/// Run `sql` on the session's context and render the rows as a table.
async fn rows(session: &SluiceSession, sql: &str) -> String {
    let batches: Vec<RecordBatch> =
        session.context().sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

async fn error(session: &SluiceSession, sql: &str) -> String {
    match session.context().sql(sql).await {
        Ok(df) => match df.collect().await {
            Ok(b) => panic!("expected an error from {sql}, got {}", pretty_format_batches(&b).unwrap()),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn sluice_state_reads_an_aggregation_live_after_stop_and_at_an_earlier_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    let ck = tmp.path().join("ck");
    execute_sql(
        &session,
        &format!(
            "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'memory');
             CREATE SINK counts WITH (connector = 'memory', output_mode = 'update', checkpoint = '{}') AS \
             SELECT window.start AS start, k, count(*) AS n, sum(v) AS total, avg(v) AS mean \
             FROM ev GROUP BY window(ts, '10 seconds'), k",
            ck.display()
        ),
    )
    .await
    .unwrap();
    let ev = env.streams.get("ev").unwrap();
    let q = session.query("counts").unwrap();
    ev.push_rows(&["2026-01-01T00:00:01,a,1", "2026-01-01T00:00:03,b,10", "2026-01-01T00:00:04,a,2"]).unwrap();
    let first = q.process_all_available().await.unwrap();
    let first_batch = first.last().unwrap().batch_id;
    ev.push_rows(&["2026-01-01T00:00:05,a,3", "2026-01-01T00:00:12,b,20"]).unwrap();
    q.process_all_available().await.unwrap();
    let sql = "SELECT k, \"count(Int64(1))\" AS n, \"sum(ev.v)\" AS total, \"avg(ev.v)\" AS mean \
               FROM sluice_state('counts', '0') ORDER BY k, total";
    let live = rows(&session, sql).await;
    // Current aggregate values per group and window, not accumulator bytes:
    // a's window holds 1+2+3, b has one row in each of two windows.
    let expected = "\
+---+---+-------+------+
| k | n | total | mean |
+---+---+-------+------+
| a | 3 | 6     | 2.0  |
| b | 1 | 10    | 10.0 |
| b | 1 | 20    | 20.0 |
+---+---+-------+------+";
    assert_eq!(live, expected, "{}", rows(&session, "SELECT * FROM sluice_state('counts', '0')").await);
    // The window key is there, as a struct.
    let windows = rows(
        &session,
        "SELECT k, window.start AS start FROM (SELECT * FROM sluice_state('counts', 'aggregate')) ORDER BY k, start",
    )
    .await;
    assert!(windows.contains("2026-01-01T00:00:10"), "{windows}");
    // An earlier retained version: the state after the first batch.
    let earlier = rows(
        &session,
        &format!("SELECT k, \"count(Int64(1))\" AS n FROM sluice_state('counts', '0', {first_batch}) ORDER BY k"),
    )
    .await;
    assert!(earlier.contains("| a | 2 |") && earlier.contains("| b | 1 |"), "{earlier}");
    // After the query stops: by its name (the session remembers its
    // checkpoint) and by the checkpoint location, the same rows.
    session.stop_query("counts").await.unwrap();
    assert_eq!(rows(&session, sql).await, expected);
    let by_path = sql.replace("'counts'", &format!("'{}'", ck.display()));
    assert_eq!(rows(&session, &by_path).await, expected);
    // A session that never ran the query reads the checkpoint too.
    let other = crate::manual_session(&env, tmp.path());
    assert_eq!(rows(&other, &by_path).await, expected);

    // The CLI lists the operator and queries it with SQL.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["state", &ck.display().to_string()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing} {}", String::from_utf8_lossy(&out.stderr));
    assert!(listing.lines().any(|l| l.starts_with("0 ") && l.contains("aggregate")), "{listing}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "state",
            &ck.display().to_string(),
            "--operator",
            "0",
            "--sql",
            "SELECT k, sum(\"count(Int64(1))\") AS rows_in FROM state GROUP BY k ORDER BY k",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("| a | 3       |") && table.contains("| b | 2       |"), "{table}");
}

#[tokio::test]
async fn sluice_state_reads_dedup_session_and_join_state() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    let ck = |n: &str| tmp.path().join(n).display().to_string();
    execute_sql(
        &session,
        &format!(
            "CREATE SOURCE clicks (ts TIMESTAMP, user_id VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '10' MINUTE) \
               WITH (connector = 'memory');
             CREATE SOURCE views (ts TIMESTAMP, user_id VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '10' MINUTE) \
               WITH (connector = 'memory');
             CREATE SINK firsts WITH (connector = 'memory', output_mode = 'append', checkpoint = '{}') AS \
               SELECT DISTINCT ON (user_id) user_id, ts FROM clicks;
             CREATE SINK sessions WITH (connector = 'memory', output_mode = 'append', checkpoint = '{}') AS \
               SELECT window.start AS s, window.end AS e, user_id, count(*) AS n FROM clicks \
               GROUP BY session_window(ts, '5 minutes'), user_id;
             CREATE SINK pairs WITH (connector = 'memory', output_mode = 'append', checkpoint = '{}') AS \
               SELECT c.user_id, c.ts AS click_ts, v.ts AS view_ts FROM clicks c LEFT JOIN views v \
               ON c.user_id = v.user_id AND v.ts BETWEEN c.ts - INTERVAL '1' MINUTE AND c.ts + INTERVAL '1' MINUTE",
            ck("firsts"),
            ck("sessions"),
            ck("pairs")
        ),
    )
    .await
    .unwrap();
    env.streams
        .get("clicks")
        .unwrap()
        .push_rows(&["2026-01-01T12:00:00,u1", "2026-01-01T12:02:00,u1", "2026-01-01T12:01:00,u2"])
        .unwrap();
    env.streams.get("views").unwrap().push_rows(&["2026-01-01T12:00:30,u1"]).unwrap();
    for q in ["firsts", "sessions", "pairs"] {
        session.query(q).unwrap().process_all_available().await.unwrap();
    }
    // Dedup: one row per key seen, with the time it is forgotten at.
    let dedup =
        rows(&session, "SELECT user_id, expires_at FROM sluice_state('firsts', 'dedup') ORDER BY user_id").await;
    assert_eq!(
        dedup,
        "\
+---------+---------------------+
| user_id | expires_at          |
+---------+---------------------+
| u1      | 2026-01-01T12:00:00 |
| u2      | 2026-01-01T12:01:00 |
+---------+---------------------+"
    );
    // Session window: the open sessions with their bounds and counts.
    let open = rows(
        &session,
        "SELECT user_id, window.start AS s, window.end AS e, \"count(Int64(1))\" AS n \
         FROM (SELECT * FROM sluice_state('sessions', '0')) ORDER BY user_id",
    )
    .await;
    assert_eq!(
        open,
        "\
+---------+---------------------+---------------------+---+
| user_id | s                   | e                   | n |
+---------+---------------------+---------------------+---+
| u1      | 2026-01-01T12:00:00 | 2026-01-01T12:07:00 | 2 |
| u2      | 2026-01-01T12:01:00 | 2026-01-01T12:06:00 | 1 |
+---------+---------------------+---------------------+---+"
    );
    // Join: every stored row of both sides, and whether it matched where
    // the join keeps that (the preserved side of an outer join).
    let join = rows(
        &session,
        "SELECT side, matched, coalesce(left_user_id, right_user_id) AS user_id, count(*) AS stored \
         FROM sluice_state('pairs', 'join') GROUP BY side, matched, 3 ORDER BY side, user_id, matched",
    )
    .await;
    assert_eq!(
        join,
        "\
+-------+---------+---------+--------+
| side  | matched | user_id | stored |
+-------+---------+---------+--------+
| left  | false   | u1      | 1      |
| left  | true    | u1      | 1      |
| left  | false   | u2      | 1      |
| right |         | u1      | 1      |
+-------+---------+---------+--------+",
        "{}",
        rows(&session, "SELECT * FROM sluice_state('pairs', '0')").await
    );
    // After a stop, from the checkpoint.
    session.stop_all().await.unwrap();
    let after = rows(&session, "SELECT count(*) AS n FROM sluice_state('pairs', '0')").await;
    assert!(after.contains("| 4 |"), "{after}");
}

#[tokio::test]
async fn sluice_state_errors_name_the_queries_operators_and_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(
        &session,
        &format!(
            "CREATE SOURCE ev (k VARCHAR) WITH (connector = 'memory');
             CREATE SINK counts WITH (connector = 'memory', output_mode = 'complete', checkpoint = '{}') AS \
             SELECT k, count(*) AS n FROM ev GROUP BY k",
            tmp.path().join("ck").display()
        ),
    )
    .await
    .unwrap();
    let e = error(&session, "SELECT * FROM sluice_state('counts', '0')").await;
    assert!(e.contains("no committed batch"), "{e}");
    env.streams.get("ev").unwrap().push_rows(&["a"]).unwrap();
    session.query("counts").unwrap().process_all_available().await.unwrap();
    let e = error(&session, "SELECT * FROM sluice_state('nope', '0')").await;
    assert!(e.contains("no query named 'nope'") && e.contains("'counts'"), "{e}");
    let e = error(&session, "SELECT * FROM sluice_state('counts', '7')").await;
    assert!(e.contains("unknown state operator '7'") && e.contains("'0' (aggregate)"), "{e}");
    let e = error(&session, "SELECT * FROM sluice_state('counts', 'join')").await;
    assert!(e.contains("'0' (aggregate)"), "{e}");
    let e = error(&session, "SELECT * FROM sluice_state('counts', '0', 99)").await;
    assert!(e.contains("no committed version 99") && e.contains("batches 0 to 0"), "{e}");
    let e = error(&session, "SELECT * FROM sluice_state('counts')").await;
    assert!(e.contains("takes 2 or 3 arguments"), "{e}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["state", &tmp.path().display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Sluice checkpoint"));
}

/// An append-mode windowed aggregation keeps each open window as a live
/// pane, stored as one entry per window: the checkpoint records the pane
/// layout, progress counts groups (not panes), `sluice_state` reads the
/// open windows, and a restart rebuilds them so a window spanning the
/// restart is emitted once with every row, and a closed window never again.
#[tokio::test]
async fn windowed_append_aggregation_keeps_its_open_windows_as_panes_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let ck = tmp.path().join("ck");
    let ddl = format!(
        "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
         WITH (connector = 'memory');
         CREATE SINK wins WITH (connector = 'memory', output_mode = 'append', checkpoint = '{}') AS \
         SELECT window.start AS start, k, count(*) AS n, sum(v) AS total, max(v) AS top \
         FROM ev GROUP BY window(ts, '10 seconds'), k",
        ck.display()
    );
    let emitted = |env: &Environment| {
        let mut r = sluice::stt::render_batches(&env.sinks.get("wins").unwrap().received_since(0)).unwrap();
        r.sort();
        r
    };
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl).await.unwrap();
    let q = session.query("wins").unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["2026-01-01T00:00:01,a,1", "2026-01-01T00:00:02,b,7", "2026-01-01T00:00:13,a,5"]).unwrap();
    let p = q.process_all_available().await.unwrap();
    assert!(emitted(&env).is_empty(), "both windows are open: {:?}", emitted(&env));
    let last = p.last().unwrap();
    assert_eq!(last.state_operators[0].num_rows_total, 3, "three groups in two panes");
    let layout = std::fs::read_to_string(ck.join("state/0/_layout")).unwrap();
    assert!(layout.contains("window_aggregate"), "{layout}");
    let live = rows(
        &session,
        "SELECT k, \"count(Int64(1))\" AS n, \"sum(ev.v)\" AS total FROM sluice_state('wins', 'aggregate') ORDER BY k, total",
    )
    .await;
    assert!(
        live.contains("| a | 1 | 1     |") && live.contains("| a | 1 | 5     |") && live.contains("| b | 1 | 7     |"),
        "{live}"
    );
    session.stop_query("wins").await.unwrap();

    // A new session on the same checkpoint: the rows before the restart are
    // in the panes it rebuilds.
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl).await.unwrap();
    let q = session.query("wins").unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["2026-01-01T00:00:04,a,3", "2026-01-01T00:00:12,b,2"]).unwrap();
    q.process_all_available().await.unwrap();
    assert!(emitted(&env).is_empty(), "the watermark stays at 00:00:08: {:?}", emitted(&env));
    // Watermark 00:00:17: the first window closes (a: 1+3 from both sides
    // of the restart, b: 7), the second stays open.
    ev.push_rows(&["2026-01-01T00:00:22,c,1"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(emitted(&env), vec!["2026-01-01 00:00:00,a,2,4,3", "2026-01-01 00:00:00,b,1,7,7"]);
    // Watermark 00:00:35: the windows at 00:00:10 (a: 5, b: 2) and 00:00:20
    // close, each once; the first is not emitted again.
    ev.push_rows(&["2026-01-01T00:00:40,c,1"]).unwrap();
    let p = q.process_all_available().await.unwrap();
    assert_eq!(
        emitted(&env),
        vec![
            "2026-01-01 00:00:00,a,2,4,3",
            "2026-01-01 00:00:00,b,1,7,7",
            "2026-01-01 00:00:10,a,1,5,5",
            "2026-01-01 00:00:10,b,1,2,2",
            "2026-01-01 00:00:20,c,1,1,1",
        ]
    );
    let state = &p.last().unwrap().state_operators[0];
    assert_eq!(state.num_rows_total, 1, "only c's window at 00:00:40 is open");
    assert_eq!(state.num_rows_removed, 3, "the three groups of the two closed windows");
    session.stop_query("wins").await.unwrap();
}

/// An update-mode aggregation without an event-time key keeps its groups
/// live, each group's state a row of a stored chunk, and its `DISTINCT`
/// values as interned pairs: each batch emits only the groups it changed,
/// with values over every batch before it (across a restart), a value seen
/// before the restart is not counted again, `sluice_state` reads the
/// current values, and progress counts groups.
#[tokio::test]
async fn update_mode_aggregation_keeps_live_groups_and_distinct_values_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let ck = tmp.path().join("ck");
    let ddl = format!(
        "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, v BIGINT) WITH (connector = 'memory');
         CREATE SINK stats WITH (connector = 'memory', output_mode = 'update', checkpoint = '{}') AS \
         SELECT k, count(*) AS n, count(DISTINCT v) AS d, sum(DISTINCT v) AS sd, \
                count(DISTINCT v) FILTER (WHERE v > 2) AS big, max(v) AS hi \
         FROM ev GROUP BY k",
        ck.display()
    );
    let mut seen = 0;
    let mut batch_rows = |env: &Environment| {
        let all = sluice::stt::render_batches(&env.sinks.get("stats").unwrap().received_since(0)).unwrap();
        let mut new = all[seen..].to_vec();
        seen = all.len();
        new.sort();
        new
    };
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl).await.unwrap();
    let q = session.query("stats").unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["2026-01-01T00:00:01,a,1", "2026-01-01T00:00:02,a,1", "2026-01-01T00:00:03,b,7"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(batch_rows(&env), vec!["a,2,1,1,0,1", "b,1,1,7,1,7"]);
    let layout = std::fs::read_to_string(ck.join("state/0/_layout")).unwrap();
    assert!(layout.contains("live_aggregate"), "{layout}");
    // Only a changes: b is not emitted.
    ev.push_rows(&["2026-01-01T00:00:04,a,3", "2026-01-01T00:00:05,a,1"]).unwrap();
    let p = q.process_all_available().await.unwrap();
    assert_eq!(batch_rows(&env), vec!["a,4,2,4,1,3"]);
    let state = &p.last().unwrap().state_operators[0];
    assert_eq!((state.num_rows_total, state.num_rows_updated), (2, 1), "two groups, one changed");
    ev.push_rows(&["2026-01-01T00:00:06,c,5"]).unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(batch_rows(&env), vec!["c,1,1,5,1,5"]);
    session.stop_query("stats").await.unwrap();

    // A restart: a's values 1 and 3 and b's 7 are known, so only 9 and 2 are new.
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl).await.unwrap();
    let q = session.query("stats").unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&[
        "2026-01-01T00:00:07,a,3",
        "2026-01-01T00:00:08,a,9",
        "2026-01-01T00:00:09,b,7",
        "2026-01-01T00:00:10,b,2",
    ])
    .unwrap();
    q.process_all_available().await.unwrap();
    assert_eq!(batch_rows(&env), vec!["a,6,3,13,2,9", "b,3,2,9,1,7"]);
    let live: Vec<RecordBatch> = session
        .context()
        .sql("SELECT * FROM sluice_state('stats', 'aggregate') ORDER BY k")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(sluice::stt::render_batches(&live).unwrap(), vec!["a,6,3,13,2,9", "b,3,2,9,1,7", "c,1,1,5,1,5"]);
    session.stop_query("stats").await.unwrap();

    // And another: every batch so far is in the state.
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl).await.unwrap();
    let q = session.query("stats").unwrap();
    env.streams.get("ev").unwrap().push_rows(&["2026-01-01T00:00:11,c,5", "2026-01-01T00:00:12,a,4"]).unwrap();
    let p = q.process_all_available().await.unwrap();
    assert_eq!(batch_rows(&env), vec!["a,7,4,17,3,9", "c,2,1,5,1,5"]);
    assert_eq!(p.last().unwrap().state_operators[0].num_rows_total, 3);
    session.stop_query("stats").await.unwrap();
}

/// A complete-mode aggregation over live groups emits every group each
/// batch, also after a restart.
#[tokio::test]
async fn complete_mode_aggregation_over_live_groups_emits_every_group_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let ck = tmp.path().join("ck");
    let ddl = format!(
        "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, v BIGINT) WITH (connector = 'memory');
         CREATE SINK totals WITH (connector = 'memory', output_mode = 'complete', checkpoint = '{}') AS \
         SELECT k, count(*) AS n, avg(v) AS mean FROM ev GROUP BY k",
        ck.display()
    );
    let table = |env: &Environment| {
        let mut r = sluice::stt::render_batches(&env.sinks.get("totals").unwrap().table_rows()).unwrap();
        r.sort();
        r
    };
    for (i, rows) in [
        vec!["2026-01-01T00:00:01,a,1", "2026-01-01T00:00:02,b,4"],
        vec!["2026-01-01T00:00:03,a,3"],
        vec!["2026-01-01T00:00:04,c,2", "2026-01-01T00:00:05,a,2"],
    ]
    .into_iter()
    .enumerate()
    {
        let session = crate::manual_session(&env, tmp.path());
        execute_sql(&session, &ddl).await.unwrap();
        let q = session.query("totals").unwrap();
        env.streams.get("ev").unwrap().push_rows(&rows).unwrap();
        q.process_all_available().await.unwrap();
        let expected: &[&str] = match i {
            0 => &["a,1,1", "b,1,4"],
            1 => &["a,2,2", "b,1,4"],
            _ => &["a,3,2", "b,1,4", "c,1,2"],
        };
        assert_eq!(table(&env), expected, "after batch {i}");
        if i == 0 {
            let layout = std::fs::read_to_string(ck.join("state/0/_layout")).unwrap();
            assert!(layout.contains("live_aggregate"), "{layout}");
        }
        session.stop_query("totals").await.unwrap();
    }
}

/// A stream-stream join stores only the columns its output, keys,
/// conditions and watermarks read (the optimizer prunes the rest below the
/// join), and its chunked state joins rows across a restart.
#[tokio::test]
async fn join_state_keeps_only_the_columns_the_query_reads_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck").display().to_string();
    let ddl = format!(
        "CREATE SOURCE bids (ts TIMESTAMP, item VARCHAR, price BIGINT, note VARCHAR, \
           WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE) WITH (connector = 'memory');
         CREATE SOURCE asks (ts TIMESTAMP, item VARCHAR, floor BIGINT, memo VARCHAR, \
           WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE) WITH (connector = 'memory');
         CREATE SINK trades WITH (connector = 'memory', output_mode = 'append', checkpoint = '{ck}') AS \
           SELECT b.item, b.price, a.floor FROM bids b JOIN asks a \
           ON b.item = a.item AND a.ts BETWEEN b.ts - INTERVAL '5' MINUTE AND b.ts + INTERVAL '5' MINUTE \
           WHERE b.price >= a.floor"
    );
    let env = Environment::default();
    {
        let session = crate::manual_session(&env, tmp.path());
        execute_sql(&session, &ddl).await.unwrap();
        env.streams
            .get("bids")
            .unwrap()
            .push_rows(&["2026-01-01T12:00:00,x,10,wide", "2026-01-01T12:01:00,y,3,wide"])
            .unwrap();
        session.query("trades").unwrap().process_all_available().await.unwrap();
        let stored = rows(&session, "SELECT * FROM sluice_state('trades', 'join') ORDER BY left_item").await;
        let header = stored.lines().nth(1).unwrap_or_default().to_string();
        for column in ["left_ts", "left_item", "left_price", "right_ts", "right_item", "right_floor"] {
            assert!(header.contains(column), "{column} missing from the join state: {stored}");
        }
        for pruned in ["left_note", "right_memo"] {
            assert!(!header.contains(pruned), "{pruned} is stored though no part of the query reads it: {stored}");
        }
        assert!(stored.contains("| x ") && stored.contains("| y "), "{stored}");
        session.stop_all().await.unwrap();
    }
    // After a restart the stored bids meet the asks.
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, &ddl).await.unwrap();
    env.streams.get("asks").unwrap().push_rows(&["2026-01-01T12:02:00,x,7,m", "2026-01-01T12:02:00,y,5,m"]).unwrap();
    session.query("trades").unwrap().process_all_available().await.unwrap();
    let out = render_batches(&env.sinks.get("trades").unwrap().table_rows()).unwrap();
    assert_eq!(out, vec!["x,10,7".to_string()], "y's bid of 3 is below its floor of 5");
}
