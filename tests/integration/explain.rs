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
    assert_eq!(
        shape(&plan),
        [
            "ProjectionExec",
            "  StreamingAggregateExec",
            "    RepartitionExec",
            "      ProjectionExec",
            "        StreamScanExec",
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
