//! Per-partition offsets, as the offset log records them: Spark's JSON,
//! `{"topic":{"0":23,"1":7}}`, each number the next offset to read.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sluice_engine::{Result, SluiceError, SourceOffset};

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// The next offset to read of each partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOffsets(pub BTreeMap<TopicPartition, i64>);

impl PartitionOffsets {
    /// The offset of one partition.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(&(topic.to_string(), partition)).copied()
    }

    /// Spark's JSON form.
    pub fn to_json(&self) -> SourceOffset {
        let mut topics: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
        for ((t, p), o) in &self.0 {
            topics.entry(t.as_str()).or_default().insert(p.to_string(), Value::from(*o));
        }
        Value::Object(topics.into_iter().map(|(t, m)| (t.to_string(), Value::Object(m))).collect())
    }

    /// Read an offset written by [`Self::to_json`] (from the offset log: a
    /// damaged one is a checkpoint error naming the source).
    pub fn from_json(source: &str, value: &SourceOffset) -> Result<Self> {
        let bad = || SluiceError::Source {
            source_name: source.into(),
            reason: format!(
                "the offset {value} in the checkpoint is not a Kafka offset ({{\"topic\":{{\"0\":23}}}}); the \
                 checkpoint belongs to another source or is damaged: start the query with a new checkpoint"
            ),
        };
        let mut out = BTreeMap::new();
        for (topic, parts) in value.as_object().ok_or_else(bad)? {
            for (p, o) in parts.as_object().ok_or_else(bad)? {
                let p: i32 = p.parse().map_err(|_| bad())?;
                out.insert((topic.clone(), p), o.as_i64().ok_or_else(bad)?);
            }
        }
        Ok(Self(out))
    }

    /// Total records between `self` (the start) and `end`, per partition of `end`.
    pub fn count_to(&self, end: &PartitionOffsets) -> u64 {
        end.0.iter().map(|(tp, e)| (e - self.0.get(tp).copied().unwrap_or(0)).max(0) as u64).sum()
    }
}

/// Cap the records of one batch at `max` over all partitions, shared in
/// proportion to each partition's backlog as Spark's `rateLimit` does
/// (each partition gets at least one record while it has a backlog, so a
/// small cap never starves a partition forever).
pub fn rate_limit(start: &PartitionOffsets, available: &PartitionOffsets, max: u64) -> PartitionOffsets {
    let backlog: Vec<(&TopicPartition, i64, i64)> = available
        .0
        .iter()
        .map(|(tp, until)| {
            let from = start.0.get(tp).copied().unwrap_or(0).min(*until);
            (tp, from, until - from)
        })
        .collect();
    let total: i64 = backlog.iter().map(|(_, _, n)| n).sum();
    if total as u64 <= max {
        return available.clone();
    }
    let mut out = BTreeMap::new();
    for (tp, from, n) in backlog {
        let share = ((n as f64) * (max as f64) / (total as f64)).floor() as i64;
        let take = if n > 0 { share.clamp(1, n) } else { 0 };
        out.insert(tp.clone(), from + take);
    }
    PartitionOffsets(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(v: &[(&str, i32, i64)]) -> PartitionOffsets {
        PartitionOffsets(v.iter().map(|(t, p, o)| ((t.to_string(), *p), *o)).collect())
    }

    #[test]
    fn json_round_trip_is_spark_s_shape() {
        let o = offsets(&[("a", 0, 5), ("a", 1, 7), ("b", 0, 0)]);
        let j = o.to_json();
        assert_eq!(j, serde_json::json!({"a": {"0": 5, "1": 7}, "b": {"0": 0}}));
        assert_eq!(PartitionOffsets::from_json("s", &j).unwrap(), o);
        let e = PartitionOffsets::from_json("s", &serde_json::json!({"a": 3})).unwrap_err().to_string();
        assert!(e.contains("not a Kafka offset") && e.contains("new checkpoint"), "{e}");
    }

    #[test]
    fn rate_limit_shares_in_proportion_and_never_exceeds_the_backlog() {
        let start = offsets(&[("t", 0, 0), ("t", 1, 10)]);
        let available = offsets(&[("t", 0, 300), ("t", 1, 110)]);
        let limited = rate_limit(&start, &available, 100);
        assert_eq!(limited, offsets(&[("t", 0, 75), ("t", 1, 35)]));
        assert!(start.count_to(&limited) <= 100);
        // Under the cap: everything.
        assert_eq!(rate_limit(&start, &available, 1000), available);
        // A tiny cap still moves every partition with a backlog.
        let tiny = rate_limit(&start, &available, 1);
        assert_eq!(tiny, offsets(&[("t", 0, 1), ("t", 1, 11)]));
    }
}
