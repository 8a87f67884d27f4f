//! [`StateChunks`]: the current partial state of every group of a
//! [`LiveAggregate`](super::LiveAggregate), as immutable Arrow batches
//! (chunks), each stored whole as one state-store blob entry (a file of its
//! own, so a snapshot of the store names chunks instead of copying them).
//!
//! A batch writes the new state of the groups it changed as one new chunk;
//! a group's current state is its row in the newest chunk holding it (the
//! older rows are garbage). Chunk ids only grow, so a restart finds every
//! group's state by reading the chunks in id order. A chunk whose rows are
//! all superseded is deleted; a chunk that became mostly garbage, or a run
//! of small chunks, is rewritten as one chunk of live rows (a chunk of live
//! rows only may take any new id: no newer row of its groups exists). A
//! chunk never grows past the larger of the batch that wrote it and
//! [`SMALL_CHUNK_ROWS`], so a commit's cost follows what the batch changed,
//! not the groups in the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Result, SluiceError};
use crate::state::StateStore;

/// Chunks with fewer live rows than this are merged with their neighbours.
pub(crate) const SMALL_CHUNK_ROWS: usize = 1 << 16;

/// Where a group's current state row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub chunk: u32,
    pub row: u32,
}

impl Loc {
    /// A group with no stored state yet.
    pub const NONE: Loc = Loc { chunk: u32::MAX, row: u32::MAX };
}

/// One chunk: its rows (keys, then states) and each row's group id.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub batch: RecordBatch,
    pub groups: Vec<u32>,
    /// Rows that are still their group's current state.
    pub live: usize,
}

/// The chunks of one operator, and where each group's state is.
#[derive(Debug, Default)]
pub(crate) struct StateChunks {
    pub chunks: BTreeMap<u32, Chunk>,
    /// Per group id.
    pub locs: Vec<Loc>,
    pub next_id: u32,
}

/// The store key of state chunk `id`.
pub(crate) fn chunk_key(id: u32) -> [u8; 5] {
    let b = id.to_be_bytes();
    [b'c', b[0], b[1], b[2], b[3]]
}

impl StateChunks {
    /// A fresh chunk id.
    pub fn take_id(&mut self) -> Result<u32> {
        let id = self.next_id;
        self.next_id = id.checked_add(1).ok_or_else(|| {
            SluiceError::internal("an aggregation wrote 4 billion state chunks; restart it from a new checkpoint")
        })?;
        Ok(id)
    }

    /// The stored states of `groups` (ids with a location), as columns
    /// `columns` of their chunks, in the order given.
    pub fn gather(&self, groups: &[usize], columns: std::ops::Range<usize>) -> Result<Vec<ArrayRef>> {
        let ids: Vec<u32> = self.chunks.keys().copied().collect();
        let mut indices = Vec::with_capacity(groups.len());
        for g in groups {
            let loc = self.locs[*g];
            let pos =
                ids.binary_search(&loc.chunk).map_err(|_| SluiceError::internal("a group's state chunk is missing"))?;
            indices.push((pos, loc.row as usize));
        }
        let mut out = vec![];
        for c in columns {
            let arrays: Vec<&dyn datafusion::arrow::array::Array> =
                self.chunks.values().map(|ch| ch.batch.column(c).as_ref()).collect();
            out.push(interleave(&arrays, &indices)?);
        }
        Ok(out)
    }

    /// Install `batch` (the new states of `groups`, row for row) as chunk
    /// `id`, superseding those groups' older rows, and write it to `store`.
    /// Then delete emptied chunks and rewrite sparse or small ones.
    pub fn install(&mut self, id: u32, batch: RecordBatch, groups: Vec<u32>, store: &mut StateStore) -> Result<()> {
        let mut touched = vec![];
        for (row, g) in groups.iter().enumerate() {
            let g = *g as usize;
            if g >= self.locs.len() {
                self.locs.resize(g + 1, Loc::NONE);
            }
            let old = self.locs[g];
            if old != Loc::NONE {
                if let Some(c) = self.chunks.get_mut(&old.chunk) {
                    c.live -= 1;
                    touched.push(old.chunk);
                }
            }
            self.locs[g] = Loc { chunk: id, row: row as u32 };
        }
        store.put_batch_blob(chunk_key(id), batch.clone(), encode);
        let rows = batch.num_rows();
        self.chunks.insert(id, Chunk { batch, groups, live: rows });
        touched.sort_unstable();
        touched.dedup();
        let mut rewrite = vec![];
        for c in touched {
            let Some(chunk) = self.chunks.get(&c) else { continue };
            if chunk.live == 0 {
                self.chunks.remove(&c);
                store.remove(&chunk_key(c));
            } else if chunk.live * 2 < chunk.batch.num_rows() {
                rewrite.push(c);
            }
        }
        if !rewrite.is_empty() {
            self.rewrite(&rewrite, store)?;
        }
        // Small chunks merge like a binary counter: the newest into the one
        // before it while it is at least half that one's size, so a run of
        // small batches costs O(log) rewrites per row.
        loop {
            let mut newest = self.chunks.iter().rev();
            let (Some((b, cb)), Some((a, ca))) = (newest.next(), newest.next()) else { break };
            if cb.live >= SMALL_CHUNK_ROWS || ca.live >= SMALL_CHUNK_ROWS || cb.live * 2 < ca.live {
                break;
            }
            let pair = [*a, *b];
            self.rewrite(&pair, store)?;
        }
        Ok(())
    }

