//! `EXPLAIN` of streaming queries: the one incremental physical plan, with
//! each stateful node, its keys, state partitions and watermark rule. The
//! plan shapes of a windowed aggregation and a dedup are pinned here, so a
//! change in plan shape cannot pass silently.

use datafusion::arrow::array::AsArray;
use sluice::{execute_sql, Environment, StatementResult};

async fn explain(sql: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(
        &session,
        "CREATE SOURCE events (ts TIMESTAMP, k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
         WITH (connector = 'memory')",
    )
    .await
    .unwrap();
    let out = execute_sql(&session, sql).await.unwrap();
    let Some(StatementResult::Rows(batches)) = out.into_iter().next() else { panic!("EXPLAIN returned no rows") };
    let mut lines = vec![];
    for b in &batches {
        lines.extend(b.column(0).as_string::<i32>().iter().map(|l| l.unwrap_or_default().to_string()));
    }
    lines.join("\n")
}

/// The plan's operator names, one per line, indented as displayed (the
/// details after ':' dropped): the shape.
fn shape(plan: &str) -> String {
    plan.lines()
        .skip(1)
        .map(|l| l.split(':').next().unwrap_or_default().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn explain_shows_the_stateful_aggregate_with_keys_and_state_partitions() {
    let plan =
        explain("EXPLAIN SELECT window.start AS start, count(*) AS n FROM events GROUP BY window(ts, '10 seconds')")
            .await;
    assert!(plan.starts_with("output mode: append"), "{plan}");
    let node = plan.lines().find(|l| l.contains("StreamingAggregateExec")).unwrap_or_else(|| panic!("{plan}"));
    assert!(node.contains("keys=[window]"), "{node}");
    assert!(node.contains("state_partitions=2"), "{node}");
    assert!(node.contains("watermark=emit and evict a group when window.end <= watermark"), "{node}");
    // Late rows are dropped before the partial aggregation, which runs on the
    // input's partitions; its partial states are hash-partitioned on the keys.
    assert!(plan.contains("WatermarkFilterExec: operator=0, drop rows with window.end <= watermark"), "{plan}");
    assert!(plan.contains("AggregateExec: mode=Partial, gby=[window@0 as window]"), "{plan}");
    assert!(plan.contains("partitioning=Hash([window@0], 2)"), "{plan}");
    assert_eq!(
        shape(&plan),
        [
            "ProjectionExec",
            "  StreamingAggregateExec",
            "    RepartitionExec",
            "      AggregateExec",
            "        WatermarkFilterExec",
            "          ProjectionExec",
            "            StreamScanExec",
        ]
        .join("\n"),
        "{plan}"
    );
}

#[tokio::test]
async fn explain_shows_the_dedup_node_and_its_watermark_rule() {
    let plan = explain("EXPLAIN SELECT DISTINCT k, ts FROM events").await;
    let node = plan.lines().find(|l| l.contains("StreamingDedupExec")).unwrap_or_else(|| panic!("{plan}"));
    assert!(node.contains("keys=[k, ts]") && node.contains("state_partitions=2"), "{node}");
    assert!(node.contains("forget a key when ts <= watermark"), "{node}");
    assert_eq!(
        shape(&plan),
        ["StreamingDedupExec", "  RepartitionExec", "    ProjectionExec", "      StreamScanExec"].join("\n"),
        "{plan}"
    );
}

#[tokio::test]
async fn explain_of_a_keyless_aggregate_keeps_one_state_partition_and_a_chain_numbers_operators() {
    let plan = explain("EXPLAIN SELECT count(*) AS n FROM events").await;
    assert!(plan.starts_with("output mode: update"), "{plan}");
    let node = plan.lines().find(|l| l.contains("StreamingAggregateExec")).unwrap_or_else(|| panic!("{plan}"));
    assert!(node.contains("state_partitions=1") && node.contains("keys=[]"), "{node}");
    let plan = explain(
        "EXPLAIN SELECT window_start, max(n) AS m FROM (SELECT window_start, window_end, k, count(*) AS n \
         FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, k) AS c \
         GROUP BY window_start, window_end",
    )
    .await;
    let ops: Vec<&str> = plan.lines().filter(|l| l.contains("StreamingAggregateExec")).collect();
    assert_eq!(ops.len(), 2, "{plan}");
    assert!(ops[0].contains("operator=1") && ops[0].contains("late_rows_by=previous_watermark"), "{plan}");
    assert!(ops[1].contains("operator=0") && !ops[1].contains("late_rows_by"), "{plan}");
}

#[tokio::test]
async fn explain_of_a_batch_query_is_datafusion_s() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    let out = execute_sql(&session, "EXPLAIN SELECT 1").await.unwrap();
    let Some(StatementResult::Rows(batches)) = out.into_iter().next() else { panic!("no rows") };
    assert_eq!(batches[0].schema().field(0).name(), "plan_type");
}

#[tokio::test]
async fn explain_analyze_runs_the_query_over_the_data_there_and_shows_rows_per_node() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, "CREATE SOURCE ev (k VARCHAR, v BIGINT) WITH (connector = 'memory')").await.unwrap();
    env.streams.get("ev").unwrap().push_rows(&["a,1", "b,2", "a,3", "c,4"]).unwrap();
    let out = execute_sql(&session, "EXPLAIN ANALYZE SELECT k, sum(v) AS s FROM ev GROUP BY k").await.unwrap();
    let Some(StatementResult::Rows(batches)) = out.into_iter().next() else { panic!("no rows") };
    let plan: Vec<String> =
        batches[0].column(0).as_string::<i32>().iter().map(|l| l.unwrap_or_default().to_string()).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("micro-batches run: 1"), "{plan}");
    let node = plan.lines().find(|l| l.contains("StreamingAggregateExec")).unwrap_or_else(|| panic!("{plan}"));
    // Three groups out of the stateful node; four rows read by the scan.
    assert!(node.contains("output_rows=3"), "{node}");
    assert!(node.contains("elapsed_compute="), "{node}");
    let scan = plan.lines().find(|l| l.contains("StreamScanExec")).unwrap_or_else(|| panic!("{plan}"));
    assert!(scan.contains("metrics=["), "{scan}");
}

