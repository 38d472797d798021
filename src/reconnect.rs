//! Reconnect pacing shared by everything that keeps a connection to a service: the queue's
//! RabbitMQ link and the audit relay's.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits that double from `initial` up to `max`, each jittered to 50–100 % so a fleet of
/// processes does not reconnect in lockstep after a broker restart.
#[derive(Debug)]
pub(crate) struct ReconnectBackoff {
    initial: Duration,
    max: Duration,
    delay: Duration,
}

impl ReconnectBackoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        ReconnectBackoff {
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

/// Sleeps `length`, jittered; false when `shutdown` came first.
pub(crate) async fn pause(length: Duration, shutdown: &CancellationToken) -> bool {
    let jittered = length.mul_f64(0.5 + fastrand::f64() / 2.0);
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(jittered) => true,
    }
}
