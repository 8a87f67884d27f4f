use super::*;
use files::VersionFile;

fn cfg() -> StateStoreConfig {
    StateStoreConfig { num_partitions: 3, snapshot_interval: 4, min_versions_to_retain: 2 }
}

async fn open(dir: &std::path::Path, v: Option<u64>) -> Result<StateStore> {
    StateStore::open(CheckpointDir::open(dir.to_str().unwrap())?, cfg(), v).await
}

#[tokio::test]
async fn versions_restore_and_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), None).await.unwrap();
    for v in 0..10u64 {
        s.put(format!("k{v}").into_bytes(), v.to_le_bytes().to_vec());
        if v % 3 == 0 && v > 0 {
            s.remove(format!("k{}", v - 1).as_bytes());
        }
        let m = s.commit(v).await.unwrap();
        assert_eq!(m.rows_updated, 1, "only what changed is written");
    }
    assert_eq!(s.len(), 7);
    // Restore every retained version and compare with a replay.
    for v in [7u64, 8, 9] {
        let r = open(tmp.path(), Some(v)).await.unwrap();
        let expected: usize = (0..=v).filter(|i| !(i + 1 <= v && (i + 1) % 3 == 0)).count();
        assert_eq!(r.len(), expected, "version {v}");
        assert_eq!(r.get(format!("k{v}").as_bytes()), Some(v.to_le_bytes().as_slice()));
    }
}

#[tokio::test]
async fn compaction_and_retention_delete_old_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), None).await.unwrap();
    for v in 0..13u64 {
        s.put(b"k".to_vec(), v.to_le_bytes().to_vec());
        s.commit(v).await.unwrap();
    }
    let names =
        files::list_versions(&CheckpointDir::open(tmp.path().to_str().unwrap()).unwrap().child("0")).await.unwrap();
    // Snapshots at 4, 8, 12; retention 2 keeps base snapshot 8 and what follows.
    assert!(names.iter().all(|f| f.version >= 8), "{names:?}");
    assert!(names.contains(&VersionFile { version: 8, snapshot: true, follows: None }));
    let r = open(tmp.path(), Some(12)).await.unwrap();
    assert_eq!(r.get(b"k"), Some(12u64.to_le_bytes().as_slice()));
    // An old version is gone, and the error names the missing file.
    let e = open(tmp.path(), Some(5)).await.unwrap_err().to_string();
    assert!(e.contains(".delta") && e.contains("missing"), "{e}");
}

#[tokio::test]
async fn corrupt_state_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), None).await.unwrap();
    for k in 0..20u8 {
        s.put(vec![k], vec![k]);
    }
    s.commit(0).await.unwrap();
    for p in 0..3 {
        let f = tmp.path().join(format!("{p}/0.delta"));
        let mut bytes = std::fs::read(&f).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        std::fs::write(&f, bytes).unwrap();
    }
    let e = open(tmp.path(), Some(0)).await.unwrap_err().to_string();
    assert!(e.contains("0.delta") && e.contains("checksum"), "{e}");
    std::fs::remove_file(tmp.path().join("1/0.delta")).unwrap();
    std::fs::remove_file(tmp.path().join("0/0.delta")).unwrap();
    let e = open(tmp.path(), Some(0)).await.unwrap_err().to_string();
    assert!(e.contains("0.delta") && e.contains("missing"), "{e}");
}

#[tokio::test]
async fn memory_is_accounted_in_the_pool_and_limited() {
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    let tmp = tempfile::tempdir().unwrap();
    let pool: std::sync::Arc<dyn MemoryPool> = std::sync::Arc::new(GreedyMemoryPool::new(10_000));
    let mut s = open(tmp.path(), None).await.unwrap();
    s.track_memory(&pool, "test").unwrap();
    for k in 0..10u32 {
        s.put(k.to_le_bytes().to_vec(), vec![0u8; 100]);
    }
    s.commit(0).await.unwrap();
    assert_eq!(pool.reserved(), s.memory_bytes());
    for k in 10..200u32 {
        s.put(k.to_le_bytes().to_vec(), vec![0u8; 100]);
    }
    let e = s.commit(1).await.unwrap_err().to_string();
    assert!(e.contains("memory pool") && e.contains("watermark"), "{e}");
}

