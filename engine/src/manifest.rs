//! The manifest log of a `files` sink output directory, and how readers find
//! the committed data files in it.
//!
//! # Format
//!
//! Like Spark's `_spark_metadata`, the output directory holds a manifest log
//! next to the data files:
//!
//! ```text
//! <path>/
//!   part-0-<uuid>.parquet            data files of batch 0
//!   word=a/part-1-<uuid>.parquet     data files of batch 1 (partition_by = 'word')
//!   _sluice_manifest/
//!     0                              manifest entry of batch 0
//!     1                              manifest entry of batch 1
//! ```
//!
//! There is one manifest entry per committed batch, named by the batch id
//! (decimal, no padding). Entries are written with
//! [`CheckpointDir::write_json`]: atomically, as three lines
//!
//! ```text
//! v1
//! crc32:<8 hex digits: CRC-32 of the JSON body>
//! {"batch_id":1,"format":"parquet","files":[{"path":"word=a/part-1-<uuid>.parquet","rows":2,"size":812}],"query_id":"<uuid>"}
//! ```
//!
//! `files[].path` is relative to the output directory (`/`-separated);
//! `rows` and `size` (bytes) are informational; `query_id` is the id of the
//! query (checkpoint) that wrote the batch. A batch that produced no rows
//! has an entry with an empty `files` list.
//!
//! A batch is committed exactly when its entry exists. Data files are written
//! first, under unique names, so files of a batch that crashed before its
//! entry was written are not part of the output: readers must list the
//! output through [`committed_files`] (or the manifest) and ignore every
//! other file. The `files` source and `CREATE EXTERNAL TABLE` (see
//! [`crate::committed_table`]) do so for any directory holding a
//! `_sluice_manifest` directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};

/// Name of the manifest directory inside the output directory.
pub const MANIFEST_DIR: &str = "_sluice_manifest";

/// One data file committed by a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// Number of rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub size: u64,
}

/// The manifest entry of one committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Batch id.
    pub batch_id: u64,
    /// Format of the data files (`parquet`, `csv` or `json`).
    pub format: String,
    /// Data files the batch committed (empty for a batch without rows).
    pub files: Vec<ManifestFile>,
    /// Id of the query that committed the batch (absent in entries written
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,
}

/// Turn an output `path` option (local path or `file://` URL) into a local
/// path, or an error for other URL schemes and empty paths.
pub fn local_path(path: &str) -> Result<PathBuf> {
    let local = path.strip_prefix("file://").unwrap_or(path);
    if local.contains("://") {
        return Err(SluiceError::InvalidOption {
            option: "path".into(),
            value: path.into(),
            reason: "only local paths and file:// URLs are supported for files output directories in this build".into(),
        });
    }
    if local.trim().is_empty() {
        return Err(SluiceError::InvalidOption {
            option: "path".into(),
            value: path.into(),
            reason: "the files sink needs an output directory, e.g. path = '/data/out'".into(),
        });
    }
    Ok(PathBuf::from(local))
}

/// Whether the local directory `dir` is a files-sink output directory, i.e.
/// holds a [`MANIFEST_DIR`] directory. Readers of such a directory must only
/// read its committed files.
pub fn has_manifest(dir: &Path) -> bool {
    dir.join(MANIFEST_DIR).is_dir()
}

/// The manifest entries of every committed batch of the local output
/// directory `dir`, by ascending batch id. A directory without a manifest
/// has no committed batches; a missing directory is an error.
pub async fn read_entries(dir: &Path) -> Result<Vec<ManifestEntry>> {
    if !dir.is_dir() {
        return Err(SluiceError::InvalidOption {
            option: "path".into(),
            value: dir.display().to_string(),
            reason: "the output directory does not exist".into(),
        });
    }
    let manifest = CheckpointDir::open(&dir.display().to_string())?.child(MANIFEST_DIR);
    let mut entries = Vec::new();
    for batch_id in manifest.list_numbered().await? {
        if let Some(entry) = manifest.read_json::<ManifestEntry>(&batch_id.to_string()).await? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// The data files of the committed batches of the local output directory
/// `dir`, as absolute paths, by batch id then in write order.
pub async fn committed_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = read_entries(dir).await?;
    let root = std::fs::canonicalize(dir)?;
    Ok(entries.into_iter().flat_map(|entry| entry.files).map(|file| root.join(file.path)).collect())
}

/// The manifest entries of every committed batch of the output directory
/// `path` (local path or `file://` URL), by ascending batch id. An output
/// directory without a manifest has no committed batches.
pub async fn committed_entries(path: &str) -> Result<Vec<ManifestEntry>> {
    read_entries(&local_path(path)?).await
}

/// The data files of the committed batches of the output directory `path`
/// (local path or `file://` URL), as absolute local paths, by batch id then
/// in write order. Files of uncommitted (crashed) batches are not listed.
pub async fn committed_files(path: &str) -> Result<Vec<String>> {
    let paths = committed_paths(&local_path(path)?).await?;
    Ok(paths.into_iter().map(|p| p.display().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_in_batch_order() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!has_manifest(tmp.path()));
        assert!(committed_files(tmp.path().to_str().unwrap()).await.unwrap().is_empty());
        let log = CheckpointDir::open(tmp.path().to_str().unwrap()).unwrap().child(MANIFEST_DIR);
        let file = |p: &str| ManifestFile { path: p.into(), rows: 1, size: 1 };
        for (id, files) in [(10, vec![file("k=1/c.csv")]), (2, vec![file("a.csv"), file("b.csv")])] {
            log.write_json(
                &id.to_string(),
                &ManifestEntry { batch_id: id, format: "csv".into(), files, query_id: None },
            )
            .await
            .unwrap();
        }
        assert!(has_manifest(tmp.path()));
        let url = format!("file://{}", tmp.path().display());
        let ids: Vec<u64> = committed_entries(&url).await.unwrap().iter().map(|e| e.batch_id).collect();
        assert_eq!(ids, vec![2, 10]);
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let files = committed_files(&url).await.unwrap();
        let expected: Vec<String> =
            ["a.csv", "b.csv", "k=1/c.csv"].iter().map(|f| root.join(f).display().to_string()).collect();
        assert_eq!(files, expected);
        let e = committed_files("s3://bucket/x").await.unwrap_err().to_string();
        assert!(e.contains("file://"), "{e}");
        let e = committed_files(tmp.path().join("nope").to_str().unwrap()).await.unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
