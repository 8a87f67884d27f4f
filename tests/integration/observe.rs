//! Observability: query listeners and the Prometheus endpoint, scraped with
//! a real HTTP client while a query runs.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice::listener::{QueryIdleEvent, QueryStartedEvent, QueryTerminatedEvent, StreamingQueryListener};
use sluice::{execute_sql, Environment, ManualClock, SluiceConfig, StreamingQueryProgress};

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl StreamingQueryListener for Recorder {
    fn on_query_started(&self, e: &QueryStartedEvent) {
        self.0.lock().push(format!("started {}", e.name));
    }
    fn on_query_progress(&self, p: &StreamingQueryProgress) {
        self.0.lock().push(format!("progress {} rows={}", p.batch_id, p.num_input_rows));
    }
    fn on_query_idle(&self, _: &QueryIdleEvent) {
        self.0.lock().push("idle".into());
    }
    fn on_query_terminated(&self, e: &QueryTerminatedEvent) {
        self.0.lock().push(format!("terminated {} error={}", e.name, e.exception.is_some()));
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_listener_gets_started_progress_idle_and_terminated_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let config = SluiceConfig {
        auto_trigger: true,
        checkpoint_root: tmp.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let s = env.session(config, Arc::new(ManualClock::new(0)));
    let rec = Arc::new(Recorder::default());
    let handle = s.add_listener(rec.clone());
    execute_sql(&s, "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')").await.unwrap();
    execute_sql(&s, "CREATE SINK q WITH (connector = 'memory') AS SELECT word FROM ev").await.unwrap();
    env.streams.get("ev").unwrap().push_rows(&["1,a", "2,b"]).unwrap();
    wait_for("the batch and then idle", || rec.0.lock().iter().any(|e| e == "idle")).await;
    s.stop_all().await.unwrap();
    wait_for("terminated", || rec.0.lock().iter().any(|e| e.starts_with("terminated"))).await;
    let events = rec.0.lock().clone();
    assert_eq!(events, vec!["started q", "progress 0 rows=2", "idle", "terminated q error=false"]);
    assert_eq!(handle.dropped_events(), 0);
}

async fn scrape(url: &str) -> String {
    let r = reqwest::get(url).await.expect("scrape");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

fn value(metrics: &str, series_prefix: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(series_prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Scrape until `series` has `expected` (the listener updates the metrics
/// on its own thread, a moment after the batch).
async fn scrape_until(url: &str, series: &str, expected: f64) -> String {
    let mut m = String::new();
    for _ in 0..200 {
        m = scrape(url).await;
        if value(&m, series) == Some(expected) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{series} never became {expected}:\n{m}");
}

#[tokio::test]
async fn the_metrics_endpoint_serves_moving_values_while_a_query_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = crate::manual_session(&env, tmp.path());
    let server = s.serve_metrics("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", server.local_addr());
    execute_sql(
        &s,
        "CREATE SOURCE tev (ts TIMESTAMP, k VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '10' SECOND) \
         WITH (connector = 'memory')",
    )
    .await
    .unwrap();
    execute_sql(
        &s,
        "CREATE SINK counts WITH (connector = 'memory') AS SELECT window_start, k, count(*) AS n \
         FROM TUMBLE(tev, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end, k",
    )
    .await
    .unwrap();
    let q = s.query("counts").unwrap();
    let id = q.id();
    let series = |name: &str| format!("sluice_{name}{{query=\"counts\",id=\"{id}\"}}");
    env.streams.get("tev").unwrap().push_rows(&["2024-01-01 00:00:05,a", "2024-01-01 00:00:06,b"]).unwrap();
    q.process_all_available().await.unwrap();
    let m = scrape_until(&url, &series("input_rows_total"), 2.0).await;
    // Batch 0 with the rows, batch 1 a no-data batch for the moved watermark.
    assert_eq!(value(&m, &series("last_batch_id")), Some(1.0), "{m}");
    assert_eq!(value(&m, &series("query_up")), Some(1.0), "{m}");
    assert!(m.contains("sluice_batch_duration_seconds_bucket{"), "{m}");
    assert!(m.contains("sluice_state_rows{query=\"counts\""), "{m}");
    env.streams.get("tev").unwrap().push_rows(&["2024-01-01 00:02:00,a"]).unwrap();
    q.process_all_available().await.unwrap();
    let m = scrape_until(&url, &series("input_rows_total"), 3.0).await;
    // The watermark moved to 00:01:50; the manual clock is at 0, so the lag
    // (processing time minus watermark) is negative here, but present.
    assert_eq!(value(&m, &series("watermark_seconds")), Some(1_704_067_310.0), "{m}");
    assert!(value(&m, &series("watermark_lag_seconds")).is_some(), "{m}");
    assert!(value(&m, &series("batches_total")).unwrap() >= 2.0, "{m}");
    // A second endpoint on the same port is refused, naming the address.
    let e = s.serve_metrics(&server.local_addr().to_string()).await.unwrap_err().to_string();
    assert!(e.contains(&server.local_addr().to_string()) && e.contains("cannot listen"), "{e}");
    s.stop_all().await.unwrap();
    scrape_until(&url, &series("query_up"), 0.0).await;
}

#[test]
fn sluice_run_appends_spark_shaped_progress_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.csv"), "1,a\n2,b\n").unwrap();
    std::fs::write(input.join("b.csv"), "3,c\n").unwrap();
    let sql = tmp.path().join("q.sql");
    std::fs::write(
        &sql,
        format!(
            "CREATE SOURCE ev (id BIGINT, w VARCHAR) WITH (connector = 'files', path = '{}', format = 'csv', \
             max_files_per_trigger = 1);\n\
             CREATE SINK q WITH (connector = 'files', path = '{}', format = 'csv', trigger = 'available_now', \
             checkpoint = '{}') AS SELECT * FROM ev;\n",
            input.display(),
            tmp.path().join("out").display(),
            tmp.path().join("ck").display()
        ),
    )
    .unwrap();
    let progress = tmp.path().join("progress.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("-v")
        .arg("run")
        .arg(&sql)
        .arg("--progress-json")
        .arg(&progress)
        .arg("--metrics")
        .arg("127.0.0.1:0")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // With -v the per-batch log lines are under the query's and the batch's
    // tracing spans.
    let id = stderr.split("(id ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_default().to_string();
    for batch in 0..2 {
        let span = format!("query{{name=q id={id}}}:batch{{query=q id={batch}}}: query 'q' batch {batch}:");
        assert!(stderr.contains(&span), "no line under {span}:\n{stderr}");
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&progress)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    let batches: Vec<(u64, u64)> =
        lines.iter().map(|p| (p["batchId"].as_u64().unwrap(), p["numInputRows"].as_u64().unwrap())).collect();
    assert_eq!(batches, vec![(0, 2), (1, 1)]);
    assert_eq!(lines[0]["name"], "q");
    assert!(lines[1]["sources"][0]["endOffset"].is_object() || lines[1]["sources"][0]["endOffset"].is_number());
}
