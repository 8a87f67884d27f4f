//! Command-line interface.

mod bench;
mod repl;
mod run;
mod shell;
mod state;
mod status;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sluice: a Structured Streaming SQL engine over Apache DataFusion.
///
/// With no command, starts an interactive SQL shell.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// More logging (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the statements of a SQL file and keep its queries running until
    /// they finish or Ctrl-C, printing progress.
    Run {
        /// The SQL file.
        file: PathBuf,
        /// Replace `$NAME` in the file by the value of the environment variable NAME.
        #[arg(long, default_value_t = true)]
        env_substitute: bool,
        /// Serve Prometheus metrics of the queries at http://ADDR/metrics (e.g. 127.0.0.1:9464).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Append every progress report to FILE, one Spark-shaped JSON document per line.
        #[arg(long, value_name = "FILE")]
        progress_json: Option<PathBuf>,
    },
    /// A checkpoint's stateful operators (numbered from 0) with their
    /// versions and sizes; with --operator, that operator's committed state
    /// queried with SQL as the table `state` (the rows `sluice_state` gives).
    State {
        /// The query's checkpoint location.
        checkpoint: String,
        /// The operator: its number, `limit`, or its kind (`aggregate`, `dedup`, `join`, ...).
        #[arg(long)]
        operator: Option<String>,
        /// SQL over the table `state` (default: SELECT * FROM state).
        #[arg(long)]
        sql: Option<String>,
        /// Read the version of this batch (default: the last committed one).
        #[arg(long)]
        batch: Option<u64>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
    /// The Nexmark event generator.
    Nexmark {
        #[command(subcommand)]
        command: NexmarkCommand,
    },
    /// Run stream-test files (`*.stt`, see STREAMTEST.md); prints one line
    /// per file and `N passed, M failed`. Exit code 1 on any failure.
    Test {
        /// Files or directories (searched for `*.stt`).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Insert a `restart` after every `trigger`.
        #[arg(long)]
        restart_every_batch: bool,
        /// The list of files not yet passing (one name and reason a line).
        #[arg(long, default_value = "tests/stt/not_yet_passing.txt")]
        not_yet_passing: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// End-to-end latency: a generator pushes rows stamped with their
    /// creation time at a fixed rate; the sink records creation-to-delivery
    /// time. The last line reads `p50_ms=… p99_ms=… p999_ms=… max_ms=… rate=…`.
    Latency {
        /// continuous, default (micro-batches back to back) or processing_time.
        #[arg(long, default_value = "continuous")]
        trigger: String,
        /// The checkpoint interval (continuous) or trigger interval
        /// (processing_time), e.g. `1 second`, `100 ms`.
        #[arg(long)]
        interval: Option<String>,
        /// Rows per second.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Seconds measured.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds of warm-up before measuring.
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// filter (a filter and projection) or count (update-mode count by key).
        #[arg(long, default_value = "filter")]
        query: String,
    },
    /// Run Nexmark queries (benches/nexmark/*.sql) over pre-generated events as
    /// fast as possible (available_now) and report events/s, per core, batches,
    /// p50/p99 batch time and peak memory.
    Nexmark {
        /// Query names (q0, q1, ...); all when none is given.
        #[arg(long = "query")]
        queries: Vec<String>,
        /// Events in the stream.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Also run the batch-equivalent query on `datafusion` and print the ratio.
        #[arg(long)]
        baseline: Option<String>,
        /// Use events already written by `sluice nexmark generate` (Parquet).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where the query files are.
        #[arg(long, default_value = "benches/nexmark")]
        queries_dir: PathBuf,
        /// Checkpoint the stateful operators' state every this many batches
        /// (the query option `state_checkpoint_interval`; 1: every batch).
        #[arg(long, default_value_t = 1)]
        state_checkpoint_interval: u64,
    },
}

#[derive(Debug, Subcommand)]
enum NexmarkCommand {
    /// Write events as Parquet or CSV files (person/, auction/, bid/) for other engines.
    Generate {
        /// Events in the stream.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// parquet or csv.
        #[arg(long, default_value = "parquet")]
        format: String,
    },
}

/// Set up `tracing` output on stderr.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only on a terminal: logs piped to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run the chosen command.
pub async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        None => repl::repl().await,
        Some(Command::Run { file, env_substitute, metrics, progress_json }) => {
            run::run_file(&file, &run::RunOptions { env_substitute, metrics, progress_json }).await
        }
        Some(Command::State { checkpoint, operator, sql, batch }) => {
            state::state(&state::StateArgs { checkpoint, operator, sql, batch }).await
        }
        Some(Command::Bench { bench: BenchCommand::Latency { trigger, interval, rate, seconds, warmup, query } }) => {
            bench::latency(&trigger, interval.as_deref(), rate, seconds, warmup, &query).await
        }
        Some(Command::Bench {
            bench: BenchCommand::Nexmark { queries, events, baseline, data, queries_dir, state_checkpoint_interval },
        }) => {
            let state = state_checkpoint_interval;
            bench::nexmark(&queries, events, baseline.as_deref(), data.as_deref(), &queries_dir, state).await
        }
        Some(Command::Nexmark { command: NexmarkCommand::Generate { events, out, format } }) => {
            bench::generate_files(events, &out, &format)
        }
        Some(Command::Test { paths, restart_every_batch, not_yet_passing }) => {
            test::test(&paths, restart_every_batch, &not_yet_passing).await
        }
    }
}
