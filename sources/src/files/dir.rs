//! The watched directory of the `files` source: listing, reading and
//! cleaning files through an [`ObjectStore`] (the local file system in this
//! build).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_engine::{manifest, Result, SluiceError};
use tracing::debug;

use super::log::SeenFile;

/// The candidate files of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The files.
    pub files: Vec<SeenFile>,
    /// `true` when the directory is a `files` sink output and `files` are
    /// its committed files in manifest order (keep that order); `false`
    /// when they must be ordered by modification time.
    pub manifest_order: bool,
}

/// Turn the `path` (or `source_archive_dir`) option into a local path:
/// plain paths and `file://` URLs are accepted.
pub fn local_path(option: &str, value: &str) -> Result<PathBuf> {
    let bad = |reason: String| SluiceError::InvalidOption { option: option.into(), value: value.into(), reason };
    if value.trim().is_empty() {
        return Err(bad("must not be empty".into()));
    }
    if value.starts_with("file://") {
        let url = url::Url::parse(value).map_err(|e| bad(format!("not a valid file:// URL: {e}")))?;
        return url.to_file_path().map_err(|()| bad("not a local file:// URL (expected file:///absolute/path)".into()));
    }
    if let Some((scheme, _)) = value.split_once("://") {
        return Err(bad(format!(
            "'{scheme}://' locations are not supported in this build; use a local path or a file:// URL"
        )));
    }
    Ok(PathBuf::from(value))
}

/// A directory watched by a `files` source.
#[derive(Debug)]
pub struct SourceDir {
    source_name: String,
    store: Arc<dyn ObjectStore>,
    local: PathBuf,
    display: String,
    /// The directory as an object-store path, once it was seen to exist.
    root: Option<Path>,
}

impl SourceDir {
    /// A directory (that may not exist yet) for the source `source_name`.
    pub fn new(source_name: &str, local: PathBuf) -> Self {
        let display = std::path::absolute(&local).unwrap_or_else(|_| local.clone()).display().to_string();
        Self { source_name: source_name.into(), store: Arc::new(LocalFileSystem::new()), local, display, root: None }
    }

    fn error(&self, reason: String) -> SluiceError {
        SluiceError::Source { source_name: self.source_name.clone(), reason }
    }

    /// Human-readable path of a file of the directory.
    pub fn display_file(&self, rel: &str) -> String {
        format!("{}/{}", self.display.trim_end_matches('/'), rel)
    }

    /// The directory, resolved; an error naming it when it does not exist.
    fn root(&mut self) -> Result<Path> {
        let is_dir = std::fs::metadata(&self.local).map(|m| m.is_dir()).unwrap_or(false);
        if !is_dir {
            return Err(self.error(match self.root {
                Some(_) => format!(
                    "the directory '{}' no longer exists (deleted or moved?); restore it, or recreate it to \
                     continue with new files",
                    self.display
                ),
                None => format!(
                    "the directory '{}' does not exist or is not a directory; create it (for example \
                     `mkdir -p {}`) or fix the `path` option",
                    self.display, self.display
                ),
            }));
        }
        if self.root.is_none() {
            let root = Path::from_filesystem_path(&self.local)
                .map_err(|e| self.error(format!("cannot use the directory '{}': {e}", self.display)))?;
            self.root = Some(root);
        }
        Ok(self.root.clone().unwrap_or_default())
    }

    fn full(&mut self, rel: &str) -> Result<Path> {
        let root = self.root()?;
        let text = if root.as_ref().is_empty() { rel.to_string() } else { format!("{}/{rel}", root.as_ref()) };
        Path::parse(&text).map_err(|e| self.error(format!("bad file path '{rel}': {e}")))
    }

