//! Prometheus metrics: one registry per process, the families every component updates, and the
//! text exposition `/metrics` serves. The parts below telemetry (queue, store, Atlassian clients,
//! pollers, listener) define their own families and are handed them; the roles above it (the
//! ingress, the worker) take theirs from here.
//!
//! Label values are always drawn from closed sets or from config (source names), never from
//! request input, so a hostile sender cannot explode the number of series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceOutcome {
    pub source: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceReason {
    pub source: String,
    pub reason: &'static str,
}

/// Every metric gatehouse exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Webhook requests by source and outcome (`accepted`, `duplicate`, `unauthorized`, …).
    pub ingress_requests: Family<SourceOutcome, Counter>,
    /// Deliveries refused by verification, by source and reason.
    pub verification_failures: Family<SourceReason, Counter>,
    /// Time from publish to the broker's confirm.
    pub publish_confirm_seconds: Histogram,
    /// Dedupe keys the ingress's window holds (read when `/metrics` is asked, not per delivery).
    pub dedupe_window_keys: Gauge,
    /// The memory the window reserved up front for `ingress.dedupe_window_size` keys.
    pub dedupe_window_reserved_bytes: Gauge,
    pub worker: super::WorkerMetrics,
    /// The events-stream poller and the reconciler.
    pub poll: crate::poll::PollMetrics,
    /// Calls to Atlassian: requests, retries, rate-limit pauses, token refreshes and expiry.
    pub atlassian: crate::atlassian::AtlassianMetrics,
    /// HTTP connections: open, and closed by gatehouse's own limits.
    pub connections: crate::listener::ConnectionMetrics,
    /// Outbound deliveries: attempts, their time, what waits.
    pub outbound: crate::outbound::OutboundMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let ingress_requests = Family::<SourceOutcome, Counter>::default();
        registry.register(
            "ingress_requests",
            "Webhook requests by source and outcome",
            ingress_requests.clone(),
        );
        let verification_failures = Family::<SourceReason, Counter>::default();
        registry.register(
            "verification_failures",
            "Deliveries refused by signature verification, by source and reason",
            verification_failures.clone(),
        );
        // 0.25 ms … ~8 s: a local confirm is sub-millisecond, a struggling cluster takes seconds.
        let publish_confirm_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "publish_confirm_seconds",
            "Time from publishing an envelope to the broker's confirm",
            publish_confirm_seconds.clone(),
        );
        let dedupe_window_keys = Gauge::default();
        registry.register(
            "ingress_dedupe_window_keys",
            "Recently published dedupe keys the ingress remembers (at most ingress.dedupe_window_size)",
            dedupe_window_keys.clone(),
        );
        let dedupe_window_reserved_bytes = Gauge::default();
        registry.register(
            "ingress_dedupe_window_reserved_bytes",
            "Memory the ingress's dedupe window reserved up front for ingress.dedupe_window_size keys",
            dedupe_window_reserved_bytes.clone(),
        );
        let worker = super::WorkerMetrics::register(&mut registry);
        let poll = crate::poll::PollMetrics::register(&mut registry);
        let atlassian = crate::atlassian::AtlassianMetrics::register(&mut registry);
        let connections = crate::listener::ConnectionMetrics::register(&mut registry);
        let outbound = crate::outbound::OutboundMetrics::register(&mut registry);
        Metrics {
            outbound,
            connections,
            registry,
            atlassian,
            ingress_requests,
            verification_failures,
            publish_confirm_seconds,
            dedupe_window_keys,
            dedupe_window_reserved_bytes,
            worker,
            poll,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