#[tokio::test]
async fn a_dataframe_explains_its_streaming_plan() {
    use sluice::StreamingDataFrameExt;
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(&session, "CREATE SOURCE ev (k VARCHAR, v BIGINT) WITH (connector = 'memory')").await.unwrap();
    let df = session.context().sql("SELECT DISTINCT k FROM ev").await.unwrap();
    let plan = df.explain_stream(None).await.unwrap();
    assert!(
        plan.starts_with("output mode: append") && plan.contains("StreamingDedupExec: operator=0, keys=[k]"),
        "{plan}"
    );
    let e = df.explain_stream(Some(sluice::OutputMode::Complete)).await.unwrap_err().to_string();
    assert!(e.contains("complete"), "{e}");
}

/// Late rows are dropped by the watermark filter before the partial
/// aggregation: they are counted in the progress report and kept for
/// `late_rows`, and the windows they would have changed stay as they were.
#[tokio::test]
async fn rows_dropped_before_the_partial_stage_are_counted_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(
        &session,
        "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
         WITH (connector = 'memory');
         CREATE SINK counts WITH (connector = 'memory', output_mode = 'append', late_rows = 'late') AS \
         SELECT window.start AS start, k, count(*) AS n FROM ev GROUP BY window(ts, '10 seconds'), k",
    )
    .await
    .unwrap();
    let q = session.query("counts").unwrap();
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["2026-01-01T00:00:01,a", "2026-01-01T00:00:30,b"]).unwrap();
    q.process_all_available().await.unwrap();
    // The watermark is now 00:00:25: the window [00:00, 00:10) is closed.
    ev.push_rows(&["2026-01-01T00:00:02,a", "2026-01-01T00:00:03,c", "2026-01-01T00:00:31,b"]).unwrap();
    let progress = q.process_all_available().await.unwrap();
    let dropped: u64 = progress.iter().flat_map(|p| &p.state_operators).map(|s| s.num_rows_dropped_by_watermark).sum();
    assert_eq!(dropped, 2, "{progress:?}");
    let late = session.context().sql("SELECT k FROM late ORDER BY k").await.unwrap().collect().await.unwrap();
    let late = datafusion::arrow::util::pretty::pretty_format_batches(&late).unwrap().to_string();
    let keys: Vec<&str> =
        late.lines().filter_map(|l| l.strip_prefix("| ")).map(|l| l.trim_end_matches(" |").trim()).collect();
    assert_eq!(keys, vec!["k", "a", "c"], "{late}");
    let counts = session.context().sql("SELECT k, n FROM counts ORDER BY k").await.unwrap().collect().await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&counts).unwrap().to_string();
    assert!(text.contains("| a | 1 |") && !text.contains("| c |"), "{text}");
    session.stop_all().await.unwrap();
}

