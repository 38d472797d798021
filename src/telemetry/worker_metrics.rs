//! The worker's metrics: attempts by tenant and outcome, processing time, queue depths and age.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The tenant the event is bound to (`unknown` for a message that is no envelope).
    pub tenant: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: &'static str,
}

#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// By tenant and outcome: `ok`, `skipped`, `duplicate`, `retried`, `dead_lettered`, `busy`,
    /// `account_busy` (another event about the account was being acted on), `postponed` (the
    /// tenant's slots were full), `released`.
    pub attempts: Family<OutcomeLabel, Counter>,
    /// Deliveries that found their account held by another and waited for it in the worker
    /// (those that waited in vain are `account_busy` attempts as well).
    pub account_waits: Counter,
    /// From delivery to settlement.
    pub processing_seconds: Histogram,
    /// `work`, `retry`, `dead`.
    pub queue_depth: Family<QueueLabel, Gauge>,
    /// Age of the oldest message waiting for a worker (0 when none is, or the backend cannot tell
    /// and the work queue is empty); on RabbitMQ, the age of the latest delivery at delivery.
    pub oldest_message_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The backend reports the oldest waiting message itself (the embedded queue): the
    /// per-delivery stand-in must not overwrite its sample.
    pub oldest_age_sampled: Arc<AtomicBool>,
}

impl WorkerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = WorkerMetrics {
            attempts: Family::default(),
            account_waits: Counter::default(),
            // 1 ms … ~65 s: a log line is instant, a plan under a rate limit takes a while.
            processing_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            queue_depth: Family::default(),
            oldest_message_age_seconds: Gauge::default(),
            oldest_age_sampled: Arc::default(),
        };
        registry.register(
            "worker_attempts",
            "Processing attempts by tenant and outcome",
            metrics.attempts.clone(),
        );
        registry.register(
            "worker_account_waits",
            "Deliveries that waited for another event about the same account to finish",
            metrics.account_waits.clone(),
        );
        registry.register(
            "worker_processing_seconds",
            "Time from delivery to settlement of an event",
            metrics.processing_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages waiting, by queue (work, retry, dead)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_message_age_seconds",
            "Age of the oldest message waiting for a worker",
            metrics.oldest_message_age_seconds.clone(),
        );
        metrics
    }

    pub fn outcome(&self, tenant: &str, outcome: &'static str) {
        self.attempts
            .get_or_create(&OutcomeLabel {
                tenant: tenant.to_owned(),
                outcome,
            })
            .inc();
    }
}