/// Regression (issue 9, case 9): a `_metadata` that records fewer partitions
/// than the state files use lost the keys of the others at restore.
#[tokio::test]
async fn partition_count_mismatch_is_damage_not_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), None).await.unwrap();
    for k in 0..30u64 {
        s.put(k.to_le_bytes(), vec![1]);
    }
    s.commit(0).await.unwrap();
    assert_eq!(open(tmp.path(), Some(0)).await.unwrap().len(), 30);
    let dir = CheckpointDir::open(tmp.path().to_str().unwrap()).unwrap();
    dir.write_json("_metadata", &StoreMetadata { num_partitions: 2, partitioner: None }).await.unwrap();
    let e = open(tmp.path(), Some(0)).await.unwrap_err().to_string();
    assert!(e.contains("records 2 partition(s)") && e.contains("directory 2") && e.contains("restore"), "{e}");
    // A missing metadata file beside state files is damage too, not a fresh start.
    std::fs::remove_file(tmp.path().join("_metadata")).unwrap();
    let e = open(tmp.path(), Some(0)).await.unwrap_err().to_string();
    assert!(e.contains("_metadata") && e.contains("missing") && e.contains("3 partition directories"), "{e}");
}

mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// One change to the store: put `key -> value`, or remove `key`.
    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![(0u8..24, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)), (0u8..24).prop_map(Op::Remove)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Snapshots and deltas round-trip: after any sequence of versions,
        /// restoring each retained version gives exactly the model's state
        /// at that version, whatever the snapshot interval and partitions.
        #[test]
        fn every_retained_version_restores_exactly(
            versions in proptest::collection::vec(proptest::collection::vec(op(), 0..8), 1..14),
            snapshot_interval in 1u64..5,
            num_partitions in 1usize..4,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let tmp = tempfile::tempdir().unwrap();
                let config = StateStoreConfig { num_partitions, snapshot_interval, min_versions_to_retain: 3 };
                let dir = || CheckpointDir::open(tmp.path().to_str().unwrap()).unwrap();
                let mut store = StateStore::open(dir(), config, None).await.unwrap();
                let mut model: BTreeMap<u8, u8> = BTreeMap::new();
                let mut history = vec![];
                for (version, ops) in versions.iter().enumerate() {
                    for op in ops {
                        match *op {
                            Op::Put(k, v) => { store.put([k], vec![v]); model.insert(k, v); }
                            Op::Remove(k) => { store.remove(&[k]); model.remove(&k); }
                        }
                    }
                    store.commit(version as u64).await.unwrap();
                    history.push(model.clone());
                }
                let last = history.len() - 1;
                for version in last.saturating_sub(3)..=last {
                    let restored = StateStore::open(dir(), config, Some(version as u64)).await.unwrap();
                    let got: BTreeMap<u8, u8> = restored.iter().map(|(k, v)| (k[0], v[0])).collect();
                    prop_assert_eq!(&got, &history[version], "version {}", version);
                }
                Ok(())
            })?;
        }
    }
}

#[tokio::test]
async fn partition_stores_keep_their_own_keys_and_refuse_another_placement() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = CheckpointDir::open(tmp.path().to_str().unwrap()).unwrap();
    let config = StateStoreConfig { num_partitions: 2, snapshot_interval: 10, min_versions_to_retain: 20 };
    for p in 0..2 {
        let mut s = StateStore::open_partition(dir.clone(), config, None, p, false).await.unwrap();
        for k in 0..5u64 {
            s.put((k * 10 + p as u64).to_le_bytes(), vec![p as u8]);
        }
        s.commit(0).await.unwrap();
    }
    for p in 0..2 {
        let s = StateStore::open_partition(dir.clone(), config, Some(0), p, false).await.unwrap();
        assert_eq!(s.len(), 5);
        assert!(s.iter().all(|(_, v)| v == [p as u8]), "partition {p} holds only its own keys");
    }
    // Keys placed by another hash function would be looked up in the wrong
    // partitions: refused, naming both placements.
    dir.write_json("_metadata", &StoreMetadata { num_partitions: 2, partitioner: Some("other-hash:1".into()) })
        .await
        .unwrap();
    let e = StateStore::open_partition(dir.clone(), config, Some(0), 0, false).await.unwrap_err().to_string();
    assert!(e.contains("other-hash:1") && e.contains("new checkpoint location"), "{e}");
    // A store written with CRC-32 placement (all partitions at once) too.
    dir.write_json("_metadata", &StoreMetadata { num_partitions: 2, partitioner: None }).await.unwrap();
    let e = StateStore::open_partition(dir.clone(), config, Some(0), 1, false).await.unwrap_err().to_string();
    assert!(e.contains("CRC-32"), "{e}");
}

