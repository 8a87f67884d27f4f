//! The `memory` source: rows pushed by the program (or a stream test).
//!
//! Each push is one unit of data, like one file landing in a directory; the
//! offset is the number of units. The data belongs to the [`MemoryStreams`]
//! store, not to a query, so it survives query restarts and several queries
//! can read the same stream, each at its own offset.

mod parse;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use sluice_engine::{Result, SluiceError, Source, SourceContext, SourceFactory, SourceOffset};

pub use parse::parse_rows;

/// One in-memory stream: a growing list of record batches.
#[derive(Debug)]
pub struct MemoryStream {
    schema: SchemaRef,
    units: RwLock<Vec<RecordBatch>>,
}

impl MemoryStream {
    /// An empty stream with this schema.
    pub fn new(schema: SchemaRef) -> Self {
        Self { schema, units: RwLock::new(vec![]) }
    }

    /// The schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Append one unit of data. The batch must have the stream's schema.
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(SluiceError::plan(format!(
                "batch schema {:?} does not match the stream schema {:?}",
                batch.schema(),
                self.schema
            )));
        }
        self.units.write().push(batch);
        Ok(())
    }

    /// Parse comma-separated rows (see [`parse_rows`]) and append them as one unit.
    pub fn push_rows<S: AsRef<str>>(&self, lines: &[S]) -> Result<()> {
        let batch = parse_rows(&self.schema, lines)?;
        self.push(batch)
    }

    /// Number of units pushed so far.
    pub fn len(&self) -> usize {
        self.units.read().len()
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn range(&self, start: usize, end: usize) -> Vec<RecordBatch> {
        let units = self.units.read();
        units[start.min(units.len())..end.min(units.len())].to_vec()
    }
}

/// The named in-memory streams of a program. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct MemoryStreams {
    inner: Arc<Mutex<HashMap<String, Arc<MemoryStream>>>>,
}

impl MemoryStreams {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<MemoryStream>> {
        self.inner.lock().get(&name.to_ascii_lowercase()).cloned()
    }

    /// The stream called `name`, created with `schema` if missing.
    pub fn get_or_create(&self, name: &str, schema: SchemaRef) -> Arc<MemoryStream> {
        Arc::clone(
            self.inner.lock().entry(name.to_ascii_lowercase()).or_insert_with(|| Arc::new(MemoryStream::new(schema))),
        )
    }
}

/// Factory of the `memory` connector.
#[derive(Debug, Clone, Default)]
pub struct MemorySourceFactory {
    streams: MemoryStreams,
}

impl MemorySourceFactory {
    /// A factory over a store of streams.
    pub fn new(streams: MemoryStreams) -> Self {
        Self { streams }
    }
}

impl SourceFactory for MemorySourceFactory {
    fn name(&self) -> &str {
        "memory"
    }

    fn valid_options(&self) -> &[&'static str] {
        &[]
    }

    fn validate(&self, definition: &sluice_engine::SourceDefinition) -> Result<()> {
        let stream = self.streams.get_or_create(&definition.name, Arc::clone(&definition.schema));
        if stream.schema().fields() != definition.schema.fields() {
            return Err(SluiceError::plan(format!(
                "memory stream '{}' already exists with a different schema",
                definition.name
            )));
        }
        Ok(())
    }

    fn create(&self, ctx: SourceContext) -> Result<Arc<dyn Source>> {
        let def = ctx.definition;
        let stream = self.streams.get_or_create(&def.name, Arc::clone(&def.schema));
        Ok(Arc::new(MemorySource { name: def.name, stream }))
    }
}

/// One query's reader of a [`MemoryStream`].
#[derive(Debug)]
pub struct MemorySource {
    name: String,
    stream: Arc<MemoryStream>,
}

fn offset_of(name: &str, offset: Option<&SourceOffset>) -> Result<usize> {
    match offset {
        None => Ok(0),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| SluiceError::Source {
            source_name: name.into(),
            reason: format!("offset {v} is not a unit count; the checkpoint was written by another connector"),
        }),
    }
}

#[async_trait]
impl Source for MemorySource {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }

    async fn latest_offset(&self, _start: Option<&SourceOffset>) -> Result<Option<SourceOffset>> {
        Ok(match self.stream.len() {
            0 => None,
            n => Some(json!(n)),
        })
    }

    async fn get_batch(&self, start: Option<&SourceOffset>, end: &SourceOffset) -> Result<Vec<RecordBatch>> {
        let (s, e) = (offset_of(&self.name, start)?, offset_of(&self.name, Some(end))?);
        Ok(self.stream.range(s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[tokio::test]
    async fn offsets_count_units() {
        let schema = Arc::new(Schema::new(vec![Field::new("w", DataType::Utf8, true)]));
        let streams = MemoryStreams::new();
        let s = streams.get_or_create("Words", schema);
        let src = MemorySource { name: "words".into(), stream: Arc::clone(&s) };
        assert_eq!(src.latest_offset(None).await.unwrap(), None);
        s.push_rows(&["a", "b"]).unwrap();
        s.push_rows(&["c"]).unwrap();
        let end = src.latest_offset(None).await.unwrap().unwrap();
        assert_eq!(end, json!(2));
        let rows: usize = src.get_batch(Some(&json!(1)), &end).await.unwrap().iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 1);
        assert!(streams.get("words").is_some());
    }
}
