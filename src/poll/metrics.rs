//! The pollers' metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::atlassian::metrics::TenantLabels;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub tenant: String,
    pub event_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabel {
    pub tenant: String,
    pub kind: &'static str,
}

#[derive(Debug, Clone)]
pub struct PollMetrics {
    /// Org events queued, by envelope type (`other` for unmapped actions).
    pub events: Family<TypeLabel, Counter>,
    /// Org events skipped because they could not be read. Non-zero means an event (perhaps a
    /// deactivation) was not acted on: its log line names it.
    pub unreadable: Family<TenantLabels, Counter>,
    /// Findings the reconciler queued. Non-zero means webhooks were missed.
    pub repaired: Family<RepairLabel, Counter>,
}

impl PollMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = PollMetrics {
            events: Family::default(),
            unreadable: Family::default(),
            repaired: Family::default(),
        };
        registry.register(
            "poll_events",
            "Organization events polled and queued, by tenant and type",
            metrics.events.clone(),
        );
        registry.register(
            "poll_events_unreadable",
            "Organization events skipped as unreadable (not acted on), by tenant",
            metrics.unreadable.clone(),
        );
        registry.register(
            "reconcile_repaired",
            "Findings the reconciler queued (non-zero: webhooks were missed), by tenant and kind",
            metrics.repaired.clone(),
        );
        metrics
    }
}
