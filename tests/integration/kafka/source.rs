//! The Kafka source against the broker.

use super::*;

fn source_sql(name: &str, topic: &str, extra: &str) -> String {
    format!(
        "CREATE SOURCE {name} WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}', \
         starting_offsets = 'earliest'{extra})",
        bootstrap()
    )
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn reads_every_partition_once_and_resumes_exactly_after_a_restart() {
    let topic = fresh_topic("src-resume");
    create_topic(&topic, 3).await;
    produce_values(&topic, 3, "a", 0..30);
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let env = Environment::default();
    for (round, more) in [(0, 30..40), (1, 40..45)] {
        let s = session(&env, tmp.path());
        sql(
            &s,
            &[
                &source_sql("ev", &topic, ""),
                &format!(
                    "CREATE SINK out WITH (connector = 'memory', checkpoint = '{}') AS \
                 SELECT CAST(value AS VARCHAR) AS v, partition, \"offset\" FROM ev",
                    ck.display()
                ),
            ],
        )
        .await;
        let q = s.query("out").unwrap();
        q.process_all_available().await.unwrap();
        produce_values(&topic, 3, "a", more);
        q.process_all_available().await.unwrap();
        s.stop_all().await.unwrap();
        let _ = round;
    }
    let rows = sink_rows(&env, "out");
    let mut values: Vec<String> = rows.iter().map(|r| r.split(',').next().unwrap().to_string()).collect();
    values.sort();
    let mut expected: Vec<String> = (0..45).map(|i| format!("a-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected, "every record exactly once across the restart");
    // Offsets are per partition, from 0.
    assert!(rows.contains(&"a-0,0,0".to_string()) && rows.contains(&"a-3,0,1".to_string()), "{rows:?}");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn max_offsets_per_trigger_splits_a_backlog() {
    let topic = fresh_topic("src-max");
    create_topic(&topic, 2).await;
    produce_values(&topic, 2, "b", 0..100);
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    sql(
        &s,
        &[
            &source_sql("ev", &topic, ", max_offsets_per_trigger = '30'"),
            "CREATE SINK out WITH (connector = 'memory') AS SELECT CAST(value AS VARCHAR) AS v FROM ev",
        ],
    )
    .await;
    let progress = s.query("out").unwrap().process_all_available().await.unwrap();
    let sizes: Vec<u64> = progress.iter().map(|p| p.num_input_rows).collect();
    assert_eq!(sizes, vec![30, 30, 30, 10], "{sizes:?}");
    assert_eq!(sink_rows(&env, "out").len(), 100);
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn a_partition_added_while_the_query_runs_is_read_from_its_start() {
    let topic = fresh_topic("src-grow");
    create_topic(&topic, 1).await;
    produce_values(&topic, 1, "c", 0..5);
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    sql(
        &s,
        &[
            &source_sql("ev", &topic, ""),
            "CREATE SINK out WITH (connector = 'memory') AS SELECT CAST(value AS VARCHAR) AS v, partition FROM ev",
        ],
    )
    .await;
    let q = s.query("out").unwrap();
    q.process_all_available().await.unwrap();
    add_partitions(&topic, 2).await;
    produce(&topic, &[(1, None, "new-0", None), (1, None, "new-1", None), (0, None, "old-5", None)]);
    // Metadata of the new partition may take a moment to reach the client.
    for _ in 0..50 {
        q.process_all_available().await.unwrap();
        if sink_rows(&env, "out").len() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = sink_rows(&env, "out");
    assert!(rows.contains(&"new-0,1".to_string()) && rows.contains(&"new-1,1".to_string()), "{rows:?}");
    assert_eq!(rows.len(), 8, "{rows:?}");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn deleted_records_fail_the_query_unless_fail_on_data_loss_is_false() {
    let topic = fresh_topic("src-loss");
    create_topic(&topic, 1).await;
    produce_values(&topic, 1, "d", 0..10);
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let env = Environment::default();
    let run = |extra: &'static str| {
        let env = env.clone();
        let topic = topic.clone();
        let ck = ck.clone();
        let root = tmp.path().to_path_buf();
        async move {
            let s = session(&env, &root);
            sql(
                &s,
                &[
                    &source_sql("ev", &topic, extra),
                    &format!(
                        "CREATE SINK out WITH (connector = 'memory', checkpoint = '{}') AS \
                     SELECT CAST(value AS VARCHAR) AS v FROM ev",
                        ck.display()
                    ),
                ],
            )
            .await;
            let r = s.query("out").unwrap().process_all_available().await;
            s.stop_all().await.ok();
            r.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    run("").await.unwrap();
    assert_eq!(sink_rows(&env, "out").len(), 10);
    produce_values(&topic, 1, "d", 10..20);
    delete_records(&topic, 0, 15).await;
    let e = run("").await.unwrap_err();
    assert!(e.contains("records 10..15") && e.contains(&topic) && e.contains("fail_on_data_loss"), "{e}");
    run(", fail_on_data_loss = 'false'").await.unwrap();
    let rows = sink_rows(&env, "out");
    assert_eq!(rows.len(), 15, "{rows:?}");
    assert!(rows.contains(&"d-15".to_string()) && !rows.contains(&"d-12".to_string()), "{rows:?}");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn json_values_decode_into_declared_columns_in_each_malformed_mode() {
    let topic = fresh_topic("src-json");
    create_topic(&topic, 1).await;
    produce(
        &topic,
        &[
            (0, None, r#"{"word": "a", "n": 1}"#, None),
            (0, None, "not json", None),
            (0, None, r#"{"word": "b", "n": "x"}"#, None),
            (0, None, r#"{"word": "c", "n": 3}"#, None),
        ],
    );
    // A second topic of well-formed values only (Arrow's decoder reads a
    // whole batch at once), one spelling a key in another case (matched
    // ignoring case, as by the files source), one pretty-printed over lines.
    let clean = fresh_topic("src-json-clean");
    create_topic(&clean, 1).await;
    produce(
        &clean,
        &[
            (0, None, r#"{"word": "a", "n": 1}"#, None),
            (0, None, r#"{"WORD": "b", "n": 2}"#, None),
            (0, None, "{\n  \"word\": \"c\",\n  \"n\": \"3\"\n}", None),
            (0, None, r#"{"word": null, "n": 4, "other": {"x": 1}}"#, None),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    for (mode, sink) in [("permissive", "perm"), ("dropmalformed", "dropm"), ("failfast", "fail")] {
        sql(
            &s,
            &[
                &format!(
                    "CREATE SOURCE ev_{sink} (word VARCHAR, n BIGINT) WITH (connector = 'kafka', bootstrap_servers = \
                 '{}', topic = '{topic}', starting_offsets = 'earliest', format = 'json', mode = '{mode}')",
                    bootstrap()
                ),
                &format!("CREATE SINK {sink} WITH (connector = 'memory') AS SELECT word, n FROM ev_{sink}"),
            ],
        )
        .await;
    }
    sql(
        &s,
        &[
            &format!(
                "CREATE SOURCE ev_clean (word VARCHAR, n BIGINT) WITH (connector = 'kafka', bootstrap_servers = \
             '{}', topic = '{clean}', starting_offsets = 'earliest', format = 'json')",
                bootstrap()
            ),
            "CREATE SINK clean WITH (connector = 'memory') AS SELECT word, n FROM ev_clean",
        ],
    )
    .await;
    s.query("clean").unwrap().process_all_available().await.unwrap();
    assert_eq!(sink_rows(&env, "clean"), vec!["NULL,4", "a,1", "b,2", "c,3"]);
    s.query("perm").unwrap().process_all_available().await.unwrap();
    assert_eq!(sink_rows(&env, "perm"), vec!["NULL,NULL", "a,1", "b,NULL", "c,3"]);
    s.query("dropm").unwrap().process_all_available().await.unwrap();
    assert_eq!(sink_rows(&env, "dropm"), vec!["a,1", "c,3"]);
    let e = s.query("fail").unwrap().process_all_available().await.unwrap_err().to_string();
    assert!(e.contains(&format!("topic '{topic}' partition 0 offset 1")) && e.contains("invalid JSON"), "{e}");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn a_watermark_on_the_record_timestamp_closes_windows() {
    let topic = fresh_topic("src-wm");
    create_topic(&topic, 2).await;
    // Recent times: records older than the topic's retention (7 days)
    // would be deleted by the broker.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let base = (now - 3_600_000) / 10_000 * 10_000;
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%d %H:%M:%S").to_string();
    produce(
        &topic,
        &[
            (0, Some("k"), "x", Some(base + 1_000)),
            (1, Some("k"), "y", Some(base + 2_000)),
            (0, Some("k"), "z", Some(base + 11_000)),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    sql(
        &s,
        &[
            &format!(
                "CREATE SOURCE ev (key VARCHAR, value VARCHAR, timestamp TIMESTAMP, \
             WATERMARK FOR timestamp AS timestamp - INTERVAL '1' SECOND) WITH (connector = 'kafka', \
             bootstrap_servers = '{}', topic = '{topic}', starting_offsets = 'earliest')",
                bootstrap()
            ),
            "CREATE SINK out WITH (connector = 'memory') AS SELECT window_start, count(*) AS n \
         FROM TUMBLE(ev, timestamp, INTERVAL '10' SECOND) GROUP BY window_start, window_end",
        ],
    )
    .await;
    let q = s.query("out").unwrap();
    // The three records, read in one or more batches (a fresh topic's
    // offsets may reach the client a moment late).
    let read = |q: &sluice::StreamingQuery| q.recent_progress().iter().map(|p| p.num_input_rows).sum::<u64>();
    for _ in 0..50 {
        q.process_all_available().await.unwrap();
        if read(&q) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(&topic, &[(1, Some("k"), "w", Some(base + 25_000))]);
    for _ in 0..50 {
        q.process_all_available().await.unwrap();
        if read(&q) == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = sink_rows(&env, "out");
    let batches: Vec<String> = q.recent_progress().iter().map(|p| p.summary()).collect();
    assert_eq!(rows, vec![format!("{},2", at(base)), format!("{},1", at(base + 10_000))], "{batches:#?}");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn a_batch_query_reads_the_topic_between_starting_and_ending_offsets() {
    let topic = fresh_topic("src-batch");
    create_topic(&topic, 2).await;
    produce_values(&topic, 2, "e", 0..10);
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    let b = bootstrap();
    sql(&s, &[
        &format!("CREATE SOURCE all_ev WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{topic}')"),
        &format!(
            "CREATE SOURCE some_ev WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{topic}', \
             starting_offsets = '{{\"{topic}\":{{\"0\":1,\"1\":-2}}}}', ending_offsets = '{{\"{topic}\":{{\"0\":3,\"1\":-1}}}}')"
        ),
    ])
    .await;
    let count = |q: &'static str| {
        let s = s.clone();
        async move {
            let df = s.context().sql(q).await.unwrap();
            let batches = df.collect().await.unwrap();
            sluice::stt::render_batches(&batches).unwrap()
        }
    };
    // A batch query starts at the earliest offsets by default (Spark).
    assert_eq!(count("SELECT count(*) FROM all_ev").await, vec!["10"]);
    // Partition 0 holds e-0, e-2, ... at offsets 0, 1, ...: offsets 1 and 2 are e-2 and e-4.
    let rows = count("SELECT CAST(value AS VARCHAR) AS v FROM some_ev WHERE partition = 0 ORDER BY v").await;
    assert_eq!(rows, vec!["e-2", "e-4"]);
    assert_eq!(count("SELECT count(*) FROM some_ev WHERE partition = 1").await, vec!["5"]);
    // The same table still runs as a stream.
    sql(&s, &["CREATE SINK out WITH (connector = 'memory') AS SELECT CAST(value AS VARCHAR) AS v FROM all_ev"]).await;
    // Its first trigger fixes where it starts.
    s.query("out").unwrap().process_all_available().await.unwrap();
    produce_values(&topic, 2, "e", 10..12);
    s.query("out").unwrap().process_all_available().await.unwrap();
    assert_eq!(sink_rows(&env, "out"), vec!["e-10", "e-11"], "a stream starts at the latest offsets by default");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn a_deleted_topic_is_data_loss() {
    let topic = fresh_topic("src-deleted");
    create_topic(&topic, 1).await;
    produce_values(&topic, 1, "g", 0..3);
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    sql(
        &s,
        &[
            &source_sql("ev", &topic, ""),
            &source_sql("ev_lenient", &topic, ", fail_on_data_loss = 'false'"),
            "CREATE SINK strict WITH (connector = 'memory') AS SELECT CAST(value AS VARCHAR) AS v FROM ev",
            "CREATE SINK lenient WITH (connector = 'memory') AS SELECT CAST(value AS VARCHAR) AS v FROM ev_lenient",
        ],
    )
    .await;
    for q in ["strict", "lenient"] {
        s.query(q).unwrap().process_all_available().await.unwrap();
        assert_eq!(sink_rows(&env, q).len(), 3);
    }
    let r = admin().delete_topics(&[&topic], &AdminOptions::new()).await.expect("delete_topics");
    r.into_iter().for_each(|t| {
        t.expect("topic deleted");
    });
    // Deletion reaches the client's metadata after a moment.
    let mut error = String::new();
    for _ in 0..50 {
        match s.query("strict").unwrap().process_all_available().await {
            Err(e) => {
                error = e.to_string();
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(
        error.contains(&format!("topic '{topic}' partition 0 is gone")) && error.contains("fail_on_data_loss"),
        "{error}"
    );
    s.query("lenient").unwrap().process_all_available().await.expect("fail_on_data_loss = 'false' goes on");
}

/// A second broker of our own (port 29092, its own data), so that stopping
/// it does not disturb the other tests.
struct OwnBroker {
    home: tempfile::TempDir,
}

impl OwnBroker {
    fn script(&self, args: &[&str]) -> bool {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        std::process::Command::new("bash")
            .arg(root.join("scripts/kafka.sh"))
            .args(args)
            .env("SLUICE_KAFKA_HOME", self.home.path())
            .env("SLUICE_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        // Share the jars fetched for the main broker.
        let libs = std::path::PathBuf::from(
            std::env::var("SLUICE_KAFKA_HOME")
                .unwrap_or_else(|_| format!("{}/.cache/sluice-kafka", std::env::var("HOME").unwrap())),
        )
        .join("kafka-libs");
        std::os::unix::fs::symlink(libs, home.path().join("kafka-libs")).unwrap();
        let b = Self { home };
        assert!(b.script(&["start"]), "second broker did not start");
        b
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.script(&["stop"]);
    }
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn a_broker_that_goes_away_mid_query_fails_it_with_a_clear_error() {
    let broker = OwnBroker::start();
    assert!(broker.script(&["topic-create", "away", "1"]));
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    sql(
        &s,
        &[
            "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:29092', topic = 'away', \
         starting_offsets = 'earliest', poll_timeout_ms = '3000')",
            "CREATE SINK out WITH (connector = 'memory') AS SELECT CAST(value AS VARCHAR) AS v FROM ev",
        ],
    )
    .await;
    s.query("out").unwrap().process_all_available().await.unwrap();
    assert!(broker.script(&["stop"]));
    let started = std::time::Instant::now();
    let e = s.query("out").unwrap().process_all_available().await.unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:29092") && e.contains("is the broker running"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn the_continuous_trigger_reads_kafka_and_resumes_after_the_last_committed_epoch() {
    let topic = fresh_topic("src-continuous");
    create_topic(&topic, 2).await;
    produce_values(&topic, 2, "c", 0..30);
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let env = Environment::default();
    let config = sluice::SluiceConfig {
        auto_trigger: true,
        checkpoint_root: tmp.path().join("default-checkpoints"),
        target_partitions: 2,
        ..Default::default()
    };
    let wait_rows = |n: usize| {
        let env = &env;
        async move {
            for _ in 0..200 {
                if sink_rows(env, "out").len() >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("timed out waiting for {n} rows: {:?}", sink_rows(env, "out"));
        }
    };
    for (round, more) in [(0, 30..40), (1, 40..45)] {
        let s = env.session(config.clone(), std::sync::Arc::new(sluice::SystemClock));
        sql(
            &s,
            &[
                &source_sql("ev", &topic, ""),
                &format!(
                    "CREATE SINK out WITH (connector = 'memory', trigger = 'continuous', interval = '200 ms', \
                     checkpoint = '{}') AS SELECT CAST(value AS VARCHAR) AS v FROM ev",
                    ck.display()
                ),
            ],
        )
        .await;
        let q = s.query("out").unwrap();
        produce_values(&topic, 2, "c", more.clone());
        wait_rows(more.end).await;
        // The rows are in the sink before the epoch's progress is recorded.
        for _ in 0..100 {
            if q.last_progress().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(q.last_progress().and_then(|p| p.epoch).is_some(), "round {round}: progress comes per epoch");
        s.stop_all().await.unwrap();
    }
    let mut values: Vec<String> = sink_rows(&env, "out");
    values.sort();
    let mut expected: Vec<String> = (0..45).map(|i| format!("c-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected, "every record exactly once across the restart");
}
