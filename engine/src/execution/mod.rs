//! Executors: the micro-batch loop.

mod microbatch;

pub use microbatch::{ExecutionParts, MicroBatchExecution, QuerySource, WatermarkPolicy};
