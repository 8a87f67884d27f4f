//! [`SideChunk`]: one immutable chunk of a join side's stored rows, and how
//! a batch of new rows of the other side probes a side's chunks.
//!
//! A chunk keeps its join keys' hashes (computed once, vectorized), and
//! builds a hash index over them only when one pays: a probe builds its
//! hash table on the smaller input, as a batch hash join does. A few probe
//! rows (a windowed maximum meeting the bids of its window, say) are put in
//! a small table and each chunk's hashes scanned against it; a chunk is
//! indexed once scans of it have cost more than building its index would,
//! or when the probe rows outnumber the unindexed rows. Chunks that are
//! evicted before anything probes them much are never indexed at all.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;

const NONE: u32 = u32::MAX;

/// A chunk is indexed once scans of it have read this many times its rows.
const SCANS_BEFORE_INDEX: usize = 4;

/// The hash state of join keys (not the partitioner's, so that the keys of
/// one state partition spread over a hash table's buckets).
fn hash_state() -> RandomState {
    RandomState::with_seed(0x5105_e0_1017)
}

/// Join keys of a batch of rows: the key columns and each row's hash.
#[derive(Debug)]
pub(super) struct KeyHashes {
    pub(super) arrays: Vec<ArrayRef>,
    pub(super) hashes: Vec<u64>,
}

impl KeyHashes {
    /// The keys `keys` evaluate to over `batch`, hashed.
    pub(super) fn of(keys: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Self> {
        let n = batch.num_rows();
        let arrays =
            keys.iter().map(|k| k.evaluate(batch)?.into_array(n)).collect::<datafusion::error::Result<Vec<_>>>()?;
        let mut hashes = vec![0; n];
        create_hashes(&arrays, &hash_state(), &mut hashes)?;
        Ok(Self { arrays, hashes })
    }
}

/// Key hash -> first row with it; `next` chains the rest, in row order.
#[derive(Debug)]
struct HashIndex {
    heads: HashMap<u64, u32>,
    next: Vec<u32>,
}

impl HashIndex {
    fn build(hashes: &[u64], from: usize) -> Self {
        let mut heads: HashMap<u64, u32> = HashMap::with_capacity(hashes.len() - from);
        let mut next = vec![NONE; hashes.len()];
        for r in (from..hashes.len()).rev() {
            let head = heads.entry(hashes[r]).or_insert(NONE);
            next[r] = *head;
            *head = r as u32;
        }
        Self { heads, next }
    }

    /// Rows with hash `h`, in row order.
    fn rows(&self, h: u64) -> impl Iterator<Item = usize> + '_ {
        let mut r = self.heads.get(&h).copied().unwrap_or(NONE);
        std::iter::from_fn(move || {
            (r != NONE).then(|| {
                let row = r as usize;
                r = self.next[row];
                row
            })
        })
    }
}

/// One chunk of stored rows.
#[derive(Debug)]
pub(super) struct SideChunk {
    /// The rows, by eviction time.
    pub(super) batch: RecordBatch,
    pub(super) times: Vec<i64>,
    keys: KeyHashes,
    /// Built when probes pay for it.
    index: Option<HashIndex>,
    /// Rows read by scans since the chunk was made.
    scanned: usize,
    /// Rows before `start` are evicted.
    pub(super) start: usize,
    pub(super) matched: Vec<bool>,
}

impl SideChunk {
    /// A chunk of `batch` (by eviction time `times`) keyed by `keys`.
    pub(super) fn try_new(
        keys: &[Arc<dyn PhysicalExpr>],
        batch: RecordBatch,
        times: Vec<i64>,
        matched: Vec<bool>,
        start: usize,
    ) -> Result<Self> {
        let keys = KeyHashes::of(keys, &batch)?;
        Ok(Self { batch, times, keys, index: None, scanned: 0, start, matched })
    }

    /// Live rows.
    pub(super) fn live(&self) -> usize {
        self.times.len() - self.start
    }

