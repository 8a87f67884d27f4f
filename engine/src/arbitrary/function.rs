//! The user function of `flat_map_groups_with_state`, with its state type
//! erased: the operator hands it stored bytes and gets stored bytes back,
//! and the typed wrapper decodes them into the user's `S` with serde.
//!
//! A stored group is `[format 1][flags][timeout ms: i64 LE][tag length: u16
//! LE][tag][JSON of the value]`: the tag is the state type's name, so a
//! restart with another type is caught before any call, and a migration
//! from a named older type can be given.

use std::any::type_name;
use std::marker::PhantomData;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{GroupKey, GroupState, GroupStateTimeout};
use crate::error::{Result, SluiceError};

/// The format byte of a stored group.
const FORMAT: u8 = 1;
const HAS_VALUE: u8 = 1;
const NO_TIMEOUT: i64 = i64::MIN;

/// A group as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    /// The pending timeout (ms since the epoch), if any.
    pub timeout_ms: Option<i64>,
    /// The state type's tag and the value as JSON, if the group has one.
    pub value: Option<(String, Vec<u8>)>,
}

impl StoredGroup {
    /// The bytes kept in the state store.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, json): (&[u8], &[u8]) = match &self.value {
            Some((t, j)) => (t.as_bytes(), j),
            None => (&[], &[]),
        };
        // The length is a u16: a longer tag is cut (its prefix still names
        // the type), never written past its recorded length.
        let tag = &tag[..tag.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(12 + tag.len() + json.len());
        out.push(FORMAT);
        out.push(if self.value.is_some() { HAS_VALUE } else { 0 });
        out.extend_from_slice(&self.timeout_ms.unwrap_or(NO_TIMEOUT).to_le_bytes());
        out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        out.extend_from_slice(tag);
        out.extend_from_slice(json);
        out
    }

    /// Read the bytes [`encode`](Self::encode) wrote; the error says what is
    /// wrong with them.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < 12 {
            return Err(format!("a stored group of {} bytes is shorter than its 12-byte header", bytes.len()));
        }
        if bytes[0] != FORMAT {
            return Err(format!("stored group format {} (this version of Sluice reads format {FORMAT})", bytes[0]));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&bytes[2..10]);
        let timeout = i64::from_le_bytes(t);
        let tag_len = u16::from_le_bytes([bytes[10], bytes[11]]) as usize;
        let rest = &bytes[12..];
        if rest.len() < tag_len {
            return Err(format!("a stored group's type tag of {tag_len} bytes runs past its end"));
        }
        let value = if bytes[1] & HAS_VALUE != 0 {
            let tag =
                std::str::from_utf8(&rest[..tag_len]).map_err(|e| format!("a stored type tag is not UTF-8: {e}"))?;
            Some((tag.to_string(), rest[tag_len..].to_vec()))
        } else {
            None
        };
        Ok(Self { timeout_ms: (timeout != NO_TIMEOUT).then_some(timeout), value })
    }
}

/// One call of the user function, as the operator makes it.
#[derive(Debug)]
pub struct GroupCall<'a> {
    /// The group.
    pub key: &'a GroupKey,
    /// Its rows in this batch (none for a timed-out group).
    pub rows: &'a [RecordBatch],
    /// Its stored value (type tag, JSON), if any.
    pub stored: Option<(&'a str, &'a [u8])>,
    /// Whether the call is for a timeout.
    pub has_timed_out: bool,
    /// The batch's processing time (ms).
    pub batch_time_ms: i64,
    /// The batch's watermark (ms), if the query has one.
    pub watermark_ms: Option<i64>,
}

/// What one call did.
#[derive(Debug, Default)]
pub struct GroupOutcome {
    /// The rows it returned.
    pub rows: Vec<RecordBatch>,
    /// The group's value after the call (type tag, JSON), if it has one.
    pub value: Option<(String, Vec<u8>)>,
    /// The value was set.
    pub updated: bool,
    /// The value was removed.
    pub removed: bool,
    /// The timeout set in the call.
    pub timeout_ms: Option<i64>,
}

