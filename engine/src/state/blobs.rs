//! Blob entries: a value kept in a file of its own, under the partition's
//! `blobs/` directory, with only its name in the delta and snapshot files.
//!
//! An operator whose values are large and immutable (an aggregation's state
//! chunks) stores them as blobs, so a snapshot costs the number of entries,
//! not their bytes, and the store does not keep a second copy in memory.
//! A blob put in version `v` is written, before the delta of `v`, as
//! `blobs/{v}-{n}`. A blob file is deleted at a snapshot's purge once no
//! retained version names it.

use std::collections::HashSet;

use super::{files, Partition, StateStore};
use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};

const BLOBS: &str = "blobs";

impl StateStore {
    /// Set `key` to `value`, kept in a file of its own from the next
    /// commit (read it back with [`Self::read_blob`]).
    pub fn put_blob(&mut self, key: impl AsRef<[u8]>, value: Vec<u8>) {
        let key = key.as_ref();
        let idx = self.partition_of(key);
        let p = &mut self.partitions[idx];
        if let Some(old) = p.map.remove(key) {
            p.bytes -= key.len() + old.len();
        }
        p.blobs.remove(key);
        p.pending_bytes += value.len();
        if let Some(old) = p.pending.insert(key.to_vec(), value) {
            p.pending_bytes -= old.len();
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
            return Ok(Some(v.clone()));
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
        for (n, (key, bytes)) in pending.into_iter().enumerate() {
            let name = format!("{version}-{n}");
            let dir = dir.clone();
            p.blobs.insert(key, name.clone());
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
