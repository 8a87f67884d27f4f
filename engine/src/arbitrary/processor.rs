//! `transform_with_state` (Spark 4's `transformWithState`): a
//! [`StatefulProcessor`] per key with several named state variables
//! ([`ValueState`], [`ListState`], [`MapState`]), each with an optional TTL,
//! and timers.
//!
//! It runs on the `flat_map_groups_with_state` operator: a key's variables
//! and timers are one stored value, and the operator's single timeout per
//! key is set to the key's next wake-up (its earliest timer, or, on
//! processing time, its earliest TTL expiry), so a key is called back
//! exactly when a timer is due or an entry expires.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{GroupKey, GroupState, GroupStateTimeout};
use crate::error::{Result, SluiceError};

/// What timers mean (Spark's `TimeMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMode {
    /// No timers (TTLs still expire on processing time).
    None,
    /// Timers fire once the batch's processing time reaches them.
    ProcessingTime,
    /// Timers fire once the watermark reaches them. Needs a watermark.
    EventTime,
}

impl TimeMode {
    pub(crate) fn timeout(self) -> GroupStateTimeout {
        match self {
            Self::EventTime => GroupStateTimeout::EventTime,
            _ => GroupStateTimeout::ProcessingTime,
        }
    }
}

/// The user's logic of `transform_with_state`.
pub trait StatefulProcessor: Send + Sync + 'static {
    /// Called for each key with rows in the batch; returns output rows.
    fn handle_input_rows(
        &self,
        key: &GroupKey,
        rows: &[RecordBatch],
        state: &mut ProcessorState,
    ) -> Result<Vec<RecordBatch>>;

    /// Called for each of a key's timers that is due (at or before the
    /// batch's processing time or watermark), earliest first; the timer is
    /// deleted before the call.
    fn handle_expired_timer(
        &self,
        _key: &GroupKey,
        _expiry_ms: i64,
        _state: &mut ProcessorState,
    ) -> Result<Vec<RecordBatch>> {
        Ok(vec![])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    v: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Var {
    Value(Entry),
    List(Vec<Entry>),
    Map(BTreeMap<String, Entry>),
}

/// A key's variables and timers, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessorStore {
    vars: BTreeMap<String, Var>,
    timers: BTreeSet<i64>,
}

/// A key's state during one call of a [`StatefulProcessor`]: its variables
/// (read and written through [`ValueState`], [`ListState`], [`MapState`]),
/// its timers, and the batch's times.
#[derive(Debug)]
pub struct ProcessorState {
    store: ProcessorStore,
    now_ms: i64,
    watermark_ms: Option<i64>,
    mode: TimeMode,
}

fn to_json<T: Serialize>(name: &str, v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v)
        .map_err(|e| SluiceError::plan(format!("state variable '{name}': the value does not serialize: {e}")))
}

fn from_json<T: DeserializeOwned>(name: &str, v: &serde_json::Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| {
        SluiceError::plan(format!(
            "state variable '{name}': a stored value does not decode as {} ({e}); the variable's type changed \
             since the checkpoint was written: use another variable name or a new checkpoint location",
            std::any::type_name::<T>()
        ))
    })
}

impl ProcessorState {
    /// The batch's processing time (ms since the epoch).
    pub fn current_processing_time_ms(&self) -> i64 {
        self.now_ms
    }

    /// The batch's watermark (ms), if the query has one.
    pub fn current_watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }

    /// Register a timer at `expiry_ms` (processing time or event time, as
    /// the [`TimeMode`] says).
    pub fn register_timer(&mut self, expiry_ms: i64) -> Result<()> {
        if self.mode == TimeMode::None {
            return Err(SluiceError::plan(
                "register_timer needs TimeMode::ProcessingTime or TimeMode::EventTime; transform_with_state was \
                 declared with TimeMode::None",
            ));
        }
        self.store.timers.insert(expiry_ms);
        Ok(())
    }

    /// Delete the timer at `expiry_ms`, if registered.
    pub fn delete_timer(&mut self, expiry_ms: i64) {
        self.store.timers.remove(&expiry_ms);
    }

    /// The key's registered timers, earliest first.
    pub fn timers(&self) -> Vec<i64> {
        self.store.timers.iter().copied().collect()
    }

    /// Remove every variable and timer of the key.
    pub fn clear_all(&mut self) {
        self.store = ProcessorStore::default();
    }

    fn expiry(&self, ttl_ms: Option<i64>) -> Option<i64> {
        ttl_ms.map(|t| self.now_ms.saturating_add(t))
    }

    fn var(&self, name: &str) -> Option<&Var> {
        self.store.vars.get(name)
    }

    fn kind_error(name: &str, want: &str) -> SluiceError {
        SluiceError::plan(format!("state variable '{name}' is used as a {want} but holds another kind of state"))
    }

    /// Drop entries whose TTL passed (at or before the batch time).
    fn purge_expired(&mut self) {
        let now = self.now_ms;
        let live = |e: &Entry| e.expires.is_none_or(|t| t > now);
        self.store.vars.retain(|_, var| match var {
            Var::Value(e) => live(e),
            Var::List(items) => {
                items.retain(|e| live(e));
                !items.is_empty()
            }
            Var::Map(m) => {
                m.retain(|_, e| live(e));
                !m.is_empty()
            }
        });
    }

    /// The earliest TTL expiry of any entry.
    fn next_expiry(&self) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut see = |e: &Entry| {
            if let Some(t) = e.expires {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for var in self.store.vars.values() {
            match var {
                Var::Value(e) => see(e),
                Var::List(items) => items.iter().for_each(&mut see),
                Var::Map(m) => m.values().for_each(&mut see),
            }
        }
        next
    }
}

