//! Scalar functions Sluice adds to DataFusion.

pub mod window;

pub use window::window_udfs;
