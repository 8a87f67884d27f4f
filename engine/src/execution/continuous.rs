//! Continuous processing (`Trigger::Continuous`): rows processed as they
//! arrive, epochs checkpointed (Spark's `ContinuousExecution`, extended to
//! update-mode aggregation and append-mode windowed aggregation).
//!
//! An epoch is a micro-batch whose end is decided when it ends rather than
//! when it starts. Within an epoch the executor polls the sources about
//! every millisecond; each chunk of new rows runs at once through the
//! physical plan built when the query started (no planning and no log write
//! per chunk), and its output goes to the sink at once
//! ([`Sink::add_chunk`](crate::connector::Sink::add_chunk)) or, for sinks
//! that commit by batch id, is kept for the epoch's end. The watermark moves
//! per chunk, so windows are emitted as soon as it passes them. When the
//! interval is over the epoch ends as a micro-batch commits:
//!
//! 1. the offsets the epoch reached go to the offset log;
//! 2. the sink commits the epoch (`add_batch` with the rows kept);
//! 3. the operators' state and the commit log entry are written.
//!
//! A restart resumes after the last committed epoch. An epoch in the offset
//! log but not committed is re-run first as one micro-batch over exactly its
//! offsets, so sinks idempotent by batch id (files, memory, Kafka
//! transactional) stay exactly-once. The rows of an epoch that never reached
//! the offset log are read again: sinks that took them as chunks (console,
//! `foreach_batch`) see them twice, which is at-least-once, as in Spark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::watch;
use tracing::{debug, info, Instrument};

use super::microbatch::{BatchFigures, MicroBatchExecution};
use crate::checkpoint::OffsetEntry;
use crate::connector::SourceOffset;
use crate::error::{Result, SluiceError};
use crate::options::OutputMode;
use crate::progress::{EpochProgress, EventTimeStats, SourceProgress, StreamingQueryProgress};
use crate::stateful::{BatchContext, EventTime, OperatorSpec};

/// How long an epoch waits before it asks the sources again when they had
/// nothing new.
const POLL: Duration = Duration::from_millis(1);

impl MicroBatchExecution {
    /// Check that the query can run under the continuous trigger: every
    /// source can feed it, and its stateful operators are ones that work
    /// chunk by chunk. The error names what cannot and says what to do.
    pub fn check_continuous(&self) -> Result<()> {
        for s in &self.sources {
            if let Some(reason) = s.source.continuous_refusal() {
                return Err(SluiceError::unsupported(format!(
                    "source '{}' cannot feed a query under the continuous trigger: {reason}",
                    s.name
                )));
            }
        }
        let mode = self.plan.mode();
        if mode == OutputMode::Complete {
            return Err(SluiceError::unsupported(
                "complete output mode under the continuous trigger would re-emit the whole result table for every \
                 chunk of rows; use output_mode = 'update' (each chunk emits the groups it changed), or a micro-batch \
                 trigger (trigger = 'processing_time')",
            ));
        }
        for node in self.plan.stateful_nodes() {
            let refused = match node.spec().as_ref() {
                OperatorSpec::Aggregate { mode: OutputMode::Update, .. } => None,
                OperatorSpec::Aggregate { mode: OutputMode::Append, event_time: Some(_), .. } => None,
                OperatorSpec::Aggregate { .. } => Some("an aggregation in this output mode"),
                OperatorSpec::Session { .. } => Some("a session-window aggregation"),
                OperatorSpec::Dedup { .. } => Some("deduplication (DISTINCT, drop_duplicates)"),
                OperatorSpec::Join(_) => Some("a stream-stream join"),
                OperatorSpec::TopN(_) => Some("a Top-N (ROW_NUMBER() filtered by rank)"),
                OperatorSpec::Changelog(_) => Some("an operator over an update-mode aggregation"),
                OperatorSpec::OverWindow(_) => Some("a window function (OVER) over the stream"),
                OperatorSpec::GroupsWithState(_) => Some("flat_map_groups_with_state and the operations on it"),
                OperatorSpec::Limit { .. } => Some("a LIMIT over the stream"),
            };
            if let Some(what) = refused {
                return Err(SluiceError::unsupported(format!(
                    "the continuous trigger runs stateless queries, update-mode aggregations and append-mode \
                     windowed aggregations; this query has {what} (stateful operator {}). Use a micro-batch \
                     trigger (trigger = 'processing_time', interval = '100 ms' for low latency)",
                    node.id()
                )));
            }
        }
        Ok(())
    }

