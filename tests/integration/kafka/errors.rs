//! Kafka options and an unreachable broker: clear errors, no broker needed.

use super::*;

async fn error_of(statements: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment::default();
    let s = session(&env, tmp.path());
    for st in statements {
        if let Err(e) = execute_sql(&s, st).await {
            return e.to_string();
        }
    }
    match s.query("out") {
        Some(q) => q.process_all_available().await.map(|_| String::new()).unwrap_or_else(|e| e.to_string()),
        None => String::new(),
    }
}

#[tokio::test]
async fn an_unknown_option_lists_the_valid_ones() {
    let e = error_of(&[
        "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 't', topicc = 'u')",
    ])
    .await;
    assert!(
        e.contains("unknown option 'topicc'") && e.contains("max_offsets_per_trigger") && e.contains("kafka.*"),
        "{e}"
    );
    let e = error_of(&["CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 't', kafka.enable.auto.commit = 'true')"]).await;
    assert!(e.contains("kafka.enable.auto.commit") && e.contains("checkpoint"), "{e}");
    let e = error_of(&[
        "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 't', topics = 'u')",
    ])
    .await;
    assert!(e.contains("exactly one of topic, topics") && e.contains("topic and topics"), "{e}");
    let e = error_of(&["CREATE SOURCE ev WITH (connector = 'kafka', topic = 't')"]).await;
    assert!(e.contains("bootstrap_servers"), "{e}");
    let e = error_of(&["CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 't', starting_offsets = '{\"t\": 3}')"]).await;
    assert!(e.contains("starting_offsets") && e.contains("-2 is the earliest"), "{e}");
    let e = error_of(&["CREATE SOURCE ev (a INT) WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 't')"])
        .await;
    assert!(e.contains("column 'a' is not a Kafka column") && e.contains("format = 'json'"), "{e}");
    let e = error_of(&[
        "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 't', assign = 'mod 2 = 3')",
    ])
    .await;
    assert!(e.contains("assign") && e.contains("mod 4 = 1"), "{e}");
}

#[tokio::test]
async fn sink_options_are_checked_at_start() {
    let src = "CREATE SOURCE w (word VARCHAR, n BIGINT) WITH (connector = 'memory')";
    let e = error_of(&[src, "CREATE SINK out WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 't', delivery = 'twice') AS SELECT word FROM w"]).await;
    assert!(e.contains("delivery") && e.contains("exactly_once"), "{e}");
    let e =
        error_of(&[src, "CREATE SINK out WITH (connector = 'kafka', bootstrap_servers = 'x:1') AS SELECT word FROM w"])
            .await;
    assert!(e.contains("needs a topic"), "{e}");
    let e = error_of(&[src, "CREATE SINK out WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 't') AS SELECT n AS value FROM w"]).await;
    assert!(e.contains("column 'value' is Int64"), "{e}");
}

#[tokio::test]
async fn a_broker_that_is_down_at_start_is_a_clear_error_not_a_hang() {
    // Nothing listens on port 1.
    let e = error_of(&[
        "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:1', topic = 't', poll_timeout_ms = '1500')",
        "CREATE SINK out WITH (connector = 'memory') AS SELECT value FROM ev",
    ])
    .await;
    assert!(e.contains("127.0.0.1:1") && e.contains("is the broker running"), "{e}");
}
