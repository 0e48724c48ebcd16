//! Idle tracking: which connections have had no call in flight for the idle timeout, so they
//! can be closed and their slots given to others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Calls in flight on one connection, and when the last one ended, for closing the
/// connection once idle. A call costs two atomic updates; the watcher polls.
pub(crate) struct Activity {
    opened: std::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `opened` when the count last dropped to zero.
    quiet_since_ms: AtomicU64,
}

/// Counts a call in flight until dropped (with its response body).
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.opened.elapsed().as_millis() as u64;
        self.0.quiet_since_ms.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            opened: std::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Acquire);
        InFlight(self.clone())
    }

    /// Resolves once no call has been in flight for `timeout` (checked every `timeout / 4`).
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.in_flight.load(Ordering::Acquire) != 0 {
                continue;
            }
            let now = self.opened.elapsed().as_millis() as u64;
            let quiet = now.saturating_sub(self.quiet_since_ms.load(Ordering::Relaxed));
            if quiet >= timeout.as_millis() as u64 {
                return;
            }
        }
    }
}
