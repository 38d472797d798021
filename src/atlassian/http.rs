//! The one place Atlassian calls are made: credentials, the rate limiter, retries, error
//! classification, request-id capture, metrics and logs, for every client alike.
//!
//! Retry rules:
//! - 429 is retried for every call: Atlassian refused the request before doing anything. The
//!   wait is exactly `Retry-After` when given, else the backoff; a quota reason pauses the whole
//!   tenant until the reset, a burst 429 pauses the endpoint (and slows the tenant's budget when
//!   429s come from several endpoints, see `limiter`). The pause lives in the limiter, so every
//!   caller waits it out, not only the refused one. A call's waits share one budget
//!   (`retry.max_wait_ms`); past it the call fails as transient and the worker retries later.
//! - 5xx, 408, 425 and timeouts are retried only for idempotent calls (a POST that timed out may
//!   have happened), up to `retry.max_attempts` tries. The wait before retrying a 5xx, 408 or
//!   425 (exactly `Retry-After` when given) draws on the same budget as 429s: Atlassian in
//!   maintenance may answer 503 with `Retry-After: 3600`, and sleeping that out would hold the
//!   worker, its tenant slot and the account's claim for an hour a try. A wait past what is left
//!   of the budget fails the call at once, as transient, and the worker retries later.
//! - A connection that could not be opened is retried for every call (nothing was sent).
//! - 401 with OAuth: one retry with a refreshed access token.
//! - Everything else is returned at once, classified ([`ApiError`]).
//!
//! Logs and errors name the endpoint label (`GET /rest/api/user`), never the URL, and error
//! texts are scrubbed of every secret the credentials know.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use handlers::identifier::{self, IdKind};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use url::Url;

use super::auth::Credentials;
use super::bounded_read::{MAX_ANSWER_BYTES, read_bounded};
use super::error::ApiError;
use super::limiter::{LimitKey, PaceChange, RateLimitSignals, RateLimiter};
use super::metrics::{AtlassianMetrics, CallLabels, EndpointLabels, PauseLabels, RetryLabels};
use super::retry::RetryBackoff;

/// HTTP methods the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn method(self) -> reqwest::Method {
        match self {
            Verb::Get => reqwest::Method::GET,
            Verb::Post => reqwest::Method::POST,
            Verb::Put => reqwest::Method::PUT,
            Verb::Patch => reqwest::Method::PATCH,
            Verb::Delete => reqwest::Method::DELETE,
        }
    }
}

/// One Atlassian endpoint. Its label (`GET /rest/api/group/{groupId}/membersByGroupId`) keys the
/// rate limiter, labels metrics and names the operation in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub verb: Verb,
    pub label: &'static str,
    /// Repeating it has the same effect as doing it once, so it is safe to retry after a
    /// timeout or a 5xx.
    pub idempotent: bool,
    /// It only reads, and is paced as a read: every GET, and the few POSTs that only read
    /// (`POST /api/v2/users-bulk`).
    pub read: bool,
    /// Tried once per call, never retried inside the call (the events-stream, whose limit is
    /// counted per request by its caller: a retry here would be a request it did not count).
    pub once: bool,
}

impl Endpoint {
    pub const fn new(verb: Verb, label: &'static str, idempotent: bool) -> Self {
        Endpoint {
            verb,
            label,
            idempotent,
            read: matches!(verb, Verb::Get),
            once: false,
        }
    }

    /// Marks an endpoint whose calls must not be retried inside the call.
    pub const fn once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Tries a call may make against errors (1 for [`Endpoint::once`]).
    fn attempts(self, configured: u32) -> u32 {
        if self.once { 1 } else { configured }
    }

    /// Marks an endpoint whose method is not GET as a read.
    pub const fn reading(mut self) -> Self {
        self.read = true;
        self
    }
}

/// Which API an `ApiCaller` talks to (metrics label, limiter tenant suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Confluence,
    Scim,
    Admin,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Confluence => "confluence",
            Api::Scim => "scim",
            Api::Admin => "admin",
        }
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub enum CallBody {
    Json(serde_json::Value),
    /// JSON sent as `application/scim+json`.
    Scim(serde_json::Value),
}