/// Blob entries: each value a file of its own, named in the deltas and
/// snapshots; every retained version restores its blobs, a removed blob's
/// file outlives the versions that name it and is then deleted, and a
/// snapshot holds names, not values.
#[tokio::test]
async fn blob_entries_restore_by_version_and_their_files_are_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), None).await.unwrap();
    let big = |v: u64| vec![v as u8; 10_000];
    for v in 0..13u64 {
        // Key `b{v}` is put at v and removed at v + 2; `keep` is rewritten.
        s.put_blob(format!("b{v}"), big(v));
        s.put_blob("keep", big(100 + v));
        if v >= 2 {
            s.remove(format!("b{}", v - 2).as_bytes());
        }
        s.put(b"plain".to_vec(), v.to_le_bytes().to_vec());
        let m = s.commit(v).await.unwrap();
        assert_eq!(m.rows_updated, 3, "version {v}");
    }
    assert_eq!(s.read_blob(b"keep").await.unwrap(), Some(big(112)));
    assert_eq!(s.read_blob(b"b3").await.unwrap(), None, "removed");
    // Every retained version (10 to 12) restores its blobs.
    for v in 10..=12u64 {
        let r = open(tmp.path(), Some(v)).await.unwrap();
        let mut keys: Vec<String> = r.blob_keys().into_iter().map(|k| String::from_utf8(k).unwrap()).collect();
        keys.sort();
        let mut expected = vec![format!("b{}", v - 1), format!("b{v}"), "keep".to_string()];
        expected.sort();
        assert_eq!(keys, expected, "version {v}");
        assert_eq!(r.read_blob(b"keep").await.unwrap(), Some(big(100 + v)));
        assert_eq!(r.read_blob(format!("b{v}").as_bytes()).await.unwrap(), Some(big(v)));
        assert_eq!(r.get(b"plain"), Some(v.to_le_bytes().as_slice()));
    }
    // Files of blobs no stored version names are gone: the last purge ran
    // at the snapshot of version 12 and kept the files from the base
    // snapshot 8 on, which names b7 (written at 7), b8 and keep. Snapshots
    // hold names only.
    let mut total = 0;
    for p in 0..3 {
        let dir = tmp.path().join(p.to_string());
        let blobs: Vec<String> = match std::fs::read_dir(dir.join("blobs")) {
            Ok(d) => d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
            Err(_) => vec![],
        };
        for name in &blobs {
            let written: u64 = name.split('-').next().unwrap().parse().unwrap();
            assert!(written >= 7, "blob {name} of version {written} outlived every version naming it");
        }
        total += blobs.len();
        let snap = dir.join("12.snapshot");
        if snap.exists() {
            assert!(std::fs::metadata(&snap).unwrap().len() < 5_000, "a snapshot copies no blob value");
        }
    }
    assert!(total >= 3, "the live blobs' files remain: {total}");
}

#[tokio::test]
async fn commits_that_skip_versions_restore_through_their_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = open(tmp.path(), None).await.unwrap();
    // Versions 0..=30, committed only at 2, 5, 8, ... (every third batch):
    // each delta holds the changes of the batches since the last commit.
    let mut committed = vec![];
    for v in 0..=30u64 {
        s.put(format!("k{v}").into_bytes(), v.to_le_bytes().to_vec());
        if v >= 2 {
            s.remove(format!("k{}", v - 2).as_bytes());
        }
        if v % 3 == 2 {
            s.commit(v).await.unwrap();
            committed.push(v);
        }
    }
    let dir = CheckpointDir::open(tmp.path().to_str().unwrap()).unwrap();
    let names: Vec<String> = files::list_versions(&dir.child("0")).await.unwrap().iter().map(|f| f.name()).collect();
    assert!(names.contains(&"29.after-26.delta".to_string()), "{names:?}");
    // More deltas than the snapshot interval since the last one: a snapshot.
    assert!(names.iter().any(|n| n.ends_with(".snapshot")), "{names:?}");
    for v in committed.iter().rev().take(3) {
        let r = open(tmp.path(), Some(*v)).await.unwrap();
        let mut keys: Vec<Vec<u8>> = r.iter().map(|(k, _)| k.to_vec()).collect();
        keys.sort();
        assert_eq!(keys, vec![format!("k{}", v - 1).into_bytes(), format!("k{v}").into_bytes()], "version {v}");
    }
    // A version that was never committed cannot be restored, and says why.
    let e = open(tmp.path(), Some(28)).await.unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("state_checkpoint_interval"), "{e}");
    // A delta off the chain (a commit a crash cut short) is not read.
    let stray = VersionFile::delta(27, Some(26)).name();
    assert_eq!(stray, "27.delta");
    std::fs::write(tmp.path().join("0").join(&stray), b"not a state file").unwrap();
    let r = open(tmp.path(), Some(29)).await.unwrap();
    assert_eq!(r.len(), 2);
    assert!(open(tmp.path(), Some(27)).await.is_err());
}
