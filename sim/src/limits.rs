//! The simulator's rate limits, as Atlassian applies them: a burst token bucket per endpoint and
//! method (429, with or without `Retry-After` by policy, `X-RateLimit-*` headers on every answer,
//! `X-RateLimit-NearLimit` when under 20%), optionally one bucket for every request of the tenant
//! (its 429s look the same), and a tenant-wide Confluence quota whose 429 carries
//! `RateLimit-Reason` and the reset time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::behaviour::{Behaviour, BurstPolicy};

/// Headers to add to an answer.
pub(crate) type Headers = Vec<(&'static str, String)>;

pub(crate) enum Verdict {
    Allowed(Headers),
    /// Refused with 429: why (`burst` | `quota`) and the headers to send.
    Refused(&'static str, Headers),
}

#[derive(Debug, Default)]
pub(crate) struct SimLimits {
    buckets: HashMap<String, SimBucket>,
    tenant: Option<SimBucket>,
    quota: Option<QuotaWindow>,
}

/// Takes a token from `bucket` (made full on first use) under `policy`; on refusal, the headers
/// of the 429.
fn take(bucket: &mut Option<SimBucket>, policy: &BurstPolicy, now: Instant) -> Result<f64, Headers> {
    let capacity = f64::from(policy.capacity.max(1));
    let bucket = bucket.get_or_insert(SimBucket {
        tokens: capacity,
        updated: now,
    });
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * policy.per_second).min(capacity);
    bucket.updated = now;
    if bucket.tokens < 1.0 {
        let wait = if policy.per_second > 0.0 {
            Duration::from_secs_f64((1.0 - bucket.tokens) / policy.per_second)
        } else {
            Duration::from_secs(3600)
        };
        let mut refused = vec![
            ("x-ratelimit-limit", policy.capacity.to_string()),
            ("x-ratelimit-remaining", "0".to_owned()),
            ("x-ratelimit-reset", iso(Utc::now() + wait)),
        ];
        if let Some(seconds) = policy.retry_after_seconds {
            refused.push(("retry-after", seconds.to_string()));
        }
        return Err(refused);
    }
    bucket.tokens -= 1.0;
    Ok(bucket.tokens)
}

#[derive(Debug)]
struct SimBucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
struct QuotaWindow {
    ends: Instant,
    ends_utc: DateTime<Utc>,
    used: u32,
}

/// RFC 3339 with milliseconds and `Z`, as Atlassian writes times.
pub(crate) fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_millis().div_ceil(1000) as u64
}

impl SimLimits {
    /// Decides on one request to `key` (method and route), Confluence's quota applying when
    /// `confluence`.
    pub fn check(&mut self, key: &str, confluence: bool, policy: &Behaviour, now: Instant) -> Verdict {
        let mut headers = Headers::new();
        let mut quota_window = None;
        if confluence && let Some(quota) = &policy.quota {
            let window_length = Duration::from_millis(quota.window_ms.max(1));
            let window = match self.quota.take() {
                Some(window) if window.ends > now => window,
                _ => QuotaWindow {
                    ends: now + window_length,
                    ends_utc: Utc::now() + window_length,
                    used: 0,
                },
            };
            if window.used >= quota.requests {
                let mut refused = vec![
                    ("ratelimit-reason", quota.reason.clone()),
                    ("x-ratelimit-reset", iso(window.ends_utc)),
                    ("x-ratelimit-limit", quota.requests.to_string()),
                    ("x-ratelimit-remaining", "0".to_owned()),
                ];
                if quota.retry_after {
                    refused.push((
                        "retry-after",
                        ceil_seconds(window.ends.saturating_duration_since(now)).to_string(),
                    ));
                }
                self.quota = Some(window);
                return Verdict::Refused("quota", refused);
            }
            quota_window = Some(window);
        }
        if let Some(tenant) = &policy.tenant
            && let Err(refused) = take(&mut self.tenant, tenant, now)
        {
            self.quota = quota_window;
            return Verdict::Refused("tenant", refused);
        }
        if let Some(burst) = &policy.burst {
            let mut bucket = self.buckets.remove(key);
            let taken = take(&mut bucket, burst, now);
            if let Some(bucket) = bucket {
                self.buckets.insert(key.to_owned(), bucket);
            }
            match taken {
                Err(refused) => {
                    self.quota = quota_window;
                    return Verdict::Refused("burst", refused);
                }
                Ok(left) => {
                    headers.push(("x-ratelimit-limit", burst.capacity.to_string()));
                    headers.push(("x-ratelimit-remaining", (left.floor() as u64).to_string()));
                    if burst.near_limit && left < 0.2 * f64::from(burst.capacity.max(1)) {
                        headers.push(("x-ratelimit-nearlimit", "true".to_owned()));
                    }
                }
            }
        }
        if let Some(mut window) = quota_window {
            window.used += 1;
            self.quota = Some(window);
        }
        Verdict::Allowed(headers)
    }
}