/// One call to make.
#[derive(Debug, Clone)]
pub struct Call {
    pub endpoint: Endpoint,
    pub url: Url,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<CallBody>,
}

impl Call {
    pub fn new(endpoint: Endpoint, url: Url) -> Self {
        Call {
            endpoint,
            url,
            query: Vec::new(),
            body: None,
        }
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: CallBody) -> Self {
        self.body = Some(body);
        self
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Atlassian's id for this request (`X-ARequestId`), for the audit trail.
    pub request_id: Option<String>,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self, operation: &'static str) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::unreadable(operation, e))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a change returned, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub status: u16,
    /// Atlassian's request id (`X-ARequestId`), when it sent one.
    pub request_id: Option<String>,
}

impl From<&Reply> for Receipt {
    fn from(reply: &Reply) -> Self {
        Receipt {
            status: reply.status,
            request_id: reply.request_id.clone(),
        }
    }
}

/// Header names Atlassian puts its request id in, most specific first.
const REQUEST_ID_HEADERS: &[&str] = &["x-arequestid", "atl-traceid", "x-request-id"];

fn request_id(headers: &HeaderMap) -> Option<String> {
    REQUEST_ID_HEADERS
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::to_owned)
}

/// How patient one `ApiCaller` is.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries per call against server errors and timeouts (429s are bounded by `max_wait`).
    pub max_attempts: u32,
    pub backoff: RetryBackoff,
    /// The longest one call waits on rate-limit pauses, in total, before failing as transient.
    pub max_wait: Duration,
}

/// Makes the calls of one API; cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    inner: Arc<CallerSetup>,
}

/// What an [`ApiCaller`] calls with (shared by its clones).
#[derive(Debug)]
struct CallerSetup {
    api: Api,
    /// The tenant's name: the budget every call draws from.
    site: Arc<str>,
    /// `{tenant}:{api}`: what a quota pause stops.
    tenant: Arc<str>,
    http: reqwest::Client,
    credentials: Arc<dyn Credentials>,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
    metrics: AtlassianMetrics,
    /// Cancelled when the process begins to stop (see [`super::ClientDeps::stopping`]).
    stopping: CancellationToken,
}

/// A 429 storm longer than this many refusals of one call is not a storm any more: give up (the
/// time budget, `max_wait`, usually ends it first).
const MAX_THROTTLED: u32 = 50;

/// Waiting this much past a quota's announced reset absorbs clock skew and rounding (the reset
/// comes as an ISO time with millisecond precision); arriving early would only be refused again.
const RESET_MARGIN: Duration = Duration::from_millis(100);

/// What went wrong so far in one call.
#[derive(Debug, Default)]
struct Tally {
    /// Server errors, timeouts, connection failures (bounded by `max_attempts`).
    errors: u32,
    /// 429 answers (bounded by the time budget).
    throttled: u32,
    /// Credentials were renewed after a 401 already.
    reauthorized: bool,
}

/// A non-2xx answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// What to do after a failed attempt.
enum Next {
    /// Try again after this long (zero: at once, the limiter decides).
    Retry(Duration, &'static str),
    Fail(ApiError),
}

/// What the callers of one tenant's APIs share: the connection pool, the pace, how patient
/// they are, their metrics and when to stop waiting.
#[derive(Debug, Clone)]
pub struct SharedSetup {
    pub http: reqwest::Client,
    pub limiter: Arc<RateLimiter>,
    pub retry: RetryPolicy,
    pub metrics: AtlassianMetrics,
    /// Cancelled when the process begins to stop (see [`super::ClientDeps::stopping`]).
    pub stopping: CancellationToken,
}

impl ApiCaller {
    pub fn new(api: Api, tenant: &str, credentials: Arc<dyn Credentials>, shared: &SharedSetup) -> Self {
        ApiCaller {
            inner: Arc::new(CallerSetup {
                api,
                site: Arc::from(tenant),
                tenant: Arc::from(format!("{tenant}:{}", api.name())),
                http: shared.http.clone(),
                credentials,
                limiter: shared.limiter.clone(),
                retry: shared.retry.clone(),
                metrics: shared.metrics.clone(),
                stopping: shared.stopping.clone(),
            }),
        }
    }