    /// Bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        let index = self.index.as_ref().map_or(0, |i| i.heads.capacity() * 16 + i.next.len() * 4);
        self.batch.get_array_memory_size() + self.times.len() * 17 + index
    }

    /// Whether probing it with `probe_rows` rows, when `unindexed` rows of
    /// the side have no index, should first index it.
    fn should_index(&self, probe_rows: usize, unindexed: usize) -> bool {
        self.index.is_none()
            && (probe_rows >= unindexed || self.scanned + self.live() > SCANS_BEFORE_INDEX * self.times.len())
    }
}

/// One (probe row, chunk position, stored row) match.
pub(super) type Found = (u32, u32, u32);

/// The matches of `rows` of `probe` among the live rows of `chunks`, by
/// probe row, chunk and stored row.
pub(super) fn probe_chunks<'a>(
    chunks: impl Iterator<Item = &'a mut SideChunk>,
    probe: &KeyHashes,
    rows: &[usize],
) -> Result<Vec<Found>> {
    let mut chunks: Vec<&mut SideChunk> = chunks.collect();
    if rows.is_empty() || chunks.is_empty() {
        return Ok(vec![]);
    }
    let unindexed: usize = chunks.iter().filter(|c| c.index.is_none()).map(|c| c.live()).sum();
    for c in chunks.iter_mut() {
        if c.should_index(rows.len(), unindexed) {
            c.index = Some(HashIndex::build(&c.keys.hashes, c.start));
        }
    }
    // The probe rows in a small table, for the chunks that are scanned.
    let table = chunks.iter().any(|c| c.index.is_none()).then(|| {
        let mut heads: HashMap<u64, u32> = HashMap::with_capacity(rows.len());
        let mut next = vec![NONE; rows.len()];
        for (p, &i) in rows.iter().enumerate().rev() {
            let head = heads.entry(probe.hashes[i]).or_insert(NONE);
            next[p] = *head;
            *head = p as u32;
        }
        (heads, next)
    });
    let mut found: Vec<Found> = vec![];
    for (pos, c) in chunks.iter_mut().enumerate() {
        let eq = KeyEq::try_new(&probe.arrays, &c.keys.arrays)?;
        let pos = pos as u32;
        match (&c.index, &table) {
            (Some(index), _) => {
                for &i in rows {
                    let h = probe.hashes[i];
                    for row in index.rows(h).filter(|r| *r >= c.start) {
                        if c.keys.hashes[row] == h && eq.equal(i, row) {
                            found.push((i as u32, pos, row as u32));
                        }
                    }
                }
            }
            (None, Some((heads, next))) => {
                c.scanned += c.live();
                for row in c.start..c.times.len() {
                    let h = c.keys.hashes[row];
                    let Some(mut p) = heads.get(&h).copied() else { continue };
                    while p != NONE {
                        let i = rows[p as usize];
                        if probe.hashes[i] == h && eq.equal(i, row) {
                            found.push((i as u32, pos, row as u32));
                        }
                        p = next[p as usize];
                    }
                }
            }
            (None, None) => {}
        }
    }
    // Chunk by chunk, so by probe row only after sorting.
    if !found.is_sorted() {
        found.sort_unstable();
    }
    Ok(found)
}

/// Equality of a probe row's keys and a stored row's.
struct KeyEq(Vec<datafusion::arrow::array::DynComparator>);

