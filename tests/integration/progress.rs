//! Progress reports as JSON in Spark's shape (`StreamingQueryProgress.json`).

use sluice::{execute_sql, Environment, SluiceSession};

/// Declare the watermarked source `ev` and start the windowed count `counts`
/// on the checkpoint `ck`.
async fn start_counts(session: &SluiceSession, ck: &std::path::Path) {
    execute_sql(
        session,
        &format!(
            "CREATE SOURCE ev (ts TIMESTAMP, k VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'memory');
             CREATE SINK counts WITH (connector = 'memory', output_mode = 'update', checkpoint = '{}') AS \
             SELECT window.start AS start, k, count(*) AS n FROM ev GROUP BY window(ts, '10 seconds'), k",
            ck.display()
        ),
    )
    .await
    .unwrap();
}

/// Declare the source `other` and start the stateless query `plain` over it.
async fn start_plain(session: &SluiceSession) {
    execute_sql(
        session,
        "CREATE SOURCE other (k VARCHAR) WITH (connector = 'memory');
         CREATE SINK plain WITH (connector = 'memory') AS SELECT k FROM other",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn progress_json_has_spark_s_fields_and_leaves_out_what_does_not_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    let ck = tmp.path().join("ck");
    start_counts(&session, &ck).await;
    start_plain(&session).await;
    let ev = env.streams.get("ev").unwrap();
    ev.push_rows(&["2026-01-01T00:00:01,a", "2026-01-01T00:00:03,b"]).unwrap();
    let q = session.query("counts").unwrap();
    q.process_all_available().await.unwrap();
    ev.push_rows(&["2026-01-01T00:00:20,a"]).unwrap();
    // The data batch (a no-data batch may follow it, for the watermark).
    let p = q.process_all_available().await.unwrap().into_iter().find(|p| p.num_input_rows > 0).expect("a batch ran");
    let doc: serde_json::Value = serde_json::from_str(&p.json()).unwrap();
    assert_eq!(doc["id"], serde_json::json!(q.id()));
    assert!(doc["runId"].as_str().is_some_and(|r| r.len() == 36 && r != q.id()), "{doc}");
    assert_eq!(doc["name"], "counts");
    assert_eq!(doc["batchId"], serde_json::json!(p.batch_id));
    assert!(p.batch_id >= 1);
    assert_eq!(doc["numInputRows"], 1);
    assert!(doc["timestamp"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{doc}");
    for k in ["triggerExecution", "addBatch", "getBatch", "latestOffset", "queryPlanning", "walCommit", "commitOffsets"]
    {
        assert!(doc["durationMs"][k].is_u64(), "durationMs.{k} missing: {doc}");
    }
    // The batch ran under the watermark the first batch set (00:00:03 - 5 s).
    assert_eq!(doc["eventTime"]["watermark"], "2025-12-31T23:59:58.000Z", "{doc}");
    assert_eq!(doc["eventTime"]["min"], "2026-01-01T00:00:20.000Z");
    assert_eq!(doc["eventTime"]["max"], "2026-01-01T00:00:20.000Z");
    assert_eq!(doc["eventTime"]["avg"], "2026-01-01T00:00:20.000Z");
    let op = &doc["stateOperators"][0];
    assert_eq!(op["numRowsTotal"], 3, "{doc}");
    assert!(op["memoryUsedBytes"].as_u64().is_some_and(|b| b > 0), "{doc}");
    assert_eq!(doc["sources"][0]["description"], "ev");
    assert_eq!(doc["sources"][0]["numInputRows"], 1);
    assert_eq!(doc["sink"]["description"], "memory");
    assert_eq!(doc["sink"]["numOutputRows"], 1);
    assert!(p.pretty_json().lines().count() > 20);
    // A query without a watermark or state: no eventTime, no operators.
    env.streams.get("other").unwrap().push_rows(&["x"]).unwrap();
    let plain = session.query("plain").unwrap().process_all_available().await.unwrap();
    let doc = plain[0].json_value();
    assert!(doc.get("eventTime").is_none(), "{doc}");
    assert_eq!(doc["stateOperators"], serde_json::json!([]));
    // A restart on the same checkpoint keeps the id and gets a new runId.
    let run_id = p.run_id.clone();
    session.stop_all().await.unwrap();
    let session = crate::manual_session(&env, tmp.path());
    start_counts(&session, &ck).await;
    ev.push_rows(&["2026-01-01T00:00:21,c"]).unwrap();
    let q2 = session.query("counts").unwrap();
    let p2 = q2.process_all_available().await.unwrap().into_iter().next().expect("a batch ran");
    assert_eq!(p2.id, p.id);
    assert_ne!(p2.run_id, run_id);
    session.stop_all().await.unwrap();
}

/// Every key path of a JSON document with the kind of its value (objects
/// by key, arrays as `[]`). Offsets are source-specific and customMetrics
/// store-specific: their contents are not descended.
fn paths(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeMap<String, &'static str>) {
    use serde_json::Value;
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !prefix.is_empty() {
        out.insert(prefix.to_string(), kind);
    }
    let opaque = ["startOffset", "endOffset", "latestOffset", "customMetrics", "metrics"];
    if opaque.iter().any(|o| prefix.ends_with(o)) {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                paths(v, &p, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// Compare Sluice's document with Spark's: every key Spark has is there, at
/// the same place, with a value of the same kind (either may be null), and
/// no key Spark has sits elsewhere in Sluice's.
fn assert_spark_shaped(ours: &serde_json::Value, spark: &serde_json::Value) {
    let (mut o, mut s) = (Default::default(), Default::default());
    paths(ours, "", &mut o);
    paths(spark, "", &mut s);
    let missing: Vec<&String> = s.keys().filter(|k| !o.contains_key(*k)).collect();
    assert!(missing.is_empty(), "keys of Spark's progress missing from Sluice's: {missing:?}\nours: {ours:#}");
    // An offset's shape is the source's own (Spark's file source has
    // {"logOffset": n}, its memory source a number, as Sluice's).
    let offsets = ["startOffset", "endOffset", "latestOffset"];
    for (k, kind) in s.iter().filter(|(k, _)| !offsets.iter().any(|o| k.ends_with(o))) {
        let mine = o[k];
        assert!(mine == *kind || mine == "null" || *kind == "null", "{k}: Spark has a {kind}, Sluice a {mine}");
    }
    let leaf = |p: &str| p.rsplit(['.', ']']).next().unwrap_or(p).to_string();
    // (Sluice's extra durations, such as durationMs.sink, are numbers where
    // Spark's `sink` is an object: another field, not a misplaced one.)
    let spark_leaves: std::collections::BTreeSet<(String, &str)> = s.iter().map(|(k, v)| (leaf(k), *v)).collect();
    for (k, kind) in o.iter().filter(|(k, _)| !s.contains_key(*k)) {
        assert!(!spark_leaves.contains(&(leaf(k), *kind)), "Sluice has '{k}', which Spark nests elsewhere");
    }
}

#[tokio::test]
async fn progress_json_matches_spark_4_3_documents_key_for_key() {
    // Real documents from Spark 4.3 (tests/integration/fixtures/README.md).
    let windowed: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/spark-4.3-progress-windowed.json")).unwrap();
    let stateless: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/spark-4.3-progress-stateless.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    start_counts(&session, &tmp.path().join("ck")).await;
    start_plain(&session).await;
    // As in Spark's run: a batch with data under a watermark set earlier.
    let ev = env.streams.get("ev").unwrap();
    let q = session.query("counts").unwrap();
    ev.push_rows(&["2026-01-01T00:00:01,a", "2026-01-01T00:00:30,b"]).unwrap();
    q.process_all_available().await.unwrap();
    ev.push_rows(&["2026-01-01T00:00:33,a", "2026-01-01T00:00:36,c"]).unwrap();
    let p = q.process_all_available().await.unwrap().into_iter().find(|p| p.num_input_rows > 0).unwrap();
    assert_spark_shaped(&p.json_value(), &windowed);
    let op = &p.json_value()["stateOperators"][0];
    assert_eq!(op["numShufflePartitions"], 2, "{op}");
    assert_eq!(op["numStateStoreInstances"], 2, "{op}");
    assert!(op["customMetrics"]["stateOnCurrentVersionSizeBytes"].as_i64().is_some_and(|b| b > 0), "{op}");
    env.streams.get("other").unwrap().push_rows(&["x", "y"]).unwrap();
    let p = session.query("plain").unwrap().process_all_available().await.unwrap().remove(0);
    assert_spark_shaped(&p.json_value(), &stateless);
    session.stop_all().await.unwrap();
}