    /// Makes `call`, retrying as the module documentation says. Ok only for a 2xx answer.
    pub async fn send(&self, call: &Call) -> Result<Reply, ApiError> {
        let span = tracing::debug_span!(
            "atlassian_call",
            api = self.inner.api.name(),
            endpoint = call.endpoint.label
        );
        self.send_inner(call)
            .instrument(span)
            .await
            .map_err(|error| error.redacted(|text| self.inner.credentials.redact(text)))
    }

    async fn send_inner(&self, call: &Call) -> Result<Reply, ApiError> {
        let inner = &self.inner;
        let endpoint = call.endpoint;
        let key = LimitKey {
            site: inner.site.clone(),
            tenant: inner.tenant.clone(),
            endpoint: endpoint.label,
            read: endpoint.read,
        };
        let started = tokio::time::Instant::now();
        let mut tally = Tally::default();
        loop {
            // Rate-limit waits share one budget per call: past it, fail as transient and let the
            // worker come back later, rather than holding a worker for an hour-long quota reset.
            let budget = inner.retry.max_wait.saturating_sub(started.elapsed());
            // A token at hand is taken even while stopping (the grace period is for finishing);
            // only a wait for one is cut short.
            let acquired = tokio::select! {
                biased;
                acquired = inner.limiter.acquire(&key, budget) => acquired,
                () = inner.stopping.cancelled() => return Err(ApiError::interrupted(endpoint.label)),
            };
            if let Err(wait) = acquired {
                inner
                    .metrics
                    .paused_calls
                    .get_or_create(&self.endpoint_labels(endpoint))
                    .inc();
                return Err(ApiError::paused(endpoint.label, wait));
            }
            let authorization = inner.credentials.authorization().await?;
            let next = match self.attempt(call, &authorization).await {
                Ok(reply) => {
                    self.observe(&key, &reply.headers);
                    return Ok(reply);
                }
                Err(AttemptFailure::Answer(answer)) => {
                    let budget = inner.retry.max_wait.saturating_sub(started.elapsed());
                    self.after_answer(&key, endpoint, &answer, &authorization, budget, &mut tally)
                        .await
                }
                // Reading more would hold the memory of a page thousands of times its size: the
                // call fails (as an answer that cannot be used) instead.
                Err(AttemptFailure::TooLarge) => Next::Fail(ApiError::unreadable(
                    endpoint.label,
                    format!("an answer over {} MiB", MAX_ANSWER_BYTES / (1024 * 1024)),
                )),
                Err(AttemptFailure::Transport(error)) => {
                    tally.errors += 1;
                    // A connection that never opened carried nothing: safe to retry any call.
                    let retryable = endpoint.idempotent || error.is_connect();
                    if retryable && tally.errors < endpoint.attempts(inner.retry.max_attempts) {
                        let reason = if error.is_timeout() {
                            "timeout"
                        } else {
                            "connection"
                        };
                        Next::Retry(inner.retry.backoff.delay(tally.errors, None), reason)
                    } else {
                        Next::Fail(ApiError::transport(endpoint.label, &error))
                    }
                }
            };
            match next {
                Next::Fail(error) => return Err(error),
                Next::Retry(delay, reason) => {
                    inner
                        .metrics
                        .retries
                        .get_or_create(&RetryLabels {
                            tenant: inner.site.clone(),
                            api: inner.api.name(),
                            endpoint: endpoint.label,
                            reason,
                        })
                        .inc();
                    tracing::warn!(
                        api = inner.api.name(),
                        endpoint = endpoint.label,
                        errors = tally.errors,
                        throttled = tally.throttled,
                        reason,
                        delay_ms = delay.as_millis() as u64,
                        "retrying Atlassian call"
                    );
                    if !delay.is_zero() && !crate::pacing::sleep_unless(delay, &inner.stopping).await {
                        return Err(ApiError::interrupted(endpoint.label));
                    }
                }
            }
        }
    }

