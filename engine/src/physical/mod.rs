//! Physical operators of streaming plans.

mod batch_state;
mod stateful_exec;
mod stream_scan;
mod watermark_filter;

pub use batch_state::{BatchState, LateCollector, LateCollectors, OperatorCell, OperatorInstances};
pub use stateful_exec::{contains_stateful, StatefulExec};
pub use stream_scan::{MicroBatchInput, StreamScanExec};
pub use watermark_filter::WatermarkFilterExec;
