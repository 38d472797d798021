//! Waiting that shutdown cuts short: the one cancellable sleep every loop uses, and the one
//! backoff for riding out an outage of a service gatehouse needs (the broker, for the queue's
//! link and the audit relay; the store, for a worker that must record before it acts). Calls to
//! Atlassian back off by their own rules (`atlassian::retry`: `Retry-After` first).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits that double from `initial` up to `max`, each jittered to 50–100 % so a fleet of
/// processes does not come back in lockstep after a broker or store restart.
#[derive(Debug)]
pub(crate) struct OutageBackoff {
    initial: Duration,
    max: Duration,
    delay: Duration,
}

impl OutageBackoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        OutageBackoff {
            initial,
            max: max.max(initial),
            delay: initial,
        }
    }

    /// The next wait, before jitter (for logs).
    pub(crate) fn delay(&self) -> Duration {
        self.delay
    }

    /// Back to the first, shortest wait (the connection worked).
    pub(crate) fn reset(&mut self) {
        self.delay = self.initial;
    }

    /// Waits the current delay, then doubles it; false when `shutdown` came first.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let waited = pause(self.delay, shutdown).await;
        self.delay = (self.delay * 2).min(self.max);
        waited
    }
}

/// Sleeps `length`, jittered to 50–100 %; false when `shutdown` came first.
pub(crate) async fn pause(length: Duration, shutdown: &CancellationToken) -> bool {
    sleep_unless(length.mul_f64(0.5 + fastrand::f64() / 2.0), shutdown).await
}

/// Sleeps `length`; false when `shutdown` came first (and at once when it already has).
pub(crate) async fn sleep_unless(length: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(length) => true,
    }
}
