//! gatehouse's own pace towards Atlassian: a budget per tenant that every call draws from, a
//! token bucket per (tenant, endpoint, method) on top, pauses when Atlassian says so, and slowing
//! down before Atlassian has to.
//!
//! - Every call takes a token from its tenant's budget (`tenant_per_second`, `tenant_burst`) and
//!   from its endpoint's bucket (`reads_per_second` or `writes_per_second`, by whether the
//!   endpoint reads: a few POSTs do).
//! - A burst 429 pauses that endpoint for exactly `Retry-After` when Atlassian gives one (the
//!   backoff otherwise), never longer. When 429s come from several endpoints of a tenant within ten
//!   seconds, the tenant as a whole is too fast: its budget drops to 70% (multiplicative
//!   decrease, at most once a second: later refusals answer requests sent before it) and grows back by about two requests a second per second of calm answers
//!   (additive increase). A tenant with no configured budget learns one this way: it starts
//!   unlimited and its first such decrease takes 70% of the rate it was actually getting, and
//!   grows back at most half past the rate found too fast (or twice what it achieves). 429s
//!   from one endpoint alone halve that endpoint's pace instead.
//! - A 429 with a quota `RateLimit-Reason` pauses the whole tenant until `X-RateLimit-Reset`:
//!   the quota is the tenant's, so every endpoint would be refused.
//! - `X-RateLimit-NearLimit: true`, or `X-RateLimit-Remaining` under 20% of `X-RateLimit-Limit`,
//!   halves the endpoint's rate (down to a tenth); calm answers win it back gradually.
//!   `Remaining: 0` with a reset time pauses until then.
//! - With several gatehouse processes, each takes `share` of the tenant budget (1/N of N live
//!   processes, kept by a lease in the store; see `crate::atlassian::shares`).
//!
//! The decisions are pure functions of the current instant ([`LimiterState`]), so they are tested
//! without sleeping; [`RateLimiter::acquire`] adds the sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::config::{EndpointRateLimit, RateLimitSettings};

use super::retry::{MAX_RETRY_AFTER, parse_retry_after};

/// Slowing never goes below this share of the configured rate.
const SLOWEST_SHARE: f64 = 0.1;
/// Each calm answer gives back this share of the configured rate.
const RECOVERY_SHARE: f64 = 0.05;
/// 429s from this many endpoints within [`CONGESTION_WINDOW`] mean the tenant is too fast.
const CONGESTED_ENDPOINTS: usize = 2;
const CONGESTION_WINDOW: Duration = Duration::from_secs(10);
/// A tenant's budget is halved at most this often (one round of refusals, one decrease).
const DECREASE_SPACING: Duration = Duration::from_secs(1);
/// How far back a tenant's achieved rate is measured, for its first decrease.
const MEASURE_WINDOW: Duration = Duration::from_secs(2);
/// The achieved rate is never measured over less than this, lest one quick answer look fast.
const SHORTEST_MEASURE: Duration = Duration::from_millis(250);
/// A learned tenant budget never goes below this (requests a second).
const SLOWEST_TENANT: f64 = 0.5;
/// A tenant too fast keeps this share of its rate (multiplicative decrease; TCP's CUBIC keeps
/// 0.7 too: deep enough to clear the refusals, shallow enough to stay near the limit).
const DECREASE: f64 = 0.7;
/// Calm answers give back this many requests a second per second at the current rate (each
/// answer adds `INCREASE / rate`).
const INCREASE: f64 = 2.0;

