//! gatehouse's own pace towards Atlassian: a token bucket per (tenant, endpoint, method), pauses
//! when Atlassian says so, and slowing down before Atlassian has to.
//!
//! - Every call takes a token from its endpoint's bucket first (`rate_limit` in config).
//! - A burst 429 pauses that endpoint (every caller of it, not just the one that was refused)
//!   for the backoff or `Retry-After`, and halves its rate: the pace was too fast.
//! - A 429 with a quota `RateLimit-Reason` pauses the whole tenant until `X-RateLimit-Reset`:
//!   the quota is the tenant's, so every endpoint would be refused.
//! - `X-RateLimit-NearLimit: true`, or `X-RateLimit-Remaining` under 20% of `X-RateLimit-Limit`,
//!   halves the endpoint's rate (down to a tenth); calm answers win it back gradually (additive
//!   increase, multiplicative decrease). `Remaining: 0` with a reset time pauses until then.
//!
//! The decisions are pure functions of the current instant ([`LimiterState`]), so they are tested
//! without sleeping; [`RateLimiter::acquire`] adds the sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::config::{EndpointRateLimit, RateLimitSettings};

use super::retry::parse_retry_after;

/// Endpoints whose documented limit is far below the default pace.
const BUILT_IN: &[(&str, EndpointRateLimit)] = &[(
    // Atlassian documents 10 requests per minute for org event reads.
    "GET /admin/v1/orgs/{orgId}/events-stream",
    EndpointRateLimit {
        per_second: 10.0 / 60.0,
        burst: 10,
    },
)];

/// Slowing never goes below this share of the configured rate.
const SLOWEST_SHARE: f64 = 0.1;
/// Each calm answer gives back this share of the configured rate.
const RECOVERY_SHARE: f64 = 0.05;

/// What one limiter bucket is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey {
    /// `{tenant}:{api}`: a quota pause stops this and only this.
    pub tenant: Arc<str>,
    /// The endpoint label, which starts with the method (`GET /rest/api/user`).
    pub endpoint: &'static str,
}

/// What an answer's headers say about rate limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitSignals {
    pub retry_after: Option<Duration>,
    /// `RateLimit-Reason`, e.g. `confluence-quota-tenant-based`.
    pub reason: Option<String>,
    /// `X-RateLimit-Reset`, as a wait from now.
    pub reset_in: Option<Duration>,
    pub near_limit: bool,
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
}

impl RateLimitSignals {
    pub fn from_headers(headers: &HeaderMap, now: DateTime<Utc>) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        let retry_after = text("retry-after")
            .or_else(|| text("beta-retry-after"))
            .and_then(|v| parse_retry_after(v, now));
        let reset_in = text("x-ratelimit-reset").and_then(|v| {
            DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|at| (at.with_timezone(&Utc) - now).to_std().unwrap_or_default())
        });
        RateLimitSignals {
            retry_after,
            reason: text("ratelimit-reason")
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            reset_in,
            near_limit: text("x-ratelimit-nearlimit").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            remaining: number("x-ratelimit-remaining"),
            limit: number("x-ratelimit-limit"),
        }
    }

    /// A quota (tenant-wide) rather than a burst limit.
    pub fn is_quota(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| r.to_ascii_lowercase().contains("quota"))
    }

    /// Under 20% left.
    fn running_low(&self) -> bool {
        self.near_limit
            || matches!((self.remaining, self.limit), (Some(left), Some(limit)) if limit > 0 && left * 5 < limit)
    }
}

/// What an answer did to an endpoint's pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceChange {
    Slowed,
    Paused,
    Unchanged,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Current rate, between `SLOWEST_SHARE·base` and `base`.
    rate: f64,
    base: EndpointRateLimit,
    paused_until: Option<Instant>,
}

impl Bucket {
    /// Halves the rate, never below [`SLOWEST_SHARE`] of the configured one.
    fn slow_down(&mut self) {
        self.rate = (self.rate * 0.5).max(self.base.per_second * SLOWEST_SHARE);
    }

