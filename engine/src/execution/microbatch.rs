//! The micro-batch executor (Spark's `MicroBatchExecution`).
//!
//! Each step: ask every source for its latest offset; if nothing is new (and
//! no watermark-driven work is due) do nothing; otherwise write the offset
//! log entry for the batch *before* running it, run the query over exactly
//! that offset range, hand the output to the sink (idempotent by batch id)
//! and write the commit log entry. On start, an uncommitted batch found in
//! the offset log is re-run with the same offsets and watermark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use tracing::{debug, info, warn, Instrument};

use super::StateRuntime;
use crate::checkpoint::{CheckpointLock, CommitEntry, OffsetEntry, QueryCheckpoint, QueryMetadata};
use crate::clock::ClockRef;
use crate::connector::{Sink, Source, SourceOffset};
use crate::error::{Result, SluiceError};
use crate::physical::MicroBatchInput;
use crate::plan::IncrementalPlan;
use crate::progress::{
    EpochProgress, EventTimeStats, SinkProgress, SourceProgress, StateOperatorProgress, StreamingQueryProgress,
};
use crate::stateful::{BatchContext, EventTime};
use crate::watermark::WatermarkSpec;

/// The write of a batch's offset log entry, under way.
type OffsetLogWrite = tokio::task::JoinHandle<Result<()>>;

/// A batch's commit log write, under way, and what follows it.
#[derive(Debug)]
pub(super) struct PendingCommit {
    /// `None` once the next batch's offset log write waits for it instead.
    write: Option<tokio::task::JoinHandle<Result<()>>>,
    /// Log entries before this batch id may be forgotten.
    purge_before: Option<u64>,
    /// Sources to tell (`Source::commit`) that a replay no longer needs
    /// what they gave up to these offsets.
    source_ends: Vec<(String, SourceOffset)>,
}

/// Wait for a commit log write; a failed write fails the query.
async fn commit_written(write: tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    write.await.map_err(|e| SluiceError::internal(format!("the commit log writer stopped: {e}")))?
}

/// One source as instantiated for a query.
#[derive(Debug)]
pub struct QuerySource {
    /// Source name (as in the query).
    pub name: String,
    /// The instance.
    pub source: Arc<dyn Source>,
    /// Its watermark declaration.
    pub watermark: Option<WatermarkSpec>,
}

/// Whether the query's watermark is the min or max of its sources'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatermarkPolicy {
    /// The slowest source decides (default, safe).
    #[default]
    Min,
    /// The fastest source decides.
    Max,
}

/// The state of one running query between batches.
#[derive(Debug)]
pub struct MicroBatchExecution {
    /// Query id (from the checkpoint).
    pub id: String,
    /// Query name.
    pub name: String,
    /// Id of this run of the query (a new one at every start, as Spark's
    /// `runId`).
    pub(super) run_id: String,
    pub(super) plan: Arc<IncrementalPlan>,
    pub(super) runtime: StateRuntime,
    pub(super) sources: Vec<QuerySource>,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) sink_description: String,
    pub(super) late_sink: Option<Arc<dyn Sink>>,
    pub(super) checkpoint: QueryCheckpoint,
    pub(super) clock: ClockRef,
    pub(super) policy: WatermarkPolicy,
    pub(super) min_batches_to_retain: u64,
    /// Checkpoint the operators' state every this many batches (1: every
    /// batch); see [`ExecutionParts::state_checkpoint_interval`].
    pub(super) state_checkpoint_interval: u64,
    /// The first batch whose state changes are not checkpointed yet.
    pub(super) replay_from: Option<u64>,
    pub(super) reset_changed_state: bool,
    pub(super) max_batch_bytes: usize,
    pub(super) lock: Option<CheckpointLock>,
    pub(super) initialized: bool,
    /// An uncommitted batch found at recovery, to re-run first.
    pub(super) pending_rerun: Option<OffsetEntry>,
    /// The last batch's commit log write, under way (see [`Self::finish_commit`]).
    pub(super) pending_commit: Option<PendingCommit>,
    /// The last batch's commit whose log write the running batch's offset
    /// log write waits for: its cleanup runs once that write succeeded.
    pub(super) handed_off_commit: Option<PendingCommit>,
    pub(super) next_batch_id: u64,
    /// End offsets of the last batch that ran (committed).
    pub(super) committed: BTreeMap<String, Option<SourceOffset>>,
    /// Watermark to use for the next batch.
    pub(super) watermark_ms: Option<i64>,
    /// Watermark the last batch ran under.
    pub(super) last_batch_watermark_ms: Option<i64>,
    /// Max event time seen per source (ms).
    pub(super) max_event_time: BTreeMap<String, i64>,
    pub(super) last_batch_end_ms: Option<i64>,
    /// The plan instance of the last batch, with its metrics (`EXPLAIN
    /// ANALYZE`); formatted only when asked for.
    pub(super) last_plan: Option<Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
    /// Per source: the columns the plan reads (and the watermark needs),
    /// when fewer than all.
    pub(super) read_columns: BTreeMap<String, Vec<usize>>,
    /// Continuous trigger: the watermark the last chunk ran under (`None`
    /// before the first chunk of this run).
    pub(super) last_chunk_watermark_ms: Option<Option<i64>>,
}

