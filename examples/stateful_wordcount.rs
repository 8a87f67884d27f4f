//! The seeds' running word count (`StatefulNetWorkWC.scala`) with
//! `update_state_by_key`: every batch, each word's count is updated with the
//! batch's occurrences, and every word's running count is printed.
//!
//! ```text
//! cargo run --example stateful_wordcount -- [--input DIR] [--socket HOST:PORT]
//! ```
//!
//! By default it reads the text files in `examples/data/words`, one file per
//! micro-batch, and exits; with `--socket` it reads lines from a socket
//! (`nc -lk 9999`) until Ctrl-C, as the seed does.

use std::sync::Arc;

use clap::Parser;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{col, lit};
use sluice::{Environment, OutputMode, StreamingDataFrameExt, Trigger};

#[derive(Parser, Debug)]
#[command(about = "Running word count with update_state_by_key")]
struct Args {
    /// Directory of text files (one micro-batch per file).
    #[arg(long, default_value = "examples/data/words")]
    input: String,
    /// Read lines from this socket instead (`localhost:9999`).
    #[arg(long)]
    socket: Option<String>,
    /// Checkpoint directory.
    #[arg(long, default_value = "target/example-out/checkpoints/stateful_wordcount")]
    checkpoint: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let env = Environment::default();
    let session = env.default_session();
    let schema = Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, true)]));
    let reader = session.read_stream().schema(schema).name("lines");
    let reader = match &args.socket {
        Some(addr) => {
            let (host, port) = addr.rsplit_once(':').ok_or("--socket takes HOST:PORT")?;
            reader.format("socket").option("host", host).option("port", port)
        }
        None => reader
            .format("files")
            .option("path", args.input.as_str())
            .option("format", "text")
            .option("max_files_per_trigger", "1"),
    };
    let lines = reader.load().await?;
    let words = lines
        .select(vec![
            datafusion::functions_nested::expr_fn::string_to_array(col("value"), lit(" "), lit("")).alias("w")
        ])?
        .unnest_columns(&["w"])?
        .filter(col("w").is_not_null())?
        .select(vec![col("w").alias("word")])?;
    // The update function: the new occurrences plus the running count.
    let counts =
        words.group_by_key(&["word"])?.update_state_by_key(DataType::Int64, |_word, rows, count: Option<i64>| {
            let seen: i64 = rows.iter().map(|b| b.num_rows() as i64).sum();
            Ok(Some(count.unwrap_or(0) + seen))
        })?;
    let trigger = if args.socket.is_some() {
        Trigger::ProcessingTime(std::time::Duration::from_secs(1))
    } else {
        Trigger::AvailableNow
    };
    let query = counts
        .write_stream()
        .format("console")
        .output_mode(OutputMode::Update)
        .trigger(trigger)
        .option("checkpoint", args.checkpoint.as_str())
        .query_name("stateful_wordcount")
        .start()
        .await?;
    query.await_termination().await?;
    Ok(())
}