    /// The candidate files of the directory. For a `files` sink output
    /// directory (one holding `_sluice_manifest/`): the data files of its
    /// committed batches, in manifest order (files of uncommitted batches are
    /// ignored). Otherwise every visible file under the directory
    /// (recursively): files and folders whose name starts with `.` or `_`
    /// (hidden files, `_SUCCESS`, `_spark_metadata`) are skipped.
    pub async fn list(&mut self) -> Result<Listing> {
        let root = self.root()?;
        let items: Vec<_> = self.store.list(Some(&root)).try_collect().await?;
        let manifest = manifest::has_manifest(&self.local);
        let mut out = Vec::with_capacity(items.len());
        for meta in items {
            let Some(parts) = meta.location.prefix_match(&root) else { continue };
            let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
            let hidden = parts.iter().any(|p| p.starts_with('.') || p.starts_with('_'));
            // Committed files are named by the manifest, whatever their names.
            let skip = if manifest { parts.first().is_some_and(|p| p == manifest::MANIFEST_DIR) } else { hidden };
            if parts.is_empty() || skip {
                continue;
            }
            out.push(SeenFile {
                path: parts.join("/"),
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            });
        }
        if !manifest {
            return Ok(Listing { files: out, manifest_order: false });
        }
        let mut on_disk: HashMap<String, SeenFile> = out.into_iter().map(|f| (f.path.clone(), f)).collect();
        let mut files = Vec::new();
        for entry in manifest::read_entries(&self.local).await? {
            for file in entry.files {
                match on_disk.remove(&file.path) {
                    Some(found) => files.push(found),
                    None => debug!(source = %self.source_name, file = %self.display_file(&file.path),
                        batch_id = entry.batch_id, "committed file not on disk (cleaned up?), skipped"),
                }
            }
        }
        Ok(Listing { files, manifest_order: true })
    }

    /// The bytes of a file (relative path). A missing file is an error
    /// naming it.
    pub async fn read(&mut self, rel: &str) -> Result<Bytes> {
        let path = self.full(rel)?;
        match self.store.get(&path).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(self.vanished(rel)),
            Err(e) => Err(e.into()),
        }
    }

    /// The local path of a file of the directory, for readers that fetch
    /// only the byte ranges they need (Parquet column chunks); an error
    /// naming it when it has disappeared.
    pub fn local_file(&mut self, rel: &str) -> Result<PathBuf> {
        self.root()?;
        let path = self.local.join(rel);
        if !path.is_file() {
            return Err(self.vanished(rel));
        }
        Ok(path)
    }

    fn vanished(&self, rel: &str) -> SluiceError {
        self.error(format!(
            "the file '{}' was assigned to a batch but has disappeared; files must not be removed from the \
             directory before the batch that reads them is committed",
            self.display_file(rel)
        ))
    }

    /// Delete a file (already gone is fine).
    pub async fn delete(&mut self, rel: &str) -> Result<()> {
        let path = self.full(rel)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Move a file to `archive` (an absolute directory), keeping its path
    /// relative to the source directory. Already gone is fine.
    pub async fn archive(&mut self, rel: &str, archive: &std::path::Path) -> Result<()> {
        let from = self.full(rel)?;
        let archive_root = Path::from_absolute_path(archive)
            .map_err(|e| self.error(format!("cannot use the archive directory '{}': {e}", archive.display())))?;
        let to = Path::parse(format!("{}/{rel}", archive_root.as_ref()))
            .map_err(|e| self.error(format!("bad archive path for '{rel}': {e}")))?;
        match self.store.rename(&from, &to).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(local_path("path", "/tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        assert_eq!(local_path("path", "file:///tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        let e = local_path("path", "s3://bucket/x").unwrap_err().to_string();
        assert!(e.contains("not supported in this build"), "{e}");
        assert!(local_path("path", " ").is_err());
    }

    #[tokio::test]
    async fn lists_visible_files_recursively() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::create_dir_all(p.join("k=1")).unwrap();
        std::fs::create_dir_all(p.join("_spark_metadata")).unwrap();
        std::fs::write(p.join("a.csv"), "1\n").unwrap();
        std::fs::write(p.join("k=1/b.csv"), "2\n").unwrap();
        std::fs::write(p.join(".hidden"), "x").unwrap();
        std::fs::write(p.join("_SUCCESS"), "").unwrap();
        std::fs::write(p.join("_spark_metadata/0"), "x").unwrap();
        let mut dir = SourceDir::new("s", p.to_path_buf());
        let listing = dir.list().await.unwrap();
        assert!(!listing.manifest_order);
        let mut names: Vec<String> = listing.files.into_iter().map(|f| f.path).collect();
        names.sort();
        assert_eq!(names, vec!["a.csv".to_string(), "k=1/b.csv".to_string()]);
        assert_eq!(&dir.read("k=1/b.csv").await.unwrap()[..], b"2\n");
    }

    #[tokio::test]
    async fn missing_directory_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let mut dir = SourceDir::new("s", missing.clone());
        let e = dir.list().await.unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("nope") && e.contains("create it"), "{e}");
        std::fs::create_dir(&missing).unwrap();
        assert!(dir.list().await.unwrap().files.is_empty());
        std::fs::remove_dir(&missing).unwrap();
        let e = dir.list().await.unwrap_err().to_string();
        assert!(e.contains("no longer exists"), "{e}");
    }
}
