//! Per-source budgets (`[[sources]] max_in_flight`, `rate_per_second`), so one noisy or hostile
//! sender holding a valid secret slows only itself: its excess gets 503 or 429 with
//! `Retry-After` while every other source keeps its own share of the ingress.
//!
//! Budgets are spent only by *verified* deliveries: anonymous noise on a source's URL is refused
//! before it reaches them (and is bounded by the global limits in `[server]`), so it cannot use
//! up a real sender's budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::SourceSettings;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&self) -> Result<(), Duration> {
        // A panic elsewhere cannot leave the two numbers inconsistent in a way that matters.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, at) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// Why a delivery was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `rate_per_second`: try again after this long.
    RateLimited(Duration),
    /// `max_in_flight` deliveries of this source are being queued right now.
    Busy,
}

#[derive(Debug)]
struct SourceBudget {
    in_flight: Arc<Semaphore>,
    rate: Option<TokenBucket>,
}

/// Every source's budget, built once from the config.
#[derive(Debug, Default)]
pub struct SourceLimits {
    budgets: HashMap<String, SourceBudget>,
}

impl SourceLimits {
    pub fn new(sources: &[SourceSettings]) -> Self {
        let budgets = sources
            .iter()
            .map(|source| {
                let budget = SourceBudget {
                    in_flight: Arc::new(Semaphore::new(source.max_in_flight)),
                    rate: source
                        .rate_per_second
                        .map(|rate| TokenBucket::new(rate, rate.ceil().max(1.0))),
                };
                (source.name.clone(), budget)
            })
            .collect();
        SourceLimits { budgets }
    }

    /// Admits one verified delivery of `source`: the permit holds its in-flight slot until
    /// dropped. A source without a budget (not configured) is admitted.
    pub fn admit(&self, source: &str) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        let Some(budget) = self.budgets.get(source) else {
            return Ok(None);
        };
        if let Some(rate) = &budget.rate {
            rate.take().map_err(Refusal::RateLimited)?;
        }
        budget
            .in_flight
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| Refusal::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VerificationScheme;

    #[test]
    fn buckets_refill_and_say_when() {
        let bucket = TokenBucket::new(2.0, 2.0);
        assert!(bucket.take().is_ok());
        assert!(bucket.take().is_ok());
        let wait = bucket.take().unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }

    #[test]
    fn in_flight_slots_are_per_source() {
        let mut noisy = SourceSettings::new("noisy", VerificationScheme::UrlToken, vec![]);
        noisy.max_in_flight = 1;
        let quiet = SourceSettings::new("quiet", VerificationScheme::UrlToken, vec![]);
        let limits = SourceLimits::new(&[noisy, quiet]);
        let held = limits.admit("noisy").unwrap();
        assert_eq!(limits.admit("noisy").unwrap_err(), Refusal::Busy);
        assert!(limits.admit("quiet").is_ok());
        drop(held);
        assert!(limits.admit("noisy").is_ok());
    }
}