/// What one limiter bucket is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey {
    /// The tenant's name: whose budget the call draws from.
    pub site: Arc<str>,
    /// `{tenant}:{api}`: a quota pause stops this and only this.
    pub tenant: Arc<str>,
    /// The endpoint label, which starts with the method (`GET /rest/api/user`).
    pub endpoint: &'static str,
    /// Whether the endpoint only reads (paced as a read, whatever its method).
    pub read: bool,
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
        // Cut like `Retry-After`: a reset in the year 9999 would pause an endpoint (or the
        // whole tenant, for a quota) for as long as the process lives.
        let reset_in = text("x-ratelimit-reset").and_then(|v| {
            DateTime::parse_from_rfc3339(v).ok().map(|at| {
                (at.with_timezone(&Utc) - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(MAX_RETRY_AFTER)
            })
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

    /// Under 20% left. Saturating: a `Remaining` past `u64::MAX / 5` once overflowed (a panic
    /// in debug builds, a wrong answer in release ones; found by fuzzing).
    fn running_low(&self) -> bool {
        self.near_limit
            || matches!((self.remaining, self.limit), (Some(left), Some(limit)) if limit > 0 && left.saturating_mul(5) < limit)
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
    /// No call before `until` (a longer pause asked earlier is not cut short).
    fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

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

/// A tenant's budget, shared by every endpoint of every API it has.
#[derive(Debug)]
struct TenantBudget {
    tokens: f64,
    updated: Instant,
    /// `tenant_per_second`, if configured: the ceiling.
    configured: Option<f64>,
    burst: f64,
    /// The current allowed rate; `None` while unlimited (no budget configured, nothing learned).
    rate: Option<f64>,
    /// This process's share of the budget (1/N of N live processes).
    share: f64,
    /// Recent 429s: when, and from which endpoint.
    refusals: VecDeque<(Instant, &'static str)>,
    /// Recent successful answers, to measure the rate actually achieved (refused requests do
    /// not count: they are what exceeding it looks like).
    served: VecDeque<Instant>,
    /// The first successful answer ever: until [`MEASURE_WINDOW`] has passed since, the rate
    /// achieved is measured over the time there has been.
    first_served: Option<Instant>,
    decreased_at: Option<Instant>,
    /// The rate at the last decrease: the level known to be too fast.
    too_fast: Option<f64>,
    paused_until: Option<Instant>,
}

impl TenantBudget {
    fn new(settings: &RateLimitSettings, now: Instant) -> Self {
        let burst = f64::from(settings.tenant_burst.max(1));
        TenantBudget {
            tokens: burst,
            updated: now,
            configured: settings.tenant_per_second,
            burst,
            rate: settings.tenant_per_second,
            share: 1.0,
            refusals: VecDeque::new(),
            served: VecDeque::new(),
            first_served: None,
            decreased_at: None,
            too_fast: None,
            paused_until: None,
        }
    }

    /// This process's rate now, if limited.
    fn effective_rate(&self) -> Option<f64> {
        self.rate.map(|rate| (rate * self.share).max(1e-3))
    }

    /// This process's burst: its share of the tenant's, at least one request.
    fn effective_burst(&self) -> f64 {
        (self.burst * self.share).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.effective_rate()
            && now > self.updated
        {
            let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(self.effective_burst());
        }
        self.updated = self.updated.max(now);
    }

    /// What the whole tenant achieved lately, in successful answers a second (this process's
    /// share of them, scaled up).
    fn achieved(&self, now: Instant) -> f64 {
        let measured = self
            .first_served
            .map_or(MEASURE_WINDOW, |first| now.saturating_duration_since(first))
            .clamp(SHORTEST_MEASURE, MEASURE_WINDOW);
        self.served.len() as f64 / measured.as_secs_f64() / self.share.max(1e-3)
    }

    /// The wait before a token, if there is none now.
    fn wait(&self) -> Option<Duration> {
        let rate = self.effective_rate()?;
        (self.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }

    fn take(&mut self) {
        if self.rate.is_some() {
            self.tokens -= 1.0;
        }
    }

    /// Remembers a 429 from `endpoint`; true when the tenant as a whole is too fast (refusals
    /// from several endpoints lately), in which case its budget was lowered unless it just was.
    fn refused(&mut self, endpoint: &'static str, now: Instant) -> bool {
        self.refusals.push_back((now, endpoint));
        while self
            .refusals
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > CONGESTION_WINDOW)
        {
            self.refusals.pop_front();
        }
        let mut endpoints: Vec<&str> = self.refusals.iter().map(|(_, e)| *e).collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        if endpoints.len() < CONGESTED_ENDPOINTS {
            return false;
        }
        // One round of refusals, one decrease: refusals within [`DECREASE_SPACING`] of the last
        // decrease answer to requests sent before it, and are already answered by it.
        if self
            .decreased_at
            .is_none_or(|at| now.saturating_duration_since(at) >= DECREASE_SPACING)
        {
            self.decrease(now);
        }
        true
    }

    /// Multiplicative decrease: [`DECREASE`] of the current rate, or of what was achieved lately
    /// when there was no limit yet.
    fn decrease(&mut self, now: Instant) {
        // Nothing achieved yet (refused from the first request) leaves the floor to climb from.
        let current = self.rate.unwrap_or_else(|| self.achieved(now));
        self.too_fast = Some(current);
        let floor = self
            .configured
            .map_or(SLOWEST_TENANT, |c| (c * SLOWEST_SHARE).max(SLOWEST_TENANT));
        self.rate = Some((current * DECREASE).max(floor));
        self.tokens = self.tokens.min(1.0);
        self.decreased_at = Some(now);
    }

    /// A successful answer at `now`. Additive increase: about [`INCREASE`] requests a second
    /// more for every second of calm answers (each of this process's answers adds
    /// `INCREASE / (rate · share)`, so N processes together grow the tenant's rate as one), up to
    /// the configured budget; a learned budget grows back past the level found too fast by half
    /// at most, or to twice what is achieved when that is more, so a quiet day does not inflate
    /// it past anything ever tried while a busy one can still probe for more.
    fn calm(&mut self, now: Instant) {
        self.served.push_back(now);
        self.first_served.get_or_insert(now);
        while self
            .served
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > MEASURE_WINDOW)
        {
            self.served.pop_front();
        }
        if let Some(rate) = self.rate {
            let grown = rate + INCREASE / (rate * self.share).max(1.0);
            let ceiling = self
                .configured
                .unwrap_or_else(|| (2.0 * self.achieved(now)).max(1.5 * self.too_fast.unwrap_or(0.0)));
            self.rate = Some(grown.min(ceiling.max(rate)));
        }
    }
}

/// The limiter's decisions, free of sleeping.
#[derive(Debug)]
pub struct LimiterState {
    settings: RateLimitSettings,
    tenants: HashMap<Arc<str>, Instant>,
    budgets: HashMap<Arc<str>, TenantBudget>,
    buckets: HashMap<LimitKey, Bucket>,
}

impl LimiterState {
    pub fn new(settings: RateLimitSettings) -> Self {
        LimiterState {
            settings,
            tenants: HashMap::new(),
            budgets: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// The configured pace of an endpoint.
    pub fn rate_for(&self, endpoint: &str, read: bool) -> EndpointRateLimit {
        if let Some(limit) = self.settings.endpoints.get(endpoint) {
            return *limit;
        }
        let per_second = if read {
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
        let base = self.rate_for(key.endpoint, key.read);
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(base, now))
    }

    fn budget(&mut self, site: &Arc<str>, now: Instant) -> &mut TenantBudget {
        let settings = &self.settings;
        self.budgets
            .entry(site.clone())
            .or_insert_with(|| TenantBudget::new(settings, now))
    }

    /// Takes a token for `key` now (from its tenant's budget and its endpoint's bucket), or says
    /// how long to wait before asking again; nothing is taken unless both allow.
    pub fn try_acquire(&mut self, key: &LimitKey, now: Instant) -> Result<(), Duration> {
        let paused = |until: Option<Instant>| {
            until
                .map(|until| until.saturating_duration_since(now))
                .filter(|wait| !wait.is_zero())
        };
        let tenant_pause = paused(self.tenants.get(&key.tenant).copied());
        let budget = self.budget(&key.site, now);
        budget.refill(now);
        let budget_wait = paused(budget.paused_until).or_else(|| budget.wait());
        let bucket = self.bucket(key, now);
        let endpoint_pause = paused(bucket.paused_until);
        if let Some(wait) = [tenant_pause, budget_wait, endpoint_pause]
            .into_iter()
            .flatten()
            .max()
        {
            return Err(wait);
        }
        bucket.paused_until = None;
        bucket.refill(now);
        if bucket.tokens < 1.0 {
            return Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / bucket.rate.max(1e-6),
            ));
        }
        bucket.tokens -= 1.0;
        self.budget(&key.site, now).take();
        Ok(())
    }

    /// A burst 429 for `key` at `now`. The pace slows where the trouble is: the whole tenant
    /// when 429s come from several of its endpoints (see the module docs), else that endpoint,
    /// halving once per pause however many refusals arrive together. The endpoint is paused for
    /// exactly `retry_after` when Atlassian gave one; without, for `backoff` when the trouble is
    /// the endpoint's, and not at all when it is the tenant's (its slowed budget is the pause).
    /// Either way the endpoint restarts from a single token: a full burst right after the pause
    /// would only be refused again. Returns the pause, and whether the tenant was slowed.
    pub fn refused(
        &mut self,
        key: &LimitKey,
        now: Instant,
        retry_after: Option<Duration>,
        backoff: Duration,
    ) -> (Duration, bool) {
        let tenant_wide = self.budget(&key.site, now).refused(key.endpoint, now);
        let pause = match (retry_after, tenant_wide) {
            (Some(asked), _) => asked,
            (None, true) => Duration::ZERO,
            (None, false) => backoff,
        };
        let until = now + pause;
        let bucket = self.bucket(key, now);
        bucket.refill(now);
        let already_paused = bucket.paused_until.is_some_and(|p| p > now);
        if !already_paused && !tenant_wide {
            bucket.slow_down();
        }
        bucket.pause_until(until);
        bucket.tokens = bucket.tokens.min(1.0);
        // No tokens accrue while paused.
        bucket.updated = bucket.updated.max(until);
        (pause, tenant_wide)
    }

    /// No call to `key`'s endpoint before `until`, its pace unchanged: Atlassian asked for the
    /// wait with a server error (`503` and `Retry-After` in maintenance), not a rate limit.
    pub fn pause_endpoint(&mut self, key: &LimitKey, until: Instant) {
        self.bucket(key, until).pause_until(until);
    }

    /// No call to any endpoint of `tenant` before `until`.
    pub fn pause_tenant(&mut self, tenant: &Arc<str>, until: Instant) {
        let entry = self.tenants.entry(tenant.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// This process's share of `site`'s budget (1/N of N live processes). The tokens saved up
    /// under a larger share go too: N processes each holding the whole burst would spend N
    /// bursts at once (a burst of 429s when load arrives after they all started idle).
    pub fn set_share(&mut self, site: &Arc<str>, share: f64, now: Instant) {
        let budget = self.budget(site, now);
        budget.refill(now);
        budget.share = share.clamp(1e-3, 1.0);
        budget.tokens = budget.tokens.min(budget.effective_burst());
    }

    /// Adjusts `key`'s pace to what a successful answer said.
    pub fn observe(&mut self, key: &LimitKey, signals: &RateLimitSignals, now: Instant) -> PaceChange {
        self.budget(&key.site, now).calm(now);
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

    /// The current tenant budget of `site` (requests per second), if limited.
    #[cfg(test)]
    fn tenant_rate(&self, site: &str) -> Option<f64> {
        self.budgets.get(site).and_then(|b| b.rate)
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
        crate::locking::lock(&self.state)
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
            site: Arc::from(tenant.split(':').next().unwrap_or(tenant)),
            tenant: Arc::from(tenant),
            endpoint,
            read: endpoint.starts_with("GET "),
        }
    }

    fn settings() -> RateLimitSettings {
        RateLimitSettings {
            tenant_per_second: None,
            tenant_burst: 10,
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
        // A POST that reads is paced as a read.
        let bulk = LimitKey {
            read: true,
            ..key("t", "POST /api/v2/users-bulk")
        };
        for _ in 0..3 {
            state.try_acquire(&bulk, now).unwrap();
        }
        let wait = state.try_acquire(&bulk, now).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn one_tenant_budget_for_every_endpoint() {
        let mut state = LimiterState::new(RateLimitSettings {
            tenant_per_second: Some(4.0),
            tenant_burst: 2,
            ..settings()
        });
        let now = Instant::now();
        let users = key("site:confluence", "GET /rest/api/user");
        let scim = key("site:scim", "GET /Users");
        assert_eq!(state.try_acquire(&users, now), Ok(()));
        assert_eq!(state.try_acquire(&scim, now), Ok(()));
        // The budget is spent, whatever endpoint or API asks next.
        let wait = state
            .try_acquire(&key("site:confluence", "GET /rest/api/group"), now)
            .unwrap_err();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
        assert_eq!(state.try_acquire(&scim, now + wait), Ok(()));
        // Another tenant has its own.
        assert_eq!(
            state.try_acquire(&key("other:confluence", "GET /rest/api/user"), now),
            Ok(())
        );
        // Two processes: each takes half, of the rate and of the burst (the full burst saved up
        // alone is not kept: two processes would spend two at once).
        let site: Arc<str> = Arc::from("site");
        let later = now + Duration::from_secs(10);
        state.set_share(&site, 0.5, later);
        state.try_acquire(&users, later).unwrap();
        let wait = state.try_acquire(&users, later).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn a_pause_lasts_exactly_as_asked_and_slows_one_endpoint() {
        let mut state = LimiterState::new(settings());
        let now = Instant::now();
        let users = key("site:confluence", "GET /rest/api/user");
        let groups = key("site:confluence", "GET /rest/api/group");
        let asked = Some(Duration::from_secs(2));
        assert_eq!(
            state.refused(&users, now, asked, Duration::from_secs(9)),
            (Duration::from_secs(2), false)
        );
        assert_eq!(state.try_acquire(&users, now), Err(Duration::from_secs(2)));
        // A second refusal in the same pause does not halve again; the pause is not stretched.
        state.refused(&users, now, Some(Duration::from_secs(1)), Duration::from_secs(9));
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
        let scim = key("site:scim", "GET /Users");
        assert_eq!(state.try_acquire(&scim, now), Ok(()));
        let later = now + Duration::from_secs(5);
        assert_eq!(state.try_acquire(&groups, later), Ok(()));
        // A shorter pause never shortens a longer one.
        state.pause_tenant(&tenant, later + Duration::from_secs(10));
        state.pause_tenant(&tenant, later + Duration::from_secs(1));
        assert_eq!(state.try_acquire(&groups, later), Err(Duration::from_secs(10)));
    }

    #[test]
    fn refusals_from_several_endpoints_slow_the_tenant_and_calm_restores_it() {
        let mut state = LimiterState::new(RateLimitSettings {
            tenant_per_second: Some(20.0),
            ..settings()
        });
        let now = Instant::now();
        let users = key("site:confluence", "GET /rest/api/user");
        let remove = key("site:confluence", "DELETE /rest/api/group/userByGroupId");
        let backoff = Duration::from_secs(2);
        assert_eq!(state.refused(&users, now, None, backoff), (backoff, false));
        assert_eq!(state.tenant_rate("site"), Some(20.0));
        // The tenant's trouble: its slowed budget paces the retry, not the endpoint's backoff.
        assert_eq!(state.refused(&remove, now, None, backoff), (Duration::ZERO, true));
        assert_eq!(state.tenant_rate("site"), Some(14.0));
        // The endpoints are paused as asked, not slowed too.
        assert_eq!(state.current_rate(&remove), Some(5.0));
        // Several refusals in one round slow it once.
        state.refused(&users, now, None, backoff);
        assert_eq!(state.tenant_rate("site"), Some(14.0));
        // Additive increase: about two requests a second per second of calm answers (a second
        // at 14 a second is 14 answers).
        let calm = RateLimitSignals::default();
        for _ in 0..14 {
            state.observe(&users, &calm, now);
        }
        let rate = state.tenant_rate("site").unwrap();
        assert!(rate > 15.5 && rate < 16.5, "{rate}");
        for _ in 0..10_000 {
            state.observe(&users, &calm, now);
        }
        assert_eq!(
            state.tenant_rate("site"),
            Some(20.0),
            "never above the configured budget"
        );
    }

    #[test]
    fn without_a_budget_one_is_learned_from_refusals() {
        let mut state = LimiterState::new(RateLimitSettings {
            reads_per_second: 1000.0,
            writes_per_second: 1000.0,
            burst: 1000,
            ..settings()
        });
        let start = Instant::now();
        let users = key("site:confluence", "GET /rest/api/user");
        let remove = key("site:confluence", "DELETE /rest/api/group/userByGroupId");
        assert_eq!(state.tenant_rate("site"), None, "unlimited until taught");
        // 40 requests a second get through for a while...
        let calm = RateLimitSignals::default();
        for i in 0..80 {
            let at = start + Duration::from_millis(i * 25);
            let key = if i % 2 == 0 { &users } else { &remove };
            state.try_acquire(key, at).unwrap();
            state.observe(key, &calm, at);
        }
        // ...then both endpoints are refused: the budget becomes 70% of that.
        let at = start + Duration::from_secs(2);
        state.refused(&users, at, None, Duration::ZERO);
        state.refused(&remove, at, None, Duration::ZERO);
        let rate = state.tenant_rate("site").unwrap();
        assert!((rate - 28.0).abs() < 1.5, "{rate}");
    }

    #[test]
    fn a_learned_budget_does_not_grow_past_what_is_used() {
        let mut state = LimiterState::new(settings());
        let start = Instant::now();
        let users = key("site:confluence", "GET /rest/api/user");
        let remove = key("site:confluence", "DELETE /rest/api/group/userByGroupId");
        let calm = RateLimitSignals::default();
        // Twenty answers in the first second, then refusals from two endpoints: the tenant was
        // too fast at 20 a second.
        for i in 0..20 {
            let at = start + Duration::from_millis(50 * i);
            state.observe(&users, &calm, at);
        }
        let refused_at = start + Duration::from_secs(1);
        state.refused(&users, refused_at, None, Duration::ZERO);
        state.refused(&remove, refused_at, None, Duration::ZERO);
        let learned = state.tenant_rate("site").unwrap();
        assert!((learned - 0.7 * 20.0).abs() < 1.0, "{learned}");
        // A quiet day: one answer every ten seconds, for hours. It may probe past the level
        // found too fast, by half at most, never on and on.
        for i in 1..2_000 {
            let at = refused_at + Duration::from_secs(10 * i);
            state.try_acquire(&users, at).unwrap();
            state.observe(&users, &calm, at);
        }
        let rate = state.tenant_rate("site").unwrap();
        assert!(rate <= 1.5 * 20.0 + 1e-9, "{rate} grew past what was ever tried");
        // Refusals of requests sent before a decrease (within its spacing) do not cause another;
        // one after it does, and is the tenant's however few endpoints it came from.
        let later = start + Duration::from_secs(30_000);
        state.refused(&users, later, None, Duration::ZERO);
        state.refused(&remove, later, None, Duration::ZERO);
        let once = state.tenant_rate("site").unwrap();
        let (_, tenant_wide) =
            state.refused(&users, later + Duration::from_millis(300), None, Duration::ZERO);
        assert!(tenant_wide);
        assert_eq!(state.tenant_rate("site"), Some(once));
        state.refused(&users, later + Duration::from_secs(2), None, Duration::ZERO);
        assert!(state.tenant_rate("site").unwrap() < once);
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

    /// Found by fuzzing (fuzz/corpus/atlassian_answer/regression-remaining-u64-max).
    #[test]
    fn a_huge_remaining_count_is_plenty_not_an_overflow() {
        let mut state = LimiterState::new(settings());
        let now = Instant::now();
        let get = key("t", "GET /rest/api/user");
        let plenty = RateLimitSignals {
            remaining: Some(u64::MAX),
            limit: Some(100),
            ..Default::default()
        };
        assert_eq!(state.observe(&get, &plenty, now), PaceChange::Unchanged);
    }

    #[test]
    fn overrides() {
        let mut configured = settings();
        configured.endpoints.insert(
            "GET /rest/api/group".into(),
            EndpointRateLimit {
                per_second: 1.0,
                burst: 1,
            },
        );
        let state = LimiterState::new(configured);
        assert_eq!(state.rate_for("GET /rest/api/group", true).burst, 1);
        assert_eq!(state.rate_for("DELETE /x", false).per_second, 5.0);
        assert_eq!(state.rate_for("POST /api/v2/users-bulk", true).per_second, 10.0);
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

    /// An answer cannot pause gatehouse for longer than a day, whatever reset time it names.
    #[test]
    fn a_reset_far_in_the_future_is_cut_to_a_day() {
        let now = Utc::now();
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-reset", "9999-12-31T23:59:59Z".parse().unwrap());
        let signals = RateLimitSignals::from_headers(&headers, now);
        assert_eq!(signals.reset_in, Some(MAX_RETRY_AFTER));
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
