//! The query checkpoint: metadata, offset log (write-ahead) and commit log.
//!
//! Layout under the checkpoint location, as in Spark:
//!
//! ```text
//! metadata          query id and name
//! offsets/<batch>   offsets of each source for the batch, written before it runs
//! commits/<batch>   written after the sink accepted the batch
//! sources/<i>/...   per-source metadata (for example the files source's seen-files log)
//! state/...         state store files of stateful operators
//! ```

mod durable;
mod lock;
mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use durable::{
    record_durable_writes, set_fsync_enabled, slow_down_durable_writes, DurabilityJournal, DurableLocalStore, DurableOp,
};
pub use lock::CheckpointLock;
pub use store::{CheckpointDir, FORMAT_VERSION};

use crate::connector::SourceOffset;
use crate::error::{Result, SluiceError};

/// `metadata`: the query's identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryMetadata {
    /// Query id, stable across restarts.
    pub id: String,
    /// Query name when started.
    pub name: String,
}

/// One offset log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OffsetEntry {
    /// Batch id.
    pub batch_id: u64,
    /// End offset of every source for this batch, by source name (null:
    /// the source has no data yet).
    pub offsets: BTreeMap<String, Option<SourceOffset>>,
    /// Event-time watermark (ms since the epoch) the batch runs under.
    pub watermark_ms: Option<i64>,
    /// Processing time (ms) at which the batch was planned, so a replay sees
    /// the same `current_timestamp()`.
    pub batch_timestamp_ms: i64,
}

/// One commit log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommitEntry {
    /// Batch id.
    pub batch_id: u64,
    /// Watermark after the batch (ms since the epoch).
    pub next_watermark_ms: Option<i64>,
    /// The first batch whose state changes are not yet in the state
    /// checkpoint (`state_checkpoint_interval`): a restart restores the
    /// operators' state as of the batch before it and replays the batches
    /// from it through this one. Absent when this batch's state is
    /// checkpointed (always, in checkpoints written before the option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_from: Option<u64>,
}

impl CommitEntry {
    /// The batch as of which the operators' state is checkpointed: this
    /// one, or the one before `replay_from` (`None`: no state yet).
    pub fn state_version(&self) -> Option<u64> {
        match self.replay_from {
            None => Some(self.batch_id),
            Some(first) => first.checked_sub(1),
        }
    }
}

/// Read/write access to a query's checkpoint.
#[derive(Debug, Clone)]
pub struct QueryCheckpoint {
    root: CheckpointDir,
    offsets: CheckpointDir,
    commits: CheckpointDir,
}

impl QueryCheckpoint {
    /// Open the checkpoint at `location`.
    pub fn open(location: &str) -> Result<Self> {
        let root = CheckpointDir::open(location)?;
        Ok(Self { offsets: root.child("offsets"), commits: root.child("commits"), root })
    }

    /// The checkpoint in `root`.
    pub fn open_dir(root: CheckpointDir) -> Self {
        Self { offsets: root.child("offsets"), commits: root.child("commits"), root }
    }

    /// The checkpoint root.
    pub fn root(&self) -> &CheckpointDir {
        &self.root
    }

    /// Read the metadata, writing `fresh` when there is none.
    pub async fn metadata_or_init(&self, fresh: QueryMetadata) -> Result<QueryMetadata> {
        if let Some(m) = self.root.read_json::<QueryMetadata>("metadata").await? {
            return Ok(m);
        }
        // A checkpoint with logs but no metadata was damaged: refuse rather than
        // silently starting again.
        if !self.offsets.list_numbered().await?.is_empty() {
            return Err(SluiceError::Checkpoint {
                path: format!("{}/metadata", self.root.location()),
                reason: "missing, but the offset log exists; restore the file or delete the checkpoint directory"
                    .into(),
            });
        }
        self.root.write_json("metadata", &fresh).await?;
        Ok(fresh)
    }

