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
    /// Waits so far since the last reset.
    waits: u32,
}

impl OutageBackoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        OutageBackoff {
            initial,
            max: max.max(initial),
            waits: 0,
        }
    }

    /// The next wait, before jitter (for logs).
    pub(crate) fn delay(&self) -> Duration {
        doubling(self.initial, self.max, self.waits + 1)
    }

    /// Back to the first, shortest wait (the connection worked).
    pub(crate) fn reset(&mut self) {
        self.waits = 0;
    }

    /// Waits the current delay (the next will be twice as long); false when `shutdown` came
    /// first.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let waited = pause(self.delay(), shutdown).await;
        self.waits = self.waits.saturating_add(1);
        waited
    }
}

/// The one backoff schedule: `min(base·2^(n-1), cap)` for the `n`th wait (1 for the first).
/// An outage jitters it to 50–100 % ([`pause`]); an Atlassian call to 70–130 %, unless
/// `Retry-After` says how long (`atlassian::retry`).
pub(crate) fn doubling(base: Duration, cap: Duration, n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << doublings).min(cap)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_waits_double_up_to_the_cap_and_start_over_after_a_reset() {
        let ms = Duration::from_millis;
        let mut backoff = OutageBackoff::new(ms(100), ms(1_000));
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(backoff.delay());
            backoff.waits += 1;
        }
        assert_eq!(seen, [ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]);
        backoff.reset();
        assert_eq!(backoff.delay(), ms(100));
        assert_eq!(doubling(ms(100), ms(1_000), u32::MAX), ms(1_000), "no overflow");
    }
}
