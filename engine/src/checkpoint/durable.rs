//! [`DurableLocalStore`]: the local filesystem as an object store whose
//! writes survive an OS crash or a power loss, not only a killed process.
//!
//! object_store's `LocalFileSystem` writes a staging file and renames it,
//! but never calls `fsync`: after a machine crash the rename can be on disk
//! while the data is not, or neither. Here every `put` is
//!
//! 1. write the bytes to a staging file next to the target,
//! 2. `fsync` the staging file (its data is on disk),
//! 3. rename it over the target (or hard-link it, for create-if-absent),
//! 4. `fsync` the directory (the new name is on disk),
//!
//! and returns only then. Directories it creates are synced into their
//! parents the same way. The engine awaits each write before the one that
//! refers to it (a sink's data files before its manifest entry, state files
//! before the commit log entry), so what a log entry names is always on
//! disk before the entry is.
//!
//! Reads, listings, deletes and copies are `LocalFileSystem`'s.

use std::fmt;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parking_lot::Mutex;

/// One step of a durable write, as recorded by a [`DurabilityJournal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurableOp {
    /// Bytes written to a staging file.
    WriteStaging(PathBuf),
    /// `fsync` of a file's data.
    SyncFile(PathBuf),
    /// The staging file renamed (or linked) to this target.
    Rename(PathBuf),
    /// `fsync` of a directory.
    SyncDir(PathBuf),
}

/// Records the filesystem steps of every durable write in the process, in
/// order (for tests of the write order; off unless installed).
pub type DurabilityJournal = Arc<Mutex<Vec<DurableOp>>>;

static JOURNAL: OnceLock<Mutex<Option<DurabilityJournal>>> = OnceLock::new();

static FSYNC: AtomicBool = AtomicBool::new(true);

/// Turn the `fsync` calls of durable writes off (`false`) or back on, for
/// the whole process. Writes stay atomic (staging file and rename) but may
/// be lost or reordered by an OS crash: only for benchmarks that measure
/// what durability costs, and for throwaway data.
pub fn set_fsync_enabled(enabled: bool) {
    FSYNC.store(enabled, Ordering::SeqCst);
}

fn fsync_enabled() -> bool {
    FSYNC.load(Ordering::Relaxed)
}

/// Install (or, with `None`, remove) the process-wide journal of durable
/// writes.
pub fn record_durable_writes(journal: Option<DurabilityJournal>) {
    *JOURNAL.get_or_init(|| Mutex::new(None)).lock() = journal;
}

/// Durable writes under a directory that wait before their rename (tests).
static SLOW: OnceLock<Mutex<Option<(PathBuf, std::time::Duration)>>> = OnceLock::new();

/// Make every durable write whose target is under `dir` wait `delay` before
/// it is renamed into place (`None`: off), for the whole process: a test of
/// the write order then checks that the order holds whatever the timing
/// (the wait is on the blocking pool's thread, not the caller's).
pub fn slow_down_durable_writes(slow: Option<(PathBuf, std::time::Duration)>) {
    *SLOW.get_or_init(|| Mutex::new(None)).lock() = slow;
}

fn slow_down(target: &FsPath) {
    let delay =
        SLOW.get().and_then(|cell| cell.lock().as_ref().filter(|(dir, _)| target.starts_with(dir)).map(|s| s.1));
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
}

fn record(op: DurableOp) {
    if let Some(cell) = JOURNAL.get() {
        if let Some(j) = cell.lock().as_ref() {
            j.lock().push(op);
        }
    }
}

/// A local directory as an object store with durable (`fsync`ed) writes.
#[derive(Debug)]
pub struct DurableLocalStore {
    inner: LocalFileSystem,
    root: PathBuf,
}

impl DurableLocalStore {
    /// A store rooted at the existing directory `root` (absolute).
    pub fn new(root: &FsPath) -> object_store::Result<Self> {
        Ok(Self { inner: LocalFileSystem::new_with_prefix(root)?, root: root.to_path_buf() })
    }
}

impl fmt::Display for DurableLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DurableLocalStore({})", self.root.display())
    }
}

fn io_error(path: &FsPath, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "DurableLocalStore",
        source: Box::new(std::io::Error::new(source.kind(), format!("{}: {source}", path.display()))),
    }
}

/// `fsync` a directory, so the names it holds are durable.
fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    if !fsync_enabled() {
        return Ok(());
    }
    std::fs::File::open(dir)?.sync_all()?;
    record(DurableOp::SyncDir(dir.to_path_buf()));
    Ok(())
}

