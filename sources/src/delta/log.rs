//! Reading a Delta table's transaction log: the data files each commit adds
//! and removes, and the table's files as of a version.
//!
//! Commit `v` is `_delta_log/<v, 20 digits>.json`, one action per line. The
//! source needs the `add` and `remove` actions (path, partition values,
//! whether they change data) and the commit's operation, for errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_engine::{Result, SluiceError};

/// A data file added by a commit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddFile {
    /// Relative to the table root (URL-encoded), or absolute.
    pub path: String,
    /// Partition column -> value (`None`: NULL), as strings.
    #[serde(default)]
    pub partition_values: BTreeMap<String, Option<String>>,
    /// Whether the add changes the table's data (false for compaction).
    #[serde(default = "yes")]
    pub data_change: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoveFile {
    path: String,
    #[serde(default = "yes")]
    data_change: bool,
}

/// What one commit did to the data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Files added, in log order.
    pub adds: Vec<AddFile>,
    /// Paths of files removed with `dataChange` (a delete, update, merge or
    /// overwrite; compaction removes without data change).
    pub data_removes: Vec<String>,
    /// Paths of every file removed (with or without data change).
    pub removes: Vec<String>,
    /// The commit's operation (`WRITE`, `MERGE`, ...), if recorded.
    pub operation: Option<String>,
}

/// A table's log on the local file system.
#[derive(Debug, Clone)]
pub struct DeltaLog {
    root: PathBuf,
}

impl DeltaLog {
    /// The log of the table at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The table directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self) -> PathBuf {
        self.root.join("_delta_log")
    }

    /// The versions whose commit files are present, ascending.
    pub fn versions(&self) -> Result<Vec<u64>> {
        let dir = self.dir();
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            SluiceError::Plan(format!(
                "{} is not a Delta table ({}: {e}); create it first (a delta sink writes one), or fix the path",
                self.root.display(),
                dir.display()
            ))
        })?;
        let mut out: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".json")?;
                (stem.len() == 20).then(|| stem.parse().ok()).flatten()
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The latest version, or `None` for a directory with no commit.
    pub fn latest(&self) -> Result<Option<u64>> {
        Ok(self.versions()?.last().copied())
    }

    /// Read commit `version`.
    pub fn commit(&self, version: u64) -> Result<Commit> {
        let path = self.dir().join(format!("{version:020}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            SluiceError::Plan(format!(
                "cannot read version {version} of the Delta table at {} ({}: {e}): its log was cleaned up or \
                 damaged; read from a later version (starting_version) or restore the log",
                self.root.display(),
                path.display()
            ))
        })?;
        let mut commit = Commit::default();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |e: serde_json::Error| {
                SluiceError::Plan(format!("{}:{}: not a Delta log action: {e}", path.display(), n + 1))
            };
            let action: serde_json::Value = serde_json::from_str(line).map_err(bad)?;
            if let Some(add) = action.get("add") {
                commit.adds.push(serde_json::from_value(add.clone()).map_err(bad)?);
            } else if let Some(remove) = action.get("remove") {
                let r: RemoveFile = serde_json::from_value(remove.clone()).map_err(bad)?;
                if r.data_change {
                    commit.data_removes.push(r.path.clone());
                }
                commit.removes.push(r.path);
            } else if let Some(info) = action.get("commitInfo") {
                commit.operation = info.get("operation").and_then(|o| o.as_str()).map(String::from);
            }
        }
        Ok(commit)
    }

    /// The table's data files as of `version`, by replaying its commits from
    /// version 0 (in the order they were added).
    pub fn snapshot(&self, version: u64) -> Result<Vec<AddFile>> {
        let versions = self.versions()?;
        if versions.first() != Some(&0) {
            return Err(SluiceError::Plan(format!(
                "the Delta table at {} no longer has the start of its log (its earliest commit is {}): a snapshot \
                 cannot be read from the log alone; read its changes from starting_version = {} on",
                self.root.display(),
                versions.first().map_or("none".to_string(), u64::to_string),
                versions.first().copied().unwrap_or(0)
            )));
        }
        let mut files: Vec<AddFile> = vec![];
        for v in versions.into_iter().filter(|v| *v <= version) {
            let c = self.commit(v)?;
            let removed: std::collections::HashSet<&String> = c.removes.iter().collect();
            files.retain(|f| !removed.contains(&f.path));
            files.extend(c.adds);
        }
        Ok(files)
    }

    /// The absolute location of a file the log names.
    pub fn file_path(&self, path: &str) -> PathBuf {
        let decoded = percent_decode(path);
        match decoded.strip_prefix("file://") {
            Some(abs) => PathBuf::from(abs),
            None if decoded.starts_with('/') => PathBuf::from(decoded),
            None => self.root.join(decoded),
        }
    }
}

/// Decode `%XX` escapes (Delta log paths are URL-encoded).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
