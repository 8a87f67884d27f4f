//! Checkpoint files on an object store: atomic writes, a format version and
//! a checksum on every file.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, SluiceError};

/// Format version written on the first line of every checkpoint file.
pub const FORMAT_VERSION: &str = "v1";

const BLOB_MAGIC: &[u8; 4] = b"SLCB";
const BLOB_VERSION: u8 = 1;

/// A checkpoint file written in format `found` where this Sluice reads `expected`.
fn another_version(path: &str, found: &str, expected: &str) -> SluiceError {
    SluiceError::Checkpoint {
        path: path.to_string(),
        reason: format!(
            "written in checkpoint format {found}, but this version of Sluice reads format {expected}: run the \
             query with the Sluice version that wrote the checkpoint, or use a new checkpoint location"
        ),
    }
}

/// A directory of checkpoint files (local path or object-store location).
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    store: Arc<dyn ObjectStore>,
    root: Path,
    display: String,
}

impl CheckpointDir {
    /// Open (and create, for local paths) a checkpoint location: a local
    /// path, a `file://` URL, or an `s3://bucket/prefix` URL (configured from
    /// the usual `AWS_*` environment variables: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`).
    pub fn open(location: &str) -> Result<Self> {
        if location.starts_with("s3://") || location.starts_with("s3a://") {
            return Self::open_s3(location);
        }
        let local = location.strip_prefix("file://").unwrap_or(location);
        if local.contains("://") {
            return Err(SluiceError::InvalidOption {
                option: "checkpoint".into(),
                value: location.into(),
                reason: "supported checkpoint locations are local paths, file:// and s3:// URLs".into(),
            });
        }
        std::fs::create_dir_all(local).map_err(|e| SluiceError::InvalidOption {
            option: "checkpoint".into(),
            value: location.into(),
            reason: format!("cannot create the directory: {e}"),
        })?;
        let abs = std::fs::canonicalize(local)?;
        let store = super::DurableLocalStore::new(&abs)?;
        Ok(Self { store: Arc::new(store), root: Path::default(), display: abs.display().to_string() })
    }

    fn open_s3(location: &str) -> Result<Self> {
        let bad =
            |reason: String| SluiceError::InvalidOption { option: "checkpoint".into(), value: location.into(), reason };
        let url = url::Url::parse(location).map_err(|e| bad(format!("not a URL: {e}")))?;
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_url(location)
            .build()
            .map_err(|e| bad(format!("cannot open the S3 location ({e}); set AWS_REGION, credentials and, for other S3 servers, AWS_ENDPOINT")))?;
        let root = Path::from(url.path().trim_matches('/'));
        Ok(Self { store: Arc::new(store), root, display: location.trim_end_matches('/').to_string() })
    }

    /// A sub-directory.
    pub fn child(&self, name: &str) -> Self {
        Self {
            store: Arc::clone(&self.store),
            root: self.root.clone().join(name),
            display: format!("{}/{}", self.display, name),
        }
    }

    /// Human-readable location of this directory.
    pub fn location(&self) -> &str {
        &self.display
    }

    /// The location of `name`, which may hold `/`-separated sub-directories
    /// (as the names [`Self::list_all`] returns do).
    fn path(&self, name: &str) -> Path {
        name.split('/').filter(|p| !p.is_empty()).fold(self.root.clone(), |path, part| path.join(part))
    }

    fn display_of(&self, name: &str) -> String {
        format!("{}/{}", self.display, name)
    }

