//! Executors: the micro-batch loop and the operators' state it owns.

mod microbatch;
mod state_runtime;

pub use microbatch::{ExecutionParts, MicroBatchExecution, QuerySource, WatermarkPolicy};
pub use state_runtime::StateRuntime;
