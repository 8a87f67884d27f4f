//! Arbitrary stateful processing: a user function per key of a stream with
//! state kept between batches (Spark's `flatMapGroupsWithState` and
//! `mapGroupsWithState`), with processing-time and event-time timeouts.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use datafusion::arrow::array::{Int64Array, RecordBatch};
//! # use datafusion::arrow::datatypes::{DataType, Field, Schema};
//! # fn demo(df: datafusion::dataframe::DataFrame) -> sluice_engine::Result<()> {
//! use sluice_engine::arbitrary::{group_by_key, GroupStateTimeout};
//! use sluice_engine::OutputMode;
//! let out = Arc::new(Schema::new(vec![Field::new("count", DataType::Int64, false)]));
//! let schema = Arc::clone(&out);
//! let counts = group_by_key(df, &["user"])?.flat_map_groups_with_state(
//!     OutputMode::Update,
//!     GroupStateTimeout::NoTimeout,
//!     out,
//!     move |_key, rows, state| {
//!         let n = state.get_option().copied().unwrap_or(0i64)
//!             + rows.iter().map(|b| b.num_rows() as i64).sum::<i64>();
//!         state.update(n);
//!         Ok(vec![RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![n]))])?])
//!     },
//! )?;
//! # Ok(()) }
//! ```

mod function;
mod group_state;
mod keyed;
mod node;
mod processor;
pub mod transform;
mod window;

pub use function::{GroupCall, GroupFunction, GroupOutcome, StoredGroup};
pub use group_state::{GroupKey, GroupState, GroupStateTimeout};
pub use keyed::{group_by_key, KeyedStream};
pub use node::GroupsWithStateNode;
pub use processor::{ListState, MapState, ProcessorState, ProcessorStore, StatefulProcessor, TimeMode, ValueState};
pub use transform::transform;
pub use window::{Reduce, WindowSlices};
