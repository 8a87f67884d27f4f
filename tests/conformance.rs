//! The stream-test suite as a `cargo test` target: every `*.stt` file under
//! `tests/stt/` is its own test case (the Spark-generated conformance suite
//! is copied in `tests/stt/conformance/`). Files listed in
//! `tests/stt/not_yet_passing.txt` must fail; a listed file that passes
//! fails the run, so the list only shrinks. The copy must match
//! `../shared/conformance/` when that directory exists.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use sluice::stt::{collect_stt_files, run_file, NotYetPassing, Outcome, RunOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The copy in tests/stt/conformance must equal ../shared/conformance.
fn check_copy() -> Result<(), Failed> {
    let shared = root().join("../shared/conformance");
    if !shared.is_dir() {
        return Ok(());
    }
    let copy = root().join("tests/stt/conformance");
    let names = |dir: &Path| -> Result<Vec<String>, Failed> {
        let files = collect_stt_files(&[dir.to_path_buf()])?;
        Ok(files.iter().filter_map(|f| f.file_name()?.to_str().map(String::from)).collect())
    };
    let (a, b) = (names(&shared)?, names(&copy)?);
    if a != b {
        return Err(format!("tests/stt/conformance differs from ../shared/conformance (files {a:?} vs {b:?}); run scripts/sync-conformance.sh").into());
    }
    for name in a {
        let (x, y) = (std::fs::read(shared.join(&name)), std::fs::read(copy.join(&name)));
        if x.ok() != y.ok() {
            return Err(format!(
                "tests/stt/conformance/{name} differs from ../shared/conformance; run scripts/sync-conformance.sh"
            )
            .into());
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let list = match NotYetPassing::load(&root().join("tests/stt/not_yet_passing.txt")) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let files = match collect_stt_files(&[root().join("tests/stt")]) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let handle = runtime.handle().clone();
    let mut trials = vec![Trial::test("conformance_copy_matches_shared", check_copy)];
    for (mode, restart) in [("", false), ("restart_every_batch/", true)] {
        for file in &files {
            let rel = file.strip_prefix(root().join("tests/stt")).unwrap_or(file).display().to_string();
            let listed = list.reason(file).map(String::from);
            let file = file.clone();
            let handle = handle.clone();
            trials.push(Trial::test(format!("{mode}{rel}"), move || {
                let result = handle.block_on(run_file(&file, RunOptions { restart_every_batch: restart }));
                match sluice::stt::classify(result, listed.as_deref()) {
                    Outcome::Passed | Outcome::ExpectedFailure(_) => Ok(()),
                    Outcome::Failed(e) => Err(e.into()),
                    Outcome::UnexpectedPass => {
                        Err("passes but is listed in tests/stt/not_yet_passing.txt: remove it from the list".into())
                    }
                }
            }));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    eprintln!(
        "stream tests: {} passed, {} failed ({} files listed as not yet passing)",
        conclusion.num_passed,
        conclusion.num_failed,
        list.len()
    );
    conclusion.exit();
}
