//! Running many files, with the checked-in list of files not yet passing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::run::{run_file, RunOptions};

/// The checked-in list of files not yet passed: one file name per line,
/// then its reason (`name.stt  reason...`); `#` starts a comment.
#[derive(Debug, Clone, Default)]
pub struct NotYetPassing {
    entries: BTreeMap<String, String>,
}

impl NotYetPassing {
    /// Load the list (a missing file is an empty list).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut entries = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            if reason.trim().is_empty() {
                return Err(format!("{}:{}: '{name}' has no reason", path.display(), n + 1));
            }
            entries.insert(name.to_string(), reason.trim().to_string());
        }
        Ok(Self { entries })
    }

    /// The reason a file is listed, by file name.
    pub fn reason(&self, file: &Path) -> Option<&str> {
        let name = file.file_name()?.to_str()?;
        self.entries.get(name).map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed (and is not listed).
    Failed(String),
    /// It failed and is listed as not yet passing, with the list's reason.
    ExpectedFailure(String),
    /// It is listed as not yet passing but passed: the list must shrink.
    UnexpectedPass,
}

impl Outcome {
    /// Whether this outcome is acceptable.
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Passed | Outcome::ExpectedFailure(_))
    }
}

/// Results of a suite run.
#[derive(Debug, Default)]
pub struct SuiteReport {
    /// Each file with its outcome.
    pub results: Vec<(PathBuf, Outcome)>,
}

impl SuiteReport {
    /// Run every file.
    pub async fn run(files: &[PathBuf], list: &NotYetPassing, options: RunOptions) -> Self {
        let mut results = vec![];
        for f in files {
            let outcome = classify(run_file(f, options).await, list.reason(f));
            results.push((f.clone(), outcome));
        }
        Self { results }
    }

    /// `N passed, M failed` (listed files that fail count as neither).
    pub fn summary(&self) -> String {
        let passed = self.results.iter().filter(|(_, o)| *o == Outcome::Passed).count();
        let failed = self.results.iter().filter(|(_, o)| !o.ok()).count();
        let listed = self.results.iter().filter(|(_, o)| matches!(o, Outcome::ExpectedFailure(_))).count();
        if listed > 0 {
            format!("{listed} listed as not yet passing\n{passed} passed, {failed} failed")
        } else {
            format!("{passed} passed, {failed} failed")
        }
    }

    /// Whether every outcome is acceptable.
    pub fn ok(&self) -> bool {
        self.results.iter().all(|(_, o)| o.ok())
    }
}

/// Decide a file's outcome from its result and its listing.
pub fn classify(result: Result<(), String>, listed: Option<&str>) -> Outcome {
    match (result, listed) {
        (Ok(()), None) => Outcome::Passed,
        (Ok(()), Some(_)) => Outcome::UnexpectedPass,
        (Err(e), None) => Outcome::Failed(e),
        (Err(_), Some(reason)) => Outcome::ExpectedFailure(reason.to_string()),
    }
}

/// Every `*.stt` file under the given files and directories, sorted.
pub fn collect_stt_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(dir) = stack.pop() {
                let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
                for e in entries.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|x| x == "stt") {
                        out.push(path);
                    }
                }
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("no such file or directory: {}", p.display()));
        }
    }
    out.sort();
    Ok(out)
}