impl KeyEq {
    fn try_new(probe: &[ArrayRef], stored: &[ArrayRef]) -> Result<Self> {
        let cmps = probe
            .iter()
            .zip(stored)
            .map(|(p, s)| datafusion::arrow::array::make_comparator(p.as_ref(), s.as_ref(), SortOptions::default()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self(cmps))
    }

    fn equal(&self, probe_row: usize, stored_row: usize) -> bool {
        self.0.iter().all(|c| c(probe_row, stored_row) == Ordering::Equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;
    use proptest::prelude::*;

    fn batch(keys: &[Option<i64>], tags: &[Option<&str>]) -> RecordBatch {
        let schema =
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true), Field::new("t", DataType::Utf8, true)]));
        let columns: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from(keys.to_vec())), Arc::new(StringArray::from(tags.to_vec()))];
        RecordBatch::try_new(schema, columns).expect("a valid batch")
    }

    fn key_exprs() -> Vec<Arc<dyn PhysicalExpr>> {
        vec![Arc::new(Column::new("k", 0)), Arc::new(Column::new("t", 1))]
    }

    fn tag(v: u8) -> Option<&'static str> {
        ["a", "b", "c"].get(v as usize).copied()
    }

    proptest! {
        /// Whichever way a chunk is probed (scanned against a table of the
        /// probe rows, or through its index, built once scans or a large
        /// probe pay for it), the matches are exactly the live stored rows
        /// with equal, non-NULL keys, in (probe row, chunk, row) order.
        #[test]
        fn probes_find_exactly_the_rows_with_equal_keys(
            chunks in prop::collection::vec(
                (prop::collection::vec((prop::option::of(0i64..6), 0u8..4), 1..40), 0usize..5), 1..5),
            probes in prop::collection::vec(prop::collection::vec((0i64..7, 0u8..3), 0..30), 1..8),
        ) {
            let keys = key_exprs();
            let mut stored: Vec<SideChunk> = chunks
                .iter()
                .map(|(rows, start)| {
                    let k: Vec<Option<i64>> = rows.iter().map(|(k, _)| *k).collect();
                    let t: Vec<Option<&str>> = rows.iter().map(|(_, t)| tag(*t)).collect();
                    let n = rows.len();
                    let start = (*start).min(n);
                    SideChunk::try_new(&keys, batch(&k, &t), vec![0; n], vec![false; n], start).expect("a chunk")
                })
                .collect();
            for probe in &probes {
                let k: Vec<Option<i64>> = probe.iter().map(|(k, _)| Some(*k)).collect();
                let t: Vec<Option<&str>> = probe.iter().map(|(_, t)| tag(*t)).collect();
                let input = KeyHashes::of(&keys, &batch(&k, &t)).expect("keys");
                // Every other row, so that row numbers and positions differ.
                let rows: Vec<usize> = (0..probe.len()).filter(|i| i % 2 == 0 || probe.len() < 4).collect();
                let found = probe_chunks(stored.iter_mut(), &input, &rows).expect("a probe");
                let mut expected = vec![];
                for &i in &rows {
                    for (pos, (chunk_rows, start)) in chunks.iter().enumerate() {
                        for (r, (key, stored_tag)) in chunk_rows.iter().enumerate().skip((*start).min(chunk_rows.len())) {
                            if *key == k[i] && tag(*stored_tag) == t[i] {
                                expected.push((i as u32, pos as u32, r as u32));
                            }
                        }
                    }
                }
                prop_assert_eq!(found, expected);
            }
        }
    }

    #[test]
    fn a_chunk_scanned_often_enough_is_indexed() {
        let keys = key_exprs();
        let k: Vec<Option<i64>> = (0..100).map(Some).collect();
        let t = vec![Some("a"); 100];
        let mut chunk = SideChunk::try_new(&keys, batch(&k, &t), vec![0; 100], vec![false; 100], 0).expect("a chunk");
        let probe = KeyHashes::of(&keys, &batch(&[Some(7)], &[Some("a")])).expect("keys");
        for scan in 0..SCANS_BEFORE_INDEX {
            let found = probe_chunks(std::iter::once(&mut chunk), &probe, &[0]).expect("a probe");
            assert_eq!(found, vec![(0, 0, 7)]);
            assert!(chunk.index.is_none(), "indexed after {} scans", scan + 1);
        }
        let found = probe_chunks(std::iter::once(&mut chunk), &probe, &[0]).expect("a probe");
        assert_eq!(found, vec![(0, 0, 7)]);
        assert!(chunk.index.is_some(), "still scanned after {} scans", SCANS_BEFORE_INDEX + 1);
    }
}