    /// Write `value` as the file `name`, atomically, with version and checksum.
    pub async fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let text = Self::frame_json(&self.display_of(name), value)?;
        self.store
            .put(&self.path(name), PutPayload::from(text.into_bytes()))
            .await
            .map_err(|e| self.write_error(name, e))?;
        Ok(())
    }

    /// Write `value` as the file `name` only if no file of that name exists
    /// (atomic create-if-absent); `false` when one does.
    pub async fn create_json<T: Serialize>(&self, name: &str, value: &T) -> Result<bool> {
        let text = Self::frame_json(&self.display_of(name), value)?;
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&self.path(name), PutPayload::from(text.into_bytes()), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.write_error(name, e)),
        }
    }

    fn write_error(&self, name: &str, e: object_store::Error) -> SluiceError {
        SluiceError::Checkpoint {
            path: self.display_of(name),
            reason: format!(
                "cannot be written ({e}); check that the location exists, is writable by this user and has free space"
            ),
        }
    }

    fn frame_json<T: Serialize>(display: &str, value: &T) -> Result<String> {
        let body = serde_json::to_string(value).map_err(|e| SluiceError::Checkpoint {
            path: display.to_string(),
            reason: format!("cannot serialise: {e}"),
        })?;
        Ok(format!("{FORMAT_VERSION}\ncrc32:{:08x}\n{body}\n", crc32fast::hash(body.as_bytes())))
    }

    /// Read the file `name`; `None` when it does not exist. A truncated or
    /// corrupt file is an error naming it.
    pub async fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let bytes = match self.store.get(&self.path(name)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let path = self.display_of(name);
        let corrupt = |reason: String| SluiceError::Checkpoint {
            path: path.clone(),
            reason: format!(
                "{reason}; the checkpoint is damaged: restore it from a backup, or delete the checkpoint \
                 directory to start the query from scratch"
            ),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not UTF-8".into()))?;
        let mut lines = text.splitn(3, '\n');
        let version = lines.next().unwrap_or_default();
        if version != FORMAT_VERSION {
            let other =
                version.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if other {
                return Err(another_version(&path, version, FORMAT_VERSION));
            }
            return Err(corrupt(format!("unsupported format version '{version}' (expected {FORMAT_VERSION})")));
        }
        let crc_line = lines.next().unwrap_or_default();
        let expected = crc_line
            .strip_prefix("crc32:")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| corrupt("missing checksum line".into()))?;
        let body = lines.next().ok_or_else(|| corrupt("truncated: no body".into()))?.trim_end_matches('\n');
        if crc32fast::hash(body.as_bytes()) != expected {
            return Err(corrupt("checksum mismatch (truncated or modified)".into()));
        }
        serde_json::from_str(body).map(Some).map_err(|e| corrupt(format!("unreadable body: {e}")))
    }

    /// Write binary content as the file `name`, atomically, framed with a
    /// magic number, format version, length and crc32 checksum.
    pub async fn write_blob(&self, name: &str, body: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(body.len() + 17);
        out.extend_from_slice(BLOB_MAGIC);
        out.push(BLOB_VERSION);
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
        self.store.put(&self.path(name), PutPayload::from(out)).await.map_err(|e| self.write_error(name, e))?;
        Ok(())
    }

    /// Read a file written by [`Self::write_blob`]; `None` when missing. A
    /// truncated or corrupt file is an error naming it.
    pub async fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let bytes = match self.store.get(&self.path(name)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let corrupt = |reason: &str| SluiceError::Checkpoint {
            path: self.display_of(name),
            reason: format!(
                "{reason}; the checkpoint is damaged: restore it from a backup, or delete the checkpoint \
                 directory to start the query from scratch"
            ),
        };
        if bytes.len() < 17 || &bytes[..4] != BLOB_MAGIC {
            return Err(corrupt("not a Sluice checkpoint file (bad header)"));
        }
        if bytes[4] != BLOB_VERSION {
            return Err(another_version(
                &self.display_of(name),
                &format!("v{}", bytes[4]),
                &format!("v{BLOB_VERSION}"),
            ));
        }
        let crc = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[9..17]);
        let len = u64::from_le_bytes(len_bytes) as usize;
        let body = &bytes[17..];
        if body.len() != len {
            return Err(corrupt(&format!("truncated: {} of {len} bytes", body.len())));
        }
        if crc32fast::hash(body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(Some(body.to_vec()))
    }

    /// Names of all files directly in this directory.
    pub async fn list_names(&self) -> Result<Vec<String>> {
        match self.store.list_with_delimiter(Some(&self.root)).await {
            Ok(l) => Ok(l.objects.iter().filter_map(|o| o.location.filename().map(String::from)).collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// Names of the files directly in this directory whose name is a number,
    /// sorted ascending.
    pub async fn list_numbered(&self) -> Result<Vec<u64>> {
        let listing = self.store.list_with_delimiter(Some(&self.root)).await;
        let listing = match listing {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut ids: Vec<u64> =
            listing.objects.iter().filter_map(|o| o.location.filename()?.parse::<u64>().ok()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Names of the sub-directories directly in this directory whose name is
    /// a number, sorted ascending.
    pub async fn list_numbered_dirs(&self) -> Result<Vec<u64>> {
        let listing = match self.store.list_with_delimiter(Some(&self.root)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut ids: Vec<u64> =
            listing.common_prefixes.iter().filter_map(|p| p.filename()?.parse::<u64>().ok()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Delete the file `name` if present.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of every file under this directory, recursively.
    pub async fn total_bytes(&self) -> Result<u64> {
        let items: Vec<_> = self.store.list(Some(&self.root)).try_collect().await?;
        Ok(items.iter().map(|m| m.size).sum())
    }

    /// All file paths (relative to this directory) under it, recursively.
    pub async fn list_all(&self) -> Result<Vec<String>> {
        let prefix = self.root.clone();
        let items: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(items
            .into_iter()
            .map(|m| m.location.as_ref().trim_start_matches(prefix.as_ref()).trim_start_matches('/').to_string())
            .collect())
    }
}
