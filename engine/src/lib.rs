//! # sluice-engine
//!
//! The core of Sluice, a Structured Streaming SQL engine over Apache
//! DataFusion: the session, incremental planning, the micro-batch executor,
//! checkpoints, triggers, progress, and the `Source` / `Sink` traits with
//! their registry.
#![warn(missing_docs)]

pub mod arbitrary;
pub mod checkpoint;
pub mod clock;
pub mod committed_table;
pub mod connector;
pub mod dataframe;
pub mod error;
pub mod execution;
pub mod faults;
pub mod foreach;
pub mod functions;
pub mod listener;
pub mod manifest;
pub mod metrics;
pub mod optimizer;
pub mod options;
pub mod physical;
pub mod plan;
pub mod progress;
pub mod query;
pub mod reader;
pub mod session;
pub mod state;
pub mod stateful;
pub mod stream_table;
pub mod watermark;

pub use clock::{Clock, ClockRef, ManualClock, SystemClock};
pub use connector::{
    ConnectorRegistry, Sink, SinkContext, SinkFactory, Source, SourceContext, SourceDefinition, SourceFactory,
    SourceOffset,
};
pub use error::{Result, SluiceError};
pub use execution::WatermarkPolicy;
pub use options::{parse_duration, Options, OutputMode, Trigger};
pub use progress::{EpochProgress, QueryStatus, StreamingQueryProgress};
pub use query::StreamingQuery;
pub use reader::{DataStreamReader, DataStreamWriter, StreamingDataFrameExt};
pub use session::{QuerySpec, SluiceConfig, SluiceSession, DEFAULT_MAX_BATCH_BYTES};
pub use watermark::WatermarkSpec;