macro_rules! handle_common {
    ($ty:ident) => {
        impl<T> $ty<T> {
            /// The variable `name` of each key.
            pub fn new(name: &str) -> Self {
                Self { name: name.to_string(), ttl_ms: None, _t: PhantomData }
            }

            /// Entries written from now on expire `ttl` after the batch
            /// time they were written in (processing time).
            pub fn with_ttl(mut self, ttl: Duration) -> Self {
                self.ttl_ms = Some(ttl.as_millis() as i64);
                self
            }

            /// Remove the variable of the current key.
            pub fn clear(&self, state: &mut ProcessorState) {
                state.store.vars.remove(&self.name);
            }

            /// Whether the current key has the variable.
            pub fn exists(&self, state: &ProcessorState) -> bool {
                state.var(&self.name).is_some()
            }
        }
    };
}

/// A single value per key.
#[derive(Debug, Clone)]
pub struct ValueState<T> {
    name: String,
    ttl_ms: Option<i64>,
    _t: PhantomData<fn() -> T>,
}
handle_common!(ValueState);

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The current key's value, if any.
    pub fn get(&self, state: &ProcessorState) -> Result<Option<T>> {
        match state.var(&self.name) {
            None => Ok(None),
            Some(Var::Value(e)) => from_json(&self.name, &e.v).map(Some),
            Some(_) => Err(ProcessorState::kind_error(&self.name, "value")),
        }
    }

    /// Set the current key's value.
    pub fn update(&self, state: &mut ProcessorState, value: T) -> Result<()> {
        let entry = Entry { v: to_json(&self.name, &value)?, expires: state.expiry(self.ttl_ms) };
        state.store.vars.insert(self.name.clone(), Var::Value(entry));
        Ok(())
    }
}

/// A list of values per key.
#[derive(Debug, Clone)]
pub struct ListState<T> {
    name: String,
    ttl_ms: Option<i64>,
    _t: PhantomData<fn() -> T>,
}
handle_common!(ListState);

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// The current key's list (empty if none).
    pub fn get(&self, state: &ProcessorState) -> Result<Vec<T>> {
        match state.var(&self.name) {
            None => Ok(vec![]),
            Some(Var::List(items)) => items.iter().map(|e| from_json(&self.name, &e.v)).collect(),
            Some(_) => Err(ProcessorState::kind_error(&self.name, "list")),
        }
    }

    /// Append a value (with its own TTL).
    pub fn append(&self, state: &mut ProcessorState, value: T) -> Result<()> {
        let entry = Entry { v: to_json(&self.name, &value)?, expires: state.expiry(self.ttl_ms) };
        match state.store.vars.entry(self.name.clone()).or_insert_with(|| Var::List(vec![])) {
            Var::List(items) => items.push(entry),
            _ => return Err(ProcessorState::kind_error(&self.name, "list")),
        }
        Ok(())
    }

    /// Replace the list.
    pub fn put(&self, state: &mut ProcessorState, values: Vec<T>) -> Result<()> {
        let expires = state.expiry(self.ttl_ms);
        let items =
            values.iter().map(|v| Ok(Entry { v: to_json(&self.name, v)?, expires })).collect::<Result<Vec<_>>>()?;
        if items.is_empty() {
            state.store.vars.remove(&self.name);
        } else {
            state.store.vars.insert(self.name.clone(), Var::List(items));
        }
        Ok(())
    }
}

