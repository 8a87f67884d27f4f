//! [`StreamingQuery`]: the handle of a running query, and the trigger loop
//! that drives it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::{error, Instrument};

use crate::checkpoint::CheckpointLock;
use crate::clock::ClockRef;
use crate::error::{Result, SluiceError};
use crate::execution::MicroBatchExecution;
use crate::listener::{ListenerBus, QueryEvent, QueryIdleEvent, QueryStartedEvent, QueryTerminatedEvent};
use crate::options::Trigger;
use crate::progress::{QueryStatus, StreamingQueryProgress};

/// How many progress reports a query keeps.
const PROGRESS_HISTORY: usize = 100;

#[derive(Debug)]
struct Shared {
    id: Mutex<String>,
    name: String,
    exec: tokio::sync::Mutex<MicroBatchExecution>,
    status: Mutex<QueryStatus>,
    progress: Mutex<VecDeque<StreamingQueryProgress>>,
    exception: Mutex<Option<Arc<SluiceError>>>,
    watermark_ms: Mutex<Option<i64>>,
    /// `true` once the query has terminated (stopped, finished or failed).
    done_tx: watch::Sender<bool>,
    stop_tx: watch::Sender<bool>,
    /// The checkpoint's lock, released when the query terminates.
    lock: Mutex<Option<CheckpointLock>>,
    /// The session's listeners.
    listeners: Arc<ListenerBus>,
    run_id: String,
    /// Whether the last trigger ran a batch (an idle event follows one that did).
    last_ran: std::sync::atomic::AtomicBool,
}

/// A running streaming query.
///
/// Cloning gives another handle to the same query.
#[derive(Debug, Clone)]
pub struct StreamingQuery {
    shared: Arc<Shared>,
}

impl StreamingQuery {
    /// Wrap an executor. With `trigger = None` the query only runs when
    /// [`StreamingQuery::process_all_available`] is called (manual driving, as
    /// the stream-test runner does); otherwise a task runs the trigger loop.
    pub fn start(
        mut exec: MicroBatchExecution,
        trigger: Option<Trigger>,
        clock: ClockRef,
        listeners: Arc<ListenerBus>,
    ) -> Self {
        let lock = Mutex::new(exec.take_lock());
        let run_id = exec.run_id().to_string();
        listeners.post(QueryEvent::Started(QueryStartedEvent {
            id: exec.id.clone(),
            run_id: run_id.clone(),
            name: exec.name.clone(),
            timestamp_ms: clock.now_millis(),
        }));
        let (done_tx, _) = watch::channel(false);
        let (stop_tx, _) = watch::channel(false);
        let watermark = exec.watermark_ms();
        let shared = Arc::new(Shared {
            id: Mutex::new(exec.id.clone()),
            name: exec.name.clone(),
            exec: tokio::sync::Mutex::new(exec),
            status: Mutex::new(QueryStatus {
                message: "Initializing".into(),
                is_trigger_active: false,
                is_data_available: false,
            }),
            progress: Mutex::new(VecDeque::new()),
            exception: Mutex::new(None),
            watermark_ms: Mutex::new(watermark),
            done_tx,
            stop_tx,
            lock,
            listeners,
            run_id,
            last_ran: std::sync::atomic::AtomicBool::new(false),
        });
        let query = Self { shared };
        if let Some(trigger) = trigger {
            let q = query.clone();
            // Everything the query logs is under a `query` span.
            let span = tracing::info_span!("query", name = %q.name(), id = %q.id());
            let task = tokio::spawn(async move { q.run_loop(trigger, clock).await }.instrument(span));
            // The task is joined: if it ends abnormally (a panic outside a
            // batch, a cancelled runtime), the query fails with that reason
            // instead of leaving `await_termination` waiting forever.
            let q = query.clone();
            tokio::spawn(async move {
                if let Err(e) = task.await {
                    if q.is_active() {
                        q.fail(SluiceError::internal(format!("the query's task ended abnormally: {e}")));
                    }
                }
            });
        } else {
            query.set_status("Waiting for data", false, false);
        }
        query
    }

    /// Query id (stable across restarts: it lives in the checkpoint).
    pub fn id(&self) -> String {
        self.shared.id.lock().clone()
    }

    /// Query name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the query is still running.
    pub fn is_active(&self) -> bool {
        !*self.shared.done_tx.borrow()
    }

    /// Current status.
    pub fn status(&self) -> QueryStatus {
        self.shared.status.lock().clone()
    }

    /// The most recent progress report.
    pub fn last_progress(&self) -> Option<StreamingQueryProgress> {
        self.shared.progress.lock().back().cloned()
    }