    /// Replace chunks `ids` by one chunk of their live rows.
    fn rewrite(&mut self, ids: &[u32], store: &mut StateStore) -> Result<()> {
        let mut groups = vec![];
        let mut indices = vec![];
        let mut arrays_of = vec![];
        for (pos, c) in ids.iter().enumerate() {
            let chunk = self.chunks.get(c).ok_or_else(|| SluiceError::internal("a chunk to rewrite is missing"))?;
            for (row, g) in chunk.groups.iter().enumerate() {
                if self.locs[*g as usize] == (Loc { chunk: *c, row: row as u32 }) {
                    groups.push(*g);
                    indices.push((pos, row));
                }
            }
            arrays_of.push(&chunk.batch);
        }
        let schema = arrays_of.first().ok_or_else(|| SluiceError::internal("no chunk to rewrite"))?.schema();
        let mut columns = vec![];
        for col in 0..schema.fields().len() {
            let arrays: Vec<&dyn datafusion::arrow::array::Array> =
                arrays_of.iter().map(|b| b.column(col).as_ref()).collect();
            columns.push(interleave(&arrays, &indices)?);
        }
        let batch = RecordBatch::try_new(schema, columns)?;
        for c in ids {
            self.chunks.remove(c);
            store.remove(&chunk_key(*c));
        }
        let id = self.take_id()?;
        for (row, g) in groups.iter().enumerate() {
            self.locs[*g as usize] = Loc { chunk: id, row: row as u32 };
        }
        store.put_batch_blob(chunk_key(id), batch.clone(), encode);
        let live = batch.num_rows();
        self.chunks.insert(id, Chunk { batch, groups, live });
        Ok(())
    }

    /// Every group's current state, in chunk order.
    pub fn live_batches(&self) -> Result<Vec<RecordBatch>> {
        let mut out = vec![];
        for (c, chunk) in &self.chunks {
            if chunk.live == chunk.batch.num_rows() {
                out.push(chunk.batch.clone());
                continue;
            }
            let rows: Vec<u32> = (0..chunk.groups.len() as u32)
                .filter(|r| self.locs[chunk.groups[*r as usize] as usize] == (Loc { chunk: *c, row: *r }))
                .collect();
            let idx = datafusion::arrow::array::UInt32Array::from(rows);
            out.push(datafusion::arrow::compute::take_record_batch(&chunk.batch, &idx)?);
        }
        Ok(out)
    }

    /// Bytes held by the chunks and locations.
    pub fn memory_bytes(&self) -> usize {
        self.chunks.values().map(|c| c.batch.get_array_memory_size() + c.groups.len() * 4).sum::<usize>()
            + self.locs.len() * std::mem::size_of::<Loc>()
    }

    /// Forget everything (before a restore).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A chunk's (or a window pane's) stored bytes: its batch as an Arrow IPC
/// stream.
pub(crate) fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    encode_with(batch, false)
}

/// [`encode`], with each buffer LZ4-compressed when `lz4` (for rows that
/// are mostly strings, such as a join's stored rows, whose writing costs
/// more than compressing them). A reader needs nothing to know it.
pub(crate) fn encode_with(batch: &RecordBatch, lz4: bool) -> Result<Vec<u8>> {
    use datafusion::arrow::ipc::writer::IpcWriteOptions;
    // Sized up front: growing a large buffer copies it and faults in fresh pages.
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + 4096);
    let mut options = IpcWriteOptions::default();
    if lz4 {
        options = options.try_with_compression(Some(datafusion::arrow::ipc::CompressionType::LZ4_FRAME))?;
    }
    let mut w = StreamWriter::try_new_with_options(&mut out, &batch.schema(), options)?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

/// The rows of a stored chunk, checked against `schema`.
pub(crate) fn decode(bytes: &[u8], schema: &SchemaRef, what: &str) -> Result<RecordBatch> {
    let damaged = |why: &dyn std::fmt::Display| {
        SluiceError::plan(format!(
            "a stored {what} cannot be read ({why}): the state is damaged; restore the checkpoint from a backup or \
             use a new checkpoint location"
        ))
    };
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| damaged(&e))?;
    let types =
        |s: &datafusion::arrow::datatypes::Schema| s.fields().iter().map(|f| f.data_type().clone()).collect::<Vec<_>>();
    if types(&reader.schema()) != types(schema) {
        return Err(damaged(&"its columns are not those of this aggregation's state"));
    }
    let mut batches = vec![];
    for b in reader {
        let b = b.map_err(|e| damaged(&e))?;
        batches.push(RecordBatch::try_new(Arc::clone(schema), b.columns().to_vec()).map_err(|e| damaged(&e))?);
    }
    Ok(datafusion::arrow::compute::concat_batches(schema, &batches)?)
}
