//! The stream-test runner itself: it must catch wrong expectations.

use std::path::Path;

use sluice::stt::{classify, run_file, Outcome, RunOptions};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const BASE: &str = "statement ok\nCREATE SOURCE s (a BIGINT, b VARCHAR) WITH (connector = 'memory')\n\nstatement ok\nCREATE SINK o WITH (connector = 'memory', checkpoint = '$TMP/ck') AS SELECT a * 2 AS d, b FROM s\n\ninsert s\n1,x\n2,\"y, z\"\n\ntrigger\n\n";

#[tokio::test]
async fn passes_and_fails_for_the_right_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        write(dir.path(), "good.stt", &format!("{BASE}check o\n----\n4,\"y, z\"\n2,x\n\ntrigger\n\ncheck o\n----\n"));
    assert_eq!(run_file(&good, RunOptions::default()).await, Ok(()));
    assert_eq!(run_file(&good, RunOptions { restart_every_batch: true }).await, Ok(()));

    let wrong = write(dir.path(), "wrong.stt", &format!("{BASE}check o\n----\n2,x\n"));
    let e = run_file(&wrong, RunOptions::default()).await.unwrap_err();
    assert!(e.contains("rows differ") && e.contains("line 13"), "{e}");

    let ordered = write(dir.path(), "ordered.stt", &format!("{BASE}check o ordered\n----\n4,\"y, z\"\n2,x\n"));
    assert!(run_file(&ordered, RunOptions::default()).await.is_err());

    let unknown = write(dir.path(), "unknown.stt", "frobnicate\n");
    assert!(run_file(&unknown, RunOptions::default()).await.unwrap_err().contains("unknown directive"));

    let error_ok = write(dir.path(), "err.stt", "statement error connector\nCREATE SOURCE x (a INT)\n");
    assert_eq!(run_file(&error_ok, RunOptions::default()).await, Ok(()));
    let error_wrong = write(dir.path(), "err2.stt", "statement error banana\nCREATE SOURCE x (a INT)\n");
    assert!(run_file(&error_wrong, RunOptions::default()).await.is_err());
}

#[test]
fn listed_files_must_fail() {
    assert_eq!(classify(Ok(()), Some("reason")), Outcome::UnexpectedPass);
    assert!(!Outcome::UnexpectedPass.ok());
    assert_eq!(classify(Err("x".into()), Some("r")), Outcome::ExpectedFailure("r".into()));
    assert_eq!(classify(Err("x".into()), None), Outcome::Failed("x".into()));
}