    /// Recent progress reports, oldest first.
    pub fn recent_progress(&self) -> Vec<StreamingQueryProgress> {
        self.shared.progress.lock().iter().cloned().collect()
    }

    /// The error that terminated the query, if any, as text.
    pub fn exception(&self) -> Option<String> {
        self.error().map(|e| e.to_string())
    }

    /// The error that terminated the query, if any: the error itself, with
    /// its source chain.
    pub fn error(&self) -> Option<Arc<SluiceError>> {
        self.shared.exception.lock().clone()
    }

    /// The physical plan of the last micro-batch, with each node's output
    /// rows and time (`EXPLAIN ANALYZE`); `None` before the first batch.
    pub async fn last_batch_plan(&self) -> Option<String> {
        self.shared.exec.lock().await.last_batch_plan()
    }

    /// The plan the query runs every batch (`EXPLAIN`).
    pub async fn plan(&self) -> String {
        self.shared.exec.lock().await.plan_text()
    }

    /// The event-time watermark (ms since the epoch) as of the last batch.
    pub fn watermark_ms(&self) -> Option<i64> {
        *self.shared.watermark_ms.lock()
    }

    /// Run batches until every source's available data is processed and no
    /// watermark-driven batch is due. Returns the progress of the batches run.
    pub async fn process_all_available(&self) -> Result<Vec<StreamingQueryProgress>> {
        if let Some(e) = self.error() {
            return Err(SluiceError::QueryFailed { query: self.name().to_string(), source: e });
        }
        let mut exec = self.shared.exec.lock().await;
        let mut all = vec![];
        loop {
            match guarded_step(&mut exec).await {
                Ok(Some(p)) => {
                    self.record(&exec, p.clone());
                    all.push(p);
                }
                Ok(None) => break,
                Err(e) => {
                    drop(exec);
                    return Err(SluiceError::Shared(self.fail(e)));
                }
            }
        }
        *self.shared.watermark_ms.lock() = exec.watermark_ms();
        Ok(all)
    }

    /// Wait until the query terminates. Returns its error if it failed.
    pub async fn await_termination(&self) -> Result<()> {
        let mut rx = self.shared.done_tx.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        match self.error() {
            Some(e) => Err(SluiceError::QueryFailed { query: self.name().to_string(), source: e }),
            None => Ok(()),
        }
    }

    /// Wait at most `timeout`; `Ok(true)` if the query terminated.
    pub async fn await_termination_timeout(&self, timeout: Duration) -> Result<bool> {
        match tokio::time::timeout(timeout, self.await_termination()).await {
            Ok(r) => r.map(|_| true),
            Err(_) => Ok(false),
        }
    }

    /// Stop the query: the running batch finishes, no new batch starts.
    pub async fn stop(&self) -> Result<()> {
        self.shared.stop_tx.send_replace(true);
        let mut exec = self.shared.exec.lock().await;
        let r = exec.stop().await;
        let lock = self.shared.lock.lock().take();
        let released = match lock {
            Some(lock) => lock.release().await,
            None => Ok(()),
        };
        self.terminate("Stopped");
        r.and(released)
    }

    fn set_status(&self, message: &str, active: bool, data: bool) {
        *self.shared.status.lock() =
            QueryStatus { message: message.into(), is_trigger_active: active, is_data_available: data };
    }

    fn record(&self, exec: &MicroBatchExecution, p: StreamingQueryProgress) {
        *self.shared.id.lock() = exec.id.clone();
        *self.shared.watermark_ms.lock() = exec.watermark_ms();
        self.shared.listeners.post(QueryEvent::Progress(Box::new(p.clone())));
        let mut q = self.shared.progress.lock();
        q.push_back(p);
        while q.len() > PROGRESS_HISTORY {
            q.pop_front();
        }
    }

    fn fail(&self, e: SluiceError) -> Arc<SluiceError> {
        error!("query '{}' failed: {e}", self.name());
        let e = Arc::new(e);
        *self.shared.exception.lock() = Some(Arc::clone(&e));
        self.terminate("Failed");
        e
    }

    fn terminate(&self, message: &str) {
        if let Some(lock) = self.shared.lock.lock().take() {
            lock.release_in_background();
        }
        self.set_status(message, false, false);
        if !self.shared.done_tx.send_replace(true) {
            self.shared.listeners.post(QueryEvent::Terminated(QueryTerminatedEvent {
                id: self.id(),
                run_id: self.shared.run_id.clone(),
                name: self.shared.name.clone(),
                exception: self.exception(),
            }));
        }
    }

    fn stopped(&self) -> bool {
        *self.shared.stop_tx.borrow()
    }

