//! [`ColumnSide`]: one side's join state as immutable Arrow batches
//! ([`SideChunk`]s), each stored whole as one state-store blob, hash-indexed
//! when probes pay for it (Arroyo and Flink keep join state the same way: in
//! batches, evicted by time, never row by row).
//!
//! A batch's stored rows of a side become one chunk, as they came (the
//! batch itself when all are kept). The watermark evicts the rows whose
//! eviction time is at or below a bound: eviction raises a chunk's bound,
//! drops a chunk whose rows are all gone, and rewrites one that is mostly
//! (three quarters) gone. Once a side holds more than
//! [`MERGE_FANOUT`] chunks, small ones merge like a binary counter (up to
//! [`MERGE_ROWS`]), so a side kept for ever holds few chunks, and one the
//! watermark evicts within a few batches is never rewritten.
//! A commit writes the new chunks, and the bounds and matched flags that
//! changed: its cost follows what the batch changed, not the state.
//!
//! Store keys, after the side's tag byte: `c{id}` the chunk (Arrow IPC,
//! LZ4 frames when it holds strings: the side's columns, then the eviction
//! time), `e{id}` its eviction bound (i64 LE; absent: none evicted),
//! `m{id}` its rows' matched flags (one byte a row; absent: none matched).
//! Checkpoints written before kept chunks sorted by time and `o{id}`, the
//! offset of the first live row (u32 LE); they are read the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::{concat_batches, interleave, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;

use super::chunk::{probe_chunks, KeyHashes, SideChunk};
use super::Probe;
use crate::error::{Result, SluiceError};
use crate::state::StateStore;
use crate::stateful::live_chunks::{decode, encode_with};

/// Chunks with fewer live rows than this merge with their neighbours...
const MERGE_ROWS: usize = 1 << 20;
/// ...once the side holds more chunks than this.
const MERGE_FANOUT: usize = 8;

/// The name of the eviction-time column of a stored chunk.
pub(crate) const EXPIRES: &str = "__sluice_expires_at";

/// One side's stored rows, for one state partition.
#[derive(Debug)]
pub(super) struct ColumnSide {
    tag: u8,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    stored_schema: SchemaRef,
    /// Whether chunks are LZ4-compressed when written: for rows with
    /// variable-width columns (strings, bytes), whose writing costs more than compressing them;
    /// fixed-width rows compress too little to pay (Flink's checkpoints are
    /// uncompressed by default).
    lz4: bool,
    tracks: bool,
    chunks: BTreeMap<u32, SideChunk>,
    next_id: u32,
    /// Rows stored, and evicted, since the last commit.
    pub(super) updated: u64,
    pub(super) removed: u64,
}

/// A stored side's live rows: (rows, eviction times, matched flags), per chunk.
pub(crate) type StoredRows = Vec<(RecordBatch, Vec<i64>, Vec<bool>)>;

impl ColumnSide {
    /// State of side `tag` (0 left, 1 right) for rows of `schema` keyed by
    /// `keys`; `tracks`: whether its rows' matched flags are kept.
    pub(super) fn try_new(tag: u8, schema: &SchemaRef, keys: &[Arc<dyn PhysicalExpr>], tracks: bool) -> Result<Self> {
        Ok(Self {
            tag,
            keys: keys.to_vec(),
            schema: Arc::clone(schema),
            stored_schema: stored_schema(schema),
            // Strings, bytes, lists and structs: any column without a fixed width.
            lz4: schema.fields().iter().any(|f| {
                let t = f.data_type();
                t.primitive_width().is_none() && !matches!(t, DataType::Boolean | DataType::Null)
            }),
            tracks,
            chunks: BTreeMap::new(),
            next_id: 0,
            updated: 0,
            removed: 0,
        })
    }

    fn key(&self, kind: u8, id: u32) -> [u8; 6] {
        entry_key(self.tag, kind, id)
    }

