//! The outbox's metrics: every attempt's outcome and time per endpoint, and what waits.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointOutcome {
    /// An `[[outbound]]` name, or `slack`: from config, never from input.
    pub endpoint: String,
    /// `delivered`, `retried`, `dead`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Endpoint {
    pub endpoint: String,
}

#[derive(Debug, Clone)]
pub struct OutboundMetrics {
    /// Attempts by endpoint and how they ended.
    pub attempts: Family<EndpointOutcome, Counter>,
    /// How long each attempt took, by endpoint.
    pub attempt_seconds: Family<Endpoint, Histogram>,
    /// Deliveries waiting to be sent (a retry's wait included), by endpoint.
    pub pending: Family<Endpoint, Gauge>,
    /// Age of the oldest waiting delivery, by endpoint.
    pub oldest_pending_seconds: Family<Endpoint, Gauge>,
}

impl OutboundMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let attempts = Family::<EndpointOutcome, Counter>::default();
        registry.register(
            "outbound_attempts",
            "Outbound delivery attempts by endpoint and outcome (delivered, retried, dead; waited, skipped)",
            attempts.clone(),
        );
        // 5 ms … ~80 s: a nearby receiver answers in milliseconds, a timeout takes seconds.
        let attempt_seconds = Family::<Endpoint, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 15))
        });
        registry.register(
            "outbound_attempt_seconds",
            "Time each outbound delivery attempt took, by endpoint",
            attempt_seconds.clone(),
        );
        let pending = Family::<Endpoint, Gauge>::default();
        registry.register(
            "outbound_pending",
            "Outbound deliveries waiting to be sent, by endpoint",
            pending.clone(),
        );
        let oldest_pending_seconds = Family::<Endpoint, Gauge>::default();
        registry.register(
            "outbound_oldest_pending_seconds",
            "Age of the oldest outbound delivery waiting, by endpoint",
            oldest_pending_seconds.clone(),
        );
        OutboundMetrics {
            attempts,
            attempt_seconds,
            pending,
            oldest_pending_seconds,
        }
    }
}
