//! A damaged checkpoint never silently restarts from scratch or gives
//! wrong results: truncating, flipping bytes in, or deleting each kind of
//! checkpoint file gives an error that names the file and what to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice::{execute_sql, Environment, ManualClock, SluiceConfig};

struct Fixture {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    ck: PathBuf,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let ck = tmp.path().join("ck");
    let out = tmp.path().join("out");
    Fixture { input, ck, out, _tmp: tmp }
}

fn add_file(f: &Fixture, name: &str, rows: &[&str]) {
    let hidden = f.input.join(format!(".{name}"));
    std::fs::write(&hidden, format!("word,v\n{}\n", rows.join("\n"))).unwrap();
    std::fs::rename(hidden, f.input.join(name)).unwrap();
}

/// Start the query (an aggregation over a files source, or a files sink)
/// on the fixture's checkpoint and run what is available.
async fn start(f: &Fixture, files_sink: bool) -> Result<(), String> {
    let env = Environment::default();
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: f.ck.join("unused"),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, Arc::new(ManualClock::new(0)));
    let source = format!(
        "CREATE SOURCE ev (word VARCHAR, v BIGINT) WITH (connector = 'files', path = '{}', format = 'csv', header = 'true', max_files_per_trigger = 1)",
        f.input.display()
    );
    execute_sql(&session, &source).await.unwrap();
    let sink = if files_sink {
        format!(
            "CREATE SINK q WITH (connector = 'files', path = '{}', format = 'csv', checkpoint = '{}') AS SELECT word, v FROM ev",
            f.out.display(),
            f.ck.display()
        )
    } else {
        format!(
            "CREATE SINK q WITH (connector = 'memory', output_mode = 'update', checkpoint = '{}') AS \
             SELECT word, count(*) AS n, sum(v) AS total FROM ev GROUP BY word",
            f.ck.display()
        )
    };
    let result = async {
        execute_sql(&session, &sink).await.map_err(|e| e.to_string())?;
        session.query("q").unwrap().process_all_available().await.map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    session.stop_all().await.unwrap();
    result
}

/// A fixture whose query ran `batches` batches, one file each.
async fn ran(batches: usize, files_sink: bool) -> Fixture {
    let f = fixture();
    for i in 0..batches {
        add_file(&f, &format!("f{i:03}.csv"), &[&format!("w{},{}", i % 3, i)]);
    }
    start(&f, files_sink).await.unwrap();
    f
}

fn truncate(p: &Path) {
    let bytes = std::fs::read(p).unwrap();
    std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
}

fn flip(p: &Path) {
    let mut bytes = std::fs::read(p).unwrap();
    let i = bytes.len() - 2;
    bytes[i] ^= 0x20;
    std::fs::write(p, bytes).unwrap();
}

fn last_in(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files
        .sort_by_key(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('.').next()?.parse::<u64>().ok()));
    files.pop().unwrap()
}

async fn damaged(kind: &str, damage: fn(&Path), file: impl Fn(&Fixture) -> PathBuf, files_sink: bool, batches: usize) {
    let f = ran(batches, files_sink).await;
    let path = file(&f);
    damage(&path);
    // Restart with a new file waiting: the error must come before any output.
    add_file(&f, "zzz.csv", &["late,1"]);
    let e = start(&f, files_sink).await.expect_err(&format!("{kind}: a damaged checkpoint must not be accepted"));
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(e.contains(name), "{kind}: error should name {}: {e}", path.display());
    assert!(
        e.contains("delete the checkpoint") || e.contains("restore") || e.contains("new checkpoint"),
        "{kind}: error should say what to do: {e}"
    );
}

fn delete(p: &Path) {
    std::fs::remove_file(p).unwrap()
}

#[tokio::test]
async fn offset_log_truncated_flipped_deleted() {
    damaged("offset log", truncate, |f| f.ck.join("offsets/1"), false, 2).await;
    damaged("offset log", flip, |f| f.ck.join("offsets/1"), false, 2).await;
    // The latest entry gone while its commit exists.
    damaged("offset log", delete, |f| f.ck.join("offsets/1"), false, 2).await;
}

#[tokio::test]
async fn commit_log_truncated() {
    damaged("commit log", truncate, |f| f.ck.join("commits/0"), false, 2).await;
}

#[tokio::test]
async fn metadata_truncated_and_flipped() {
    damaged("metadata", truncate, |f| f.ck.join("metadata"), false, 2).await;
    damaged("metadata", flip, |f| f.ck.join("metadata"), false, 2).await;
}

#[tokio::test]
async fn state_snapshot_flipped() {
    damaged("state snapshot", flip, |f| f.ck.join("state/0/1/10.snapshot"), false, 12).await;
}

#[tokio::test]
async fn file_source_log_flipped_and_deleted() {
    damaged("file source log", flip, |f| last_in(&f.ck.join("sources/0/seen_files")), false, 2).await;
    damaged("file source log", delete, |f| last_in(&f.ck.join("sources/0/seen_files")), false, 2).await;
}

/// Deleting the latest commit entry is not damage: it is the state a crash
/// before the commit leaves, and the batch is re-run with the same offsets.
#[tokio::test]
async fn latest_commit_deleted_reruns_the_batch() {
    let f = ran(2, true).await;
    std::fs::remove_file(f.ck.join("commits/1")).unwrap();
    start(&f, true).await.unwrap();
    assert!(f.ck.join("commits/1").exists());
}

#[tokio::test]
async fn commit_log_flipped() {
    damaged("commit log", flip, |f| f.ck.join("commits/1"), false, 2).await;
}

#[tokio::test]
async fn metadata_deleted() {
    damaged("metadata", |p| std::fs::remove_file(p).unwrap(), |f| f.ck.join("metadata"), false, 2).await;
}

