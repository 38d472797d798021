//! How long to wait before retrying an Atlassian call: exactly what Atlassian asked for
//! (`Retry-After`) when it says, jittered exponential backoff when it does not.
//!
//! `delay(n) = Retry-After`, or `min(base·2^(n-1), cap)·U(0.7, 1.3)` for the `n`th retry without
//! one. Waiting longer than asked only wastes the tenant's budget; the jitter spreads out clients
//! that failed together without guidance, so they do not come back together, and is applied after
//! the cap so that even long waits stay spread. The random source is injected ([`Jitter`]) so
//! tests can pin it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of uniform numbers in `[0, 1)`.
pub type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The backoff schedule of one client.
#[derive(Clone)]
pub struct RetryBackoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl std::fmt::Debug for RetryBackoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBackoff")
            .field("base", &self.base)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl RetryBackoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        RetryBackoff {
            base,
            cap,
            jitter: Arc::new(fastrand::f64),
        }
    }

    /// Replaces the random source (tests).
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before retry number `retry` (1 for the first retry): `retry_after` exactly when
    /// given.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or_else(|| {
            let unit = (self.jitter)().clamp(0.0, 1.0);
            exponential(self.base, self.cap, retry, unit)
        })
    }
}

/// `min(base·2^(retry-1), cap)·(0.7 + 0.6·unit)`: the one backoff schedule
/// (`crate::pacing::doubling`), jittered around its value.
pub fn exponential(base: Duration, cap: Duration, retry: u32, unit: f64) -> Duration {
    crate::pacing::doubling(base, cap, retry).mul_f64(0.7 + 0.6 * unit.clamp(0.0, 1.0))
}

/// The longest wait a `Retry-After` (or an `X-RateLimit-Reset`) is taken for. Longer ones (a
/// day is already far past any pause Atlassian asks for) are cut to it: `Retry-After: 18446744073709551615` once overflowed
/// the limiter's `Instant` arithmetic and panicked the caller (found by fuzzing). A call itself
/// never sleeps this long: its waits share `retry.max_wait_ms` (see `http`).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// `Retry-After`: delay-seconds, or an HTTP date; at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
        (at - now).to_std().unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn exponential_doubles_caps_and_jitters() {
        let base = secs(2.0);
        let cap = secs(30.0);
        // Middle of the jitter range: the plain schedule.
        assert_eq!(exponential(base, cap, 1, 0.5), secs(2.0));
        assert_eq!(exponential(base, cap, 2, 0.5), secs(4.0));
        assert_eq!(exponential(base, cap, 4, 0.5), secs(16.0));
        assert_eq!(exponential(base, cap, 5, 0.5), secs(30.0));
        assert_eq!(exponential(base, cap, 60, 0.5), secs(30.0));
        // The ends of the jitter range: ±30%.
        assert_eq!(exponential(base, cap, 1, 0.0), secs(1.4));
        assert_eq!(exponential(base, cap, 1, 1.0), secs(2.6));
        assert_eq!(exponential(base, cap, 9, 1.0), secs(39.0));
    }

    #[test]
    fn retry_after_is_honoured_exactly() {
        let backoff = RetryBackoff::new(secs(2.0), secs(30.0)).with_jitter(Arc::new(|| 1.0));
        assert_eq!(backoff.delay(1, None), secs(2.6));
        assert_eq!(backoff.delay(1, Some(secs(7.0))), secs(7.0));
        // Not stretched to the backoff, nor jittered: what Atlassian asked.
        assert_eq!(backoff.delay(3, Some(secs(1.0))), secs(1.0));
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("5", now), Some(secs(5.0)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(secs(0.0)));
        assert_eq!(parse_retry_after("1.5", now), Some(secs(1.5)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:09 GMT", now),
            Some(secs(9.0))
        );
        // A date in the past means now.
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    /// Found by fuzzing (fuzz/corpus/atlassian_answer/regression-retry-after-u64-max): a huge
    /// `Retry-After` overflowed `Instant + Duration` in the limiter and panicked the caller.
    #[test]
    fn huge_waits_are_cut_to_a_day_and_pause_the_limiter_without_overflow() {
        let now = Utc::now();
        for huge in [
            "18446744073709551615",
            "9223372036854775807",
            "1e300",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(huge, now), Some(MAX_RETRY_AFTER), "{huge}");
        }
        let mut state = crate::atlassian::limiter::LimiterState::new(Default::default());
        let key = crate::atlassian::limiter::LimitKey {
            site: "s".into(),
            tenant: "s:confluence".into(),
            endpoint: "GET /rest/api/user",
            read: true,
        };
        let instant = tokio::time::Instant::now();
        let asked = parse_retry_after("18446744073709551615", now);
        assert_eq!(
            state.refused(&key, instant, asked, Duration::ZERO).0,
            MAX_RETRY_AFTER
        );
    }
}
