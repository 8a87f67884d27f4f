//! Query listeners (Spark's `StreamingQueryListener`): started, progress,
//! idle and terminated events of every query of a session.
//!
//! Events are delivered off the query's hot path: each listener has its own
//! bounded queue and its own thread, in the order the query emitted them. A
//! listener that cannot keep up never stalls a query; events that do not fit
//! in its queue are dropped and counted ([`ListenerHandle::dropped_events`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::warn;

use crate::progress::StreamingQueryProgress;

/// How many events wait for a slow listener before new ones are dropped.
pub const LISTENER_QUEUE: usize = 1024;

/// A query started (or restarted on its checkpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryStartedEvent {
    /// Query id (stable across restarts).
    pub id: String,
    /// Id of this run.
    pub run_id: String,
    /// Query name.
    pub name: String,
    /// When it started (ms since the epoch, the session clock).
    pub timestamp_ms: i64,
}

/// A trigger found no new data after one that ran a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryIdleEvent {
    /// Query id.
    pub id: String,
    /// Id of this run.
    pub run_id: String,
    /// When (ms since the epoch).
    pub timestamp_ms: i64,
}

/// A query stopped, finished or failed.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTerminatedEvent {
    /// Query id.
    pub id: String,
    /// Id of this run.
    pub run_id: String,
    /// Query name.
    pub name: String,
    /// The error, when it failed.
    pub exception: Option<String>,
}

/// One event of a query.
#[derive(Debug, Clone)]
pub enum QueryEvent {
    /// See [`QueryStartedEvent`].
    Started(QueryStartedEvent),
    /// A batch ran.
    Progress(Box<StreamingQueryProgress>),
    /// See [`QueryIdleEvent`].
    Idle(QueryIdleEvent),
    /// See [`QueryTerminatedEvent`].
    Terminated(QueryTerminatedEvent),
}

/// Receives the events of a session's queries. Every method has an empty
/// default; they run on the listener's own thread.
pub trait StreamingQueryListener: Send + Sync {
    /// A query started.
    fn on_query_started(&self, _event: &QueryStartedEvent) {}
    /// A batch ran.
    fn on_query_progress(&self, _progress: &StreamingQueryProgress) {}
    /// A query found no new data after running a batch.
    fn on_query_idle(&self, _event: &QueryIdleEvent) {}
    /// A query terminated.
    fn on_query_terminated(&self, _event: &QueryTerminatedEvent) {}
}

struct Registered {
    id: u64,
    tx: SyncSender<Arc<QueryEvent>>,
    dropped: Arc<AtomicU64>,
    /// Events queued and not yet handled.
    pending: Arc<AtomicU64>,
}

/// The listeners of a session.
#[derive(Default)]
pub struct ListenerBus {
    listeners: Mutex<Vec<Registered>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for ListenerBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerBus").field("listeners", &self.listeners.lock().len()).finish()
    }
}

/// A registered listener: how many of its events were dropped; dropping the
/// handle does not remove it (see [`ListenerBus::remove`]).
#[derive(Debug, Clone)]
pub struct ListenerHandle {
    id: u64,
    dropped: Arc<AtomicU64>,
}

impl ListenerHandle {
    /// Events dropped because the listener's queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl ListenerBus {
    /// Register a listener; its events are delivered on a thread of its own.
    pub fn add(&self, listener: Arc<dyn StreamingQueryListener>) -> ListenerHandle {
        let (tx, rx) = sync_channel::<Arc<QueryEvent>>(LISTENER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(AtomicU64::new(0));
        let handled = Arc::clone(&pending);
        let spawned = std::thread::Builder::new().name(format!("sluice-listener-{id}")).spawn(move || {
            while let Ok(event) = rx.recv() {
                match &*event {
                    QueryEvent::Started(e) => listener.on_query_started(e),
                    QueryEvent::Progress(p) => listener.on_query_progress(p),
                    QueryEvent::Idle(e) => listener.on_query_idle(e),
                    QueryEvent::Terminated(e) => listener.on_query_terminated(e),
                }
                handled.fetch_sub(1, Ordering::AcqRel);
            }
        });
        if let Err(e) = spawned {
            warn!("cannot start a thread for a query listener: {e}; it gets no events");
        }
        self.listeners.lock().push(Registered { id, tx, dropped: Arc::clone(&dropped), pending });
        ListenerHandle { id, dropped }
    }

    /// Unregister a listener (its thread ends after the queued events).
    pub fn remove(&self, handle: &ListenerHandle) {
        self.listeners.lock().retain(|l| l.id != handle.id);
    }

    /// Queue `event` for every listener, never waiting.
    pub fn post(&self, event: QueryEvent) {
        let listeners = self.listeners.lock();
        if listeners.is_empty() {
            return;
        }
        let event = Arc::new(event);
        for l in listeners.iter() {
            l.pending.fetch_add(1, Ordering::AcqRel);
            match l.tx.try_send(Arc::clone(&event)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    l.pending.fetch_sub(1, Ordering::AcqRel);
                    l.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {
                    l.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Wait (at most `timeout`) until every queued event was handled; `false`
    /// on timeout. For a process about to exit.
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let busy = self.listeners.lock().iter().any(|l| l.pending.load(Ordering::Acquire) > 0);
            if !busy {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    struct Slow(Arc<Barrier>, Mutex<Vec<String>>, Mutex<std::sync::mpsc::Sender<()>>);
    impl StreamingQueryListener for Slow {
        fn on_query_started(&self, e: &QueryStartedEvent) {
            let _ = self.2.lock().send(());
            self.0.wait();
            self.1.lock().push(e.name.clone());
        }
    }

    fn started(name: &str) -> QueryEvent {
        QueryEvent::Started(QueryStartedEvent {
            id: "i".into(),
            run_id: "r".into(),
            name: name.into(),
            timestamp_ms: 0,
        })
    }

    #[test]
    fn a_blocked_listener_never_blocks_the_poster_and_its_overflow_is_counted() {
        let bus = ListenerBus::default();
        let gate = Arc::new(Barrier::new(2));
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let slow = Arc::new(Slow(Arc::clone(&gate), Mutex::new(vec![]), Mutex::new(entered_tx)));
        let handle = bus.add(Arc::clone(&slow) as Arc<dyn StreamingQueryListener>);
        // The listener blocks on its first event; the queue then fills.
        bus.post(started("0"));
        entered.recv().unwrap();
        for i in 1..LISTENER_QUEUE + 11 {
            bus.post(started(&i.to_string()));
        }
        // One event is being handled, LISTENER_QUEUE wait, the rest dropped.
        assert_eq!(handle.dropped_events(), 10);
        for _ in 0..=LISTENER_QUEUE {
            gate.wait();
        }
        assert!(bus.wait_idle(std::time::Duration::from_secs(10)));
        bus.remove(&handle);
        // Delivered in order.
        let got = slow.1.lock().clone();
        assert_eq!(got.len(), LISTENER_QUEUE + 1);
        assert_eq!(got[..3], ["0", "1", "2"]);
    }
}
