//! How the simulator behaves, as opposed to what it holds: page-size caps, rate limits, token
//! lifetimes, and scripted faults. Each tenant has its own. Tests change them at run time
//! (`PUT /_sim/policy`, `POST /_sim/faults`, with `?tenant={cloudId}` for another tenant than
//! the first, or [`TenantView`](crate::TenantView)) to reproduce Atlassian's quirks on demand.

use serde::{Deserialize, Serialize};

/// How the simulator behaves. The defaults are small on purpose: listings need several pages even with a
/// handful of items, so a client that stops after the first page is caught at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    /// Largest `limit` Confluence v1 honours (Atlassian: 200 for members); a larger request is
    /// silently capped and the response's `limit` says so.
    pub v1_max_limit: u32,
    /// Largest `limit` Confluence v2 honours (Atlassian: 250).
    pub v2_max_limit: u32,
    /// Largest SCIM `count` (Atlassian: 100).
    pub scim_max_count: u32,
    /// Largest events-stream `limit`.
    pub events_max_limit: u32,
    /// When not empty, successive listing responses cap their page size at these values in
    /// turn (cycling), whatever the client asked: a page size that changes mid-listing.
    pub page_size_cycle: Vec<u32>,
    /// A burst token bucket per endpoint and method; `None` disables it.
    pub burst: Option<BurstPolicy>,
    /// One token bucket every API request of the tenant draws from, whatever its endpoint (the
    /// limit a real tenant meets first when many endpoints are busy at once); `None` disables
    /// it. Its 429s look like burst ones.
    pub tenant: Option<BurstPolicy>,
    /// A tenant-wide Confluence quota (the points quota of Connect/Forge/OAuth apps); `None`
    /// disables it.
    pub quota: Option<QuotaPolicy>,
    /// Lifetime of an OAuth access token.
    pub access_token_ttl_seconds: u64,
    /// How long an already-rotated refresh token may still be used (Atlassian: 10 minutes).
    /// Reuse after that revokes the whole token family.
    pub refresh_reuse_leeway_seconds: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            v1_max_limit: 25,
            v2_max_limit: 25,
            scim_max_count: 10,
            events_max_limit: 10,
            page_size_cycle: Vec::new(),
            burst: None,
            tenant: None,
            quota: None,
            access_token_ttl_seconds: 3600,
            refresh_reuse_leeway_seconds: 600,
        }
    }
}

/// Atlassian's burst limit: a token bucket per endpoint; an empty bucket answers 429.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstPolicy {
    /// Bucket size: requests allowed at once.
    pub capacity: u32,
    /// Refill rate.
    pub per_second: f64,
    /// `Retry-After` sent with a 429; `None` sends none (Atlassian does not always).
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// Send `X-RateLimit-NearLimit: true` when less than 20% of the bucket is left.
    #[serde(default = "yes")]
    pub near_limit: bool,
}

fn yes() -> bool {
    true
}

/// A tenant-wide quota: `requests` Confluence calls per window; beyond that every Confluence
/// endpoint answers 429 with `RateLimit-Reason` and `X-RateLimit-Reset` until the window ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaPolicy {
    pub requests: u32,
    pub window_ms: u64,
    #[serde(default = "default_quota_reason")]
    pub reason: String,
    /// Also send `Retry-After` (seconds until the reset, rounded up).
    #[serde(default)]
    pub retry_after: bool,
}

fn default_quota_reason() -> String {
    "confluence-quota-tenant-based".to_owned()
}

/// A scripted misbehaviour for matching requests: an error status, a delay, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// `GET`, `POST`, …; any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Matches requests whose path, with its query after a `?`, contains this (e.g.
    /// `membersByGroupId?start=2`: the second page of a listing two at a time).
    pub path_contains: String,
    /// Answer this status instead of handling the request; `None` handles it after the delay.
    #[serde(default)]
    pub status: Option<u16>,
    /// Wait this long first (a slow response).
    #[serde(default)]
    pub delay_ms: u64,
    /// Drop the connection instead of answering, the request not handled (a connection reset
    /// mid-exchange: the client sees a transport error, not a status).
    #[serde(default)]
    pub reset: bool,
    /// Handle the request, then drop the connection instead of answering: the answer lost on
    /// its way back (the request took effect; the client sees a transport error).
    #[serde(default)]
    pub lose_answer: bool,
    /// How many matching requests it affects; `None`: every one until cleared.
    #[serde(default)]
    pub times: Option<u32>,
    /// The `Retry-After` header, with any status (a 429, or a 503 during maintenance).
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// With a 429: `RateLimit-Reason` (e.g. `confluence-quota-global-based`).
    #[serde(default)]
    pub rate_limit_reason: Option<String>,
    /// With a 429: `X-RateLimit-Reset` this far in the future.
    #[serde(default)]
    pub reset_after_ms: Option<u64>,
    /// Echo the request's `Authorization` header in the error body, as a careless proxy might:
    /// lets tests prove a client never repeats such a body in its errors or logs.
    #[serde(default)]
    pub echo_authorization: bool,
}

impl Fault {
    /// `status` for the next `times` requests whose path contains `path_contains`.
    pub fn status(path_contains: impl Into<String>, status: u16, times: u32) -> Self {
        Fault {
            method: None,
            path_contains: path_contains.into(),
            status: Some(status),
            delay_ms: 0,
            reset: false,
            lose_answer: false,
            times: Some(times),
            retry_after_seconds: None,
            rate_limit_reason: None,
            reset_after_ms: None,
            echo_authorization: false,
        }
    }

    /// A delay before handling the next `times` matching requests normally.
    pub fn delay(path_contains: impl Into<String>, delay_ms: u64, times: u32) -> Self {
        Fault {
            status: None,
            delay_ms,
            ..Fault::status(path_contains, 0, times)
        }
    }

    /// The connection of the next `times` matching requests dropped without an answer.
    pub fn reset(path_contains: impl Into<String>, times: u32) -> Self {
        Fault {
            status: None,
            reset: true,
            ..Fault::status(path_contains, 0, times)
        }
    }

    /// The next `times` matching requests handled, their answers lost on the way back.
    pub fn lose_answer(path_contains: impl Into<String>, times: u32) -> Self {
        Fault {
            status: None,
            lose_answer: true,
            ..Fault::status(path_contains, 0, times)
        }
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }
}
