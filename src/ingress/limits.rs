//! Per-source budgets (`[[sources]] max_in_flight`, `rate_per_second`), so one noisy or hostile
//! sender holding a valid secret slows only itself: its excess gets 503 or 429 with
//! `Retry-After` while every other source keeps its own share of the ingress.
//!
//! Budgets are spent only by *verified* deliveries: anonymous noise on a source's URL is refused
//! before it reaches them (and is bounded by the global limits in `[server]`), so it cannot use
//! up a real sender's budget. A Connect source has one budget per installation (each site holds
//! its own secret), so one site cannot use up another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::SourceSettings;

/// Installations with a budget of their own, at most (one per site; a bound on memory).
const MAX_INSTALLATION_BUDGETS: usize = 10_000;
use std::time::{Duration, Instant};

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
        let mut state = crate::locking::lock(&self.state);
        let (tokens, at) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::try_from_secs_f64((1.0 - *tokens) / self.rate).unwrap_or(Duration::MAX))
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

impl SourceBudget {
    fn new(source: &SourceSettings) -> Self {
        SourceBudget {
            in_flight: Arc::new(Semaphore::new(source.max_in_flight)),
            rate: source
                .rate_per_second
                .map(|rate| TokenBucket::new(rate, rate.ceil().max(1.0))),
        }
    }
}

/// Every source's budget, built once from the config; a Connect installation's on its first
/// delivery.
#[derive(Debug, Default)]
pub struct SourceLimits {
    sources: HashMap<String, (SourceSettings, SourceBudget)>,
    installations: Mutex<HashMap<(String, String), Arc<SourceBudget>>>,
}

impl SourceLimits {
    pub fn new(sources: &[SourceSettings]) -> Self {
        let sources = sources
            .iter()
            .map(|source| (source.name.clone(), (source.clone(), SourceBudget::new(source))))
            .collect();
        SourceLimits {
            sources,
            installations: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one verified delivery of `source` (from the Connect installation `client_key`,
    /// if any): the permit holds its in-flight slot until dropped. A source without a budget
    /// (not configured) is admitted.
    pub fn admit(
        &self,
        source: &str,
        client_key: Option<&str>,
    ) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        let Some((settings, budget)) = self.sources.get(source) else {
            return Ok(None);
        };
        match client_key {
            None => Self::spend(budget),
            Some(client_key) => {
                let budget = {
                    let mut installations = crate::locking::lock(&self.installations);
                    if installations.len() >= MAX_INSTALLATION_BUDGETS {
                        // Sites come and go; start over rather than grow without bound.
                        installations.clear();
                    }
                    installations
                        .entry((source.to_owned(), client_key.to_owned()))
                        .or_insert_with(|| Arc::new(SourceBudget::new(settings)))
                        .clone()
                };
                Self::spend(&budget)
            }
        }
    }

    fn spend(budget: &SourceBudget) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
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
        let held = limits.admit("noisy", None).unwrap();
        assert_eq!(limits.admit("noisy", None).unwrap_err(), Refusal::Busy);
        assert!(limits.admit("quiet", None).is_ok());
        drop(held);
        assert!(limits.admit("noisy", None).is_ok());
    }

    #[test]
    fn connect_installations_have_budgets_of_their_own() {
        let mut connect = SourceSettings::new("confluence", VerificationScheme::ConnectJwt, vec![]);
        connect.max_in_flight = 1;
        let limits = SourceLimits::new(&[connect]);
        let held = limits.admit("confluence", Some("foreign-site")).unwrap();
        assert_eq!(
            limits.admit("confluence", Some("foreign-site")).unwrap_err(),
            Refusal::Busy
        );
        assert!(limits.admit("confluence", Some("our-site")).is_ok());
        drop(held);
    }
}
