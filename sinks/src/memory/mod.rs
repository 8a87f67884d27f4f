//! The `memory` sink: keeps what a query sent, and is a table of the
//! query's name for batch queries.
//!
//! In complete mode the table holds the latest full result; in append and
//! update modes it holds every row it was sent. Writes are idempotent by
//! batch id. The rows belong to the [`MemorySinks`] store, so they survive a
//! query restart (and a test can read back what each trigger delivered).

mod table;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::{Mutex, RwLock};
use sluice_engine::{OutputMode, Result, Sink, SinkContext, SinkFactory};

pub use table::MemorySinkTable;

#[derive(Debug, Default)]
struct Contents {
    /// Every batch received, with its batch id, in arrival order.
    received: Vec<(u64, Vec<RecordBatch>)>,
    /// Latest full result (complete mode).
    latest: Vec<RecordBatch>,
    last_batch_id: Option<u64>,
}

/// What one memory sink received.
#[derive(Debug)]
pub struct MemorySinkStore {
    schema: SchemaRef,
    mode: RwLock<OutputMode>,
    contents: RwLock<Contents>,
}

impl MemorySinkStore {
    fn new(schema: SchemaRef, mode: OutputMode) -> Self {
        Self { schema, mode: RwLock::new(mode), contents: RwLock::new(Contents::default()) }
    }

    /// Schema of the rows.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Number of batches received so far (a mark for [`Self::received_since`]).
    pub fn received_count(&self) -> usize {
        self.contents.read().received.len()
    }

    /// Rows of the batches received after `mark`.
    pub fn received_since(&self, mark: usize) -> Vec<RecordBatch> {
        let c = self.contents.read();
        c.received.iter().skip(mark).flat_map(|(_, b)| b.iter().cloned()).collect()
    }

    /// The table's rows: the latest result in complete mode, all rows otherwise.
    pub fn table_rows(&self) -> Vec<RecordBatch> {
        let c = self.contents.read();
        match *self.mode.read() {
            OutputMode::Complete => c.latest.clone(),
            _ => c.received.iter().flat_map(|(_, b)| b.iter().cloned()).collect(),
        }
    }

    /// Last batch id written.
    pub fn last_batch_id(&self) -> Option<u64> {
        self.contents.read().last_batch_id
    }

    fn add(&self, batch_id: u64, batches: &[RecordBatch]) -> bool {
        let mut c = self.contents.write();
        if c.last_batch_id.is_some_and(|last| batch_id <= last) {
            return false;
        }
        c.last_batch_id = Some(batch_id);
        let batches: Vec<RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).cloned().collect();
        if *self.mode.read() == OutputMode::Complete {
            c.latest = batches.clone();
        }
        c.received.push((batch_id, batches));
        true
    }
}

/// The memory sinks of a program, by name. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct MemorySinks {
    inner: Arc<Mutex<HashMap<String, Arc<MemorySinkStore>>>>,
}

impl MemorySinks {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sink called `name`, if a query created it.
    pub fn get(&self, name: &str) -> Option<Arc<MemorySinkStore>> {
        self.inner.lock().get(&name.to_ascii_lowercase()).cloned()
    }

    fn get_or_create(&self, name: &str, schema: SchemaRef, mode: OutputMode) -> Arc<MemorySinkStore> {
        let mut map = self.inner.lock();
        let key = name.to_ascii_lowercase();
        match map.get(&key) {
            Some(existing) if existing.schema.fields() == schema.fields() => {
                *existing.mode.write() = mode;
                Arc::clone(existing)
            }
            _ => {
                let store = Arc::new(MemorySinkStore::new(schema, mode));
                map.insert(key, Arc::clone(&store));
                store
            }
        }
    }
}

/// Factory of the `memory` sink connector.
#[derive(Debug, Clone, Default)]
pub struct MemorySinkFactory {
    sinks: MemorySinks,
}

impl MemorySinkFactory {
    /// A factory writing into `sinks`.
    pub fn new(sinks: MemorySinks) -> Self {
        Self { sinks }
    }
}

impl SinkFactory for MemorySinkFactory {
    fn name(&self) -> &str {
        "memory"
    }

    fn valid_options(&self) -> &[&'static str] {
        &[]
    }

    fn create(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>> {
        let store = self.sinks.get_or_create(&ctx.name, Arc::clone(&ctx.schema), ctx.output_mode);
        let table = Arc::new(MemorySinkTable::new(Arc::clone(&store)));
        ctx.context.deregister_table(ctx.name.as_str())?;
        ctx.context.register_table(ctx.name.as_str(), table)?;
        Ok(Arc::new(MemorySink { store }))
    }
}

/// A query's memory sink.
#[derive(Debug)]
pub struct MemorySink {
    store: Arc<MemorySinkStore>,
}

#[async_trait]
impl Sink for MemorySink {
    async fn add_batch(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        if !self.store.add(batch_id, batches) {
            tracing::debug!(batch_id, "memory sink: batch already written, ignored");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    #[test]
    fn idempotent_by_batch_id_and_modes() {
        let sinks = MemorySinks::new();
        let s = sinks.get_or_create("t", batch(0).schema(), OutputMode::Complete);
        assert!(s.add(0, &[batch(1)]));
        assert!(!s.add(0, &[batch(1)]));
        assert!(s.add(1, &[batch(2)]));
        assert_eq!(s.table_rows().len(), 1);
        assert_eq!(s.received_since(1).len(), 1);
        let a = sinks.get_or_create("a", batch(0).schema(), OutputMode::Append);
        a.add(0, &[batch(1)]);
        a.add(1, &[batch(2)]);
        assert_eq!(a.table_rows().len(), 2);
    }
}
