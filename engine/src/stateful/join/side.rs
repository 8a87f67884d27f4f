//! One side's join state in the row store (checkpoints written before
//! [`ColumnSide`](super::columns::ColumnSide)): its rows in the operator's state store, keyed by
//! join key and a sequence number, with an in-memory index from join key to
//! the rows stored under it (Spark's `KeyToNumValues` and
//! `KeyWithIndexToValue` stores, in one).
//!
//! Store key: `[side][join key (Arrow row format)][sequence, 8 bytes BE]`.
//! Value: `[eviction time, i64 LE][matched, 1 byte][row (Arrow row format)]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;

use super::Probe;
use crate::error::{Result, SluiceError};
use crate::state::StateStore;

const SEQ: usize = 8;
const HEADER: usize = 9;

/// A stored row's eviction time (µs; `i64::MAX`: never).
pub(crate) fn value_time(v: &[u8]) -> i64 {
    v.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes).unwrap_or(i64::MAX)
}

/// Whether a stored row has matched a row of the other side.
pub(crate) fn value_matched(v: &[u8]) -> bool {
    v.get(8).is_some_and(|m| *m != 0)
}

/// The stored row, without its header.
pub(crate) fn value_row(v: &[u8]) -> &[u8] {
    v.get(HEADER..).unwrap_or_default()
}

/// The state of one side of a join, for one state partition.
#[derive(Debug)]
pub(super) struct SideState {
    tag: u8,
    row_conv: RowConverter,
    schema: SchemaRef,
    /// Join key -> sequence numbers of the rows stored under it.
    index: HashMap<Vec<u8>, Vec<u64>>,
    /// Eviction time -> store keys of the rows evicted then (rows that are
    /// never evicted are not listed), so eviction touches only what goes.
    by_time: BTreeMap<i64, Vec<Vec<u8>>>,
}

impl SideState {
    /// State of side `tag` (0 left, 1 right) for rows of `schema` keyed by
    /// `keys`.
    pub(super) fn try_new(tag: u8, schema: &SchemaRef) -> Result<Self> {
        let row_fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let row_conv = RowConverter::new(row_fields).map_err(|e| {
            SluiceError::unsupported(format!(
                "a row of the join's {} side cannot be stored in join state (a column of a type the state cannot \
                 encode): {e}; select only scalar columns before the join",
                if tag == 0 { "left" } else { "right" }
            ))
        })?;
        Ok(Self { tag, row_conv, schema: Arc::clone(schema), index: HashMap::default(), by_time: BTreeMap::new() })
    }

    /// The row converter of join keys `keys` over `schema` (both sides'
    /// keys convert to the same bytes: the planner gives them one type).
    pub(super) fn key_converter(schema: &SchemaRef, keys: &[Arc<dyn PhysicalExpr>]) -> Result<RowConverter> {
        let key_fields = keys.iter().map(|k| Ok(SortField::new(k.data_type(schema)?))).collect::<Result<Vec<_>>>()?;
        RowConverter::new(key_fields).map_err(|e| {
            SluiceError::unsupported(format!("a stream-stream join key cannot be hashed into join state: {e}"))
        })
    }

    fn store_key(&self, key: &[u8], seq: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + key.len() + SEQ);
        k.push(self.tag);
        k.extend_from_slice(key);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    fn split_key(store_key: &[u8]) -> Option<(&[u8], u64)> {
        if store_key.len() < 1 + SEQ {
            return None;
        }
        let (key, seq) = store_key[1..].split_at(store_key.len() - 1 - SEQ);
        Some((key, u64::from_be_bytes(seq.try_into().ok()?)))
    }

    /// Rebuild the index from the rows in `store` (after a restore).
    pub(super) fn rebuild(&mut self, store: &StateStore) -> Result<()> {
        self.index.clear();
        self.by_time.clear();
        let tag = self.tag;
        for (k, v) in store.iter().filter(|(k, _)| k.first() == Some(&tag)) {
            let (key, seq) = Self::split_key(k)
                .ok_or_else(|| SluiceError::internal("a join state key shorter than its sequence number"))?;
            self.index.entry(key.to_vec()).or_default().push(seq);
            let time = value_time(v);
            if time != i64::MAX {
                self.by_time.entry(time).or_default().push(k.to_vec());
            }
        }
        for seqs in self.index.values_mut() {
            seqs.sort_unstable();
        }
        Ok(())
    }