/// Create `dir` and its missing parents, syncing each new directory into
/// its parent.
fn create_dirs(dir: &FsPath) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = vec![];
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.is_dir()) {
        missing.push(d);
        cur = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn durable_put(target: &FsPath, payload: &PutPayload, mode: &PutMode) -> object_store::Result<PutResult> {
    let dir = target.parent().ok_or_else(|| io_error(target, std::io::ErrorKind::InvalidInput.into()))?;
    create_dirs(dir).map_err(|e| io_error(dir, e))?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // `name#<digits>` is LocalFileSystem's staging-file name: listings skip it.
    let staging = dir.join(format!("{name}#{}", uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000_000_000));
    let cleanup = |e: std::io::Error, at: &FsPath| {
        let _ = std::fs::remove_file(&staging);
        io_error(at, e)
    };
    let mut file = std::fs::File::create_new(&staging).map_err(|e| io_error(&staging, e))?;
    payload.iter().try_for_each(|chunk| file.write_all(chunk)).map_err(|e| cleanup(e, &staging))?;
    record(DurableOp::WriteStaging(staging.clone()));
    if fsync_enabled() {
        file.sync_all().map_err(|e| cleanup(e, &staging))?;
        record(DurableOp::SyncFile(staging.clone()));
    }
    let meta = file.metadata().map_err(|e| cleanup(e, &staging))?;
    drop(file);
    slow_down(target);
    match mode {
        PutMode::Create => {
            if let Err(e) = std::fs::hard_link(&staging, target) {
                let _ = std::fs::remove_file(&staging);
                return Err(match e.kind() {
                    std::io::ErrorKind::AlreadyExists => {
                        object_store::Error::AlreadyExists { path: target.display().to_string(), source: Box::new(e) }
                    }
                    _ => io_error(target, e),
                });
            }
            let _ = std::fs::remove_file(&staging);
        }
        _ => std::fs::rename(&staging, target).map_err(|e| cleanup(e, target))?,
    }
    record(DurableOp::Rename(target.to_path_buf()));
    sync_dir(dir).map_err(|e| io_error(dir, e))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    Ok(PutResult { e_tag: Some(format!("{:x}-{:x}", mtime.as_micros(), meta.len())), version: None })
}

#[async_trait]
impl ObjectStore for DurableLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !matches!(opts.mode, PutMode::Overwrite | PutMode::Create) || !opts.attributes.is_empty() {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let target = self.inner.path_to_filesystem(location)?;
        let mode = opts.mode;
        tokio::task::spawn_blocking(move || durable_put(&target, &payload, &mode))
            .await
            .map_err(|e| object_store::Error::Generic { store: "DurableLocalStore", source: Box::new(e) })?
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn writes_sync_the_file_then_rename_then_sync_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let store = DurableLocalStore::new(&root).unwrap();
        let journal = DurabilityJournal::default();
        record_durable_writes(Some(Arc::clone(&journal)));
        store.put(&Path::from("a/b/file"), PutPayload::from_static(b"hello")).await.unwrap();
        record_durable_writes(None);
        let ops: Vec<DurableOp> = journal.lock().iter().filter(|op| op_path(op).starts_with(&root)).cloned().collect();
        let target = root.join("a/b/file");
        let pos = |wanted: &dyn Fn(&DurableOp) -> bool| ops.iter().position(wanted).expect("op missing");
        let sync_file = pos(&|op| matches!(op, DurableOp::SyncFile(_)));
        let rename = pos(&|op| *op == DurableOp::Rename(target.clone()));
        let sync_dir = pos(&|op| *op == DurableOp::SyncDir(root.join("a/b")));
        let new_dirs =
            [pos(&|op| *op == DurableOp::SyncDir(root.clone())), pos(&|op| *op == DurableOp::SyncDir(root.join("a")))];
        assert!(
            new_dirs.iter().all(|d| *d < sync_file),
            "new directories are synced into their parents first: {ops:?}"
        );
        assert!(sync_file < rename && rename < sync_dir, "{ops:?}");
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        // No staging file is left, and listings never show one.
        assert_eq!(std::fs::read_dir(root.join("a/b")).unwrap().count(), 1);
        // Create-if-absent refuses an existing file.
        let e = store
            .put_opts(
                &Path::from("a/b/file"),
                PutPayload::from_static(b"x"),
                PutOptions { mode: PutMode::Create, ..Default::default() },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, object_store::Error::AlreadyExists { .. }), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
    }

    fn op_path(op: &DurableOp) -> &FsPath {
        match op {
            DurableOp::WriteStaging(p) | DurableOp::SyncFile(p) | DurableOp::Rename(p) | DurableOp::SyncDir(p) => p,
        }
    }
}
