//! The crash-restart harness (tests/crash/crash_test.sh) in a bounded form:
//! a real `sluice run` process killed at random moments and at every crash
//! point, restarted on the same checkpoints; its committed output must equal
//! an uninterrupted run's, with nothing lost and nothing duplicated.

use std::path::Path;
use std::process::Command;

fn harness(args: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("tests/crash/crash_test.sh"))
        .args(["--bin", env!("CARGO_BIN_EXE_sluice")])
        .args(args)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.success(), stdout.lines().last().unwrap_or_default().to_string())
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in '{line}'"))
}

#[test]
fn kill_and_restart_loses_and_duplicates_nothing() {
    let (ok, line) = harness(&["--cycles", "21", "--files", "24", "--rows", "20", "--seed", "7"]);
    assert!(ok, "harness failed: {line}");
    assert_eq!(field(&line, "cycles"), 21);
    assert!(field(&line, "kills") >= 14, "the process must really be killed: {line}");
    assert_eq!(field(&line, "rows_in"), 480);
    assert!(field(&line, "rows_out") > 400, "{line}");
    assert_eq!((field(&line, "lost"), field(&line, "duplicated")), (0, 0), "{line}");
}

/// The same with the state checkpointed every third batch: restarts
/// replay the batches since the last state checkpoint, killed at random
/// moments and at every crash point too.
#[test]
fn kill_and_restart_with_state_checkpoints_every_third_batch_loses_and_duplicates_nothing() {
    let (ok, line) =
        harness(&["--cycles", "21", "--files", "24", "--rows", "20", "--seed", "11", "--state-every", "3"]);
    assert!(ok, "harness failed: {line}");
    assert!(field(&line, "kills") >= 14, "the process must really be killed: {line}");
    assert_eq!(field(&line, "rows_in"), 480);
    assert!(field(&line, "rows_out") > 400, "{line}");
    assert_eq!((field(&line, "lost"), field(&line, "duplicated")), (0, 0), "{line}");
}

#[test]
fn the_checker_sees_a_lost_batch() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("work");
    let (ok, line) = harness(&["--cycles", "3", "--files", "6", "--rows", "20", "--keep", keep.to_str().unwrap()]);
    assert!(ok, "{line}");
    // Drop one committed batch of the ETL output: the checker must count its rows as lost.
    // Only entries named by a batch id are commits (a kill can leave a
    // half-written temporary entry beside them, which readers ignore).
    let manifest = keep.join("out/etl/_sluice_manifest");
    let committed =
        |p: &Path| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
    let first = std::fs::read_dir(&manifest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| committed(p))
        .find(|p| std::fs::read_to_string(p).map(|t| t.contains(".csv")).unwrap_or(false));
    std::fs::remove_file(first.expect("a non-empty committed batch")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tests/crash/check.py"))
        .args([keep.join("out").to_str().unwrap(), keep.join("ref/out").to_str().unwrap(), "120", "3", "3"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{line}");
    assert!(field(line.trim(), "lost") > 0, "{line}");
}

/// The Delta harness, bounded: files -> Delta (appended and merged), killed
/// and restarted; the tables are read back by the `deltalake` Python
/// package (an independent reader).
#[cfg(feature = "delta")]
#[test]
fn delta_kill_and_restart_loses_and_duplicates_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("tests/crash/delta_crash_test.sh"))
        .args(["--bin", env!("CARGO_BIN_EXE_sluice")])
        .args(["--cycles", "16", "--files", "24", "--rows", "10", "--seed", "5"])
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = stdout.lines().last().unwrap_or_default().to_string();
    assert!(out.status.success(), "harness failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(field(&line, "kills") >= 8, "the process must really be killed: {line}");
    assert_eq!(field(&line, "rows_in"), 240);
    assert_eq!((field(&line, "lost"), field(&line, "duplicated")), (0, 0), "{line}");
}