/// A `flat_map_groups_with_state` function with its state type erased.
pub trait GroupFunction: Send + Sync {
    /// Call the function for one group.
    fn call(&self, call: GroupCall<'_>) -> Result<GroupOutcome>;
    /// The tag of the state type it keeps.
    fn state_tag(&self) -> &str;
    /// Check that a stored value (of type `tag`) can be read.
    fn check_stored(&self, tag: &str, json: &[u8]) -> Result<()>;
}

/// A migration of a stored value (JSON of an older type) into `S`.
pub(crate) type Migration<S> = Arc<dyn Fn(&[u8]) -> Result<S> + Send + Sync>;

/// The user's function over a serde state type `S`.
pub(crate) struct TypedGroupFunction<S, F> {
    func: F,
    conf: GroupStateTimeout,
    tag: String,
    migrations: Vec<(String, Migration<S>)>,
    _state: PhantomData<fn() -> S>,
}

impl<S, F> TypedGroupFunction<S, F>
where
    S: Serialize + DeserializeOwned + 'static,
    F: Fn(&GroupKey, &[RecordBatch], &mut GroupState<S>) -> Result<Vec<RecordBatch>> + Send + Sync,
{
    pub(crate) fn new(func: F, conf: GroupStateTimeout, migrations: Vec<(String, Migration<S>)>) -> Self {
        Self { func, conf, tag: state_tag::<S>(), migrations, _state: PhantomData }
    }

    fn decode(&self, tag: &str, json: &[u8]) -> Result<S> {
        if tag == self.tag {
            return serde_json::from_slice(json).map_err(|e| {
                SluiceError::plan(format!(
                    "a stored state value does not decode as {tag} ({e}): the state type changed since the \
                     checkpoint was written. Keep the old definition, rename the new type and give a migration \
                     from the old one (with_state_migration), or use a new checkpoint location"
                ))
            });
        }
        match self.migrations.iter().find(|(from, _)| from == tag) {
            Some((_, migrate)) => migrate(json),
            None => Err(SluiceError::plan(format!(
                "the checkpoint holds state of type {tag}, but the function now keeps {}: restore the original state \
                 type, give a migration from {tag} (with_state_migration), or use a new checkpoint location",
                self.tag
            ))),
        }
    }
}

/// The tag a state type is stored under: its Rust type name.
pub(crate) fn state_tag<S: 'static>() -> String {
    type_name::<S>().to_string()
}

impl<S, F> GroupFunction for TypedGroupFunction<S, F>
where
    S: Serialize + DeserializeOwned + 'static,
    F: Fn(&GroupKey, &[RecordBatch], &mut GroupState<S>) -> Result<Vec<RecordBatch>> + Send + Sync,
{
    fn call(&self, call: GroupCall<'_>) -> Result<GroupOutcome> {
        let value = call.stored.map(|(tag, json)| self.decode(tag, json)).transpose()?;
        let mut state = GroupState::new(value, self.conf, call.has_timed_out, call.batch_time_ms, call.watermark_ms);
        let rows = (self.func)(call.key, call.rows, &mut state)?;
        let (updated, removed, timeout_ms) = (state.is_updated(), state.is_removed(), state.timeout_timestamp_ms());
        let value = match state.into_value() {
            Some(v) => Some((
                self.tag.clone(),
                serde_json::to_vec(&v).map_err(|e| {
                    SluiceError::plan(format!("the state value (type {}) does not serialize to JSON: {e}", self.tag))
                })?,
            )),
            None => None,
        };
        Ok(GroupOutcome { rows, value, updated, removed, timeout_ms })
    }

    fn state_tag(&self) -> &str {
        &self.tag
    }

    fn check_stored(&self, tag: &str, json: &[u8]) -> Result<()> {
        self.decode(tag, json).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_groups_round_trip_and_damage_is_named() {
        for g in [
            StoredGroup { timeout_ms: Some(42), value: Some(("a::S".into(), b"{\"n\":1}".to_vec())) },
            StoredGroup { timeout_ms: None, value: Some(("t".into(), b"3".to_vec())) },
            StoredGroup { timeout_ms: Some(-5), value: None },
        ] {
            assert_eq!(StoredGroup::decode(&g.encode()).unwrap(), g);
        }
        assert!(StoredGroup::decode(&[1, 0, 0]).unwrap_err().contains("shorter"));
        let mut bad = StoredGroup { timeout_ms: None, value: None }.encode();
        bad[0] = 9;
        assert!(StoredGroup::decode(&bad).unwrap_err().contains("format 9"));
    }
}
