//! Bad input gets clear errors naming the thing and the fix.

use sluice::{execute_sql, Environment};

async fn err(sqls: &[&str]) -> String {
    let env = Environment::default();
    let session = env.default_session();
    let (last, setup) = sqls.split_last().unwrap();
    for s in setup {
        execute_sql(&session, s).await.unwrap();
    }
    execute_sql(&session, last).await.unwrap_err().to_string()
}

const SRC: &str = "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')";

#[tokio::test]
async fn unknown_source_connector_lists_valid_ones() {
    let e = err(&["CREATE SOURCE x (a INT) WITH (connector = 'kafkaa')"]).await;
    assert!(e.contains("unknown source connector 'kafkaa'") && e.contains("memory"), "{e}");
}

#[tokio::test]
async fn unknown_source_option_lists_valid_ones() {
    let e = err(&["CREATE SOURCE x (a INT) WITH (connector = 'memory', pathh = '/tmp')"]).await;
    assert!(e.contains("unknown option 'pathh'") && e.contains("memory"), "{e}");
}

#[tokio::test]
async fn unknown_sink_option_and_connector() {
    let e = err(&[SRC, "CREATE SINK s WITH (connector = 'memory', colour = 'red') AS SELECT * FROM ev"]).await;
    assert!(e.contains("unknown option 'colour'") && e.contains("sink connector 'memory'"), "{e}");
    let e = err(&[SRC, "CREATE SINK s WITH (connector = 'nowhere') AS SELECT * FROM ev"]).await;
    assert!(e.contains("unknown sink connector 'nowhere'") && e.contains("memory"), "{e}");
}

#[tokio::test]
async fn bad_output_mode_and_trigger() {
    let e = err(&[SRC, "CREATE SINK s WITH (output_mode = 'upsert') AS SELECT * FROM ev"]).await;
    assert!(e.contains("upsert") && e.contains("append, update, complete"), "{e}");
    let e = err(&[SRC, "CREATE SINK s WITH (trigger = 'sometimes') AS SELECT * FROM ev"]).await;
    assert!(e.contains("sometimes") && e.contains("available_now"), "{e}");
}

#[tokio::test]
async fn unsupported_mode_combinations_name_the_fix() {
    let e = err(&[SRC, "CREATE SINK s WITH (output_mode = 'complete') AS SELECT * FROM ev"]).await;
    assert!(e.contains("complete output mode") && e.contains("append"), "{e}");
    let e = err(&[SRC, "CREATE SINK s AS SELECT * FROM ev ORDER BY id"]).await;
    assert!(e.contains("ORDER BY") && e.contains("complete"), "{e}");
    let e = err(&[SRC, "CREATE SINK s AS SELECT a.id FROM ev a FULL JOIN ev b ON a.id = b.id"]).await;
    assert!(e.contains("FULL OUTER join between two streams") && e.contains("WATERMARK FOR"), "{e}");
    let e =
        err(&[SRC, "CREATE TABLE t (id BIGINT)", "CREATE SINK s AS SELECT t.id FROM t LEFT JOIN ev ON t.id = ev.id"])
            .await;
    assert!(e.contains("outer side must be the stream"), "{e}");
}

#[tokio::test]
async fn batch_query_over_a_stream_says_how() {
    let e = err(&[SRC, "SELECT * FROM ev"]).await;
    assert!(e.contains("'ev' is a stream") && e.contains("CREATE SINK"), "{e}");
}

#[tokio::test]
async fn malformed_sql_and_watermark() {
    let e = err(&["CREATE SOURCE (a INT)"]).await;
    assert!(e.contains("SQL syntax error"), "{e}");
    let e = err(&["CREATE SOURCE x (ts TIMESTAMP, WATERMARK FOR ts AS ts * 2) WITH (connector = 'memory')"]).await;
    assert!(e.contains("WATERMARK FOR ts") && e.contains("INTERVAL"), "{e}");
    let e = err(&["CREATE SOURCE x (a INT, WATERMARK FOR ts AS ts) WITH (connector = 'memory')"]).await;
    assert!(e.contains("no column 'ts'"), "{e}");
    let e = err(&["CREATE SOURCE x (a INT)"]).await;
    assert!(e.contains("connector = '<name>'"), "{e}");
}

#[tokio::test]
async fn duplicate_query_name() {
    let e = err(&[SRC, "CREATE SINK s AS SELECT * FROM ev", "CREATE SINK s AS SELECT * FROM ev"]).await;
    assert!(e.contains("already running"), "{e}");
}
