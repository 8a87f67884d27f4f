//! Physical operators of streaming plans.

mod batch_state;
mod stateful_exec;
mod stream_scan;

pub use batch_state::{BatchState, OperatorCell, OperatorInstances};
pub use stateful_exec::{contains_stateful, StatefulExec};
pub use stream_scan::{MicroBatchInput, StreamScanExec};
