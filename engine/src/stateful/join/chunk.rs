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
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;

const NONE: u32 = u32::MAX;

/// A chunk is indexed once scans of it have read this many times its rows.
const SCANS_BEFORE_INDEX: usize = 4;

/// Words of the bitmap of probe hashes a scan checks first (2^15 bits).
const FILTER_WORDS: usize = 512;

/// The bit of hash `h` in that bitmap (its top bits).
#[inline]
fn filter_bit(h: u64) -> usize {
    (h >> (64 - 15)) as usize
}

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
    /// The index of the live rows of `chunk`.
    fn build(chunk: &SideChunk) -> Self {
        let hashes = &chunk.keys.hashes;
        let mut heads: HashMap<u64, u32> = HashMap::with_capacity(chunk.live);
        let mut next = vec![NONE; hashes.len()];
        for r in (0..hashes.len()).rev().filter(|r| chunk.is_live(*r)) {
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

/// One chunk of stored rows, in the order they came. Eviction removes the
/// rows whose eviction time is at or below a bound that only grows, so a
/// row is live while its time is above the chunk's bound: evicting never
/// moves a row, and a chunk is never sorted.
#[derive(Debug)]
pub(super) struct SideChunk {
    pub(super) batch: RecordBatch,
    /// Each row's eviction time.
    pub(super) times: ScalarBuffer<i64>,
    keys: KeyHashes,
    /// Built when probes pay for it.
    index: Option<HashIndex>,
    /// Rows read by scans since the chunk was made.
    scanned: usize,
    /// Rows at or below it are evicted (`i64::MIN`: none).
    pub(super) bound: i64,
    live: usize,
    min_time: i64,
    max_time: i64,
    pub(super) matched: Vec<bool>,
}

impl SideChunk {
    /// A chunk of `batch` keyed by `keys`, with the rows' eviction `times`
    /// and matched flags, and the rows at or below `bound` evicted.
    pub(super) fn try_new(
        keys: &[Arc<dyn PhysicalExpr>],
        batch: RecordBatch,
        times: ScalarBuffer<i64>,
        matched: Vec<bool>,
        bound: i64,
    ) -> Result<Self> {
        let keys = KeyHashes::of(keys, &batch)?;
        let min_time = times.iter().copied().min().unwrap_or(i64::MAX);
        let max_time = times.iter().copied().max().unwrap_or(i64::MIN);
        let live = if bound < min_time { times.len() } else { times.iter().filter(|t| **t > bound).count() };
        Ok(Self { batch, times, keys, index: None, scanned: 0, bound, live, min_time, max_time, matched })
    }

    /// Live rows.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Rows, live or not.
    pub(super) fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether row `row` is live (not evicted).
    #[inline]
    pub(super) fn is_live(&self, row: usize) -> bool {
        self.times[row] > self.bound
    }

    /// The live rows.
    pub(super) fn live_rows(&self) -> impl Iterator<Item = usize> + '_ {
        let all = self.bound < self.min_time;
        (0..self.len()).filter(move |r| all || self.is_live(*r))
    }

    /// Evict the rows at or below `bound`; returns those that were live.
    pub(super) fn evict(&mut self, bound: i64) -> Vec<usize> {
        if self.live == 0 || bound <= self.bound || bound < self.min_time {
            return vec![];
        }
        let old = self.bound;
        let gone: Vec<usize> = (0..self.len()).filter(|r| self.times[*r] > old && self.times[*r] <= bound).collect();
        self.bound = bound;
        self.live -= gone.len();
        if self.index.is_some() && self.live * 4 < self.len() {
            self.index = None;
        }
        gone
    }

    /// Whether every row is at or below `bound`.
    pub(super) fn all_at_or_below(&self, bound: i64) -> bool {
        self.max_time <= bound
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
            && (probe_rows >= unindexed || self.scanned + self.live() > SCANS_BEFORE_INDEX * self.len())
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
            c.index = Some(HashIndex::build(c));
        }
    }
    // The probe rows in a small table, for the chunks that are scanned,
    // behind a bitmap of their hashes' top bits that turns most stored rows
    // away before a table lookup.
    let table = chunks.iter().any(|c| c.index.is_none()).then(|| {
        let mut heads: HashMap<u64, u32> = HashMap::with_capacity(rows.len());
        let mut next = vec![NONE; rows.len()];
        let mut filter = vec![0u64; FILTER_WORDS];
        for (p, &i) in rows.iter().enumerate().rev() {
            let h = probe.hashes[i];
            let head = heads.entry(h).or_insert(NONE);
            next[p] = *head;
            *head = p as u32;
            let bit = filter_bit(h);
            filter[bit / 64] |= 1 << (bit % 64);
        }
        (heads, next, filter)
    });
    let mut found: Vec<Found> = vec![];
    for (pos, c) in chunks.iter_mut().enumerate() {
        let eq = KeyEq::try_new(&probe.arrays, &c.keys.arrays)?;
        let pos = pos as u32;
        match (&c.index, &table) {
            (Some(index), _) => {
                for &i in rows {
                    let h = probe.hashes[i];
                    for row in index.rows(h).filter(|r| c.is_live(*r)) {
                        if c.keys.hashes[row] == h && eq.equal(i, row) {
                            found.push((i as u32, pos, row as u32));
                        }
                    }
                }
            }
            (None, Some((heads, next, filter))) => {
                c.scanned += c.live();
                for row in c.live_rows() {
                    let h = c.keys.hashes[row];
                    let bit = filter_bit(h);
                    if filter[bit / 64] & (1 << (bit % 64)) == 0 {
                        continue;
                    }
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
                (prop::collection::vec((prop::option::of(0i64..6), 0u8..4, 0i64..10), 1..40), -1i64..10), 1..5),
            probes in prop::collection::vec(prop::collection::vec((0i64..7, 0u8..3), 0..30), 1..8),
        ) {
            let keys = key_exprs();
            let mut stored: Vec<SideChunk> = chunks
                .iter()
                .map(|(rows, bound)| {
                    let k: Vec<Option<i64>> = rows.iter().map(|(k, _, _)| *k).collect();
                    let t: Vec<Option<&str>> = rows.iter().map(|(_, t, _)| tag(*t)).collect();
                    let times: Vec<i64> = rows.iter().map(|(_, _, time)| *time).collect();
                    let n = rows.len();
                    SideChunk::try_new(&keys, batch(&k, &t), times.into(), vec![false; n], *bound).expect("a chunk")
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
                    for (pos, (chunk_rows, bound)) in chunks.iter().enumerate() {
                        for (r, (key, stored_tag, time)) in chunk_rows.iter().enumerate() {
                            if *time > *bound && *key == k[i] && tag(*stored_tag) == t[i] {
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
        let mut chunk =
            SideChunk::try_new(&keys, batch(&k, &t), vec![0; 100].into(), vec![false; 100], i64::MIN).expect("a chunk");
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

#[cfg(test)]
mod eviction_tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    #[test]
    fn eviction_removes_each_row_once_at_its_time_and_never_moves_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![10, 11, 12, 13, 14]))]).expect("a batch");
        let keys: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new("k", 0))];
        let times = vec![5, 1, 3, 7, 3];
        let mut chunk = SideChunk::try_new(&keys, batch, times.into(), vec![false; 5], i64::MIN).expect("a chunk");
        assert_eq!(chunk.live(), 5);
        assert!(chunk.evict(0).is_empty());
        assert_eq!(chunk.evict(3), vec![1, 2, 4]);
        assert!(chunk.evict(3).is_empty(), "a row is evicted once");
        assert!(chunk.evict(2).is_empty(), "a lower bound evicts nothing");
        assert_eq!(chunk.live(), 2);
        assert_eq!(chunk.live_rows().collect::<Vec<_>>(), vec![0, 3]);
        assert!(!chunk.all_at_or_below(6));
        assert_eq!(chunk.evict(6), vec![0]);
        assert!(chunk.all_at_or_below(7));
        // Restored with its bound, a chunk has the same live rows.
        let again = SideChunk::try_new(&keys, chunk.batch.clone(), chunk.times.clone(), vec![false; 5], chunk.bound)
            .expect("a chunk");
        assert_eq!(again.live_rows().collect::<Vec<_>>(), vec![3]);
        assert_eq!(again.live(), 1);
    }
}