    /// Decides what a non-2xx answer means. `budget` is what is left of the call's wait budget
    /// (`retry.max_wait`).
    async fn after_answer(
        &self,
        key: &LimitKey,
        endpoint: Endpoint,
        answer: &Answer,
        authorization: &HeaderValue,
        budget: Duration,
        tally: &mut Tally,
    ) -> Next {
        let inner = &self.inner;
        let signals = RateLimitSignals::from_headers(&answer.headers, chrono::Utc::now());
        let error = ApiError::from_answer(
            endpoint.label,
            answer.status,
            &answer.body,
            request_id(&answer.headers),
            signals.retry_after,
        );
        match answer.status {
            429 => {
                tally.throttled += 1;
                // Exactly what Atlassian asked for, when it said; the jittered backoff otherwise.
                let mut delay = inner.retry.backoff.delay(tally.throttled, signals.retry_after);
                let now = tokio::time::Instant::now();
                let scope = if signals.is_quota() {
                    // The quota is the tenant's: every endpoint would be refused until the reset.
                    let pause = signals
                        .reset_in
                        .map(|reset| reset + RESET_MARGIN)
                        .unwrap_or(delay)
                        .max(delay);
                    inner.limiter.state().pause_tenant(&key.tenant, now + pause);
                    "tenant"
                } else {
                    let (pause, tenant_wide) =
                        inner
                            .limiter
                            .state()
                            .refused(key, now, signals.retry_after, delay);
                    delay = pause;
                    // 429s from several endpoints: the tenant's budget was slowed instead.
                    if tenant_wide { "tenant_budget" } else { "endpoint" }
                };
                inner
                    .metrics
                    .rate_limit_pauses
                    .get_or_create(&PauseLabels {
                        tenant: inner.site.clone(),
                        api: inner.api.name(),
                        scope,
                    })
                    .inc();
                tracing::info!(
                    api = inner.api.name(),
                    endpoint = endpoint.label,
                    scope,
                    reason = signals.reason.as_deref().unwrap_or("burst"),
                    pause_ms = delay.as_millis() as u64,
                    request_id = error.request_id(),
                    "Atlassian rate limit: pausing"
                );
                if tally.throttled < endpoint.attempts(MAX_THROTTLED) {
                    // The limiter holds the pause, so every caller of the endpoint (or tenant)
                    // waits it out together; the wait counts against the call's budget.
                    Next::Retry(Duration::ZERO, "rate_limited")
                } else {
                    Next::Fail(error)
                }
            }
            401 if !tally.reauthorized && inner.credentials.rejected(authorization).await => {
                tally.reauthorized = true;
                Next::Retry(Duration::ZERO, "unauthorized")
            }
            500..=599 | 408 | 425 if endpoint.idempotent => {
                tally.errors += 1;
                if tally.errors >= endpoint.attempts(inner.retry.max_attempts) {
                    return Next::Fail(error);
                }
                let delay = inner.retry.backoff.delay(tally.errors, signals.retry_after);
                if delay > budget {
                    // The same budget as 429s: a long `Retry-After` (maintenance) is waited out
                    // on the worker's retry ladder, not asleep in this call; and the endpoint is
                    // paused as asked, so the ladder's retries meanwhile fail here without
                    // sending anything.
                    if let Some(asked) = signals.retry_after {
                        let until = tokio::time::Instant::now() + asked;
                        inner.limiter.state().pause_endpoint(key, until);
                    }
                    tracing::info!(
                        api = inner.api.name(),
                        endpoint = endpoint.label,
                        status = answer.status,
                        delay_ms = delay.as_millis() as u64,
                        budget_ms = budget.as_millis() as u64,
                        request_id = error.request_id(),
                        "Atlassian asked to wait longer than this call may (retry.max_wait_ms): failing as transient"
                    );
                    Next::Fail(error)
                } else {
                    Next::Retry(delay, "server_error")
                }
            }
            _ => Next::Fail(error),
        }
    }

    fn observe(&self, key: &LimitKey, headers: &HeaderMap) {
        let signals = RateLimitSignals::from_headers(headers, chrono::Utc::now());
        let change = self
            .inner
            .limiter
            .state()
            .observe(key, &signals, tokio::time::Instant::now());
        if change != PaceChange::Unchanged {
            self.inner
                .metrics
                .slowdowns
                .get_or_create(&EndpointLabels {
                    tenant: self.inner.site.clone(),
                    api: self.inner.api.name(),
                    endpoint: key.endpoint,
                })
                .inc();
            tracing::debug!(
                endpoint = key.endpoint,
                ?change,
                "Atlassian near its rate limit: slowing down"
            );
        }
    }

