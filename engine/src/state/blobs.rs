//! Blob entries: a value kept in a file of its own, under the partition's
//! `blobs/` directory, with only its name in the delta and snapshot files.
//!
//! An operator whose values are large and immutable (an aggregation's state
//! chunks) stores them as blobs, so a snapshot costs the number of entries,
//! not their bytes, and the store does not keep a second copy in memory.
//! A blob put in version `v` is written, before the delta of `v`, as
//! `blobs/{v}-{n}`. A blob file is deleted at a snapshot's purge once no
//! retained version names it.

use std::borrow::Cow;
use std::collections::HashSet;

use datafusion::arrow::record_batch::RecordBatch;

use super::{files, Partition, StateStore};
use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};

const BLOBS: &str = "blobs";

/// A blob entry put since the last commit: its bytes, or an Arrow batch
/// encoded only when written (a blob removed before the next commit, as a
/// join chunk the watermark evicts between state checkpoints, is then
/// never encoded).
#[derive(Debug)]
pub(super) enum PendingBlob {
    /// The value.
    Bytes(Vec<u8>),
    /// A batch and how to encode it.
    Batch(RecordBatch, fn(&RecordBatch) -> Result<Vec<u8>>),
}

impl PendingBlob {
    /// The value's bytes.
    fn bytes(&self) -> Result<Cow<'_, [u8]>> {
        match self {
            Self::Bytes(b) => Ok(Cow::Borrowed(b)),
            Self::Batch(batch, encode) => Ok(Cow::Owned(encode(batch)?)),
        }
    }

    /// The value's bytes, taking them.
    fn into_bytes(self) -> Result<Vec<u8>> {
        match self {
            Self::Bytes(b) => Ok(b),
            Self::Batch(batch, encode) => encode(&batch),
        }
    }

    /// Memory the store holds for it: a batch's arrays are shared with the
    /// operator that put it, and counted there.
    pub(super) fn memory_bytes(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::Batch(..) => 0,
        }
    }
}

impl StateStore {
    /// Set `key` to `value`, kept in a file of its own from the next
    /// commit (read it back with [`Self::read_blob`]).
    pub fn put_blob(&mut self, key: impl AsRef<[u8]>, value: Vec<u8>) {
        self.put_pending(key.as_ref(), PendingBlob::Bytes(value));
    }

    /// [`Self::put_blob`] of `batch` as `encode` gives it, called only
    /// when the value is written (at the next commit, if the entry is still
    /// there) or read.
    pub fn put_batch_blob(
        &mut self,
        key: impl AsRef<[u8]>,
        batch: RecordBatch,
        encode: fn(&RecordBatch) -> Result<Vec<u8>>,
    ) {
        self.put_pending(key.as_ref(), PendingBlob::Batch(batch, encode));
    }

    fn put_pending(&mut self, key: &[u8], value: PendingBlob) {
        let idx = self.partition_of(key);
        let p = &mut self.partitions[idx];
        if let Some(old) = p.map.remove(key) {
            p.bytes -= key.len() + old.len();
        }
        p.blobs.remove(key);
        p.pending_bytes += value.memory_bytes();
        if let Some(old) = p.pending.insert(key.to_vec(), value) {
            p.pending_bytes -= old.memory_bytes();
        }
        p.delta.insert(key.to_vec());
    }

    /// The keys of every blob entry.
    pub fn blob_keys(&self) -> Vec<Vec<u8>> {
        self.partitions.iter().flat_map(|p| p.blobs.keys().chain(p.pending.keys()).cloned()).collect()
    }

    /// The value of blob entry `key`.
    pub async fn read_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let idx = self.partition_of(key);
        let p = &self.partitions[idx];
        if let Some(v) = p.pending.get(key) {
            return Ok(Some(v.bytes()?.into_owned()));
        }
        let Some(name) = p.blobs.get(key) else { return Ok(None) };
        let dir = self.partition_dir(idx).child(BLOBS);
        let bytes = dir.read_blob(name).await?.ok_or_else(|| SluiceError::Checkpoint {
            path: format!("{}/{name}", dir.location()),
            reason: "missing, but the state names it; restore it from a backup, or use a new checkpoint location"
                .into(),
        })?;
        Ok(Some(bytes))
    }

    /// Write the blobs put since the last commit, as version `version`.
    pub(super) async fn write_pending_blobs(p: &mut Partition, dir: &CheckpointDir, version: u64) -> Result<()> {
        if p.pending.is_empty() {
            return Ok(());
        }
        let dir = dir.child(BLOBS);
        let pending = std::mem::take(&mut p.pending);
        p.pending_bytes = 0;
        let mut writes = vec![];
        for (n, (key, value)) in pending.into_iter().enumerate() {
            let name = format!("{version}-{n}");
            let dir = dir.clone();
            p.blobs.insert(key, name.clone());
            let bytes = value.into_bytes()?;
            writes.push(async move { dir.write_blob(&name, &bytes).await });
        }
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    /// Delete the blob files of partition `i` (in `dir`) that no version
    /// still stored names, among those written up to `version`.
    pub(super) async fn collect_blobs(&self, i: usize, dir: &CheckpointDir, version: u64) -> Result<()> {
        let blobs = dir.child(BLOBS);
        let names = blobs.list_names().await?;
        if names.is_empty() {
            return Ok(());
        }
        let mut named: HashSet<String> = self.partitions[i].blobs.values().cloned().collect();
        for f in files::list_versions(dir).await? {
            for (_, value) in files::decode(dir, &f.name()).await? {
                if let files::Decoded::Blob(n) = value {
                    named.insert(n);
                }
            }
        }
        for name in names {
            let written = name.split('-').next().and_then(|v| v.parse::<u64>().ok());
            if written.is_some_and(|w| w <= version) && !named.contains(&name) {
                blobs.delete(&name).await?;
            }
        }
        Ok(())
    }
}
