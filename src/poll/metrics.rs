//! The pollers' metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Which background job a round was of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    EventsPoller,
    Reconciler,
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
    /// When a round of the events poller last succeeded (unix seconds): a poller that fails
    /// (an expired admin key, a cursor Atlassian no longer takes) reads no deactivation at all,
    /// and says so only here and in its warnings.
    pub poll_succeeded_at: Family<TenantLabels, Gauge>,
    /// Rounds of the events poller that failed.
    pub poll_failures: Family<TenantLabels, Counter>,
    /// When a reconciler round last succeeded (unix seconds).
    pub reconcile_succeeded_at: Family<TenantLabels, Gauge>,
    /// Reconciler rounds that failed.
    pub reconcile_failures: Family<TenantLabels, Counter>,
}

impl PollMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = PollMetrics {
            events: Family::default(),
            unreadable: Family::default(),
            repaired: Family::default(),
            poll_succeeded_at: Family::default(),
            poll_failures: Family::default(),
            reconcile_succeeded_at: Family::default(),
            reconcile_failures: Family::default(),
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
        registry.register(
            "poll_last_success_timestamp_seconds",
            "When a round of the organization events poller last succeeded (unix time), by tenant",
            metrics.poll_succeeded_at.clone(),
        );
        registry.register(
            "poll_failures",
            "Rounds of the organization events poller that failed, by tenant",
            metrics.poll_failures.clone(),
        );
        registry.register(
            "reconcile_last_success_timestamp_seconds",
            "When a reconciler round last succeeded (unix time), by tenant",
            metrics.reconcile_succeeded_at.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciler rounds that failed, by tenant",
            metrics.reconcile_failures.clone(),
        );
        metrics
    }

    /// Counts a round of `job` for `tenant`: when it succeeded, or that it failed.
    pub fn round(&self, job: Job, tenant: &str, succeeded: bool) {
        let labels = TenantLabels {
            tenant: tenant.into(),
        };
        let (at, failures) = match job {
            Job::Reconciler => (&self.reconcile_succeeded_at, &self.reconcile_failures),
            Job::EventsPoller => (&self.poll_succeeded_at, &self.poll_failures),
        };
        if succeeded {
            at.get_or_create(&labels).set(chrono::Utc::now().timestamp());
        } else {
            failures.get_or_create(&labels).inc();
        }
    }
}