    fn new(base: EndpointRateLimit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(base.burst),
            updated: now,
            rate: base.per_second,
            base,
            paused_until: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        // `updated` is in the future while paused: nothing accrues, and it must not move back.
        if now <= self.updated {
            return;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(f64::from(self.base.burst));
        self.updated = now;
    }
}

/// The limiter's decisions, free of sleeping.
#[derive(Debug)]
pub struct LimiterState {
    settings: RateLimitSettings,
    tenants: HashMap<Arc<str>, Instant>,
    buckets: HashMap<LimitKey, Bucket>,
}

impl LimiterState {
    pub fn new(settings: RateLimitSettings) -> Self {
        LimiterState {
            settings,
            tenants: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// The configured pace of an endpoint.
    pub fn rate_for(&self, endpoint: &str) -> EndpointRateLimit {
        if let Some(limit) = self.settings.endpoints.get(endpoint) {
            return *limit;
        }
        if let Some((_, limit)) = BUILT_IN.iter().find(|(label, _)| *label == endpoint) {
            return *limit;
        }
        let per_second = if endpoint.starts_with("GET ") {
            self.settings.reads_per_second
        } else {
            self.settings.writes_per_second
        };
        EndpointRateLimit {
            per_second,
            burst: self.settings.burst,
        }
    }

    fn bucket(&mut self, key: &LimitKey, now: Instant) -> &mut Bucket {
        let base = self.rate_for(key.endpoint);
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(base, now))
    }

    /// Takes a token for `key` now, or says how long to wait before asking again.
    pub fn try_acquire(&mut self, key: &LimitKey, now: Instant) -> Result<(), Duration> {
        let tenant_pause = self
            .tenants
            .get(&key.tenant)
            .map(|until| until.saturating_duration_since(now))
            .filter(|wait| !wait.is_zero());
        let bucket = self.bucket(key, now);
        let endpoint_pause = bucket
            .paused_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|wait| !wait.is_zero());
        if let Some(wait) = tenant_pause.max(endpoint_pause) {
            return Err(wait);
        }
        bucket.paused_until = None;
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / bucket.rate.max(1e-6),
        ))
    }

    /// No call to `key`'s endpoint before `until` (a burst 429 at `now`). The endpoint also
    /// halves its rate, once per pause however many refusals arrive together, and restarts
    /// from a single token: a full burst right after the pause would only be refused again.
    pub fn pause_endpoint(&mut self, key: &LimitKey, now: Instant, until: Instant) {
        let bucket = self.bucket(key, now);
        bucket.refill(now);
        let already_paused = bucket.paused_until.is_some_and(|p| p > now);
        if !already_paused {
            bucket.slow_down();
        }
        bucket.paused_until = Some(bucket.paused_until.map_or(until, |p| p.max(until)));
        bucket.tokens = bucket.tokens.min(1.0);
        // No tokens accrue while paused.
        bucket.updated = bucket.updated.max(until);
    }

    /// No call to any endpoint of `tenant` before `until`.
    pub fn pause_tenant(&mut self, tenant: &Arc<str>, until: Instant) {
        let entry = self.tenants.entry(tenant.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Adjusts `key`'s pace to what a successful answer said.
    pub fn observe(&mut self, key: &LimitKey, signals: &RateLimitSignals, now: Instant) -> PaceChange {
        let bucket = self.bucket(key, now);
        bucket.refill(now);
        if signals.remaining == Some(0)
            && let Some(reset) = signals.reset_in
        {
            bucket.paused_until = Some(now + reset);
            bucket.tokens = bucket.tokens.min(1.0);
            return PaceChange::Paused;
        }
        if signals.running_low() {
            bucket.slow_down();
            bucket.tokens = bucket.tokens.min(1.0);
            return PaceChange::Slowed;
        }
        bucket.rate = (bucket.rate + bucket.base.per_second * RECOVERY_SHARE).min(bucket.base.per_second);
        PaceChange::Unchanged
    }

    /// The current rate of `key` (requests per second).
    #[cfg(test)]
    fn current_rate(&self, key: &LimitKey) -> Option<f64> {
        self.buckets.get(key).map(|b| b.rate)
    }
}

/// The limiter shared by every client of a process.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<LimiterState>,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> Self {
        RateLimiter {
            state: Mutex::new(LimiterState::new(settings)),
        }
    }

    /// The decisions (a poisoned lock only means another caller panicked mid-update of plain
    /// numbers: carry on with them).
    pub fn state(&self) -> MutexGuard<'_, LimiterState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a token for `key`. `Err(wait)` when that would take longer than `max_wait`
    /// (e.g. a tenant paused for an hour by its quota); nothing waits in that case.
    pub async fn acquire(&self, key: &LimitKey, max_wait: Duration) -> Result<(), Duration> {
        let started = Instant::now();
        loop {
            let now = Instant::now();
            let wait = match self.state().try_acquire(key, now) {
                Ok(()) => return Ok(()),
                Err(wait) => wait,
            };
            if now.saturating_duration_since(started) + wait > max_wait {
                return Err(wait);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, endpoint: &'static str) -> LimitKey {
        LimitKey {
            tenant: Arc::from(tenant),
            endpoint,
        }
    }

    fn settings() -> RateLimitSettings {
        RateLimitSettings {
            reads_per_second: 10.0,
            writes_per_second: 5.0,
            burst: 3,
            endpoints: Default::default(),
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_paces() {
        let mut state = LimiterState::new(settings());
        let now = Instant::now();
        let get = key("t", "GET /rest/api/user");
        for _ in 0..3 {
            assert_eq!(state.try_acquire(&get, now), Ok(()));
        }
        let wait = state.try_acquire(&get, now).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert_eq!(state.try_acquire(&get, now + wait), Ok(()));
        // Writes have their own, slower bucket; other endpoints their own.
        let post = key("t", "POST /rest/api/group/userByGroupId");
        for _ in 0..3 {
            assert_eq!(state.try_acquire(&post, now), Ok(()));
        }
        let wait = state.try_acquire(&post, now).unwrap_err();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        assert_eq!(state.try_acquire(&key("t", "GET /rest/api/group"), now), Ok(()));
    }

    #[test]
    fn endpoint_pauses_stop_one_endpoint_tenant_pauses_stop_all() {
        let mut state = LimiterState::new(settings());
        let now = Instant::now();
        let users = key("site:confluence", "GET /rest/api/user");
        let groups = key("site:confluence", "GET /rest/api/group");
        let scim = key("site:scim", "GET /Users");
        state.pause_endpoint(&users, now, now + Duration::from_secs(2));
        assert_eq!(state.try_acquire(&users, now), Err(Duration::from_secs(2)));
        // After the pause: one token, at half the rate (a second refusal in the same pause does
        // not halve again).
        state.pause_endpoint(&users, now, now + Duration::from_secs(1));
        assert_eq!(state.current_rate(&users), Some(5.0));
        let after = now + Duration::from_secs(2);
        assert_eq!(state.try_acquire(&users, after), Ok(()));
        assert_eq!(
            state.try_acquire(&users, after),
            Err(Duration::from_secs_f64(0.2))
        );
        assert_eq!(state.try_acquire(&groups, now), Ok(()));

        let tenant: Arc<str> = Arc::from("site:confluence");
        state.pause_tenant(&tenant, now + Duration::from_secs(5));
        assert_eq!(state.try_acquire(&groups, now), Err(Duration::from_secs(5)));
        assert_eq!(state.try_acquire(&users, now), Err(Duration::from_secs(5)));
        assert_eq!(state.try_acquire(&scim, now), Ok(()));
        let later = now + Duration::from_secs(5);
        assert_eq!(state.try_acquire(&groups, later), Ok(()));
        // A shorter pause never shortens a longer one.
        state.pause_tenant(&tenant, later + Duration::from_secs(10));
        state.pause_tenant(&tenant, later + Duration::from_secs(1));
        assert_eq!(state.try_acquire(&groups, later), Err(Duration::from_secs(10)));
    }

    #[test]
    fn near_limit_slows_and_calm_recovers() {
        let mut state = LimiterState::new(settings());
        let now = Instant::now();
        let get = key("t", "GET /rest/api/user");
        state.try_acquire(&get, now).unwrap();
        let near = RateLimitSignals {
            near_limit: true,
            ..Default::default()
        };
        assert_eq!(state.observe(&get, &near, now), PaceChange::Slowed);
        assert_eq!(state.current_rate(&get), Some(5.0));
        for _ in 0..10 {
            state.observe(&get, &near, now);
        }
        assert_eq!(state.current_rate(&get), Some(1.0), "never below a tenth");
        // Remaining under 20% of the limit counts as near the limit too.
        let low = RateLimitSignals {
            remaining: Some(1),
            limit: Some(10),
            ..Default::default()
        };
        assert_eq!(state.observe(&get, &low, now), PaceChange::Slowed);
        let calm = RateLimitSignals {
            remaining: Some(9),
            limit: Some(10),
            ..Default::default()
        };
        for _ in 0..40 {
            state.observe(&get, &calm, now);
        }
        assert_eq!(state.current_rate(&get), Some(10.0));
        let exhausted = RateLimitSignals {
            remaining: Some(0),
            reset_in: Some(Duration::from_secs(3)),
            ..Default::default()
        };
        assert_eq!(state.observe(&get, &exhausted, now), PaceChange::Paused);
        assert_eq!(state.try_acquire(&get, now), Err(Duration::from_secs(3)));
    }

    #[test]
    fn overrides_and_built_ins() {
        let mut configured = settings();
        configured.endpoints.insert(
            "GET /rest/api/group".into(),
            EndpointRateLimit {
                per_second: 1.0,
                burst: 1,
            },
        );
        let state = LimiterState::new(configured);
        assert_eq!(state.rate_for("GET /rest/api/group").burst, 1);
        assert_eq!(
            state.rate_for("GET /admin/v1/orgs/{orgId}/events-stream").burst,
            10
        );
        assert_eq!(state.rate_for("DELETE /x").per_second, 5.0);
    }

    #[test]
    fn signals_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        headers.insert(
            "ratelimit-reason",
            "confluence-quota-tenant-based".parse().unwrap(),
        );
        headers.insert("x-ratelimit-reset", "2026-01-01T00:00:10Z".parse().unwrap());
        headers.insert("x-ratelimit-nearlimit", "true".parse().unwrap());
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let signals = RateLimitSignals::from_headers(&headers, now);
        assert_eq!(signals.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(signals.reset_in, Some(Duration::from_secs(10)));
        assert!(signals.is_quota() && signals.near_limit);
        let mut burst = HeaderMap::new();
        burst.insert("beta-retry-after", "2".parse().unwrap());
        let signals = RateLimitSignals::from_headers(&burst, now);
        assert_eq!(signals.retry_after, Some(Duration::from_secs(2)));
        assert!(!signals.is_quota());
    }

    #[tokio::test]
    async fn acquire_refuses_to_wait_past_max_wait() {
        let limiter = RateLimiter::new(settings());
        let get = key("t", "GET /rest/api/user");
        let tenant: Arc<str> = Arc::from("t");
        limiter
            .state()
            .pause_tenant(&tenant, Instant::now() + Duration::from_secs(3600));
        let wait = limiter.acquire(&get, Duration::from_secs(60)).await.unwrap_err();
        assert!(wait > Duration::from_secs(3500));
    }
}
