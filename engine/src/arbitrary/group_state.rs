//! [`GroupState`]: what a `flat_map_groups_with_state` function reads and
//! changes of its group's state, as Spark's `GroupState`.

use std::fmt;
use std::sync::Arc;

use datafusion::common::ScalarValue;

use crate::error::{Result, SluiceError};
use crate::options::parse_duration;

/// When a group's state times out (Spark's `GroupStateTimeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupStateTimeout {
    /// Groups never time out.
    NoTimeout,
    /// A group times out once the batch's processing time (from the
    /// engine's `Clock`) passes the deadline set with
    /// [`GroupState::set_timeout_duration`].
    ProcessingTime,
    /// A group times out once the watermark passes the timestamp set with
    /// [`GroupState::set_timeout_timestamp`]. Needs a watermark.
    EventTime,
}

impl fmt::Display for GroupStateTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoTimeout => "NoTimeout",
            Self::ProcessingTime => "ProcessingTimeTimeout",
            Self::EventTime => "EventTimeTimeout",
        })
    }
}

/// The key of a group: the values of the `group_by_key` columns.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupKey {
    names: Arc<[String]>,
    values: Vec<ScalarValue>,
}

impl GroupKey {
    /// A key of `values` for the columns `names`.
    pub fn new(names: Arc<[String]>, values: Vec<ScalarValue>) -> Self {
        Self { names, values }
    }

    /// The key's values, in the order of the `group_by_key` columns.
    pub fn values(&self) -> &[ScalarValue] {
        &self.values
    }

    /// The value of key column `name`.
    pub fn get(&self, name: &str) -> Option<&ScalarValue> {
        self.names.iter().position(|n| n == name).and_then(|i| self.values.get(i))
    }

    /// The key columns' names.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (n, v)) in self.names.iter().zip(&self.values).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v}")?;
        }
        f.write_str("]")
    }
}

/// A group's state during one call of the user function: the value kept
/// between batches, its timeout, and the batch's times. Mirrors Spark's
/// `GroupState`: a call for a group with rows starts with no timeout set
/// (set it again to keep one); a call for a timed-out group has no rows and
/// [`has_timed_out`](Self::has_timed_out) true.
#[derive(Debug)]
pub struct GroupState<S> {
    value: Option<S>,
    updated: bool,
    removed: bool,
    timeout_ms: Option<i64>,
    conf: GroupStateTimeout,
    has_timed_out: bool,
    batch_time_ms: i64,
    watermark_ms: Option<i64>,
}

impl<S> GroupState<S> {
    /// The state a call starts with (used by the engine, and by tests of
    /// user functions).
    pub fn new(
        value: Option<S>,
        conf: GroupStateTimeout,
        has_timed_out: bool,
        batch_time_ms: i64,
        watermark_ms: Option<i64>,
    ) -> Self {
        Self {
            value,
            updated: false,
            removed: false,
            timeout_ms: None,
            conf,
            has_timed_out,
            batch_time_ms,
            watermark_ms,
        }
    }

    /// Whether the group has a value.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The value; an error when there is none (check [`exists`](Self::exists)
    /// or use [`get_option`](Self::get_option)).
    pub fn get(&self) -> Result<&S> {
        self.value.as_ref().ok_or_else(|| {
            SluiceError::plan("GroupState::get: the group has no state (never set, or removed); check exists() first")
        })
    }

    /// The value, if any.
    pub fn get_option(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// The value, mutable, if any (a change through it counts as an update).
    pub fn get_mut(&mut self) -> Option<&mut S> {
        if self.value.is_some() {
            self.updated = true;
            self.removed = false;
        }
        self.value.as_mut()
    }

    /// Set the value.
    pub fn update(&mut self, value: S) {
        self.value = Some(value);
        self.updated = true;
        self.removed = false;
    }

    /// Remove the value (a timeout set in the same call still fires, with
    /// no value).
    pub fn remove(&mut self) {
        self.value = None;
        self.updated = false;
        self.removed = true;
    }

    /// Time the group out once processing time passes this batch's time
    /// plus `duration` (`"30 seconds"`). Needs [`GroupStateTimeout::ProcessingTime`].
    pub fn set_timeout_duration(&mut self, duration: &str) -> Result<()> {
        let ms = parse_duration(duration)?.as_millis() as i64;
        self.set_timeout_duration_ms(ms)
    }

    /// [`set_timeout_duration`](Self::set_timeout_duration) in milliseconds.
    pub fn set_timeout_duration_ms(&mut self, duration_ms: i64) -> Result<()> {
        if self.conf != GroupStateTimeout::ProcessingTime {
            return Err(SluiceError::plan(format!(
                "GroupState::set_timeout_duration needs GroupStateTimeout::ProcessingTime, but the operation was \
                 declared with {}; declare ProcessingTime, or use set_timeout_timestamp with EventTime",
                self.conf
            )));
        }
        if duration_ms <= 0 {
            return Err(SluiceError::plan(format!(
                "GroupState::set_timeout_duration: the duration must be positive, got {duration_ms} ms"
            )));
        }
        self.timeout_ms = Some(self.batch_time_ms.saturating_add(duration_ms));
        Ok(())
    }

    /// Time the group out once the watermark passes `timestamp_ms` (ms since
    /// the epoch, at or after the current watermark). Needs
    /// [`GroupStateTimeout::EventTime`].
    pub fn set_timeout_timestamp(&mut self, timestamp_ms: i64) -> Result<()> {
        if self.conf != GroupStateTimeout::EventTime {
            return Err(SluiceError::plan(format!(
                "GroupState::set_timeout_timestamp needs GroupStateTimeout::EventTime, but the operation was declared \
                 with {}; declare EventTime, or use set_timeout_duration with ProcessingTime",
                self.conf
            )));
        }
        if timestamp_ms <= 0 {
            return Err(SluiceError::plan(format!(
                "GroupState::set_timeout_timestamp: the timestamp must be positive, got {timestamp_ms}"
            )));
        }
        if let Some(wm) = self.watermark_ms.filter(|wm| timestamp_ms < *wm) {
            return Err(SluiceError::plan(format!(
                "GroupState::set_timeout_timestamp: the timeout timestamp ({timestamp_ms}) cannot be earlier than the \
                 current watermark ({wm})"
            )));
        }
        self.timeout_ms = Some(timestamp_ms);
        Ok(())
    }

    /// Whether this call is for a group that timed out (it has no rows).
    pub fn has_timed_out(&self) -> bool {
        self.has_timed_out
    }

    /// The event-time watermark of the batch (ms), if the query has one.
    pub fn current_watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }

    /// The batch's processing time (ms since the epoch, from the `Clock`).
    pub fn current_processing_time_ms(&self) -> i64 {
        self.batch_time_ms
    }

    /// The timeout set in this call, if any (ms since the epoch).
    pub fn timeout_timestamp_ms(&self) -> Option<i64> {
        self.timeout_ms
    }

    /// Whether the value was set in this call.
    pub fn is_updated(&self) -> bool {
        self.updated
    }

    /// Whether the value was removed in this call.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Set the timeout without the checks of the public setters (for
    /// operations built on this one, such as `transform_with_state`).
    pub(crate) fn set_timeout_unchecked(&mut self, timeout_ms: i64) {
        self.timeout_ms = Some(timeout_ms);
    }

    /// The value, taken out (after the call).
    pub(crate) fn into_value(self) -> Option<S> {
        self.value
    }
}