/// What a batch (or epoch) did, for its progress.
#[derive(Debug, Default)]
pub(super) struct BatchFigures {
    /// Rows read.
    pub total_rows: u64,
    /// Rows the sink got.
    pub output_rows: u64,
    /// Event times read.
    pub event_time: Option<EventTimeStats>,
    /// The stateful operators' figures.
    pub state_operators: Vec<StateOperatorProgress>,
    /// The epoch's chunks (continuous trigger).
    pub epoch: Option<EpochProgress>,
}

/// Everything the executor needs to start.
#[derive(Debug)]
pub struct ExecutionParts {
    /// Query name.
    pub name: String,
    /// Prepared plan.
    pub plan: Arc<IncrementalPlan>,
    /// Instantiated sources.
    pub sources: Vec<QuerySource>,
    /// Sink instance.
    pub sink: Arc<dyn Sink>,
    /// Sink connector name, for progress.
    pub sink_description: String,
    /// Where rows dropped as late go (`late_rows` option); the first
    /// stateful operator keeps them when set.
    pub late_sink: Option<Arc<dyn Sink>>,
    /// Checkpoint.
    pub checkpoint: QueryCheckpoint,
    /// Clock.
    pub clock: ClockRef,
    /// Watermark policy.
    pub policy: WatermarkPolicy,
    /// Batches kept recoverable in the offset and commit logs.
    pub min_batches_to_retain: u64,
    /// Checkpoint the operators' state every this many batches, not every
    /// batch (the offset and commit logs are still written every batch). A
    /// restart restores the last state checkpoint and replays the batches
    /// since from the sources, without sending them to the sink again.
    /// More than 1 needs replayable sources and operators whose state
    /// replay rebuilds (see [`MicroBatchExecution::check_state_checkpoint_interval`]).
    pub state_checkpoint_interval: u64,
    /// Start changed stateful operators afresh instead of failing.
    pub reset_changed_state: bool,
    /// The most bytes one source may deliver in one batch.
    pub max_batch_bytes: usize,
    /// The checkpoint's lock, held while the query runs.
    pub lock: Option<CheckpointLock>,
}

impl MicroBatchExecution {
    /// Create the executor; nothing runs and nothing is read until the first step.
    pub fn new(parts: ExecutionParts, id: String) -> Result<Self> {
        let read_columns = read_columns(&parts.plan, &parts.sources);
        let runtime = StateRuntime::new(&parts.plan, parts.late_sink.is_some())?;
        Ok(Self {
            run_id: uuid::Uuid::new_v4().to_string(),
            runtime,
            read_columns,
            id,
            name: parts.name,
            plan: parts.plan,
            sources: parts.sources,
            sink: parts.sink,
            sink_description: parts.sink_description,
            late_sink: parts.late_sink,
            checkpoint: parts.checkpoint,
            clock: parts.clock,
            policy: parts.policy,
            min_batches_to_retain: parts.min_batches_to_retain,
            state_checkpoint_interval: parts.state_checkpoint_interval.max(1),
            replay_from: None,
            reset_changed_state: parts.reset_changed_state,
            max_batch_bytes: parts.max_batch_bytes,
            lock: parts.lock,
            initialized: false,
            pending_rerun: None,
            pending_commit: None,
            handed_off_commit: None,
            next_batch_id: 0,
            committed: BTreeMap::new(),
            watermark_ms: None,
            last_batch_watermark_ms: None,
            max_event_time: BTreeMap::new(),
            last_batch_end_ms: None,
            last_plan: None,
            last_chunk_watermark_ms: None,
        })
    }

