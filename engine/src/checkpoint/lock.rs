//! [`CheckpointLock`]: one running query per checkpoint.
//!
//! Two queries on one checkpoint would interleave their offset and commit
//! logs and corrupt each other's state. A query takes the lock file `_lock`
//! in its checkpoint before it reads anything there, with an atomic
//! create-if-absent write, and removes it when it terminates. The file
//! names its owner: query name, process id, host and the process's start
//! time. A lock whose process is gone (killed, crashed) is stale and taken
//! over with a warning; the start time tells a reused process id apart.
//! Within one process, a lock is live while its query holds it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::CheckpointDir;
use crate::error::{Result, SluiceError};

/// Name of the lock file in the checkpoint root.
pub const LOCK_FILE: &str = "_lock";

/// Who holds a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LockOwner {
    query: String,
    pid: u32,
    host: String,
    /// Start time of the process (clock ticks since boot, from `/proc`).
    process_start: Option<u64>,
    /// Unique per acquisition.
    token: String,
    since_ms: i64,
}

/// Tokens of the locks held by queries of this process.
fn live_tokens() -> &'static Mutex<BTreeSet<String>> {
    static LIVE: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(BTreeSet::new()))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Start time of process `pid` (field 22 of `/proc/<pid>/stat`); `None`
/// where `/proc` is not available.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

impl LockOwner {
    /// Whether the owner may still be running (when in doubt: yes).
    fn is_alive(&self) -> bool {
        if self.host != host_name() {
            return true;
        }
        if self.pid == std::process::id() {
            return live_tokens().lock().contains(&self.token);
        }
        if !std::path::Path::new("/proc/self/stat").exists() {
            return true;
        }
        match process_start(self.pid) {
            None => false,
            Some(start) => self.process_start.is_none_or(|recorded| recorded == start),
        }
    }

    fn describe(&self) -> String {
        let since = chrono::DateTime::from_timestamp_millis(self.since_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| self.since_ms.to_string());
        format!("query '{}' (process {} on {}, since {since})", self.query, self.pid, self.host)
    }
}

/// The lock of one checkpoint, held by one query until it terminates.
#[derive(Debug)]
pub struct CheckpointLock {
    dir: CheckpointDir,
    token: String,
    released: AtomicBool,
}

impl CheckpointLock {
    /// Take the lock of the checkpoint `dir` for query `query`, or fail
    /// naming the query and process that hold it. A stale lock (its process
    /// is gone) is taken over with a warning.
    pub async fn acquire(dir: &CheckpointDir, query: &str, now_ms: i64) -> Result<Self> {
        let pid = std::process::id();
        let me = LockOwner {
            query: query.to_string(),
            pid,
            host: host_name(),
            process_start: process_start(pid),
            token: uuid::Uuid::new_v4().to_string(),
            since_ms: now_ms,
        };
        for _ in 0..3 {
            // Marked live first, so a concurrent acquirer never takes it for stale.
            live_tokens().lock().insert(me.token.clone());
            if dir.create_json(LOCK_FILE, &me).await.inspect_err(|_| {
                live_tokens().lock().remove(&me.token);
            })? {
                return Ok(Self { dir: dir.clone(), token: me.token, released: AtomicBool::new(false) });
            }
            live_tokens().lock().remove(&me.token);
            match dir.read_json::<LockOwner>(LOCK_FILE).await {
                Ok(None) => continue,
                Ok(Some(holder)) if holder.is_alive() => {
                    return Err(SluiceError::Checkpoint {
                        path: format!("{}/{LOCK_FILE}", dir.location()),
                        reason: format!(
                            "the checkpoint is in use by {}: two queries on one checkpoint would interleave their \
                             logs and state. Stop that query first, or give query '{query}' its own checkpoint \
                             location. Only if that process is certainly gone (on another machine, say) delete \
                             the lock file {}/{LOCK_FILE}; the checkpoint itself is fine",
                            holder.describe(),
                            dir.location()
                        ),
                    });
                }
                Ok(Some(holder)) => {
                    warn!(checkpoint = %dir.location(), owner = %holder.describe(), "taking over a stale checkpoint lock: its process is gone");
                    dir.delete(LOCK_FILE).await?;
                }
                Err(e) => {
                    warn!(checkpoint = %dir.location(), error = %e, "replacing an unreadable checkpoint lock file");
                    dir.delete(LOCK_FILE).await?;
                }
            }
        }
        Err(SluiceError::Checkpoint {
            path: format!("{}/{LOCK_FILE}", dir.location()),
            reason: "another query keeps taking this checkpoint's lock; give each query its own checkpoint location"
                .into(),
        })
    }

    /// Whether this lock is still held.
    pub fn is_held(&self) -> bool {
        !self.released.load(Ordering::SeqCst)
    }

    /// Release the lock and remove its file (if it is still ours).
    pub async fn release(&self) -> Result<()> {
        if self.released.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        live_tokens().lock().remove(&self.token);
        remove_if_ours(&self.dir, &self.token).await
    }

    /// Release now; the file is removed in the background (when a Tokio
    /// runtime is running; otherwise the next owner finds it stale).
    pub fn release_in_background(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        live_tokens().lock().remove(&self.token);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (dir, token) = (self.dir.clone(), self.token.clone());
            handle.spawn(async move {
                if let Err(e) = remove_if_ours(&dir, &token).await {
                    warn!(checkpoint = %dir.location(), error = %e, "cannot remove the checkpoint lock file");
                }
            });
        }
    }
}

async fn remove_if_ours(dir: &CheckpointDir, token: &str) -> Result<()> {
    match dir.read_json::<LockOwner>(LOCK_FILE).await {
        Ok(Some(owner)) if owner.token == token => dir.delete(LOCK_FILE).await,
        _ => Ok(()),
    }
}

impl Drop for CheckpointLock {
    fn drop(&mut self) {
        self.release_in_background();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_and_stale_locks_are_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::open(tmp.path().to_str().unwrap()).unwrap();
        let first = CheckpointLock::acquire(&dir, "a", 0).await.unwrap();
        let e = CheckpointLock::acquire(&dir, "b", 0).await.unwrap_err().to_string();
        assert!(e.contains("in use by query 'a'") && e.contains(&std::process::id().to_string()), "{e}");
        assert!(e.contains("its own checkpoint location") && !e.contains("delete the checkpoint"), "{e}");
        first.release().await.unwrap();
        assert!(!tmp.path().join(LOCK_FILE).exists());
        let second = CheckpointLock::acquire(&dir, "b", 0).await.unwrap();
        // A lock left by a process that is gone (a pid that cannot exist).
        std::mem::forget(second);
        let mut dead: LockOwner = dir.read_json(LOCK_FILE).await.unwrap().unwrap();
        dead.pid = u32::MAX - 1;
        dir.write_json(LOCK_FILE, &dead).await.unwrap();
        let third = CheckpointLock::acquire(&dir, "c", 0).await.unwrap();
        assert!(third.is_held());
        // A lock of this process whose query is gone (dropped without stop).
        drop(third);
        CheckpointLock::acquire(&dir, "d", 0).await.unwrap();
    }
}