    fn endpoint_labels(&self, endpoint: Endpoint) -> EndpointLabels {
        EndpointLabels {
            tenant: self.inner.site.clone(),
            api: self.inner.api.name(),
            endpoint: endpoint.label,
        }
    }

    /// One HTTP attempt.
    async fn attempt(&self, call: &Call, authorization: &HeaderValue) -> Result<Reply, AttemptFailure> {
        let inner = &self.inner;
        let endpoint = call.endpoint;
        let mut request = inner
            .http
            .request(endpoint.verb.method(), call.url.clone())
            .header(AUTHORIZATION, authorization.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        match &call.body {
            Some(CallBody::Json(value)) => request = request.json(value),
            Some(CallBody::Scim(value)) => {
                request = request
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/scim+json"))
                    .body(value.to_string());
            }
            None => {}
        }
        let started = std::time::Instant::now();
        let result = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = read_bounded(response, MAX_ANSWER_BYTES).await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        inner
            .metrics
            .request_seconds
            .get_or_create(&self.endpoint_labels(endpoint))
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok((status, ..)) => match status {
                200..=299 => "2xx",
                429 => "429",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            },
            Err(_) => "error",
        };
        inner
            .metrics
            .requests
            .get_or_create(&CallLabels {
                tenant: inner.site.clone(),
                api: inner.api.name(),
                endpoint: endpoint.label,
                outcome,
            })
            .inc();
        let (status, headers, body) = result.map_err(AttemptFailure::Transport)?;
        let body = body.ok_or(AttemptFailure::TooLarge)?;
        if (200..300).contains(&status) {
            Ok(Reply {
                status,
                request_id: request_id(&headers),
                headers,
                body,
            })
        } else {
            Err(AttemptFailure::Answer(Answer {
                status,
                headers,
                body,
            }))
        }
    }
}

enum AttemptFailure {
    Answer(Answer),
    Transport(reqwest::Error),
    /// The answer's body was longer than [`MAX_ANSWER_BYTES`].
    TooLarge,
}

/// `value`, checked as an identifier of `kind` before it reaches `endpoint`'s URL or query;
/// otherwise a permanent error naming it, and nothing is sent (see `handlers::identifier`:
/// `..` or `/` in an id would be normalized into a request about something else).
pub fn checked_id(endpoint: Endpoint, kind: IdKind, value: &str) -> Result<&str, ApiError> {
    identifier::check(kind, value).map_err(|e| ApiError::invalid(endpoint.label, e.to_string()))
}

/// `base` with `segments` appended as path segments (each percent-encoded as needed).
pub fn url_with(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

/// Parses a configured base URL (no trailing slash needed).
pub fn base_url(key: &'static str, raw: &str) -> Result<Url, ApiError> {
    let url = Url::parse(raw.trim_end_matches('/'))
        .map_err(|e| ApiError::invalid(key, format!("`{raw}` is not a URL: {e}")))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid(key, format!("`{raw}` is not an http(s) URL")));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        let base = Url::parse("https://x.atlassian.net/wiki").unwrap();
        assert_eq!(
            url_with(&base, &["rest", "api", "group", "a b/c", "membersByGroupId"]).as_str(),
            "https://x.atlassian.net/wiki/rest/api/group/a%20b%2Fc/membersByGroupId"
        );
        let slash = Url::parse("https://x.atlassian.net/wiki/").unwrap();
        assert_eq!(
            url_with(&slash, &["rest"]).as_str(),
            "https://x.atlassian.net/wiki/rest"
        );
    }

    #[test]
    fn request_ids_are_found() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_id(&headers), None);
        headers.insert("atl-traceid", "trace-1".parse().unwrap());
        assert_eq!(request_id(&headers).as_deref(), Some("trace-1"));
        headers.insert("x-arequestid", "req-1".parse().unwrap());
        assert_eq!(request_id(&headers).as_deref(), Some("req-1"));
    }
}