    /// Run one continuous epoch: process rows chunk by chunk as they arrive
    /// until the clock reaches `end_ms` (or a stop is asked for through
    /// `stop`), then commit the epoch. An uncommitted epoch found at
    /// recovery is re-run first, as one micro-batch over its logged
    /// offsets. Returns the epoch's progress, or `None` when no rows came
    /// (nothing is logged for an empty epoch).
    pub async fn run_epoch(
        &mut self,
        end_ms: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<StreamingQueryProgress>> {
        self.recover().await?;
        // The last epoch's commit is durable before this one's offsets.
        self.finish_commit().await?;
        if let Some(entry) = self.pending_rerun.take() {
            info!(query = %self.name, epoch = entry.batch_id, "re-running the uncommitted epoch as one batch");
            return Ok(Some(self.run_batch(entry, Instant::now(), 0).await?));
        }
        let span = tracing::info_span!("epoch", query = %self.name, id = self.next_batch_id);
        let progress = self.run_epoch_in_span(end_ms, stop).instrument(span.clone()).await?;
        if let Some(p) = &progress {
            span.in_scope(|| info!("{}", p.summary()));
        }
        Ok(progress)
    }

    async fn run_epoch_in_span(
        &mut self,
        end_ms: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<StreamingQueryProgress>> {
        let started = Instant::now();
        let epoch = self.next_batch_id;
        let batch_timestamp_ms = self.clock.now_millis();
        let start_watermark = self.watermark_ms;
        let mut cur = self.committed.clone();
        let mut chunks = EpochChunks::new(&cur);
        // Watermark the previous chunk ran under.
        let mut previous = self.last_chunk_watermark_ms.unwrap_or(self.last_batch_watermark_ms);
        // Whether the sink takes chunks (asked with the first one).
        let mut sink_streams: Option<bool> = None;
        loop {
            let polled = Instant::now();
            let mut latest = BTreeMap::new();
            let mut has_new = false;
            for s in &self.sources {
                let start = cur.get(&s.name).cloned().flatten();
                let end = s.source.latest_offset(start.as_ref()).await?;
                if end.is_some() && end != start {
                    has_new = true;
                }
                latest.insert(s.name.clone(), end.or(start));
            }
            let due = !has_new && self.plan.wants_no_data_batch(previous, self.watermark_ms);
            if has_new || due {
                let watermark = self.watermark_ms;
                let read = Instant::now();
                let (input, sources, rows, event_time) = self.read_sources(epoch, &cur, &latest).await?;
                chunks.read_us += read.elapsed().as_micros() as u64;
                chunks.add_read(&sources, rows, event_time);
                let ctx = BatchContext {
                    batch_id: epoch,
                    watermark: watermark.map(EventTime::from_millis),
                    late_watermark: watermark.map(EventTime::from_millis),
                    previous_watermark: previous.map(EventTime::from_millis),
                    batch_timestamp_ms: self.clock.now_millis(),
                };
                let exec = Instant::now();
                let executed = self.plan.execute(input, self.runtime.batch_state(ctx)).await?;
                chunks.execute_us += exec.elapsed().as_micros() as u64;
                self.last_plan = Some(Arc::clone(&executed.plan));
                let sink_t = Instant::now();
                let out_rows: u64 = executed.rows.iter().map(|b| b.num_rows() as u64).sum();
                chunks.output_rows += out_rows;
                if out_rows > 0 {
                    let streams = match sink_streams {
                        Some(false) => false,
                        _ => self.sink.add_chunk(epoch, &executed.rows).await?,
                    };
                    sink_streams = Some(streams);
                    if !streams {
                        chunks.held.extend(executed.rows.into_iter().filter(|b| b.num_rows() > 0));
                    }
                }
                chunks.sink_us += sink_t.elapsed().as_micros() as u64;
                chunks.latencies_us.push(polled.elapsed().as_micros() as u64);
                cur = latest;
                previous = watermark;
                self.last_chunk_watermark_ms = Some(watermark);
                // The watermark moves per chunk: the next chunk (or a chunk
                // without rows, right away) emits the windows it passed.
                self.watermark_ms = self.next_watermark(watermark);
            }
            if self.clock.now_millis() >= end_ms || *stop.borrow() {
                break;
            }
            if !has_new && !due {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        if chunks.latencies_us.is_empty() {
            debug!(query = %self.name, epoch, "no rows in the epoch; nothing to commit");
            return Ok(None);
        }
        let entry = OffsetEntry { batch_id: epoch, offsets: cur, watermark_ms: start_watermark, batch_timestamp_ms };
        let wal = Instant::now();
        self.checkpoint.write_offsets(&entry).await?;
        crate::faults::crash_point("after_offset_log");
        let wal_ms = wal.elapsed().as_millis() as u64;
        let sink_t = Instant::now();
        if sink_streams != Some(true) {
            self.sink.add_batch(epoch, &chunks.held).await?;
        }
        crate::faults::crash_point("after_sink_write");
        if let Some(late) = &self.late_sink {
            late.add_batch(epoch, &self.runtime.take_late_rows().await).await?;
        }
        let commit_sink_ms = sink_t.elapsed().as_millis() as u64;
        let commit_t = Instant::now();
        let state_operators = self.commit_batch(&entry).await?;
        let commit_ms = commit_t.elapsed().as_millis() as u64;
        let durations = [
            ("wal_commit", wal_ms),
            ("read", chunks.read_us / 1000),
            ("execute", chunks.execute_us / 1000),
            ("sink", chunks.sink_us / 1000 + commit_sink_ms),
            ("commit", commit_ms),
        ];
        let mut sources = chunks.source_progress(&entry);
        let figures = BatchFigures {
            total_rows: chunks.rows,
            output_rows: chunks.output_rows,
            event_time: chunks.event_time,
            state_operators,
            epoch: Some(EpochProgress::of(chunks.latencies_us)),
        };
        Ok(Some(self.progress(&entry, started, &durations, &mut sources, figures)))
    }
}

/// What an epoch's chunks did, summed.
#[derive(Debug, Default)]
struct EpochChunks {
    /// Offsets the epoch started from.
    start: BTreeMap<String, Option<SourceOffset>>,
    /// Rows read, per source.
    per_source: BTreeMap<String, SourceProgress>,
    rows: u64,
    output_rows: u64,
    event_time: Option<EventTimeStats>,
    /// Output kept for the epoch's end (sinks that commit by batch id).
    held: Vec<RecordBatch>,
    /// Per chunk: microseconds from its poll to its delivery.
    latencies_us: Vec<u64>,
    read_us: u64,
    execute_us: u64,
    sink_us: u64,
}

impl EpochChunks {
    fn new(start: &BTreeMap<String, Option<SourceOffset>>) -> Self {
        Self { start: start.clone(), ..Default::default() }
    }

    /// Count one chunk's reads.
    fn add_read(&mut self, sources: &[SourceProgress], rows: u64, event_time: Option<EventTimeStats>) {
        self.rows += rows;
        self.event_time = match (self.event_time.take(), event_time) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        };
        for s in sources {
            match self.per_source.get_mut(&s.name) {
                Some(p) => {
                    p.num_input_rows += s.num_input_rows;
                    p.latest_offset = s.latest_offset.clone();
                    p.metrics = s.metrics.clone();
                }
                None => {
                    self.per_source.insert(s.name.clone(), s.clone());
                }
            }
        }
    }

    /// One progress entry per source over the whole epoch `entry`.
    fn source_progress(&mut self, entry: &OffsetEntry) -> Vec<SourceProgress> {
        entry
            .offsets
            .iter()
            .map(|(name, end)| {
                let mut p = self.per_source.remove(name).unwrap_or_else(|| SourceProgress {
                    name: name.clone(),
                    start_offset: None,
                    end_offset: None,
                    num_input_rows: 0,
                    latest_offset: None,
                    input_rows_per_second: 0.0,
                    processed_rows_per_second: 0.0,
                    metrics: BTreeMap::new(),
                });
                p.start_offset = self.start.get(name).cloned().flatten();
                p.end_offset = end.clone();
                p
            })
            .collect()
    }
}