/// A map per key.
#[derive(Debug, Clone)]
pub struct MapState<K, V> {
    name: String,
    ttl_ms: Option<i64>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapState<K, V> {
    /// The variable `name` of each key.
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), ttl_ms: None, _t: PhantomData }
    }

    /// Entries written from now on expire `ttl` after the batch time they
    /// were written in (processing time).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(ttl.as_millis() as i64);
        self
    }

    /// Remove the whole map of the current key.
    pub fn clear(&self, state: &mut ProcessorState) {
        state.store.vars.remove(&self.name);
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    fn map_key(&self, k: &K) -> Result<String> {
        Ok(to_json(&self.name, k)?.to_string())
    }

    fn map<'a>(&self, state: &'a ProcessorState) -> Result<Option<&'a BTreeMap<String, Entry>>> {
        match state.var(&self.name) {
            None => Ok(None),
            Some(Var::Map(m)) => Ok(Some(m)),
            Some(_) => Err(ProcessorState::kind_error(&self.name, "map")),
        }
    }

    /// The value under `k`, if any.
    pub fn get(&self, state: &ProcessorState, k: &K) -> Result<Option<V>> {
        let key = self.map_key(k)?;
        match self.map(state)?.and_then(|m| m.get(&key)) {
            Some(e) => from_json(&self.name, &e.v).map(Some),
            None => Ok(None),
        }
    }

    /// Set the value under `k`.
    pub fn update(&self, state: &mut ProcessorState, k: &K, v: V) -> Result<()> {
        let entry = Entry { v: to_json(&self.name, &v)?, expires: state.expiry(self.ttl_ms) };
        let key = self.map_key(k)?;
        match state.store.vars.entry(self.name.clone()).or_insert_with(|| Var::Map(BTreeMap::new())) {
            Var::Map(m) => {
                m.insert(key, entry);
                Ok(())
            }
            _ => Err(ProcessorState::kind_error(&self.name, "map")),
        }
    }

    /// Remove the value under `k`.
    pub fn remove(&self, state: &mut ProcessorState, k: &K) -> Result<()> {
        let key = self.map_key(k)?;
        if let Some(Var::Map(m)) = state.store.vars.get_mut(&self.name) {
            m.remove(&key);
            if m.is_empty() {
                state.store.vars.remove(&self.name);
            }
        }
        Ok(())
    }

    /// Every entry, in key order (of the keys' JSON text).
    pub fn entries(&self, state: &ProcessorState) -> Result<Vec<(K, V)>> {
        let Some(m) = self.map(state)? else { return Ok(vec![]) };
        m.iter()
            .map(|(k, e)| {
                let key: serde_json::Value = serde_json::from_str(k).map_err(|err| {
                    SluiceError::plan(format!("state variable '{}': a stored map key is damaged: {err}", self.name))
                })?;
                Ok((from_json(&self.name, &key)?, from_json(&self.name, &e.v)?))
            })
            .collect()
    }
}

/// The `flat_map_groups_with_state` function running `processor`.
pub(crate) fn run_processor<P: StatefulProcessor>(
    processor: &P,
    mode: TimeMode,
    key: &GroupKey,
    rows: &[RecordBatch],
    group: &mut GroupState<ProcessorStore>,
) -> Result<Vec<RecordBatch>> {
    let mut state = ProcessorState {
        store: group.get_option().cloned().unwrap_or_default(),
        now_ms: group.current_processing_time_ms(),
        watermark_ms: group.current_watermark_ms(),
        mode,
    };
    state.purge_expired();
    let mut out = vec![];
    if !group.has_timed_out() {
        out.extend(processor.handle_input_rows(key, rows, &mut state)?);
    }
    let due_at = match mode {
        TimeMode::ProcessingTime => Some(state.now_ms),
        TimeMode::EventTime => state.watermark_ms,
        TimeMode::None => None,
    };
    if let Some(threshold) = due_at {
        while let Some(t) = state.store.timers.first().copied().filter(|t| *t <= threshold) {
            state.store.timers.remove(&t);
            out.extend(processor.handle_expired_timer(key, t, &mut state)?);
        }
    }
    state.purge_expired();
    let timer = state.store.timers.first().copied();
    let wake = match mode {
        TimeMode::EventTime => timer,
        _ => [timer, state.next_expiry()].into_iter().flatten().min(),
    };
    if state.store.vars.is_empty() && state.store.timers.is_empty() {
        group.remove();
    } else {
        group.update(state.store);
    }
    // The operator calls a key back once its timeout is *before* the
    // threshold; a wake-up is due *at* it.
    if let Some(w) = wake {
        group.set_timeout_unchecked(w.saturating_sub(1));
    }
    Ok(out)
}
