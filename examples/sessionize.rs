//! Sessionization with `flat_map_groups_with_state` and an event-time
//! timeout.
//!
//! ```text
//! cargo run --release --example sessionize -- --input DIR --output DIR
//! ```
//!
//! Reads the CSV files (`ts,user_id,action`, with a header line) in
//! `--input`, one file per micro-batch, with a 10-second watermark on `ts`,
//! and writes Parquet rows `user_id, session_start, session_end, num_events`
//! to `--output` through the files sink (exactly once, append mode), then
//! exits. A user's session closes once 30 seconds pass without an event:
//!
//! 1. on a timeout call, the open session is emitted and the state removed;
//! 2. otherwise an open session whose `session_end + 30 s` is already
//!    earlier than the watermark is emitted and closed first;
//! 3. the batch's rows are taken in event-time order, ignoring rows earlier
//!    than the watermark: a row more than 30 s after the open session's last
//!    event emits that session and opens a new one, otherwise it extends it;
//! 4. an open session sets the timeout timestamp `session_end + 30 s`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use sluice::arbitrary::{GroupKey, GroupState, GroupStateTimeout};
use sluice::dataframe::with_watermark;
use sluice::{Environment, OutputMode, SluiceConfig, StreamingDataFrameExt, SystemClock, Trigger};

/// Gap that closes a session, in ms.
const GAP_MS: i64 = 30_000;

#[derive(Parser, Debug)]
#[command(about = "Sessionize CSV click events into Parquet sessions")]
struct Args {
    /// Directory of CSV files `ts,user_id,action` (with a header line).
    #[arg(long)]
    input: PathBuf,
    /// Directory the Parquet sessions are written to.
    #[arg(long)]
    output: PathBuf,
    /// Checkpoint directory (default: `<output>/_checkpoint`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

/// An open session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Session {
    start_ms: i64,
    end_ms: i64,
    events: i64,
}

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
    ]))
}

fn output_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("session_start", ts.clone(), false),
        Field::new("session_end", ts, false),
        Field::new("num_events", DataType::Int64, false),
    ]))
}

fn emit(user: &Option<String>, sessions: &[Session]) -> sluice::Result<Vec<RecordBatch>> {
    if sessions.is_empty() {
        return Ok(vec![]);
    }
    let users = StringArray::from(vec![user.clone(); sessions.len()]);
    let start = TimestampMicrosecondArray::from_iter_values(sessions.iter().map(|s| s.start_ms * 1000));
    let end = TimestampMicrosecondArray::from_iter_values(sessions.iter().map(|s| s.end_ms * 1000));
    let n = Int64Array::from_iter_values(sessions.iter().map(|s| s.events));
    Ok(vec![RecordBatch::try_new(output_schema(), vec![Arc::new(users), Arc::new(start), Arc::new(end), Arc::new(n)])?])
}

/// The per-user function (the contract in the module docs).
fn sessionize(
    key: &GroupKey,
    rows: &[RecordBatch],
    state: &mut GroupState<Session>,
) -> sluice::Result<Vec<RecordBatch>> {
    let user = match key.get("user_id") {
        Some(ScalarValue::Utf8(u)) => u.clone(),
        _ => None,
    };
    let mut done = vec![];
    if state.has_timed_out() {
        if let Some(s) = state.get_option() {
            done.push(s.clone());
        }
        state.remove();
        return emit(&user, &done);
    }
    let watermark = state.current_watermark_ms().unwrap_or(i64::MIN);
    let mut open = state.get_option().cloned();
    if let Some(s) = open.take_if(|s| s.end_ms + GAP_MS < watermark) {
        done.push(s);
    }
    let mut times: Vec<i64> = vec![];
    for b in rows {
        let ts = cast(b.column(0), &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| sluice::SluiceError::plan("sessionize: the ts column is not a timestamp"))?;
        times.extend(ts.iter().flatten().map(|us| us.div_euclid(1000)).filter(|t| *t >= watermark));
    }
    times.sort_unstable();
    for t in times {
        open = Some(match open.take() {
            Some(s) if t > s.end_ms + GAP_MS => {
                done.push(s);
                Session { start_ms: t, end_ms: t, events: 1 }
            }
            Some(s) => Session { start_ms: s.start_ms.min(t), end_ms: s.end_ms.max(t), events: s.events + 1 },
            None => Session { start_ms: t, end_ms: t, events: 1 },
        });
    }
    match open {
        Some(s) => {
            state.set_timeout_timestamp(s.end_ms + GAP_MS)?;
            state.update(s);
        }
        None => state.remove(),
    }
    emit(&user, &done)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessionize: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> sluice::Result<()> {
    let env = Environment::default();
    let checkpoint = args.checkpoint.unwrap_or_else(|| args.output.join("_checkpoint"));
    let session = env.session(SluiceConfig { auto_trigger: true, ..Default::default() }, Arc::new(SystemClock));
    let df = session
        .read_stream()
        .format("files")
        .schema(input_schema())
        .option("path", args.input.display().to_string())
        .option("format", "csv")
        .option("header", "true")
        .option("max_files_per_trigger", "1")
        .name("clicks")
        .load()
        .await?;
    let df = with_watermark(df, "ts", "10 seconds")?;
    let sessions = df.group_by_key(&["user_id"])?.flat_map_groups_with_state(
        OutputMode::Append,
        GroupStateTimeout::EventTime,
        output_schema(),
        sessionize,
    )?;
    let query = sessions
        .write_stream()
        .format("files")
        .option("path", args.output.display().to_string())
        .option("format", "parquet")
        .option("checkpoint", checkpoint.display().to_string())
        .output_mode(OutputMode::Append)
        .trigger(Trigger::AvailableNow)
        .query_name("sessionize")
        .start()
        .await?;
    query.await_termination().await
}
