//! The stream-test (`.stt`) runner: parses files as STREAMTEST.md specifies,
//! runs them against a fresh engine with a manual clock, and reports each file.

mod parse;
mod render;
mod run;
mod suite;

pub use parse::{parse_stt, Located, Record};
pub use render::{render_batches, render_value};
pub use run::{run_file, RunOptions};
pub use suite::{classify, collect_stt_files, NotYetPassing, Outcome, SuiteReport};