#[tokio::test]
async fn commit_deleted_in_the_middle() {
    // Offsets 0..2 and commits 0 and 2 but not 1: the logs disagree.
    damaged("commit gap", |p| std::fs::remove_file(p).unwrap(), |f| f.ck.join("commits/1"), false, 3).await;
}

#[tokio::test]
async fn state_delta_flipped() {
    damaged("state delta", flip, |f| f.ck.join("state/0/0/1.delta"), false, 2).await;
}

#[tokio::test]
async fn state_delta_deleted() {
    damaged("state delta", |p| std::fs::remove_file(p).unwrap(), |f| f.ck.join("state/0/1/1.delta"), false, 2).await;
}

#[tokio::test]
async fn state_snapshot_truncated() {
    // Snapshots are written every 10 versions.
    damaged("state snapshot", truncate, |f| f.ck.join("state/0/0/10.snapshot"), false, 12).await;
}

#[tokio::test]
async fn state_layout_flipped() {
    damaged("state layout", flip, |f| f.ck.join("state/0/_layout"), false, 2).await;
}

#[tokio::test]
async fn file_source_log_truncated() {
    damaged("file source log", truncate, |f| last_in(&f.ck.join("sources/0/seen_files")), false, 2).await;
}

#[tokio::test]
async fn sink_manifest_flipped() {
    let f = ran(2, true).await;
    let manifest = last_in(&f.out.join("_sluice_manifest"));
    flip(&manifest);
    let e = sluice_sinks::committed_files(f.out.to_str().unwrap()).await.unwrap_err().to_string();
    assert!(e.contains(manifest.file_name().unwrap().to_str().unwrap()) && e.contains("checksum"), "{e}");
}

#[tokio::test]
async fn log_retention_keeps_only_recent_batches_and_still_resumes() {
    let f = fixture();
    let env = Environment::default();
    let config = SluiceConfig {
        auto_trigger: false,
        checkpoint_root: f.ck.join("unused"),
        target_partitions: 2,
        ..Default::default()
    };
    let session = env.session(config, Arc::new(ManualClock::new(0)));
    execute_sql(&session, "CREATE SOURCE m (word VARCHAR, v BIGINT) WITH (connector = 'memory')").await.unwrap();
    let sql = format!(
        "CREATE SINK r WITH (connector = 'memory', output_mode = 'update', checkpoint = '{}', min_batches_to_retain = 5) AS \
         SELECT word, count(*) AS n FROM m GROUP BY word",
        f.ck.display()
    );
    execute_sql(&session, &sql).await.unwrap();
    let m = env.streams.get("m").unwrap();
    for i in 0..25 {
        m.push_rows(&[format!("w{},{i}", i % 2)]).unwrap();
        session.query("r").unwrap().process_all_available().await.unwrap();
    }
    session.stop_all().await.unwrap();
    let ids = |d: &str| -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(f.ck.join(d))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
            .collect();
        v.sort();
        v
    };
    let offsets = ids("offsets");
    assert_eq!(offsets.last(), Some(&24));
    assert!(offsets.first().is_some_and(|f| *f >= 15 && *f <= 20), "old entries purged: {offsets:?}");
    assert_eq!(ids("commits").first(), offsets.first());
    // The trimmed checkpoint still resumes with the right state.
    let session = env.session(
        SluiceConfig {
            auto_trigger: false,
            checkpoint_root: f.ck.join("unused"),
            target_partitions: 2,
            ..Default::default()
        },
        Arc::new(ManualClock::new(0)),
    );
    execute_sql(&session, "CREATE SOURCE m (word VARCHAR, v BIGINT) WITH (connector = 'memory')").await.unwrap();
    execute_sql(&session, &sql).await.unwrap();
    m.push_rows(&["w0,99"]).unwrap();
    let p = session.query("r").unwrap().process_all_available().await.unwrap();
    assert_eq!(p[0].batch_id, 25);
    let rows = env.sinks.get("r").unwrap().received_since(25);
    assert_eq!(sluice::stt::render_batches(&rows).unwrap(), vec!["w0,14"]);
}

/// Regression (issue 9, case 8): deleting an operator's `_layout` silently
/// turned the query-change check off, and the old state was reused.
#[tokio::test]
async fn state_layout_deleted() {
    damaged("state layout", delete, |f| f.ck.join("state/0/_layout"), false, 2).await;
}

/// Regression (issue 9, case 9): a state store `_metadata` recording fewer
/// partitions than the state files use lost the keys of the others.
#[tokio::test]
async fn state_partition_count_disagrees_with_the_files() {
    let f = ran(3, false).await;
    let store = sluice_engine::checkpoint::CheckpointDir::open(f.ck.join("state/0").to_str().unwrap()).unwrap();
    store.write_json("_metadata", &serde_json::json!({"num_partitions": 1})).await.unwrap();
    add_file(&f, "zzz.csv", &["late,1"]);
    let e = start(&f, false).await.expect_err("a partition count mismatch must not be accepted");
    assert!(e.contains("state/0/_metadata") && e.contains("1 partition") && e.contains("restore"), "{e}");
}

#[tokio::test]
async fn a_checkpoint_of_another_format_version_is_refused_naming_both_versions() {
    let f = ran(2, false).await;
    // The query metadata, as a later Sluice with format v2 would write it.
    let metadata = f.ck.join("metadata");
    let text = std::fs::read_to_string(&metadata).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    assert_eq!(first, "v1");
    std::fs::write(&metadata, format!("v2\n{rest}")).unwrap();
    let e = start(&f, false).await.unwrap_err();
    assert!(e.contains("metadata") && e.contains("format v2") && e.contains("reads format v1"), "{e}");
    assert!(e.contains("Sluice version that wrote") && e.contains("new checkpoint location"), "{e}");
}
