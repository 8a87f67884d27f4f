//! Physical operators of streaming plans.

mod batch_state;
mod stateful_exec;
mod stream_scan;
mod transform_exec;
mod watermark_filter;

pub use batch_state::{BatchState, LateCollector, LateCollectors, OperatorCell, OperatorInstances};
pub use stateful_exec::{contains_stateful, StatefulExec};
pub use stream_scan::{MicroBatchInput, StreamScanExec};
pub use transform_exec::TransformExec;
pub use watermark_filter::WatermarkFilterExec;

/// The one child of a single-input node being given new children.
pub(crate) fn only_child(
    mut children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
    name: &str,
) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    match (children.pop(), children.is_empty()) {
        (Some(child), true) => Ok(child),
        _ => Err(datafusion::error::DataFusionError::Internal(format!("{name} takes exactly one child"))),
    }
}
