//! The Atlassian clients' metrics, under `gatehouse_atlassian_…`.
//!
//! Labels are the tenant's configured name, endpoint labels (a fixed set in the code), API names
//! and outcome words; never ids from requests, so the number of series is bounded.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::AtlassianSettings;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The configured tenant.
    pub tenant: Arc<str>,
    pub api: &'static str,
    pub endpoint: &'static str,
    /// `2xx`, `4xx`, `429`, `5xx`, `error` (no answer).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// The configured tenant.
    pub tenant: Arc<str>,
    pub api: &'static str,
    pub endpoint: &'static str,
    /// `rate_limited`, `server_error`, `timeout`, `connection`, `unauthorized`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PauseLabels {
    /// The configured tenant.
    pub tenant: Arc<str>,
    pub api: &'static str,
    /// `endpoint` (burst) or `tenant` (quota).
    pub scope: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The configured tenant.
    pub tenant: Arc<str>,
    pub api: &'static str,
    pub endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// The configured tenant.
    pub tenant: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The configured tenant.
    pub tenant: Arc<str>,
    /// `api_token`, `scim_token`, `admin_api_key`.
    pub token: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms … ~20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Handles on every Atlassian metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct AtlassianMetrics {
    /// Every HTTP attempt, by API, endpoint and outcome.
    pub requests: Family<CallLabels, Counter>,
    /// Every retry, by why.
    pub retries: Family<RetryLabels, Counter>,
    /// Pauses ordered by Atlassian's 429s.
    pub rate_limit_pauses: Family<PauseLabels, Counter>,
    /// Times an endpoint was slowed because Atlassian said it was near its limit.
    pub slowdowns: Family<EndpointLabels, Counter>,
    /// Calls refused without sending because a pause outlasted `retry.max_wait_ms`.
    pub paused_calls: Family<EndpointLabels, Counter>,
    /// Time per attempt.
    pub request_seconds: HistogramFamily<EndpointLabels>,
    /// OAuth refreshes (`ok`, `rejected`, `failed`).
    pub token_refreshes: Family<OutcomeLabels, Counter>,
    /// When each configured credential expires (unix seconds): alert on `… - time() < 30 days`.
    pub token_expiry_timestamp_seconds: Family<TokenLabels, Gauge>,
    /// This process's share of each tenant's rate budget (1/N of N worker processes).
    pub budget_share: Family<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl AtlassianMetrics {
    /// Registers every family under `atlassian_`.
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("atlassian");
        let metrics = AtlassianMetrics {
            requests: Family::default(),
            retries: Family::default(),
            rate_limit_pauses: Family::default(),
            slowdowns: Family::default(),
            paused_calls: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            token_refreshes: Family::default(),
            token_expiry_timestamp_seconds: Family::default(),
            budget_share: Family::default(),
        };
        registry.register(
            "requests",
            "HTTP requests to Atlassian by API, endpoint and outcome",
            metrics.requests.clone(),
        );
        registry.register(
            "retries",
            "Retried Atlassian requests by API, endpoint and reason",
            metrics.retries.clone(),
        );
        registry.register(
            "rate_limit_pauses",
            "Pauses after a 429, per endpoint (burst) or for the whole tenant (quota)",
            metrics.rate_limit_pauses.clone(),
        );
        registry.register(
            "slowdowns",
            "Endpoints slowed because Atlassian reported the rate limit was near",
            metrics.slowdowns.clone(),
        );
        registry.register(
            "paused_calls",
            "Calls failed fast because a rate-limit pause outlasted retry.max_wait_ms",
            metrics.paused_calls.clone(),
        );
        registry.register(
            "request_seconds",
            "Duration of one HTTP attempt to Atlassian",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "token_refreshes",
            "OAuth refresh-token rotations by outcome",
            metrics.token_refreshes.clone(),
        );
        registry.register(
            "budget_share",
            "This process's share of each tenant's rate budget (1/N of N worker processes)",
            metrics.budget_share.clone(),
        );
        registry.register(
            "token_expiry_timestamp_seconds",
            "When each configured Atlassian credential expires, unix seconds",
            metrics.token_expiry_timestamp_seconds.clone(),
        );
        metrics
    }

    /// Metrics kept in a registry of their own, for tools that export none (the CLI).
    pub fn detached() -> Self {
        AtlassianMetrics::register(&mut Registry::default())
    }

    /// Publishes the configured credential expiry dates.
    pub fn observe_token_expiry(&self, settings: &AtlassianSettings) {
        let tenant: Arc<str> = Arc::from(settings.tenant_name());
        for (token, _, at) in settings.token_expiries() {
            self.token_expiry_timestamp_seconds
                .get_or_create(&TokenLabels {
                    tenant: tenant.clone(),
                    token,
                })
                .set(at.timestamp());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthSettings, Secret};

    #[test]
    fn token_expiry_is_exported() {
        let mut registry = Registry::with_prefix("gatehouse");
        let metrics = AtlassianMetrics::register(&mut registry);
        let mut settings = AtlassianSettings::new(Some(AuthSettings::Basic {
            email: "bot@example.com".into(),
            token: Secret::new("t"),
            cloud_id: None,
            token_expires_at: Some("2027-03-01T00:00:00Z".parse().unwrap()),
        }));
        settings.scim_token_expires_at = Some("2027-04-01T00:00:00Z".parse().unwrap());
        metrics.observe_token_expiry(&settings);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "gatehouse_atlassian_token_expiry_timestamp_seconds{tenant=\"default\",token=\"api_token\"} 1803859200"
            ),
            "{text}"
        );
        assert!(text.contains("token=\"scim_token\""), "{text}");
        assert!(!text.contains("admin_api_key"), "{text}");
    }
}
