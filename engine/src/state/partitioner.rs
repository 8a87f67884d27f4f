//! How a stateful operator's keys are placed in state partitions.
//!
//! A stateful operator's input is hash-partitioned on its key by
//! DataFusion's `RepartitionExec`, and partition `i` of the plan reads and
//! writes state partition `i`. A key must land in the same partition on
//! every run, so the checkpoint records a fingerprint of the hash function:
//! the partitions DataFusion's repartitioning hash gives a few fixed probe
//! values. A different fingerprint (another DataFusion version, or a
//! machine that hashes differently) means stored keys would be looked up in
//! the wrong partitions, and the state is refused rather than misread.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::common::hash_utils::create_hashes;
use datafusion::physical_plan::repartition::REPARTITION_RANDOM_STATE;

use crate::error::Result;

/// The fingerprint of DataFusion's repartitioning hash, as recorded in a
/// state store's metadata.
pub fn fingerprint() -> Result<String> {
    let ints: ArrayRef = Arc::new(Int64Array::from(vec![0, 1, 42, -7, i64::MAX]));
    let strings: ArrayRef = Arc::new(StringArray::from(vec!["", "a", "sluice", "key-42", "\u{e9}"]));
    let mut hashes = vec![0u64; ints.len()];
    create_hashes([&ints, &strings], REPARTITION_RANDOM_STATE.random_state(), &mut hashes)?;
    let folded = hashes.iter().fold(0u64, |acc, h| acc.rotate_left(13) ^ h);
    Ok(format!("datafusion-repartition-hash:{folded:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_stable_within_a_build() {
        let a = fingerprint().expect("fingerprint");
        assert_eq!(a, fingerprint().expect("fingerprint"));
        assert!(a.starts_with("datafusion-repartition-hash:"), "{a}");
    }
}