    /// The stored rows whose key is that of `rows` of `keys`.
    pub(super) fn probe(&mut self, keys: &KeyHashes, rows: &[usize]) -> Result<Probe> {
        let ids: Vec<u32> = self.chunks.keys().copied().collect();
        let mut probe = Probe::default();
        let mut found: Vec<(usize, usize)> = vec![];
        let matches = probe_chunks(self.chunks.values_mut(), keys, rows)?;
        let chunks: Vec<&SideChunk> = self.chunks.values().collect();
        for (i, pos, row) in matches {
            let (pos, row) = (pos as usize, row as usize);
            probe.pair_this.push(i);
            probe.pair_other.push(found.len() as u32);
            probe.matched.push(chunks[pos].matched[row]);
            probe.ids.push(((ids[pos] as u64) << 32) | row as u64);
            found.push((pos, row));
        }
        let columns = (0..self.schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = chunks.iter().map(|ch| ch.batch.column(c).as_ref()).collect();
                if arrays.is_empty() {
                    return Ok(datafusion::arrow::array::new_empty_array(self.schema.field(c).data_type()));
                }
                Ok(interleave(&arrays, &found)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        probe.stored = Some(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(found.len())),
        )?);
        Ok(probe)
    }

    /// Mark the stored rows `ids` (of a [`Probe`]) as matched.
    pub(super) fn mark_matched(&mut self, store: &mut StateStore, ids: impl IntoIterator<Item = u64>) {
        let mut dirty = vec![];
        for id in ids {
            let (chunk, row) = ((id >> 32) as u32, (id & 0xffff_ffff) as usize);
            if let Some(c) = self.chunks.get_mut(&chunk) {
                if let Some(m) = c.matched.get_mut(row) {
                    if !*m {
                        *m = true;
                        dirty.push(chunk);
                    }
                }
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        for id in dirty {
            if let Some(c) = self.chunks.get(&id) {
                store.put(self.key(b'm', id), c.matched.iter().map(|m| *m as u8).collect());
            }
        }
    }

    /// Store `rows` of `batch`, with their eviction times and matched flags
    /// (per row of `batch`), as a new chunk.
    pub(super) fn insert(
        &mut self,
        store: &mut StateStore,
        batch: &RecordBatch,
        rows: Vec<u32>,
        times: &[i64],
        matched: &[bool],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.updated += rows.len() as u64;
        // Most often every row is kept: then the chunk is the batch itself.
        let (taken, t, m) = if rows.len() == batch.num_rows() {
            (batch.clone(), times.to_vec(), matched.to_vec())
        } else {
            let t = rows.iter().map(|r| times[*r as usize]).collect();
            let m = rows.iter().map(|r| matched[*r as usize]).collect();
            (take_record_batch(batch, &UInt32Array::from(rows))?, t, m)
        };
        let id = self.take_id()?;
        self.add(store, id, taken, t, m)?;
        self.merge_small(store)
    }

    fn take_id(&mut self) -> Result<u32> {
        let id = self.next_id;
        self.next_id = id.checked_add(1).ok_or_else(|| {
            SluiceError::internal("a join side wrote 4 billion state chunks; restart it from a new checkpoint")
        })?;
        Ok(id)
    }

    /// Build chunk `id` of `batch` and write it to `store`.
    fn add(
        &mut self,
        store: &mut StateStore,
        id: u32,
        batch: RecordBatch,
        times: Vec<i64>,
        m: Vec<bool>,
    ) -> Result<()> {
        let times = ScalarBuffer::from(times);
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(Int64Array::new(times.clone(), None)));
        // Encoded (LZ4) only if still stored at the next commit.
        let stored = RecordBatch::try_new(Arc::clone(&self.stored_schema), columns)?;
        let encode: fn(&RecordBatch) -> Result<Vec<u8>> =
            if self.lz4 { |b| encode_with(b, true) } else { |b| encode_with(b, false) };
        store.put_batch_blob(self.key(b'c', id), stored, encode);
        if self.tracks && m.iter().any(|m| *m) {
            store.put(self.key(b'm', id), m.iter().map(|m| *m as u8).collect());
        }
        let chunk = SideChunk::try_new(&self.keys, batch, times, m, i64::MIN)?;
        self.chunks.insert(id, chunk);
        Ok(())
    }

    /// Merge the two newest chunks while the side holds more than
    /// [`MERGE_FANOUT`] chunks and they are small and alike in size.
    fn merge_small(&mut self, store: &mut StateStore) -> Result<()> {
        loop {
            if self.chunks.len() <= MERGE_FANOUT {
                return Ok(());
            }
            let mut newest = self.chunks.iter().rev();
            let (Some((b, cb)), Some((a, ca))) = (newest.next(), newest.next()) else { return Ok(()) };
            if cb.live() >= MERGE_ROWS || ca.live() >= MERGE_ROWS || cb.live() * 2 < ca.live() {
                return Ok(());
            }
            let pair = [*a, *b];
            self.rewrite(store, &pair)?;
        }
    }

    /// Replace chunks `ids` by one chunk of their live rows.
    fn rewrite(&mut self, store: &mut StateStore, ids: &[u32]) -> Result<()> {
        let (mut batches, mut times, mut matched) = (vec![], vec![], vec![]);
        for id in ids {
            let c =
                self.chunks.remove(id).ok_or_else(|| SluiceError::internal("a join chunk to rewrite is missing"))?;
            if c.live() == c.len() {
                batches.push(c.batch.clone());
                times.extend_from_slice(&c.times);
                matched.extend_from_slice(&c.matched);
            } else {
                let rows: Vec<u32> = c.live_rows().map(|r| r as u32).collect();
                times.extend(rows.iter().map(|r| c.times[*r as usize]));
                matched.extend(rows.iter().map(|r| c.matched[*r as usize]));
                batches.push(take_record_batch(&c.batch, &UInt32Array::from(rows))?);
            }
            self.forget(store, *id);
        }
        let all = concat_batches(&self.schema, &batches)?;
        let id = self.take_id()?;
        self.add(store, id, all, times, matched)
    }

    fn forget(&self, store: &mut StateStore, id: u32) {
        for kind in [b'c', b'e', b'o', b'm'] {
            store.remove(&self.key(kind, id));
        }
    }

    /// Evict the rows whose eviction time <= `bound`; with `unmatched`,
    /// return those of them that never matched.
    pub(super) fn evict(&mut self, store: &mut StateStore, bound: i64, unmatched: bool) -> Result<Vec<RecordBatch>> {
        let mut out = vec![];
        let mut rewrite = vec![];
        let mut gone = vec![];
        let tag = self.tag;
        for (id, c) in self.chunks.iter_mut() {
            let evicted = c.live();
            if c.all_at_or_below(bound) {
                if unmatched {
                    let rows: Vec<u32> = c.live_rows().filter(|r| !c.matched[*r]).map(|r| r as u32).collect();
                    if !rows.is_empty() {
                        out.push(take_record_batch(&c.batch, &UInt32Array::from(rows))?);
                    }
                }
                self.removed += evicted as u64;
                gone.push(*id);
                continue;
            }
            let rows = c.evict(bound);
            if rows.is_empty() {
                continue;
            }
            if unmatched {
                let rows: Vec<u32> = rows.iter().filter(|r| !c.matched[**r]).map(|r| *r as u32).collect();
                if !rows.is_empty() {
                    out.push(take_record_batch(&c.batch, &UInt32Array::from(rows))?);
                }
            }
            self.removed += rows.len() as u64;
            // Rewritten once mostly gone: copying a quarter of the rows
            // frees three quarters (a chunk the watermark is passing is
            // most often gone whole a batch later).
            if c.live() * 4 < c.len() {
                rewrite.push(*id);
            } else {
                store.put(entry_key(tag, b'e', *id), c.bound.to_le_bytes().to_vec());
            }
        }
        let changed = !gone.is_empty() || !rewrite.is_empty();
        for id in gone {
            self.chunks.remove(&id);
            self.forget(store, id);
        }
        for id in rewrite {
            self.rewrite(store, &[id])?;
        }
        if changed {
            self.merge_small(store)?;
        }
        Ok(out)
    }

    /// Rebuild the chunks from `store` (after a restore).
    pub(super) async fn restore(&mut self, store: &StateStore) -> Result<()> {
        self.chunks.clear();
        self.next_id = 0;
        for (id, batch, times, matched, bound) in read_side(store, self.tag, &self.schema).await? {
            self.next_id = self.next_id.max(id + 1);
            let chunk = SideChunk::try_new(&self.keys, batch, times, matched, bound)?;
            self.chunks.insert(id, chunk);
        }
        Ok(())
    }

    /// Rows kept.
    pub(super) fn num_rows(&self) -> usize {
        self.chunks.values().map(SideChunk::live).sum()
    }

    /// Bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        self.chunks.values().map(SideChunk::memory_bytes).sum()
    }
}

