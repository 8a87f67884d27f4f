//! Checkpoints and state on S3 (object_store), against a local S3 server.
//! Run with `scripts/with-moto.sh cargo test --test integration -- --ignored`
//! (CI does).

use std::sync::Arc;

use sluice::checkpoint::CheckpointDir;
use sluice::stt::render_batches;
use sluice::{execute_sql, Environment, ManualClock, SluiceConfig};

async fn run_once(env: &Environment, ck: &str, rows: &[&str]) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: tmp.path().to_path_buf(),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, Arc::new(ManualClock::new(0)));
    execute_sql(&session, "CREATE SOURCE ev (word VARCHAR, v BIGINT) WITH (connector = 'memory')").await.unwrap();
    execute_sql(
        &session,
        &format!(
            "CREATE SINK totals WITH (connector = 'memory', output_mode = 'update', checkpoint = '{ck}') AS \
             SELECT word, count(*) AS n, sum(v) AS total FROM ev GROUP BY word"
        ),
    )
    .await
    .unwrap();
    let store = env.sinks.get("totals").map(|s| s.received_count()).unwrap_or(0);
    env.streams.get("ev").unwrap().push_rows(rows).unwrap();
    session.query("totals").unwrap().process_all_available().await.unwrap();
    let mut out = render_batches(&env.sinks.get("totals").unwrap().received_since(store)).unwrap();
    out.sort();
    session.stop_all().await.unwrap();
    out
}

#[tokio::test]
#[ignore = "needs an S3 endpoint: run through scripts/with-moto.sh (CI does)"]
async fn stateful_query_checkpoints_to_s3_and_resumes() {
    let bucket =
        std::env::var("SLUICE_TEST_S3_BUCKET").expect("SLUICE_TEST_S3_BUCKET: run through scripts/with-moto.sh");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let ck = format!("s3://{bucket}/ck-{nanos}");
    let env = Environment::default();
    assert_eq!(run_once(&env, &ck, &["a,1", "b,2", "a,3"]).await, vec!["a,2,4", "b,1,2"]);
    // A new session (a restart) resumes from the S3 checkpoint: state survives.
    assert_eq!(run_once(&env, &ck, &["a,10"]).await, vec!["a,3,14"]);
    let files = CheckpointDir::open(&ck).unwrap().list_all().await.unwrap();
    for expected in ["metadata", "offsets/1", "commits/1", "state/0/_metadata"] {
        assert!(files.iter().any(|f| f == expected), "{expected} missing from {files:?}");
    }
    assert!(files.iter().any(|f| f.starts_with("state/0/") && f.ends_with("1.delta")), "{files:?}");
}
