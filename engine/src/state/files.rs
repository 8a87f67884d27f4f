//! Delta and snapshot files: Arrow IPC streams of `(key BINARY, value
//! BINARY, blob BOOLEAN)`, a null value meaning "removed", framed with a
//! version and checksum. With `blob` true the value is the name of a file
//! of its own (under the partition's `blobs/`) that holds it. Files written
//! before blobs existed have no `blob` column.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BinaryBuilder, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::CheckpointDir;
use crate::error::{Result, SluiceError};

/// A state file name, parsed: `{v}.snapshot`, or a delta holding the
/// changes of version `v` since the version it follows: `{v}.delta` (since
/// `v - 1`, or since nothing for version 0), `{v}.after-{p}.delta` (since
/// `p`, when the versions between were never committed, see
/// `state_checkpoint_interval`) or `{v}.base.delta` (since an empty store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct VersionFile {
    pub version: u64,
    pub snapshot: bool,
    /// For a delta, the version whose state it applies to (`None`: empty).
    pub follows: Option<u64>,
}

impl VersionFile {
    /// The delta of `version` applying to the state of `follows`.
    pub fn delta(version: u64, follows: Option<u64>) -> Self {
        Self { version, snapshot: false, follows }
    }

    pub fn name(&self) -> String {
        let v = self.version;
        match (self.snapshot, self.follows) {
            (true, _) => format!("{v}.snapshot"),
            (false, f) if f == v.checked_sub(1) => format!("{v}.delta"),
            (false, None) => format!("{v}.base.delta"),
            (false, Some(p)) => format!("{v}.after-{p}.delta"),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        let (v, kind) = name.split_once('.')?;
        let version: u64 = v.parse().ok()?;
        let file = match kind {
            "snapshot" => Self { version, snapshot: true, follows: None },
            "delta" => Self::delta(version, version.checked_sub(1)),
            "base.delta" => Self::delta(version, None),
            _ => {
                let p: u64 = kind.strip_prefix("after-")?.strip_suffix(".delta")?.parse().ok()?;
                Self::delta(version, Some(Some(p).filter(|p| *p < version)?))
            }
        };
        Some(file)
    }
}

pub(super) async fn list_versions(dir: &CheckpointDir) -> Result<Vec<VersionFile>> {
    let mut out: Vec<VersionFile> = dir.list_names().await?.iter().filter_map(|n| VersionFile::parse(n)).collect();
    out.sort_by_key(|f| (f.version, f.snapshot));
    Ok(out)
}

/// The files that restore `version`: the snapshot it starts from (if any)
/// and the deltas after it, oldest first, found by following each delta
/// back to the version it applies to. Files of versions off that chain
/// (a commit a crash cut short, under another checkpoint interval) are
/// ignored. `Err(v)`: version `v` of the chain has no file.
pub(super) fn chain(files: &[VersionFile], version: u64) -> std::result::Result<(Option<u64>, Vec<VersionFile>), u64> {
    let mut deltas = vec![];
    let mut at = Some(version);
    while let Some(v) = at {
        if files.iter().any(|f| f.snapshot && f.version == v) {
            deltas.reverse();
            return Ok((Some(v), deltas));
        }
        let delta = files.iter().find(|f| !f.snapshot && f.version == v).ok_or(v)?;
        deltas.push(*delta);
        at = delta.follows;
    }
    deltas.reverse();
    Ok((None, deltas))
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, true),
        Field::new("blob", DataType::Boolean, false),
    ]))
}

/// An entry's value as written.
#[derive(Debug, Clone, Copy)]
pub(super) enum Entry<'a> {
    /// The value itself.
    Value(&'a [u8]),
    /// The name of the file holding the value.
    Blob(&'a str),
    /// The key was removed.
    Removed,
}

/// An entry's value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decoded {
    Value(Vec<u8>),
    Blob(String),
    Removed,
}

pub(super) fn encode(entries: &[(&[u8], Entry<'_>)]) -> Result<Vec<u8>> {
    let bytes = |e: &Entry<'_>| match e {
        Entry::Value(v) => v.len(),
        Entry::Blob(n) => n.len(),
        Entry::Removed => 0,
    };
    let value_bytes: usize = entries.iter().map(|(_, e)| bytes(e)).sum();
    let key_bytes: usize = entries.iter().map(|(k, _)| k.len()).sum();
    let mut keys = BinaryBuilder::with_capacity(entries.len(), key_bytes);
    let mut values = BinaryBuilder::with_capacity(entries.len(), value_bytes);
    for (k, e) in entries {
        keys.append_value(k);
        match e {
            Entry::Value(v) => values.append_value(v),
            Entry::Blob(n) => values.append_value(n.as_bytes()),
            Entry::Removed => values.append_null(),
        }
    }
    let blob: BooleanArray = entries.iter().map(|(_, e)| Some(matches!(e, Entry::Blob(_)))).collect();
    let batch =
        RecordBatch::try_new(schema(), vec![Arc::new(keys.finish()), Arc::new(values.finish()), Arc::new(blob)])?;
    let mut out = Vec::with_capacity(key_bytes + value_bytes + entries.len() * 9 + 1024);
    {
        let mut w = StreamWriter::try_new(&mut out, &schema())?;
        w.write(&batch)?;
        w.finish()?;
    }
    Ok(out)
}

pub(super) async fn decode(dir: &CheckpointDir, name: &str) -> Result<Vec<(Vec<u8>, Decoded)>> {
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
        if !(2..=3).contains(&batch.num_columns()) {
            return Err(unreadable("expected key, value and blob columns".into()));
        }
        let keys = batch.column(0).as_binary_opt::<i32>().ok_or_else(|| unreadable("key is not binary".into()))?;
        let values = batch.column(1).as_binary_opt::<i32>().ok_or_else(|| unreadable("value is not binary".into()))?;
        let blob = match batch.columns().get(2) {
            Some(c) => Some(c.as_boolean_opt().ok_or_else(|| unreadable("blob is not boolean".into()))?),
            None => None,
        };
        for i in 0..batch.num_rows() {
            let value = if values.is_null(i) {
                Decoded::Removed
            } else if blob.is_some_and(|b| b.value(i)) {
                let name =
                    std::str::from_utf8(values.value(i)).map_err(|_| unreadable("a blob name is not text".into()))?;
                Decoded::Blob(name.to_string())
            } else {
                Decoded::Value(values.value(i).to_vec())
            };
            out.push((keys.value(i).to_vec(), value));
        }
    }
    Ok(out)
}