    /// Store a row under join key `key`.
    pub(super) fn insert(
        &mut self,
        store: &mut StateStore,
        key: &[u8],
        seq: u64,
        time: i64,
        matched: bool,
        row: &[u8],
    ) {
        let mut v = Vec::with_capacity(HEADER + row.len());
        v.extend_from_slice(&time.to_le_bytes());
        v.push(matched as u8);
        v.extend_from_slice(row);
        let store_key = self.store_key(key, seq);
        store.put(&store_key, v);
        if time != i64::MAX {
            self.by_time.entry(time).or_default().push(store_key);
        }
        self.index.entry_ref(key).or_default().push(seq);
    }

    /// The stored rows whose key is that of `rows` of `keys` (each found
    /// once: a key is looked up once).
    pub(super) fn probe(&self, store: &StateStore, keys: &Rows, rows: &[usize]) -> Result<Probe> {
        let mut found: Vec<(Vec<u8>, &[u8])> = vec![];
        let mut ranges: HashMap<&[u8], (usize, usize)> = HashMap::default();
        let mut probe = Probe::default();
        for &i in rows {
            let key = keys.row(i);
            let key = key.data();
            let (start, end) = *ranges.entry(key).or_insert_with(|| {
                let start = found.len();
                self.lookup(store, key, &mut found);
                (start, found.len())
            });
            for j in start..end {
                probe.pair_this.push(i as u32);
                probe.pair_other.push(j as u32);
            }
        }
        probe.stored = Some(self.decode(found.iter().map(|(_, v)| *v))?);
        probe.matched = found.iter().map(|(_, v)| value_matched(v)).collect();
        probe.ids = (0..found.len() as u64).collect();
        probe.keys = found.into_iter().map(|(k, _)| k).collect();
        Ok(probe)
    }

    /// The store keys, and values, of the rows stored under `key`.
    fn lookup<'s>(&self, store: &'s StateStore, key: &[u8], out: &mut Vec<(Vec<u8>, &'s [u8])>) {
        let Some(seqs) = self.index.get(key) else { return };
        for seq in seqs {
            let k = self.store_key(key, *seq);
            if let Some(v) = store.get(&k) {
                out.push((k, v));
            }
        }
    }

    /// Mark the stored row `store_key` as matched.
    pub(super) fn set_matched(store: &mut StateStore, store_key: &[u8]) {
        if let Some(v) = store.get(store_key) {
            if !value_matched(v) {
                let mut v = v.to_vec();
                if let Some(flag) = v.get_mut(8) {
                    *flag = 1;
                    store.put(store_key, v);
                }
            }
        }
    }

    /// The rows of `batch` in row format.
    pub(super) fn encode(&self, batch: &RecordBatch) -> Result<Rows> {
        Ok(self.row_conv.convert_columns(batch.columns())?)
    }

    /// Stored values (as returned by [`Self::lookup`] or eviction) as rows of
    /// this side's schema.
    pub(super) fn decode<'v>(&self, values: impl IntoIterator<Item = &'v [u8]>) -> Result<RecordBatch> {
        let parser = self.row_conv.parser();
        let columns: Vec<ArrayRef> =
            self.row_conv.convert_rows(values.into_iter().map(|v| parser.parse(value_row(v))))?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Remove this side's rows whose eviction time <= `bound`; returns their
    /// values.
    pub(super) fn evict(&mut self, store: &mut StateStore, bound: i64) -> Vec<Vec<u8>> {
        if self.by_time.first_key_value().is_none_or(|(t, _)| *t > bound) {
            return vec![];
        }
        let keep = self.by_time.split_off(&bound.saturating_add(1));
        let gone = std::mem::replace(&mut self.by_time, keep);
        let mut removed = vec![];
        let mut by_key: HashMap<&[u8], Vec<u64>> = HashMap::default();
        for store_key in gone.values().flatten() {
            if let Some(v) = store.remove(store_key) {
                removed.push(v);
            }
            if let Some((key, seq)) = Self::split_key(store_key) {
                by_key.entry(key).or_default().push(seq);
            }
        }
        for (key, mut seqs) in by_key {
            let Some(list) = self.index.get_mut(key) else { continue };
            if seqs.len() >= list.len() {
                self.index.remove(key);
                continue;
            }
            seqs.sort_unstable();
            list.retain(|s| seqs.binary_search(s).is_err());
            if list.is_empty() {
                self.index.remove(key);
            }
        }
        removed
    }
}