    /// Latest offset log entry.
    pub async fn latest_offsets(&self) -> Result<Option<OffsetEntry>> {
        match self.offsets.list_numbered().await?.last() {
            None => Ok(None),
            Some(id) => self.read_offsets(*id).await,
        }
    }

    /// Offset log entry of `batch_id`.
    pub async fn read_offsets(&self, batch_id: u64) -> Result<Option<OffsetEntry>> {
        self.offsets.read_json(&batch_id.to_string()).await
    }

    /// Write the offset log entry (before running the batch).
    pub async fn write_offsets(&self, entry: &OffsetEntry) -> Result<()> {
        self.offsets.write_json(&entry.batch_id.to_string(), entry).await
    }

    /// Latest commit log entry.
    pub async fn latest_commit(&self) -> Result<Option<CommitEntry>> {
        match self.commits.list_numbered().await?.last() {
            None => Ok(None),
            Some(id) => self.commits.read_json(&id.to_string()).await,
        }
    }

    /// Write the commit log entry (after the sink accepted the batch).
    pub async fn write_commit(&self, entry: &CommitEntry) -> Result<()> {
        self.commits.write_json(&entry.batch_id.to_string(), entry).await
    }

    /// Check the logs at recovery: every retained entry is readable, every
    /// retained batch before the last one has its commit entry (commits are
    /// written in order, so a gap means a lost file), and no commit is ahead
    /// of the offset log.
    pub async fn check_commit_log(&self) -> Result<()> {
        let offsets = self.offsets.list_numbered().await?;
        let commits: std::collections::BTreeSet<u64> = self.commits.list_numbered().await?.into_iter().collect();
        let Some((last, earlier)) = offsets.split_last() else {
            if let Some(c) = commits.iter().next_back() {
                return Err(self.missing_offsets(*c));
            }
            return Ok(());
        };
        if let Some(ahead) = commits.range(last + 1..).next() {
            return Err(self.missing_offsets(*ahead));
        }
        // Every retained entry must be readable: damage is reported, not skipped.
        for id in &offsets {
            self.read_offsets(*id).await?;
        }
        for id in &commits {
            self.commits.read_json::<CommitEntry>(&id.to_string()).await?;
        }
        for id in earlier {
            if !commits.contains(id) {
                return Err(SluiceError::Checkpoint {
                    path: format!("{}/commits/{id}", self.root.location()),
                    reason: format!(
                        "missing, although the offset log goes on to batch {last}: the commit log is damaged; \
                         restore the file, or delete the checkpoint directory to start the query from scratch"
                    ),
                });
            }
        }
        Ok(())
    }

    fn missing_offsets(&self, id: u64) -> SluiceError {
        SluiceError::Checkpoint {
            path: format!("{}/offsets/{id}", self.root.location()),
            reason: "missing, although batch {id} is in the commit log: the offset log is damaged; restore the \
                     file, or delete the checkpoint directory to start the query from scratch"
                .replace("{id}", &id.to_string()),
        }
    }

    /// Remove log entries older than `keep_from` (retention).
    pub async fn purge_before(&self, keep_from: u64) -> Result<()> {
        for dir in [&self.offsets, &self.commits] {
            for id in dir.list_numbered().await? {
                if id < keep_from {
                    dir.delete(&id.to_string()).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offsets_roundtrip_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ck = QueryCheckpoint::open(dir.path().to_str().unwrap()).unwrap();
        let entry = OffsetEntry {
            batch_id: 3,
            offsets: [("events".to_string(), Some(serde_json::json!(7)))].into_iter().collect(),
            watermark_ms: Some(10),
            batch_timestamp_ms: 5,
        };
        ck.write_offsets(&entry).await.unwrap();
        assert_eq!(ck.latest_offsets().await.unwrap(), Some(entry));
        let file = dir.path().join("offsets/3");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, &text[..text.len() - 5]).unwrap();
        let err = ck.latest_offsets().await.unwrap_err().to_string();
        assert!(err.contains("offsets/3") && err.contains("checksum"), "{err}");
    }
}