/// The store key of entry `kind` of chunk `id` of side `tag`.
fn entry_key(tag: u8, kind: u8, id: u32) -> [u8; 6] {
    let b = id.to_be_bytes();
    [tag, kind, b[0], b[1], b[2], b[3]]
}

/// The schema of a stored chunk: the side's columns, then the eviction time.
fn stored_schema(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(EXPIRES, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

fn damaged(what: &str) -> SluiceError {
    SluiceError::plan(format!(
        "a stored join state entry {what}: the state is damaged, or was written by another operator; restore the \
         checkpoint from a backup or use a new checkpoint location"
    ))
}

/// Every chunk of side `tag` in `store`: (id, rows, eviction times, matched
/// flags, eviction bound).
async fn read_side(
    store: &StateStore,
    tag: u8,
    schema: &SchemaRef,
) -> Result<Vec<(u32, RecordBatch, ScalarBuffer<i64>, Vec<bool>, i64)>> {
    let id_of = |k: &[u8]| -> Result<u32> {
        let b: [u8; 4] = k.get(2..).and_then(|b| b.try_into().ok()).ok_or_else(|| damaged("has a malformed key"))?;
        Ok(u32::from_be_bytes(b))
    };
    let mut bounds = HashMap::<u32, i64>::default();
    let mut starts = HashMap::<u32, usize>::default();
    let mut flags = HashMap::<u32, Vec<bool>>::default();
    for (k, v) in store.iter() {
        match k {
            [t, b'e', ..] if *t == tag => {
                let b: [u8; 8] = v.try_into().map_err(|_| damaged("has a malformed eviction bound"))?;
                bounds.insert(id_of(k)?, i64::from_le_bytes(b));
            }
            [t, b'o', ..] if *t == tag => {
                let b: [u8; 4] = v.try_into().map_err(|_| damaged("has a malformed start offset"))?;
                starts.insert(id_of(k)?, u32::from_le_bytes(b) as usize);
            }
            [t, b'm', ..] if *t == tag => {
                flags.insert(id_of(k)?, v.iter().map(|m| *m != 0).collect());
            }
            [0 | 1, b'e' | b'o' | b'm', ..] => {}
            _ => return Err(damaged("has an unknown key")),
        }
    }
    let stored = stored_schema(schema);
    let mut out = vec![];
    for k in store.blob_keys() {
        match k.as_slice() {
            [t, b'c', ..] if *t == tag => {}
            [0 | 1, b'c', ..] => continue,
            _ => return Err(damaged("has an unknown key")),
        }
        let id = id_of(&k)?;
        let bytes = store.read_blob(&k).await?.ok_or_else(|| damaged("is missing"))?;
        let batch = decode(&bytes, &stored, "join state chunk")?;
        let n = batch.num_rows();
        let last = batch.num_columns() - 1;
        let times = batch
            .column(last)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| damaged("has no eviction times"))?
            .values()
            .clone();
        let rows = RecordBatch::try_new(Arc::clone(schema), batch.columns()[..last].to_vec())?;
        let matched = flags.remove(&id).unwrap_or_else(|| vec![false; n]);
        if matched.len() != n {
            return Err(damaged("disagrees with its chunk"));
        }
        // A chunk from before bounds: sorted by time, its live rows from
        // an offset on, so its bound is the time before that offset.
        let bound = match (bounds.remove(&id), starts.remove(&id)) {
            (Some(bound), _) => bound,
            (None, Some(start)) if start > 0 => {
                // Eviction left every row from the offset on above the
                // evicted times.
                if start > n || times.windows(2).any(|w| w[0] > w[1]) || (start < n && times[start] == times[start - 1])
                {
                    return Err(damaged("disagrees with its chunk"));
                }
                times[start - 1]
            }
            (None, _) => i64::MIN,
        };
        out.push((id, rows, times, matched, bound));
    }
    out.sort_by_key(|c| c.0);
    Ok(out)
}

/// The live rows of side `tag` of a columnar join state in `store`, for
/// `sluice_state`: per chunk, its rows, their eviction times and matched
/// flags.
pub(crate) async fn stored_rows(store: &StateStore, tag: u8, schema: &SchemaRef) -> Result<StoredRows> {
    let mut out = vec![];
    for (_, batch, times, matched, bound) in read_side(store, tag, schema).await? {
        let live: Vec<u32> = (0..times.len() as u32).filter(|r| times[*r as usize] > bound).collect();
        let t = live.iter().map(|r| times[*r as usize]).collect();
        let m = live.iter().map(|r| matched[*r as usize]).collect();
        out.push((take_record_batch(&batch, &UInt32Array::from(live))?, t, m));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointDir;
    use crate::state::StateStoreConfig;
    use datafusion::physical_expr::expressions::Column;

    fn rows(keys: &[i64], schema: &SchemaRef) -> RecordBatch {
        RecordBatch::try_new(Arc::clone(schema), vec![Arc::new(Int64Array::from(keys.to_vec()))]).expect("a batch")
    }

    /// A chunk written before bounds (sorted by time, with a start offset)
    /// and one written with a bound restore to the same live rows.
    #[tokio::test]
    async fn chunks_with_start_offsets_and_with_bounds_restore_their_live_rows() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let keys: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new("k", 0))];
        let tmp = tempfile::tempdir().expect("a directory");
        let config = StateStoreConfig { num_partitions: 1, snapshot_interval: 4, min_versions_to_retain: 2 };
        let dir = || CheckpointDir::open(tmp.path().to_str().expect("a path")).expect("a checkpoint directory");
        let mut store = StateStore::open(dir(), config, None).await.expect("a store");
        let stored = |keys: &[i64], times: &[i64]| {
            let mut columns = rows(keys, &schema).columns().to_vec();
            columns.push(Arc::new(Int64Array::from(times.to_vec())));
            encode_with(&RecordBatch::try_new(stored_schema(&schema), columns).expect("a chunk"), true)
                .expect("encoded")
        };
        // Before bounds: sorted by time, the first two rows evicted.
        store.put_blob(entry_key(0, b'c', 0), stored(&[10, 11, 12, 13], &[1, 2, 3, 4]));
        store.put(entry_key(0, b'o', 0), 2u32.to_le_bytes().to_vec());
        // With a bound: in arrival order, the rows at or below 5 evicted.
        store.put_blob(entry_key(0, b'c', 1), stored(&[20, 21, 22], &[7, 5, 9]));
        store.put(entry_key(0, b'e', 1), 5i64.to_le_bytes().to_vec());
        store.commit(0).await.expect("a commit");
        let store = StateStore::open(dir(), config, Some(0)).await.expect("a restore");
        let mut side = ColumnSide::try_new(0, &schema, &keys, false).expect("a side");
        side.restore(&store).await.expect("restored");
        assert_eq!(side.num_rows(), 4);
        let live: Vec<(Vec<i64>, Vec<i64>)> = stored_rows(&store, 0, &schema)
            .await
            .expect("stored rows")
            .into_iter()
            .map(|(b, t, _)| (b.column(0).as_any().downcast_ref::<Int64Array>().expect("ints").values().to_vec(), t))
            .collect();
        assert_eq!(live, vec![(vec![12, 13], vec![3, 4]), (vec![20, 22], vec![7, 9])]);
        // Both keep evicting by time: 4 and below goes.
        let mut store = store;
        side.evict(&mut store, 4, false).expect("evicted");
        assert_eq!(side.num_rows(), 2);
    }
}
