//! Executors: the micro-batch loop, continuous epochs, and the operators'
//! state they own.

mod continuous;
mod microbatch;
mod replay;
mod state_runtime;

pub use microbatch::{ExecutionParts, MicroBatchExecution, QuerySource, WatermarkPolicy};
pub use state_runtime::StateRuntime;