    /// The physical plan of the last batch run, with each node's rows and
    /// times (`EXPLAIN ANALYZE`).
    pub fn last_batch_plan(&self) -> Option<String> {
        self.last_plan.as_ref().map(|p| crate::plan::explain_with_metrics(p))
    }

    /// The plan every batch runs, as `EXPLAIN` shows it.
    pub fn plan_text(&self) -> String {
        format!("output mode: {}\n{}", self.plan.mode(), self.plan.explain())
    }

    /// The id of this run (new at every start).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The session clock's time (ms since the epoch).
    pub fn clock_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    /// The event-time watermark as of the last batch (ms since the epoch).
    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }

    /// Hand the checkpoint lock over (to the query handle, which releases
    /// it when the query terminates).
    pub fn take_lock(&mut self) -> Option<CheckpointLock> {
        self.lock.take()
    }

    /// The sources of this query.
    pub fn sources(&self) -> &[QuerySource] {
        &self.sources
    }

    /// Read the checkpoint: resume after the last committed batch (its
    /// offsets, watermark and state), and remember an uncommitted batch to
    /// re-run first. Processes nothing. Idempotent.
    pub async fn recover(&mut self) -> Result<()> {
        if self.initialized {
            return Ok(());
        }
        self.initialized = true;
        let meta =
            self.checkpoint.metadata_or_init(QueryMetadata { id: self.id.clone(), name: self.name.clone() }).await?;
        self.id = meta.id;
        let root = self.checkpoint.root().clone();
        let Some(latest) = self.checkpoint.latest_offsets().await? else {
            self.runtime.restore(&root, None, self.reset_changed_state).await?;
            return Ok(());
        };
        let before: Vec<&String> = latest.offsets.keys().collect();
        let mut now: Vec<&String> = self.sources.iter().map(|s| &s.name).collect();
        now.sort();
        if before != now {
            return Err(SluiceError::Checkpoint {
                path: format!("{}/offsets/{}", self.checkpoint.root().location(), latest.batch_id),
                reason: format!(
                    "the query's sources changed: the checkpoint was written for [{}], the query reads [{}]; \
                     restore the original sources, or use a new checkpoint location",
                    before.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    now.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        self.checkpoint.check_commit_log().await?;
        let commit = self.checkpoint.latest_commit().await?;
        let committed_id = commit.as_ref().map(|c| c.batch_id);
        // The operators' state is checkpointed as of `state_version`; the
        // batches from `replay_from` on are replayed.
        let replay_from = commit.as_ref().and_then(|c| c.replay_from);
        let state_version = commit.as_ref().and_then(CommitEntry::state_version);
        if committed_id == Some(latest.batch_id) {
            info!(query = %self.name, batch = latest.batch_id, "resuming after the last committed batch");
            self.committed = latest.offsets.clone();
            self.next_batch_id = latest.batch_id + 1;
            self.last_batch_watermark_ms = latest.watermark_ms;
            self.watermark_ms = commit.and_then(|c| c.next_watermark_ms).or(latest.watermark_ms);
            self.runtime.restore(&root, state_version, self.reset_changed_state).await?;
            self.replay(replay_from, latest.batch_id).await?;
            return Ok(());
        }
        if latest.batch_id > 0 && committed_id != Some(latest.batch_id - 1) {
            return Err(SluiceError::Checkpoint {
                path: format!("{}/commits", self.checkpoint.root().location()),
                reason: format!(
                    "the offset log ends at batch {} but the commit log at {:?}: a commit file is missing; \
                     restore it or delete the checkpoint directory to start again",
                    latest.batch_id, committed_id
                ),
            });
        }
        // Re-run the uncommitted batch with the same offsets and watermark.
        let start = if latest.batch_id == 0 {
            OffsetEntry { batch_id: 0, offsets: BTreeMap::new(), watermark_ms: None, batch_timestamp_ms: 0 }
        } else {
            self.checkpoint.read_offsets(latest.batch_id - 1).await?.ok_or_else(|| SluiceError::Checkpoint {
                path: format!("{}/offsets/{}", self.checkpoint.root().location(), latest.batch_id - 1),
                reason: "missing; it is needed to replay the uncommitted batch".into(),
            })?
        };
        info!(query = %self.name, batch = latest.batch_id, "re-running the uncommitted batch from the offset log");
        self.committed = start.offsets;
        self.last_batch_watermark_ms = start.watermark_ms;
        self.next_batch_id = latest.batch_id;
        self.watermark_ms = latest.watermark_ms;
        self.runtime.restore(&root, state_version, self.reset_changed_state).await?;
        if let Some(last) = latest.batch_id.checked_sub(1) {
            self.replay(replay_from, last).await?;
        }
        self.pending_rerun = Some(latest);
        Ok(())
    }

    /// Run at most one batch: a data batch if any source has new data, else
    /// a no-data batch if the watermark moved and the plan has work for it.
    /// Returns its progress, or `None` when there was nothing to do.
    pub async fn step(&mut self) -> Result<Option<StreamingQueryProgress>> {
        let result = self.step_batch().await;
        if result.is_err() {
            // A failed step still finishes the commit of the batch before it,
            // so that no write outlives the query. A commit handed to the
            // failed batch's offset log write was awaited there, but may have
            // failed: what follows it is skipped (a later commit's retention
            // and source cleanup cover it).
            self.handed_off_commit = None;
            if let Err(e) = self.finish_commit().await {
                warn!(query = %self.name, error = %e, "the previous batch's commit failed too");
            }
        }
        result
    }

    async fn step_batch(&mut self) -> Result<Option<StreamingQueryProgress>> {
        self.recover().await?;
        if let Some(entry) = self.pending_rerun.take() {
            return Ok(Some(self.run_batch(entry, Instant::now(), 0).await?));
        }
        let started = Instant::now();
        let mut latest = BTreeMap::new();
        let mut has_new = false;
        for s in &self.sources {
            let start = self.committed.get(&s.name).cloned().flatten();
            let end = s.source.latest_offset(start.as_ref()).await?;
            if end.is_some() && end != start {
                has_new = true;
            }
            latest.insert(s.name.clone(), end.or(start));
        }
        let latest_offset_ms = started.elapsed().as_millis() as u64;
        let mut no_data_due =
            !has_new && self.plan.wants_no_data_batch(self.last_batch_watermark_ms, self.watermark_ms);
        if !has_new && !no_data_due {
            // A processing-time timeout that the clock has passed.
            no_data_due = self.runtime.next_timer_ms().await.is_some_and(|t| t < self.clock.now_millis());
        }
        if !has_new && !no_data_due {
            // The last batch's commit is durable before `step` reports that
            // nothing is left.
            self.finish_commit().await?;
            return Ok(None);
        }
        // The last batch's commit log write goes on while this batch starts:
        // this batch's offset log write waits for it first (at most one batch
        // is ever uncommitted), and what follows the commit (retention,
        // source cleanup) runs once that write is done.
        let previous_commit = self.pending_commit.as_mut().and_then(|p| p.write.take());
        self.handed_off_commit = self.pending_commit.take();
        let entry = OffsetEntry {
            batch_id: self.next_batch_id,
            offsets: latest,
            watermark_ms: self.watermark_ms,
            batch_timestamp_ms: self.clock.now_millis(),
        };
        // The offset log entry is written while the batch is read and
        // executed (neither leaves a trace), and is durable before the sink
        // sees the batch or any state is committed; the sources' own metadata
        // (what `latest_offset` recorded) is durable before it.
        let (checkpoint, logged) = (self.checkpoint.clone(), entry.clone());
        let sources: Vec<Arc<dyn Source>> = self.sources.iter().map(|s| Arc::clone(&s.source)).collect();
        let mut wal = Some(tokio::spawn(async move {
            if let Some(commit) = previous_commit {
                commit_written(commit).await?;
            }
            for source in &sources {
                source.metadata_durable().await?;
            }
            checkpoint.write_offsets(&logged).await
        }));
        let result = self.run_batch_logging(entry, started, latest_offset_ms, &mut wal).await;
        if let Some(write) = wal {
            // The batch failed before it waited for its offsets: they are
            // still written (a restart runs the batch again), before the error
            // is returned, so no write outlives the query.
            let _ = write.await;
        }
        Ok(Some(result?))
    }

    /// Wait for the offset log write `wal` of the batch (its time is the
    /// `wal_commit` phase); a failed write fails the batch.
    async fn await_offset_log(wal: &mut Option<OffsetLogWrite>) -> Result<u64> {
        let Some(write) = wal.take() else { return Ok(0) };
        let waited = Instant::now();
        write.await.map_err(|e| SluiceError::internal(format!("the offset log writer stopped: {e}")))??;
        crate::faults::crash_point("after_offset_log");
        Ok(waited.elapsed().as_millis() as u64)
    }

    /// Run steps until nothing is left to do (Spark's `processAllAvailable`).
    pub async fn process_all_available(&mut self) -> Result<Vec<StreamingQueryProgress>> {
        let mut out = vec![];
        while let Some(p) = self.step().await? {
            out.push(p);
        }
        Ok(out)
    }

    /// Freeze every source's target for an available-now run.
    pub async fn prepare_for_available_now(&mut self) -> Result<()> {
        for s in &self.sources {
            s.source.prepare_for_available_now().await?;
        }
        Ok(())
    }

    /// Run one batch under a `batch` span (with the query's name and the
    /// batch id), logging its summary there.
    pub(super) async fn run_batch(
        &mut self,
        entry: OffsetEntry,
        started: Instant,
        latest_offset_ms: u64,
    ) -> Result<StreamingQueryProgress> {
        self.run_batch_logging(entry, started, latest_offset_ms, &mut None).await
    }

    /// [`Self::run_batch`] with the batch's offset log write `wal` still
    /// under way (awaited before the sink).
    async fn run_batch_logging(
        &mut self,
        entry: OffsetEntry,
        started: Instant,
        latest_offset_ms: u64,
        wal: &mut Option<OffsetLogWrite>,
    ) -> Result<StreamingQueryProgress> {
        let span = tracing::info_span!("batch", query = %self.name, id = entry.batch_id);
        let progress = self.run_batch_in_span(entry, started, latest_offset_ms, wal).instrument(span.clone()).await?;
        span.in_scope(|| info!("{}", progress.summary()));
        Ok(progress)
    }

    async fn run_batch_in_span(
        &mut self,
        entry: OffsetEntry,
        started: Instant,
        latest_offset_ms: u64,
        wal: &mut Option<OffsetLogWrite>,
    ) -> Result<StreamingQueryProgress> {
        let batch_id = entry.batch_id;
        debug!(query = %self.name, batch_id, "running batch");
        // Read.
        let read = Instant::now();
        let from = self.committed.clone();
        let (input, mut source_progress, total_rows, event_time) =
            self.read_sources(batch_id, &from, &entry.offsets).await?;
        let read_ms = read.elapsed().as_millis() as u64;
        // Execute.
        let exec = Instant::now();
        let ctx = BatchContext {
            batch_id,
            // The checkpoint records watermarks in ms; operators see event time.
            watermark: entry.watermark_ms.map(EventTime::from_millis),
            late_watermark: entry.watermark_ms.map(EventTime::from_millis),
            previous_watermark: self.last_batch_watermark_ms.map(EventTime::from_millis),
            batch_timestamp_ms: entry.batch_timestamp_ms,
        };
        let executed = self.plan.execute(input, self.runtime.batch_state(ctx)).await?;
        self.last_plan = Some(Arc::clone(&executed.plan));
        let (output, planning) = (executed.rows, executed.planning);
        let plan_ms = planning.as_millis() as u64;
        let execute_ms = (exec.elapsed() - planning).as_millis() as u64;
        let wal_ms = Self::await_offset_log(wal).await?;
        if let Some(previous) = self.handed_off_commit.take() {
            // Its log write is durable: the offset log write waited for it.
            self.after_commit(previous).await?;
        }
        // Sink.
        let sink_t = Instant::now();
        let output_rows: u64 = output.iter().map(|b| b.num_rows() as u64).sum();
        self.sink.add_batch(batch_id, &output).await?;
        crate::faults::crash_point("after_sink_write");
        if let Some(late) = &self.late_sink {
            late.add_batch(batch_id, &self.runtime.take_late_rows().await).await?;
        }
        let sink_ms = sink_t.elapsed().as_millis() as u64;
        // Commit.
        let commit_t = Instant::now();
        let state_operators = self.commit_batch(&entry).await?;
        let commit_ms = commit_t.elapsed().as_millis() as u64;
        let durations = [
            ("latest_offset", latest_offset_ms),
            ("plan", plan_ms),
            ("read", read_ms),
            ("execute", execute_ms),
            ("sink", sink_ms),
            ("commit", commit_ms),
            ("wal_commit", wal_ms),
        ];
        let figures = BatchFigures { total_rows, output_rows, event_time, state_operators, epoch: None };
        Ok(self.progress(&entry, started, &durations, &mut source_progress, figures))
    }

    /// The progress of the batch (or epoch) `entry` just committed, started
    /// at `started`, with its phase `durations` (ms).
    pub(super) fn progress(
        &mut self,
        entry: &OffsetEntry,
        started: Instant,
        durations: &[(&str, u64)],
        source_progress: &mut [SourceProgress],
        figures: BatchFigures,
    ) -> StreamingQueryProgress {
        let total_ms = started.elapsed().as_millis() as u64;
        let now = self.clock.now_millis();
        let since_last = self.last_batch_end_ms.map(|t| (now - t).max(0) as f64 / 1000.0);
        self.last_batch_end_ms = Some(now);
        let secs = (total_ms as f64 / 1000.0).max(1e-3);
        let duration_ms =
            durations.iter().copied().chain([("total", total_ms)]).map(|(k, v)| (k.to_string(), v)).collect();
        let input_rate = |rows: u64| since_last.filter(|s| *s > 0.0).map(|s| rows as f64 / s).unwrap_or(0.0);
        for sp in source_progress.iter_mut() {
            sp.input_rows_per_second = input_rate(sp.num_input_rows);
            sp.processed_rows_per_second = sp.num_input_rows as f64 / secs;
        }
        StreamingQueryProgress {
            id: self.id.clone(),
            name: self.name.clone(),
            batch_id: entry.batch_id,
            timestamp_ms: entry.batch_timestamp_ms,
            num_input_rows: figures.total_rows,
            input_rows_per_second: input_rate(figures.total_rows),
            processed_rows_per_second: figures.total_rows as f64 / secs,
            duration_ms,
            watermark_ms: entry.watermark_ms,
            event_time: figures.event_time,
            run_id: self.run_id.clone(),
            sources: source_progress.to_vec(),
            sink: SinkProgress { description: self.sink_description.clone(), num_output_rows: figures.output_rows },
            state_operators: figures.state_operators,
            epoch: figures.epoch,
        }
    }

    /// Commit the batch (or epoch) `entry` whose output the sink has: the
    /// operators' state, the commit log entry with the next watermark, log
    /// retention and the sources' commits; then move on to the next batch.
    pub(super) async fn commit_batch(&mut self, entry: &OffsetEntry) -> Result<Vec<StateOperatorProgress>> {
        let batch_id = entry.batch_id;
        // The state is checkpointed once `state_checkpoint_interval` batches
        // have run since the last checkpoint.
        let uncheckpointed = self.replay_from.map_or(1, |f| batch_id.saturating_sub(f) + 1);
        let checkpoint = uncheckpointed >= self.state_checkpoint_interval;
        let state_operators = self.runtime.commit(batch_id, checkpoint).await?;
        let replay_from = match checkpoint {
            true => None,
            false => Some(self.replay_from.unwrap_or(batch_id)),
        };
        let next_watermark = self.next_watermark(entry.watermark_ms);
        crate::faults::crash_point("before_commit_log");
        let (log, commit) =
            (self.checkpoint.clone(), CommitEntry { batch_id, next_watermark_ms: next_watermark, replay_from });
        let write = tokio::spawn(async move { log.write_commit(&commit).await });
        self.replay_from = replay_from;
        // Retention: every few batches, forget log entries no longer needed
        // (a replay reads the offsets from the batch before `replay_from`).
        let mut purge_before = None;
        if batch_id % 10 == 0 && batch_id >= self.min_batches_to_retain {
            let before = batch_id + 1 - self.min_batches_to_retain;
            purge_before = Some(replay_from.map_or(before, |f| before.min(f.saturating_sub(1))));
        }
        // Sources may drop what a batch read (clean_source) once a replay no
        // longer needs it.
        let source_ends = match checkpoint {
            true => entry.offsets.iter().filter_map(|(name, end)| Some((name.clone(), end.clone()?))).collect(),
            false => vec![],
        };
        self.pending_commit = Some(PendingCommit { write: Some(write), purge_before, source_ends });
        self.committed = entry.offsets.clone();
        self.next_batch_id = batch_id + 1;
        self.last_batch_watermark_ms = entry.watermark_ms;
        self.watermark_ms = next_watermark;
        Ok(state_operators)
    }

    /// Wait for the last batch's commit log write, then forget the log
    /// entries retention lets go and let the sources clean up what that
    /// batch read. A failed write fails the query (a restart runs the batch
    /// again).
    pub(super) async fn finish_commit(&mut self) -> Result<()> {
        let Some(mut pending) = self.pending_commit.take() else { return Ok(()) };
        if let Some(write) = pending.write.take() {
            commit_written(write).await?;
        }
        self.after_commit(pending).await
    }

    /// What follows a durable commit: forget the log entries retention lets
    /// go, and let the sources clean up what the batch read.
    async fn after_commit(&mut self, pending: PendingCommit) -> Result<()> {
        if let Some(before) = pending.purge_before {
            self.checkpoint.purge_before(before).await?;
        }
        for (name, end) in &pending.source_ends {
            if let Some(s) = self.sources.iter().find(|s| &s.name == name) {
                s.source.commit(end).await?;
            }
        }
        Ok(())
    }

    /// Read every source's rows in `(from, to]` for batch `batch_id`: the
    /// plan's input, one progress entry per source, the rows read and their
    /// event times. Updates the sources' max event times.
    pub(super) async fn read_sources(
        &mut self,
        batch_id: u64,
        from: &BTreeMap<String, Option<SourceOffset>>,
        to: &BTreeMap<String, Option<SourceOffset>>,
    ) -> Result<(MicroBatchInput, Vec<SourceProgress>, u64, Option<EventTimeStats>)> {
        let mut input = MicroBatchInput::default();
        let mut source_progress = vec![];
        let mut total_rows = 0u64;
        let mut event_time: Option<EventTimeStats> = None;
        for s in &self.sources {
            let start = from.get(&s.name).cloned().flatten();
            let end = to.get(&s.name).cloned().flatten();
            let columns = self.read_columns.get(&s.name);
            let batches = match (&end, columns) {
                (Some(end), Some(c)) if Some(end) != start.as_ref() => {
                    s.source.get_batch_columns(start.as_ref(), end, c).await?
                }
                (Some(end), None) if Some(end) != start.as_ref() => s.source.get_batch(start.as_ref(), end).await?,
                _ => vec![],
            };
            if let Some(c) = columns {
                input.columns.insert(s.name.to_ascii_lowercase(), c.clone());
            }
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
            if bytes > self.max_batch_bytes {
                return Err(SluiceError::Source {
                    source_name: s.name.clone(),
                    reason: format!(
                        "batch {batch_id} holds {rows} rows ({} MiB), more than one micro-batch may hold ({} MiB, \
                         SluiceConfig::max_batch_bytes). Lower the source's per-trigger limit (max_files_per_trigger, \
                         rows_per_second, max_offsets_per_trigger) for later batches; this batch's range is in the \
                         offset log, so raise max_batch_bytes to run it. Nothing was committed",
                        bytes >> 20,
                        self.max_batch_bytes >> 20
                    ),
                });
            }
            total_rows += rows;
            if let Some(spec) = &s.watermark {
                if let Some(stats) = event_time_stats(&batches, &spec.column)? {
                    let e = self.max_event_time.entry(s.name.clone()).or_insert(stats.max_ms);
                    *e = (*e).max(stats.max_ms);
                    event_time = Some(match event_time {
                        None => stats,
                        Some(o) => o.merge(stats),
                    });
                }
            }
            source_progress.push(SourceProgress {
                name: s.name.clone(),
                latest_offset: s.source.reported_latest_offset(),
                metrics: s.source.metrics(end.as_ref()),
                start_offset: start,
                end_offset: end,
                num_input_rows: rows,
                input_rows_per_second: 0.0,
                processed_rows_per_second: 0.0,
            });
            input.data.insert(s.name.to_ascii_lowercase(), batches);
        }
        Ok((input, source_progress, total_rows, event_time))
    }

    /// The watermark after a batch: per source, max event time minus delay;
    /// combined by the policy; never moving back.
    pub(super) fn next_watermark(&self, current: Option<i64>) -> Option<i64> {
        let per_source: Vec<i64> = self
            .sources
            .iter()
            .filter_map(|s| {
                let spec = s.watermark.as_ref()?;
                let max = self.max_event_time.get(&s.name)?;
                Some(max - spec.delay.as_millis() as i64)
            })
            .collect();
        let candidate = match self.policy {
            WatermarkPolicy::Min => per_source.iter().min().copied(),
            WatermarkPolicy::Max => per_source.iter().max().copied(),
        };
        match (current, candidate) {
            (Some(c), Some(n)) => Some(c.max(n)),
            (c, n) => c.or(n),
        }
    }

    /// Stop the sources and the sink.
    pub async fn stop(&mut self) -> Result<()> {
        let committed = self.finish_commit().await;
        for s in &self.sources {
            s.source.stop().await?;
        }
        self.sink.stop().await?;
        committed
    }
}

/// Minimum, maximum, sum and count of a timestamp column's non-null values
/// over batches, in ms.
fn event_time_stats(batches: &[RecordBatch], column: &str) -> Result<Option<EventTimeStats>> {
    let mut out: Option<EventTimeStats> = None;
    for b in batches {
        let Some((idx, _)) = b.schema().column_with_name(column).map(|(i, f)| (i, f.clone())) else {
            return Err(SluiceError::plan(format!("watermark column '{column}' is not in the source's rows")));
        };
        let col = b.column(idx);
        let stats = match col.data_type() {
            // The common units without nulls, in one pass and no copy
            // (the same truncating division as the cast below).
            DataType::Timestamp(TimeUnit::Microsecond, _) if col.null_count() == 0 => {
                millis_stats(col.as_primitive::<TimestampMicrosecondType>().values(), |v| v / 1000)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) if col.null_count() == 0 => {
                millis_stats(col.as_primitive::<TimestampMillisecondType>().values(), |v| v)
            }
            _ => {
                let ms = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                let arr = ms.as_primitive::<TimestampMillisecondType>();
                match (min(arr), max(arr)) {
                    (Some(lo), Some(hi)) => {
                        let sum: i128 = arr.iter().flatten().map(i128::from).sum();
                        Some((lo, hi, sum, (arr.len() - arr.null_count()) as u64))
                    }
                    _ => None,
                }
            }
        };
        let Some((lo, hi, sum, count)) = stats else { continue };
        out = Some(match out {
            None => EventTimeStats { min_ms: lo, max_ms: hi, sum_ms: sum, count },
            Some(o) => EventTimeStats {
                min_ms: o.min_ms.min(lo),
                max_ms: o.max_ms.max(hi),
                sum_ms: o.sum_ms + sum,
                count: o.count + count,
            },
        });
    }
    Ok(out)
}

/// (min, max, sum, count) of `values` in milliseconds (`ms` converts one);
/// `None` when empty.
fn millis_stats(values: &[i64], ms: impl Fn(i64) -> i64) -> Option<(i64, i64, i128, u64)> {
    let (mut lo, mut hi, mut sum) = (i64::MAX, i64::MIN, 0i128);
    for v in values {
        let v = ms(*v);
        lo = lo.min(v);
        hi = hi.max(v);
        sum += i128::from(v);
    }
    (!values.is_empty()).then_some((lo, hi, sum, values.len() as u64))
}

/// The columns to read from each source: those the plan's scans use plus
/// the watermark column, when fewer than all.
fn read_columns(plan: &IncrementalPlan, sources: &[QuerySource]) -> BTreeMap<String, Vec<usize>> {
    let used = plan.input_columns();
    let mut out = BTreeMap::new();
    for s in sources {
        let Some(Some(set)) = used.get(&s.name.to_ascii_lowercase()) else { continue };
        let schema = s.source.schema();
        let mut set = set.clone();
        if let Some(spec) = &s.watermark {
            match schema.index_of(&spec.column) {
                Ok(i) => {
                    set.insert(i);
                }
                Err(_) => continue,
            }
        }
        if set.len() < schema.fields().len() {
            out.insert(s.name.clone(), set.into_iter().collect());
        }
    }
    out
}
