//! Scalar functions Sluice adds to DataFusion.

pub mod batch_time;
pub mod date_format;
pub mod date_pattern;
pub mod proctime;
pub mod split_part;
pub mod state_table;
pub mod window;

pub use window::window_udfs;
