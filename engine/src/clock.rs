//! Processing-time clocks. Operators and triggers never read the system
//! time directly; they ask a [`Clock`], so tests can drive time by hand.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A source of processing time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;
    /// Wait until `deadline_ms` (clock time). A manual clock returns at once
    /// when the deadline has passed and otherwise waits until a test
    /// advances it that far.
    fn sleep_until(&self, deadline_ms: i64) -> futures::future::BoxFuture<'_, ()>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    fn sleep_until(&self, deadline_ms: i64) -> futures::future::BoxFuture<'_, ()> {
        let wait = (deadline_ms - self.now_millis()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that only moves when told to.
///
/// ```
/// use sluice_engine::clock::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance(std::time::Duration::from_secs(5));
/// assert_eq!(clock.now_millis(), 6_000);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
    /// Wakes sleepers whenever the time moves.
    moved: tokio::sync::Notify,
}

impl ManualClock {
    /// A manual clock starting at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self { now: AtomicI64::new(start_ms), moved: tokio::sync::Notify::new() }
    }
    /// Move the clock forward, waking the sleepers whose deadline it reaches.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
    /// Set the clock to an absolute time, waking the sleepers whose deadline
    /// it reaches.
    pub fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline_ms: i64) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                // Registered before the check, so an advance in between is
                // not missed.
                let moved = self.moved.notified();
                if self.now_millis() >= deadline_ms {
                    return;
                }
                moved.await;
            }
        })
    }
}

/// A shared clock handle.
pub type ClockRef = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_its_sleepers_when_advanced_and_not_before() {
        let clock = Arc::new(ManualClock::new(0));
        let c = Arc::clone(&clock);
        let sleeper = tokio::spawn(async move { c.sleep_until(1_000).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_millis(500));
        // Real time passing does not wake it: only the clock does.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        clock.advance(Duration::from_millis(500));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("an advance to the deadline wakes the sleeper")
            .expect("the sleeper task");
        // A deadline already passed returns at once.
        tokio::time::timeout(Duration::from_millis(100), clock.sleep_until(10)).await.expect("no wait");
    }
}
