//! Delta and snapshot files: Arrow IPC streams of `(key BINARY, value BINARY)`,
//! a null value meaning "removed", framed with a version and checksum.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BinaryArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};

/// A state file name, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct VersionFile {
    pub version: u64,
    pub snapshot: bool,
}

impl VersionFile {
    pub fn name(&self) -> String {
        format!("{}.{}", self.version, if self.snapshot { "snapshot" } else { "delta" })
    }
}

pub(super) async fn list_versions(dir: &CheckpointDir) -> Result<Vec<VersionFile>> {
    let mut out: Vec<VersionFile> = dir
        .list_names()
        .await?
        .iter()
        .filter_map(|n| {
            let (v, kind) = n.split_once('.')?;
            let version = v.parse().ok()?;
            match kind {
                "delta" => Some(VersionFile { version, snapshot: false }),
                "snapshot" => Some(VersionFile { version, snapshot: true }),
                _ => None,
            }
        })
        .collect();
    out.sort_by_key(|f| (f.version, f.snapshot));
    Ok(out)
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("key", DataType::Binary, false), Field::new("value", DataType::Binary, true)]))
}

pub(super) fn encode(entries: &[(&[u8], Option<&[u8]>)]) -> Result<Vec<u8>> {
    let keys = BinaryArray::from_iter_values(entries.iter().map(|(k, _)| *k));
    let values: BinaryArray = entries.iter().map(|(_, v)| *v).collect();
    let batch = RecordBatch::try_new(schema(), vec![Arc::new(keys), Arc::new(values)])?;
    let mut out = vec![];
    {
        let mut w = StreamWriter::try_new(&mut out, &schema())?;
        w.write(&batch)?;
        w.finish()?;
    }
    Ok(out)
}

pub(super) async fn decode(dir: &CheckpointDir, name: &str) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>> {
    let bytes = dir.read_blob(name).await?.ok_or_else(|| SluiceError::Checkpoint {
        path: format!("{}/{name}", dir.location()),
        reason: "missing; restore it or delete the checkpoint directory to start again".into(),
    })?;
    let unreadable = |e: String| SluiceError::Checkpoint {
        path: format!("{}/{name}", dir.location()),
        reason: format!("unreadable state file: {e}"),
    };
    let reader = StreamReader::try_new(bytes.as_slice(), None).map_err(|e| unreadable(e.to_string()))?;
    let mut out = vec![];
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(e.to_string()))?;
        if batch.num_columns() != 2 {
            return Err(unreadable("expected key and value columns".into()));
        }
        let keys = batch.column(0).as_binary_opt::<i32>().ok_or_else(|| unreadable("key is not binary".into()))?;
        let values = batch.column(1).as_binary_opt::<i32>().ok_or_else(|| unreadable("value is not binary".into()))?;
        for i in 0..batch.num_rows() {
            let v = (!values.is_null(i)).then(|| values.value(i).to_vec());
            out.push((keys.value(i).to_vec(), v));
        }
    }
    Ok(out)
}
