//! `sluice test`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice::stt::{collect_stt_files, NotYetPassing, Outcome, RunOptions, SuiteReport};

/// Run stream-test files and print one line per file plus a summary.
pub async fn test(paths: &[PathBuf], restart_every_batch: bool, list: &Path) -> Result<ExitCode, String> {
    let files = collect_stt_files(paths)?;
    let list = NotYetPassing::load(list)?;
    let report = SuiteReport::run(&files, &list, RunOptions { restart_every_batch }).await;
    for (file, outcome) in &report.results {
        let name = file.display();
        match outcome {
            Outcome::Passed => println!("PASS {name}"),
            Outcome::Failed(e) => println!("FAIL {name}: {e}"),
            Outcome::ExpectedFailure(reason) => println!("NOT YET {name} (listed: {reason})"),
            Outcome::UnexpectedPass => {
                println!("FAIL {name}: passes but is listed as not yet passing; remove it from the list")
            }
        }
    }
    println!("{}", report.summary());
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