    async fn run_loop(self, trigger: Trigger, clock: ClockRef) {
        let result = self.run_trigger(trigger, &clock).await;
        match result {
            Ok(()) => {
                if self.is_active() {
                    let mut exec = self.shared.exec.lock().await;
                    if let Err(e) = exec.stop().await {
                        self.fail(e);
                        return;
                    }
                    self.terminate("Stopped");
                }
            }
            Err(e) => {
                self.fail(e);
            }
        }
    }

    async fn step_once(&self) -> Result<bool> {
        let mut exec = self.shared.exec.lock().await;
        if self.stopped() {
            return Ok(false);
        }
        self.set_status("Processing new data", true, true);
        let p = guarded_step(&mut exec).await?;
        let ran = p.is_some();
        if let Some(p) = p {
            self.record(&exec, p);
        }
        let ran_before = self.shared.last_ran.swap(ran, std::sync::atomic::Ordering::Relaxed);
        if ran_before && !ran {
            self.shared.listeners.post(QueryEvent::Idle(QueryIdleEvent {
                id: exec.id.clone(),
                run_id: self.shared.run_id.clone(),
                timestamp_ms: exec.clock_millis(),
            }));
        }
        self.set_status("Waiting for data", false, ran);
        Ok(ran)
    }

    /// One continuous epoch ending at `end_ms` (see
    /// [`MicroBatchExecution::run_epoch`]).
    async fn epoch_once(&self, end_ms: i64, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let mut exec = self.shared.exec.lock().await;
        if self.stopped() {
            return Ok(());
        }
        self.set_status("Processing new data", true, true);
        if let Some(p) = guarded(exec.run_epoch(end_ms, stop)).await? {
            self.record(&exec, p);
        }
        self.set_status("Waiting for data", true, false);
        Ok(())
    }

    async fn run_trigger(&self, trigger: Trigger, clock: &ClockRef) -> Result<()> {
        match trigger {
            Trigger::Once => {
                // Spark's Trigger.Once: a single batch over everything available.
                self.step_once().await?;
                Ok(())
            }
            Trigger::AvailableNow => {
                // The sources' targets were frozen when the query was created.
                while !self.stopped() && self.step_once().await? {}
                Ok(())
            }
            Trigger::Continuous(interval) => {
                // Epochs end on interval boundaries of the clock.
                let interval_ms = (interval.as_millis() as i64).max(1);
                let mut stop_rx = self.shared.stop_tx.subscribe();
                while !self.stopped() {
                    let now = clock.now_millis();
                    let end = now - now.rem_euclid(interval_ms) + interval_ms;
                    self.epoch_once(end, &mut stop_rx).await?;
                }
                Ok(())
            }
            Trigger::ProcessingTime(interval) => {
                let interval_ms = interval.as_millis() as i64;
                let mut stop_rx = self.shared.stop_tx.subscribe();
                loop {
                    if self.stopped() {
                        return Ok(());
                    }
                    let batch_start = clock.now_millis();
                    let ran = self.step_once().await?;
                    // Spark's ProcessingTimeExecutor: the next batch starts at the next
                    // interval boundary, with no catch-up storm after a slow batch. With a
                    // zero interval, poll again soon when no data was found.
                    let deadline = if interval_ms > 0 {
                        let now = clock.now_millis();
                        let next = batch_start - batch_start.rem_euclid(interval_ms) + interval_ms;
                        if now > next {
                            now - now.rem_euclid(interval_ms) + interval_ms
                        } else {
                            next
                        }
                    } else if ran {
                        continue;
                    } else {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(10)) => continue,
                            _ = stop_rx.changed() => return Ok(()),
                        }
                    };
                    tokio::select! {
                        _ = clock.sleep_until(deadline) => {}
                        _ = stop_rx.changed() => return Ok(()),
                    }
                }
            }
        }
    }
}

/// One step of the executor; a panic inside it (a bug, or a panicking UDF)
/// becomes the query's error instead of killing its task and leaving
/// `await_termination` waiting forever.
async fn guarded_step(exec: &mut MicroBatchExecution) -> Result<Option<StreamingQueryProgress>> {
    guarded(exec.step()).await
}

/// Run `step` (a micro-batch or an epoch) with a panic turned into the
/// query's error.
async fn guarded(
    step: impl std::future::Future<Output = Result<Option<StreamingQueryProgress>>>,
) -> Result<Option<StreamingQueryProgress>> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(step).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(SluiceError::plan(format!(
                "a micro-batch panicked: {message}. The batch was not committed; if the panic is not in a function \
                 of yours, it is a bug in Sluice: please report it"
            )))
        }
    }
}