/// The lines of a one-column result.
fn lines(out: Vec<StatementResult>) -> String {
    let Some(StatementResult::Rows(batches)) = out.into_iter().next() else { panic!("no rows") };
    let mut lines = vec![];
    for b in &batches {
        lines.extend(b.column(0).as_string::<i32>().iter().map(|l| l.unwrap_or_default().to_string()));
    }
    lines.join("\n")
}

#[tokio::test]
async fn explain_analyze_of_a_running_query_shows_its_last_batch_and_show_queries_its_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    execute_sql(
        &session,
        "CREATE SOURCE events (k VARCHAR) WITH (connector = 'memory');
         CREATE SINK counts WITH (connector = 'memory', output_mode = 'update') AS \
         SELECT k, count(*) AS n FROM events GROUP BY k",
    )
    .await
    .unwrap();
    let q = session.query("counts").unwrap();
    let before = lines(execute_sql(&session, "EXPLAIN ANALYZE counts").await.unwrap());
    assert!(before.contains("no micro-batch has run yet"), "{before}");
    env.streams.get("events").unwrap().push_rows(&["a", "b", "a"]).unwrap();
    q.process_all_available().await.unwrap();
    let analyzed = lines(execute_sql(&session, "EXPLAIN ANALYZE counts;").await.unwrap());
    assert!(analyzed.starts_with("query 'counts': last micro-batch 0 (3 rows in"), "{analyzed}");
    assert!(analyzed.contains("StreamingAggregateExec") && analyzed.contains("output_rows=2"), "{analyzed}");
    let plan = lines(execute_sql(&session, "EXPLAIN counts").await.unwrap());
    assert!(plan.contains("StreamingAggregateExec") && !plan.contains("output_rows"), "{plan}");
    let e = execute_sql(&session, "EXPLAIN ANALYZE nope").await.unwrap_err().to_string();
    assert!(e.contains("no running query named 'nope'") && e.contains("counts"), "{e}");
    // SHOW QUERIES: status, last batch, rates, batch time, state rows.
    let out = execute_sql(&session, "SHOW QUERIES").await.unwrap();
    let Some(StatementResult::Rows(b)) = out.into_iter().next() else { panic!("no rows") };
    let table = datafusion::arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string();
    for col in [
        "status",
        "last_batch_id",
        "input_rows_per_second",
        "processed_rows_per_second",
        "last_batch_ms",
        "state_rows",
        "watermark",
        "error",
    ] {
        assert!(table.contains(col), "{col} missing: {table}");
    }
    let state_rows =
        b[0].column_by_name("state_rows").unwrap().as_primitive::<datafusion::arrow::datatypes::UInt64Type>().value(0);
    assert_eq!(state_rows, 2, "{table}");
    session.stop_all().await.unwrap();
}
