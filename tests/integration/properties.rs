//! Property tests: streaming is batch. For random rows split into random
//! micro-batches, with random restarts from the checkpoint, a windowed
//! aggregation and a deduplication give what DataFusion computes in batch
//! over all the rows (over the windows the final watermark closed), and
//! session windows match a naive reference model.

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use sluice::stt::render_batches;
use sluice::{execute_sql, Environment};

/// One input row: event time (ms after 2024-01-01), key, value.
#[derive(Debug, Clone)]
struct Row {
    ts_ms: i64,
    k: u8,
    v: i64,
}

const BASE_MS: i64 = 1_704_067_200_000; // 2024-01-01 00:00:00 UTC

/// `ms` as an input value (always three decimals).
fn input_ts(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(BASE_MS + ms).unwrap().naive_utc();
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// `ms` as the engine renders it (no trailing zeros in the fraction).
fn render_ts(ms: i64) -> String {
    let text = input_ts(ms);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Rows in event-time order (so none is late), cut into micro-batches, with
/// a restart flag after each batch.
fn batches() -> impl Strategy<Value = Vec<(Vec<Row>, bool)>> {
    let row = (0i64..120_000, 0u8..4, -20i64..20).prop_map(|(ts_ms, k, v)| Row { ts_ms, k, v });
    (proptest::collection::vec(row, 1..60), proptest::collection::vec((1usize..15, any::<bool>()), 1..8)).prop_map(
        |(mut rows, cuts)| {
            rows.sort_by_key(|r| r.ts_ms);
            let mut out = vec![];
            let mut rest = rows.as_slice();
            for (i, (n, restart)) in cuts.iter().enumerate() {
                let take = if i + 1 == cuts.len() { rest.len() } else { (*n).min(rest.len()) };
                out.push((rest[..take].to_vec(), *restart));
                rest = &rest[take..];
            }
            out
        },
    )
}

const SOURCE: &str =
    "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
                      WITH (connector = 'memory')";

/// Run `sink` (a `CREATE SINK q ... AS` statement with `$CK`) over the
/// batches, restarting where flagged; the sink table's rows and the final
/// watermark (ms since the epoch).
async fn run_stream(sink: &str, batches: &[(Vec<Row>, bool)]) -> (Vec<String>, Option<i64>) {
    let tmp = tempfile::tempdir().unwrap();
    let sink = sink.replace("$CK", &tmp.path().join("ck").display().to_string());
    let env = Environment::default();
    let start = || async {
        let s = crate::manual_session(&env, tmp.path());
        execute_sql(&s, SOURCE).await.unwrap();
        execute_sql(&s, &sink).await.unwrap();
        s
    };
    let mut s = start().await;
    for (rows, restart) in batches {
        let lines: Vec<String> = rows.iter().map(|r| format!("{},k{},{}", input_ts(r.ts_ms), r.k, r.v)).collect();
        env.streams.get("ev").unwrap().push_rows(&lines).unwrap();
        s.query("q").unwrap().process_all_available().await.unwrap();
        if *restart {
            s.stop_all().await.unwrap();
            s = start().await;
        }
    }
    let watermark = s.query("q").unwrap().watermark_ms();
    s.stop_all().await.unwrap();
    let mut rows = render_batches(&env.sinks.get("q").unwrap().table_rows()).unwrap();
    rows.sort();
    (rows, watermark)
}

/// DataFusion batch over all the rows: `sql` over the table `t`.
async fn batch(rows: &[Row], sql: &str) -> Vec<String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| (BASE_MS + r.ts_ms) * 1_000_000))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| format!("k{}", r.k)))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.v))),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
    let mut out = render_batches(&ctx.sql(sql).await.unwrap().collect().await.unwrap()).unwrap();
    out.sort();
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A tumbling-window count and sum in append mode emits exactly the
    /// batch result of every window the final watermark closed.
    #[test]
    fn windowed_aggregation_is_batch(input in batches()) {
        runtime().block_on(async {
            let (got, watermark) = run_stream(
                "CREATE SINK q WITH (connector = 'memory', output_mode = 'append', checkpoint = '$CK') AS \
                 SELECT window_start, k, count(*) AS n, sum(v) AS total \
                 FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, k",
                &input,
            ).await;
            let all: Vec<Row> = input.iter().flat_map(|(r, _)| r.clone()).collect();
            let wm = watermark.expect("a watermark after data");
            let closed_before = chrono::DateTime::from_timestamp_millis(wm - 10_000).unwrap().naive_utc();
            let expected = batch(&all, &format!(
                "SELECT ws, k, n, total FROM (SELECT date_bin(INTERVAL '10 seconds', ts, TIMESTAMP '1970-01-01 00:00:00') AS ws, \
                 k, count(*) AS n, sum(v) AS total FROM t GROUP BY 1, 2) WHERE ws <= TIMESTAMP '{}'",
                closed_before.format("%Y-%m-%d %H:%M:%S%.3f")
            )).await;
            prop_assert_eq!(got, expected);
            Ok(())
        })?;
    }

    /// Deduplication emits each distinct row once, over all batches and
    /// restarts: the batch `SELECT DISTINCT`.
    #[test]
    fn deduplication_is_batch(input in batches()) {
        runtime().block_on(async {
            let (got, _) = run_stream(
                "CREATE SINK q WITH (connector = 'memory', output_mode = 'append', checkpoint = '$CK') AS \
                 SELECT DISTINCT k, v FROM ev",
                &input,
            ).await;
            let all: Vec<Row> = input.iter().flat_map(|(r, _)| r.clone()).collect();
            prop_assert_eq!(got, batch(&all, "SELECT DISTINCT k, v FROM t").await);
            Ok(())
        })?;
    }

    /// Session windows (gap 7.5 s), merged within and across batches and
    /// restarts, match a naive model: per key, rows in time order, a new
    /// session whenever a row starts after the current session's end (a row
    /// starting exactly at the end joins it, as in Spark's
    /// `MergingSessionsIterator`: `sessionStart <= currentSessionEnd`).
    #[test]
    fn session_merging_matches_a_naive_model(input in batches()) {
        runtime().block_on(async {
            let (got, _) = run_stream(
                "CREATE SINK q WITH (connector = 'memory', output_mode = 'complete', checkpoint = '$CK') AS \
                 SELECT window_start, window_end, k, count(*) AS n \
                 FROM SESSION(ev, ts, INTERVAL '7500' MILLISECOND) GROUP BY window_start, window_end, k",
                &input,
            ).await;
            let gap = 7_500;
            let mut all: Vec<Row> = input.iter().flat_map(|(r, _)| r.clone()).collect();
            all.sort_by_key(|r| (r.k, r.ts_ms));
            let mut expected = vec![];
            let mut current: Option<(u8, i64, i64, u64)> = None; // key, start, end, rows
            for r in &all {
                match current.as_mut() {
                    Some((k, _, end, n)) if *k == r.k && r.ts_ms <= *end => {
                        *end = (*end).max(r.ts_ms + gap);
                        *n += 1;
                    }
                    _ => {
                        if let Some((k, s, e, n)) = current.take() {
                            expected.push(format!("{},{},k{k},{n}", render_ts(s), render_ts(e)));
                        }
                        current = Some((r.k, r.ts_ms, r.ts_ms + gap, 1));
                    }
                }
            }
            if let Some((k, s, e, n)) = current {
                expected.push(format!("{},{},k{k},{n}", render_ts(s), render_ts(e)));
            }
            expected.sort();
            prop_assert_eq!(got, expected);
            Ok(())
        })?;
    }
}
