//! The Kafka sink against the broker: at least once, and exactly once
//! through transactions, across restarts and the crash windows around the
//! Kafka commit.

use super::*;

async fn memory_to_kafka(
    env: &Environment,
    root: &std::path::Path,
    topic: &str,
    ck: &str,
    delivery: &str,
    rows: &[&str],
) {
    let s = session(env, root);
    sql(
        &s,
        &[
            "CREATE SOURCE words (word VARCHAR, n BIGINT) WITH (connector = 'memory')",
            &format!(
                "CREATE SINK out WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}', \
             delivery = '{delivery}', checkpoint = '{ck}') AS SELECT word AS key, word, n FROM words",
                bootstrap()
            ),
        ],
    )
    .await;
    env.streams.get("words").unwrap().push_rows(rows).unwrap();
    s.query("out").unwrap().process_all_available().await.unwrap();
    s.stop_all().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn rows_without_a_value_column_are_written_as_json_with_their_key() {
    let topic = fresh_topic("sink-json");
    create_topic(&topic, 2).await;
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let ck = tmp.path().join("ck").display().to_string();
    memory_to_kafka(&env, tmp.path(), &topic, &ck, "at_least_once", &["a,1", "b,2"]).await;
    let mut got = read_committed(&topic);
    got.sort();
    assert_eq!(
        got,
        vec![
            (Some("a".into()), r#"{"key":"a","word":"a","n":1}"#.into()),
            (Some("b".into()), r#"{"key":"b","word":"b","n":2}"#.into())
        ]
    );
}

/// Rows of the exactly-once test: which words and how often.
fn counts(records: &[(Option<String>, String)]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (k, _) in records {
        *m.entry(k.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn exactly_once_skips_a_batch_committed_in_kafka_but_not_in_the_commit_log() {
    let topic = fresh_topic("sink-eos");
    create_topic(&topic, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let ck = tmp.path().join("ck");
    let ck_s = ck.display().to_string();
    memory_to_kafka(&env, tmp.path(), &topic, &ck_s, "exactly_once", &["a,1", "b,2"]).await;
    // A crash after the Kafka commit and before the commit log: the last
    // commit-log entry is gone, so the restarted query runs batch 0 again.
    std::fs::remove_file(ck.join("commits").join("0")).unwrap();
    memory_to_kafka(&env, tmp.path(), &topic, &ck_s, "exactly_once", &["c,3"]).await;
    let got = read_committed(&topic);
    assert_eq!(counts(&got), [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)].into_iter().collect(), "{got:?}");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn exactly_once_fences_an_open_transaction_of_the_previous_run() {
    let topic = fresh_topic("sink-fence");
    create_topic(&topic, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let ck = tmp.path().join("ck");
    let ck_s = ck.display().to_string();
    memory_to_kafka(&env, tmp.path(), &topic, &ck_s, "exactly_once", &["a,1"]).await;
    // The previous run died inside batch 1's transaction: records written,
    // never committed. The restarted query's producer (same transactional.id)
    // fences it; its records are never visible to read_committed consumers.
    let meta: serde_json::Value =
        sluice::checkpoint::CheckpointDir::open(&ck_s).unwrap().read_json("metadata").await.unwrap().unwrap();
    let query_id = meta["id"].as_str().expect("query id in metadata").to_string();
    let zombie: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", format!("sluice-{query_id}"))
        .create()
        .unwrap();
    zombie.init_transactions(Duration::from_secs(30)).unwrap();
    zombie.begin_transaction().unwrap();
    zombie
        .send(BaseRecord::<str, str>::to(&topic).key("zombie").payload("never committed"))
        .map_err(|(e, _)| e)
        .unwrap();
    zombie.flush(Duration::from_secs(10)).unwrap();
    memory_to_kafka(&env, tmp.path(), &topic, &ck_s, "exactly_once", &["b,2"]).await;
    let got = read_committed(&topic);
    assert_eq!(counts(&got), [("a".into(), 1), ("b".into(), 1)].into_iter().collect(), "{got:?}");
    // The zombie is fenced: it can no longer commit.
    assert!(zombie.commit_transaction(Duration::from_secs(10)).is_err());
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn kafka_to_kafka_exactly_once_across_restarts() {
    let input = fresh_topic("k2k-in");
    let output = fresh_topic("k2k-out");
    create_topic(&input, 3).await;
    create_topic(&output, 2).await;
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck").display().to_string();
    let env = Environment::default();
    for round in 0..3 {
        produce_values(&input, 3, "v", round * 20..(round + 1) * 20);
        let s = session(&env, tmp.path());
        sql(
            &s,
            &[
                &format!(
                    "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{input}', \
                 starting_offsets = 'earliest', max_offsets_per_trigger = '7')",
                    b = bootstrap()
                ),
                &format!(
                    "CREATE SINK out WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{output}', \
                 delivery = 'exactly_once', checkpoint = '{ck}') AS SELECT value AS key, value FROM ev",
                    b = bootstrap()
                ),
            ],
        )
        .await;
        s.query("out").unwrap().process_all_available().await.unwrap();
        s.stop_all().await.unwrap();
    }
    let got = read_committed(&output);
    let c = counts(&got);
    assert_eq!(c.len(), 60, "{c:?}");
    assert!(c.values().all(|n| *n == 1), "{c:?}");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn kafka_to_files_exactly_once_across_a_restart() {
    let input = fresh_topic("k2f-in");
    create_topic(&input, 2).await;
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck").display().to_string();
    let out = tmp.path().join("out");
    let env = Environment::default();
    for round in 0..2 {
        produce_values(&input, 2, "f", round * 10..(round + 1) * 10);
        let s = session(&env, tmp.path());
        sql(
            &s,
            &[
                &format!(
                    "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{input}', \
                 starting_offsets = 'earliest')",
                    bootstrap()
                ),
                &format!(
                    "CREATE SINK out WITH (connector = 'files', path = '{}', format = 'json', checkpoint = '{ck}') AS \
                 SELECT CAST(value AS VARCHAR) AS v FROM ev",
                    out.display()
                ),
            ],
        )
        .await;
        s.query("out").unwrap().process_all_available().await.unwrap();
        s.stop_all().await.unwrap();
    }
    let files = sluice_sinks::committed_files(&out.display().to_string()).await.unwrap();
    let mut values = vec![];
    for f in files {
        for line in std::fs::read_to_string(out.join(&f)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            values.push(v["v"].as_str().unwrap().to_string());
        }
    }
    values.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("f-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn headers_keys_and_values_pass_through_kafka_to_kafka() {
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    let input = fresh_topic("hdr-in");
    let output = fresh_topic("hdr-out");
    create_topic(&input, 1).await;
    create_topic(&output, 1).await;
    let p: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "trace", value: Some("abc") })
        .insert(Header { key: "empty", value: None::<&[u8]> });
    p.send(BaseRecord::<str, str>::to(&input).key("k1").payload("v1").headers(headers)).map_err(|(e, _)| e).unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    let b = bootstrap();
    sql(
        &s,
        &[
            &format!(
                "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{input}', \
             starting_offsets = 'earliest', include_headers = 'true')"
            ),
            &format!(
                "CREATE SINK out WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{output}') AS \
             SELECT key, value, headers FROM ev"
            ),
        ],
    )
    .await;
    s.query("out").unwrap().process_all_available().await.unwrap();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("check-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&output, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let m = loop {
        match c.poll(Duration::from_secs(30)) {
            Some(Ok(m)) => break m,
            Some(Err(e)) => panic!("{e}"),
            None => panic!("no record in {output}"),
        }
    };
    assert_eq!((m.key(), m.payload()), (Some(&b"k1"[..]), Some(&b"v1"[..])));
    let h = m.headers().expect("headers");
    let got: Vec<(String, Option<Vec<u8>>)> =
        (0..h.count()).map(|i| h.get(i)).map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec))).collect();
    assert_eq!(got, vec![("trace".to_string(), Some(b"abc".to_vec())), ("empty".to_string(), None)]);
}
