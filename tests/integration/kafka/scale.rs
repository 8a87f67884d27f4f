//! Scaling out on Kafka's partitions: two `sluice` processes, each assigned
//! half of a topic's partitions (`assign = 'mod 2 = R'`) with its own
//! checkpoint, together write exactly what one process writes.

use std::path::Path;
use std::process::Command;

use super::*;

fn run_process(dir: &Path, name: &str, topic: &str, assign: Option<&str>) -> std::process::Child {
    let assign = assign.map(|a| format!(", assign = '{a}'")).unwrap_or_default();
    let sql = format!(
        "CREATE SOURCE ev WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{topic}', \
         starting_offsets = 'earliest', max_offsets_per_trigger = '25'{assign});\n\
         CREATE SINK out WITH (connector = 'files', path = '{out}', format = 'csv', trigger = 'available_now', \
         checkpoint = '{ck}') AS SELECT CAST(value AS VARCHAR) AS v, partition FROM ev WHERE \"offset\" % 3 <> 1;\n",
        b = bootstrap(),
        out = dir.join(name).join("out").display(),
        ck = dir.join(name).join("ck").display(),
    );
    let file = dir.join(format!("{name}.sql"));
    std::fs::write(&file, sql).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sluice")).arg("run").arg(&file).spawn().expect("start sluice")
}

async fn output(dir: &Path) -> Vec<String> {
    let mut rows = vec![];
    for f in sluice_sinks::committed_files(&dir.display().to_string()).await.unwrap() {
        let text = std::fs::read_to_string(dir.join(&f)).unwrap();
        rows.extend(text.lines().skip(1).map(str::to_string));
    }
    rows.sort();
    rows
}

#[tokio::test]
#[ignore = "needs a Kafka broker: scripts/kafka.sh start (CI does)"]
async fn two_processes_sharing_a_topic_by_partition_write_what_one_writes() {
    let topic = fresh_topic("scale");
    create_topic(&topic, 4).await;
    produce_values(&topic, 4, "s", 0..200);
    let tmp = tempfile::tempdir().unwrap();
    let mut one = run_process(tmp.path(), "one", &topic, None);
    let mut even = run_process(tmp.path(), "even", &topic, Some("mod 2 = 0"));
    let mut odd = run_process(tmp.path(), "odd", &topic, Some("1,3"));
    for c in [&mut one, &mut even, &mut odd] {
        assert!(c.wait().unwrap().success());
    }
    let single = output(&tmp.path().join("one/out")).await;
    let evens = output(&tmp.path().join("even/out")).await;
    let odds = output(&tmp.path().join("odd/out")).await;
    assert!(evens.iter().all(|r| r.ends_with(",0") || r.ends_with(",2")), "{evens:?}");
    assert!(odds.iter().all(|r| r.ends_with(",1") || r.ends_with(",3")), "{odds:?}");
    let mut both: Vec<String> = evens.into_iter().chain(odds).collect();
    both.sort();
    assert_eq!(single.len(), 132, "200 records, one in three dropped by offset");
    assert_eq!(both, single);
}
