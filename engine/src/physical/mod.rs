//! Physical operators of streaming plans.

mod stream_scan;

pub use stream_scan::StreamScanExec;
