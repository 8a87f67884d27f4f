//! The state store used by every stateful operator.
//!
//! Keyed binary rows (encoded with Arrow's row format by the operator),
//! versioned by batch id and split by key hash into a fixed number of
//! partitions. The live state is in memory; each commit writes, per
//! partition, a delta file of the keys changed in that version, and every
//! `snapshot_interval` versions a full snapshot, both as Arrow IPC under the
//! checkpoint through `object_store`. A commit's cost grows with what
//! changed, not with the total state. Restoring a version loads the latest
//! snapshot at or before it and replays the deltas after it; versions older
//! than `min_versions_to_retain` are deleted.

mod blobs;
mod files;
pub mod partitioner;

use std::time::Instant;

// hashbrown with its randomly seeded foldhash hasher, as in DataFusion's own
// hash tables (SipHash was a visible share of a windowed count's time).
use datafusion::common::hash_map::EntryRef;
use datafusion::common::{HashMap, HashSet};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};

/// State store settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateStoreConfig {
    /// Key-hash partitions (fixed per checkpoint once written).
    pub num_partitions: usize,
    /// Write a full snapshot every this many versions.
    pub snapshot_interval: u64,
    /// Keep at least this many recent versions restorable.
    pub min_versions_to_retain: u64,
}

impl Default for StateStoreConfig {
    fn default() -> Self {
        Self { num_partitions: 4, snapshot_interval: 10, min_versions_to_retain: 20 }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreMetadata {
    num_partitions: usize,
    /// How keys were placed in partitions (see [`partitioner::fingerprint`]);
    /// absent in stores whose keys were placed by a CRC-32 of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partitioner: Option<String>,
}

#[derive(Debug, Default)]
struct Partition {
    map: HashMap<Vec<u8>, Vec<u8>>,
    /// Keys changed since the last commit (their value now in `map`, or
    /// absent if removed).
    delta: HashSet<Vec<u8>>,
    bytes: usize,
    /// Entries whose value is a file of its own (see [`StateStore::put_blob`]):
    /// key → file name under the partition's `blobs/`.
    blobs: HashMap<Vec<u8>, String>,
    /// Blob entries put since the last commit, written at commit.
    pending: HashMap<Vec<u8>, blobs::PendingBlob>,
    pending_bytes: usize,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitMetrics {
    /// Keys written in the version.
    pub rows_updated: u64,
    /// Keys removed in the version.
    pub rows_removed: u64,
    /// Time spent writing, in ms.
    pub commit_ms: u64,
    /// Time spent evicting keys since the last commit.
    pub removal_time: std::time::Duration,
    /// Whether the commit wrote a full snapshot.
    pub snapshot: bool,
}

/// A versioned, partitioned key-value store with checkpointed deltas.
#[derive(Debug)]
pub struct StateStore {
    dir: CheckpointDir,
    config: StateStoreConfig,
    partitions: Vec<Partition>,
    /// Number of the first partition held (a store opened for one partition
    /// holds only that one).
    first: usize,
    reservation: Option<MemoryReservation>,
    /// Time spent in [`Self::evict`] since the last commit.
    removal_time: std::time::Duration,
    /// The version the in-memory state was last committed or restored as
    /// (the version the next delta applies to); `None` for an empty store.
    last_version: Option<u64>,
    /// Deltas written (or restored) since the last snapshot.
    deltas_since_snapshot: u64,
}

impl StateStore {
    /// Open the store under `dir` (the number of partitions recorded there,
    /// if any, wins over `config`), restoring `version` (`None`: empty).
    /// Keys are placed in partitions by a CRC-32 of the key.
    pub async fn open(dir: CheckpointDir, mut config: StateStoreConfig, version: Option<u64>) -> Result<Self> {
        config.num_partitions = Self::check_metadata(&dir, config, None).await?;
        let mut store = Self {
            dir,
            config,
            partitions: (0..config.num_partitions).map(|_| Partition::default()).collect(),
            first: 0,
            reservation: None,
            removal_time: Default::default(),
            last_version: None,
            deltas_since_snapshot: 0,
        };
        if let Some(v) = version {
            store.restore(v).await?;
        }
        Ok(store)
    }

    /// Open partition `partition` of the store under `dir` alone, restoring
    /// `version`: its keys are those the caller routes to it (a stateful
    /// operator's input is hash-partitioned on its key by DataFusion, see
    /// [`partitioner`]). With `reset`, the partition starts empty at
    /// `version` (the caller has cleared the directory).
    pub async fn open_partition(
        dir: CheckpointDir,
        mut config: StateStoreConfig,
        version: Option<u64>,
        partition: usize,
        reset: bool,
    ) -> Result<Self> {
        config.num_partitions = Self::check_metadata(&dir, config, Some(partitioner::fingerprint()?)).await?;
        if partition >= config.num_partitions {
            return Err(SluiceError::internal(format!(
                "state partition {partition} opened under {}, which has {} partitions",
                dir.location(),
                config.num_partitions
            )));
        }
        let mut store = Self {
            dir,
            config,
            partitions: vec![Partition::default()],
            first: partition,
            reservation: None,
            removal_time: Default::default(),
            last_version: None,
            deltas_since_snapshot: 0,
        };
        match (version, reset) {
            (Some(v), true) => {
                store.partition_dir(0).write_blob(&format!("{v}.snapshot"), &files::encode(&[])?).await?;
                store.last_version = Some(v);
            }
            (Some(v), false) => store.restore(v).await?,
            (None, _) => {}
        }
        Ok(store)
    }

    /// Each partition of the store under `dir` as of `version`, as a store
    /// of its own, read-only (an operator instance's entries, whose keys
    /// only its own partition makes unique).
    pub async fn open_read_only_partitions(dir: CheckpointDir, version: u64) -> Result<Vec<Self>> {
        let n = Self::stored_partitions(&dir).await?.ok_or_else(|| SluiceError::Checkpoint {
            path: format!("{}/_metadata", dir.location()),
            reason: "missing: no state store was written here (the operator has not committed a batch yet)".into(),
        })?;
        let mut out = vec![];
        for p in 0..n {
            let mut store = Self {
                dir: dir.clone(),
                config: StateStoreConfig { num_partitions: n, ..StateStoreConfig::default() },
                partitions: vec![Partition::default()],
                first: p,
                reservation: None,
                removal_time: Default::default(),
                last_version: None,
                deltas_since_snapshot: 0,
            };
            store.restore(version).await?;
            out.push(store);
        }
        Ok(out)
    }

    /// The versions the files under `dir` can restore, oldest and newest
    /// (`None`: no state files), and the bytes those files take.
    pub async fn stored_versions(dir: &CheckpointDir) -> Result<(Option<(u64, u64)>, u64)> {
        let n = Self::stored_partitions(dir).await?.unwrap_or(0);
        let mut range: Option<(u64, u64)> = None;
        for p in 0..n {
            let files = files::list_versions(&dir.child(&p.to_string())).await?;
            let Some(newest) = files.iter().map(|f| f.version).max() else { continue };
            // The oldest base: a snapshot, or a delta applying to an empty store.
            let starts = files.iter().filter(|f| f.snapshot || f.follows.is_none()).map(|f| f.version).min();
            let Some(oldest) = starts else { continue };
            range = Some(match range {
                None => (oldest, newest),
                Some((o, n)) => (o.max(oldest), n.min(newest)),
            });
        }
        Ok((range, dir.total_bytes().await?))
    }

    /// The number of partitions recorded under `dir`, if a store was
    /// written there.
    pub async fn stored_partitions(dir: &CheckpointDir) -> Result<Option<usize>> {
        Ok(dir.read_json::<StoreMetadata>("_metadata").await?.map(|m| m.num_partitions))
    }

    /// Check (or, for a new store, write) the store's metadata; returns the
    /// number of partitions. `partitioner` is how the caller places keys:
    /// `None` for CRC-32 placement by the store itself.
    async fn check_metadata(
        dir: &CheckpointDir,
        config: StateStoreConfig,
        partitioner: Option<String>,
    ) -> Result<usize> {
        // Partition directories holding state files (a reset leaves empty ones).
        let mut stored = vec![];
        for p in dir.list_numbered_dirs().await? {
            if !dir.child(&p.to_string()).list_names().await?.is_empty() {
                stored.push(p);
            }
        }
        let num_partitions = match dir.read_json::<StoreMetadata>("_metadata").await? {
            Some(meta) => {
                if meta.partitioner != partitioner && !stored.is_empty() {
                    return Err(SluiceError::Checkpoint {
                        path: format!("{}/_metadata", dir.location()),
                        reason: format!(
                            "the state's keys were placed in partitions by {}, but this Sluice places them by {}: \
                             reading it would look keys up in the wrong partitions. The state was written by \
                             another version of Sluice (or DataFusion), or on a machine that hashes differently; \
                             run the query with the version that wrote it, or use a new checkpoint location",
                            meta.partitioner.as_deref().unwrap_or("a CRC-32 of the key"),
                            partitioner.as_deref().unwrap_or("a CRC-32 of the key")
                        ),
                    });
                }
                if meta.partitioner != partitioner {
                    // No state yet: record the placement now in use.
                    dir.write_json("_metadata", &StoreMetadata { num_partitions: meta.num_partitions, partitioner })
                        .await?;
                }
                meta.num_partitions
            }
            None if !stored.is_empty() => {
                return Err(SluiceError::Checkpoint {
                    path: format!("{}/_metadata", dir.location()),
                    reason: format!(
                        "missing, but the state store has {} partition directories: without it the keys cannot be \
                         found in the right partitions. The checkpoint is damaged: restore the file from a backup, \
                         or use a new checkpoint location",
                        stored.len()
                    ),
                });
            }
            None => {
                let n = config.num_partitions.max(1);
                dir.write_json("_metadata", &StoreMetadata { num_partitions: n, partitioner }).await?;
                n
            }
        };
        // State files in a partition the metadata does not know would be
        // ignored, and their keys lost.
        if let Some(extra) = stored.iter().find(|p| **p as usize >= num_partitions.max(1)) {
            return Err(SluiceError::Checkpoint {
                path: format!("{}/{extra}", dir.location()),
                reason: format!(
                    "the state store's metadata ({}/_metadata) records {} partition(s), but partition directory \
                     {extra} exists: the metadata and the state files disagree, and keys would be lost. The \
                     checkpoint is damaged: restore the metadata file from a backup, or use a new checkpoint location",
                    dir.location(),
                    num_partitions
                ),
            });
        }
        if num_partitions == 0 {
            return Err(SluiceError::Checkpoint {
                path: format!("{}/_metadata", dir.location()),
                reason: "records 0 partitions; the checkpoint is damaged: restore the file from a backup, or use a \
                         new checkpoint location"
                    .into(),
            });
        }
        Ok(num_partitions)
    }

    /// Directory of the `i`-th partition held.
    fn partition_dir(&self, i: usize) -> CheckpointDir {
        self.dir.child(&(self.first + i).to_string())
    }

    /// Remove every file of the store under `dir`, so it starts afresh.
    pub async fn clear(dir: &CheckpointDir) -> Result<()> {
        for f in dir.list_all().await? {
            dir.delete(&f).await?;
        }
        Ok(())
    }

    fn partition_of(&self, key: &[u8]) -> usize {
        match self.partitions.len() {
            1 => 0,
            n => crc32fast::hash(key) as usize % n,
        }
    }

    /// Start the store under `dir` afresh at `version`: remove every file
    /// and write empty snapshots, so later restores of `version` and after
    /// find a complete history.
    pub async fn reset(dir: CheckpointDir, config: StateStoreConfig, version: Option<u64>) -> Result<Self> {
        Self::clear(&dir).await?;
        let mut store = Self::open(dir, config, None).await?;
        if let Some(v) = version {
            for i in 0..store.partitions.len() {
                store.partition_dir(i).write_blob(&format!("{v}.snapshot"), &files::encode(&[])?).await?;
            }
            store.last_version = Some(v);
        }
        Ok(store)
    }

    /// Value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.partitions[self.partition_of(key)].map.get(key).map(Vec::as_slice)
    }

    /// Set `key` to `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: Vec<u8>) {
        let key = key.as_ref();
        let idx = self.partition_of(key);
        let p = &mut self.partitions[idx];
        if let Some(b) = p.pending.remove(key) {
            p.pending_bytes -= b.memory_bytes();
        }
        p.blobs.remove(key);
        p.bytes += value.len();
        // One hash lookup for the map and one for the delta.
        match p.map.entry_ref(key) {
            EntryRef::Occupied(mut e) => {
                p.bytes -= e.get().len();
                e.insert(value);
            }
            EntryRef::Vacant(e) => {
                p.bytes += key.len();
                e.insert(value);
            }
        }
        p.delta.get_or_insert_with(key, <[u8]>::to_vec);
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let idx = self.partition_of(key);
        let p = &mut self.partitions[idx];
        if let Some(pending) = p.pending.remove(key) {
            p.pending_bytes -= pending.memory_bytes();
            p.blobs.remove(key);
            p.delta.insert(key.to_vec());
            return None;
        }
        if p.blobs.remove(key).is_some() {
            p.delta.insert(key.to_vec());
            return None;
        }
        let old = p.map.remove(key)?;
        p.bytes -= key.len() + old.len();
        p.delta.insert(key.to_vec());
        Some(old)
    }

    /// Remove every entry for which `evict` returns true; returns their
    /// values.
    pub fn evict(&mut self, mut evict: impl FnMut(&[u8], &[u8]) -> bool) -> Vec<Vec<u8>> {
        let started = Instant::now();
        let mut out = vec![];
        for p in &mut self.partitions {
            for (k, v) in p.map.extract_if(|k, v| evict(k, v)) {
                p.bytes -= k.len() + v.len();
                p.delta.insert(k);
                out.push(v);
            }
        }
        self.removal_time += started.elapsed();
        out
    }

    /// Every entry (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.partitions.iter().flat_map(|p| p.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    /// Number of keys (blob entries included).
    pub fn len(&self) -> usize {
        self.partitions.iter().map(|p| p.map.len() + p.blobs.len() + p.pending.len()).sum()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate memory of keys and values, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.partitions.iter().map(|p| p.bytes + p.map.len() * 48 + p.pending_bytes + p.blobs.len() * 64).sum()
    }

    /// Account this store's memory in `pool` (DataFusion's memory pool) as
    /// `name`; the reservation follows the state size at every commit.
    pub fn track_memory(&mut self, pool: &std::sync::Arc<dyn MemoryPool>, name: &str) -> Result<()> {
        let reservation = MemoryConsumer::new(format!("sluice state: {name}")).register(pool);
        reservation.try_resize(self.memory_bytes()).map_err(|e| self.memory_error(e))?;
        self.reservation = Some(reservation);
        Ok(())
    }

    fn memory_error(&self, e: datafusion::error::DataFusionError) -> SluiceError {
        SluiceError::ResourcesExhausted(format!(
            "the state under {} needs {} bytes, more than the memory pool allows ({e}); raise the memory limit, \
             add a watermark so old state is evicted, or reduce the number of keys",
            self.dir.location(),
            self.memory_bytes()
        ))
    }

    /// Number of partitions.
    pub fn num_partitions(&self) -> usize {
        self.partitions.len()
    }

    /// Time spent evicting since the last call (or commit); for a batch that
    /// ends without a commit.
    pub fn take_removal_time(&mut self) -> std::time::Duration {
        std::mem::take(&mut self.removal_time)
    }

    /// Make the changes since the last commit durable as `version` (the
    /// versions between the last commit and `version`, if any, are never
    /// restorable: their changes are in this version's delta).
    pub async fn commit(&mut self, version: u64) -> Result<CommitMetrics> {
        let started = Instant::now();
        let interval = self.config.snapshot_interval.max(1);
        // Every `interval` versions, or after more than `interval` deltas
        // when commits skip versions.
        let snapshot = version > 0 && (version % interval == 0 || self.deltas_since_snapshot >= interval);
        let delta_file = files::VersionFile::delta(version, self.last_version).name();
        let mut metrics =
            CommitMetrics { removal_time: std::mem::take(&mut self.removal_time), snapshot, ..Default::default() };
        let mut writes = vec![];
        for (i, p) in self.partitions.iter_mut().enumerate() {
            let dir = self.dir.child(&(self.first + i).to_string());
            // Blob files first: a delta never names a file not yet written.
            Self::write_pending_blobs(p, &dir, version).await?;
            let changed = std::mem::take(&mut p.delta);
            let delta: Vec<(&[u8], files::Entry<'_>)> = changed.iter().map(|k| (k.as_slice(), p.entry(k))).collect();
            metrics.rows_updated += delta.iter().filter(|(_, v)| !matches!(v, files::Entry::Removed)).count() as u64;
            metrics.rows_removed += delta.iter().filter(|(_, v)| matches!(v, files::Entry::Removed)).count() as u64;
            let delta = files::encode(&delta)?;
            let snap = match snapshot {
                true => {
                    let all: Vec<(&[u8], files::Entry<'_>)> = p
                        .map
                        .iter()
                        .map(|(k, v)| (k.as_slice(), files::Entry::Value(v)))
                        .chain(p.blobs.iter().map(|(k, n)| (k.as_slice(), files::Entry::Blob(n))))
                        .collect();
                    Some(files::encode(&all)?)
                }
                false => None,
            };
            let delta_file = &delta_file;
            writes.push(async move {
                dir.write_blob(delta_file, &delta).await?;
                crate::faults::crash_point("during_state_commit");
                if let Some(snap) = snap {
                    crate::faults::crash_point("during_snapshot");
                    dir.write_blob(&format!("{version}.snapshot"), &snap).await?;
                }
                Ok::<_, SluiceError>(())
            });
        }
        futures::future::try_join_all(writes).await?;
        self.last_version = Some(version);
        self.deltas_since_snapshot = if snapshot { 0 } else { self.deltas_since_snapshot + 1 };
        if snapshot {
            self.purge(version).await?;
        }
        let bytes = self.memory_bytes();
        if let Some(r) = self.reservation.as_ref() {
            if let Err(e) = r.try_resize(bytes) {
                return Err(self.memory_error(e));
            }
        }
        metrics.commit_ms = started.elapsed().as_millis() as u64;
        Ok(metrics)
    }

    /// Delete files no longer needed to restore any of the retained versions.
    async fn purge(&self, version: u64) -> Result<()> {
        let oldest_kept = version.saturating_sub(self.config.min_versions_to_retain);
        for i in 0..self.partitions.len() {
            let dir = self.dir.child(&(self.first + i).to_string());
            let files = files::list_versions(&dir).await?;
            // The newest snapshot at or before the oldest retained version is the base.
            let Some(base) = files.iter().filter(|f| f.snapshot && f.version <= oldest_kept).map(|f| f.version).max()
            else {
                continue;
            };
            for f in files.iter().filter(|f| f.version < base || (f.version == base && !f.snapshot)) {
                dir.delete(&f.name()).await?;
            }
            self.collect_blobs(i, &dir, version).await?;
        }
        Ok(())
    }

    /// Replace the in-memory state by `version` read from the checkpoint.
    pub async fn restore(&mut self, version: u64) -> Result<()> {
        let mut deltas_since_snapshot = 0;
        for (i, p) in self.partitions.iter_mut().enumerate() {
            let dir = self.dir.child(&(self.first + i).to_string());
            *p = Partition::default();
            let files = files::list_versions(&dir).await?;
            let (base, deltas) = files::chain(&files, version).map_err(|v| SluiceError::Checkpoint {
                path: format!("{}/{}", dir.location(), files::VersionFile::delta(v, v.checked_sub(1)).name()),
                reason: format!(
                    "missing: state version {version} cannot be restored without version {v} (a batch whose state \
                     was not checkpointed, under state_checkpoint_interval, has none); restore the file, or delete \
                     the checkpoint directory to start the query from scratch"
                ),
            })?;
            deltas_since_snapshot = deltas_since_snapshot.max(deltas.len() as u64);
            if let Some(base) = base {
                let name = format!("{base}.snapshot");
                for (k, v) in files::decode(&dir, &name).await? {
                    match v {
                        files::Decoded::Value(v) => {
                            p.bytes += k.len() + v.len();
                            p.map.insert(k, v);
                        }
                        files::Decoded::Blob(n) => {
                            p.blobs.insert(k, n);
                        }
                        files::Decoded::Removed => {}
                    }
                }
            }
            for delta in deltas {
                for (key, value) in files::decode(&dir, &delta.name()).await? {
                    if let Some(old) = p.map.remove(&key) {
                        p.bytes -= key.len() + old.len();
                    }
                    p.blobs.remove(&key);
                    match value {
                        files::Decoded::Value(val) => {
                            p.bytes += key.len() + val.len();
                            p.map.insert(key, val);
                        }
                        files::Decoded::Blob(n) => {
                            p.blobs.insert(key, n);
                        }
                        files::Decoded::Removed => {}
                    }
                }
            }
        }
        self.last_version = Some(version);
        self.deltas_since_snapshot = deltas_since_snapshot;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

impl Partition {
    /// What a delta records for `key`, changed since the last commit.
    fn entry(&self, key: &[u8]) -> files::Entry<'_> {
        if let Some(n) = self.blobs.get(key) {
            files::Entry::Blob(n)
        } else if let Some(v) = self.map.get(key) {
            files::Entry::Value(v)
        } else {
            files::Entry::Removed
        }
    }
}
