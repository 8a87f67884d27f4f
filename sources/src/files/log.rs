//! The seen-files log of the `files` source (Spark's `FileStreamSourceLog`).
//!
//! One numbered JSON file per log entry, under the source's metadata
//! directory; entry `N` lists the files assigned to offset `{"log_offset": N}`.
//! An entry is written before its offset is handed to the engine, so after a
//! restart every file is either in the log (and belongs to exactly one
//! offset) or is still new: no file is read twice and none is skipped.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sluice_engine::checkpoint::CheckpointDir;
use sluice_engine::{Result, SluiceError};
use tokio::task::JoinHandle;

/// One file assigned to a log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenFile {
    /// Path relative to the source directory (object-store encoding).
    pub path: String,
    /// Size in bytes when listed.
    pub size: u64,
    /// Modification time when listed (ms since the epoch).
    pub modified_ms: i64,
}

/// One log entry: the files of one offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The entry number (the `log_offset`).
    pub log_offset: u64,
    /// The files, in the order they are read.
    pub files: Vec<SeenFile>,
}

/// The seen-files log, loaded in memory.
#[derive(Debug)]
pub struct SeenFilesLog {
    dir: CheckpointDir,
    entries: BTreeMap<u64, LogEntry>,
    seen: HashSet<String>,
}

impl SeenFilesLog {
    /// Load every entry found in `dir`.
    pub async fn load(dir: CheckpointDir) -> Result<Self> {
        let mut entries = BTreeMap::new();
        let mut seen = HashSet::new();
        for id in dir.list_numbered().await? {
            let entry: LogEntry = dir.read_json(&id.to_string()).await?.ok_or_else(|| SluiceError::Checkpoint {
                path: format!("{}/{id}", dir.location()),
                reason: "listed but unreadable".into(),
            })?;
            if entry.log_offset != id {
                return Err(SluiceError::Checkpoint {
                    path: format!("{}/{id}", dir.location()),
                    reason: format!(
                        "holds log entry {} instead of {id}; the seen-files log is damaged",
                        entry.log_offset
                    ),
                });
            }
            seen.extend(entry.files.iter().map(|f| f.path.clone()));
            entries.insert(id, entry);
        }
        Ok(Self { dir, entries, seen })
    }

    /// Where the log lives.
    pub fn location(&self) -> &str {
        self.dir.location()
    }

    /// The highest entry number, if any.
    pub fn max_offset(&self) -> Option<u64> {
        self.entries.keys().next_back().copied()
    }

    /// Whether a file was already assigned to an entry.
    pub fn contains(&self, path: &str) -> bool {
        self.seen.contains(path)
    }

    /// Entry `id`, if written.
    pub fn entry(&self, id: u64) -> Option<&LogEntry> {
        self.entries.get(&id)
    }

    /// Add a new entry (the next number) and remember its files; its file
    /// is written, durably, by the returned task.
    pub fn append(&mut self, files: Vec<SeenFile>) -> (u64, JoinHandle<Result<()>>) {
        let id = self.max_offset().map_or(0, |m| m + 1);
        let entry = LogEntry { log_offset: id, files };
        let (dir, written) = (self.dir.clone(), entry.clone());
        let write = tokio::spawn(async move { dir.write_json(&written.log_offset.to_string(), &written).await });
        self.seen.extend(entry.files.iter().map(|f| f.path.clone()));
        self.entries.insert(id, entry);
        (id, write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn append_and_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::open(tmp.path().to_str().unwrap()).unwrap();
        let mut log = SeenFilesLog::load(dir.clone()).await.unwrap();
        assert_eq!(log.max_offset(), None);
        let f = |p: &str| SeenFile { path: p.into(), size: 1, modified_ms: 2 };
        let (first, write) = log.append(vec![f("a.csv")]);
        write.await.unwrap().unwrap();
        let (second, write) = log.append(vec![f("b.csv"), f("c.csv")]);
        write.await.unwrap().unwrap();
        assert_eq!((first, second), (0, 1));
        let again = SeenFilesLog::load(dir).await.unwrap();
        assert_eq!(again.max_offset(), Some(1));
        assert!(again.contains("c.csv") && !again.contains("d.csv"));
        assert_eq!(again.entry(1).unwrap().files.len(), 2);
    }
}
