//! `[worker]`: how events are processed, with its checks.

use serde::{Deserialize, Serialize};

/// The worker role: how events are processed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Events processed at once by one process.
    pub concurrency: usize,
    /// Events of one tenant processed at once by one process, so that a tenant Atlassian
    /// throttles (its calls waiting out pauses) leaves slots for the others; its other events
    /// go back to the queue for the first rung of the ladder, not counted as attempts. Default:
    /// `concurrency` with one tenant, half of it (at least 1) with several.
    pub tenant_concurrency: Option<usize>,
    /// On shutdown, in-flight events get this long to finish; the rest go back to the queue.
    pub shutdown_grace_seconds: u64,
    /// A claim on an event's dedupe key held by a worker that stopped renewing it (crashed) is
    /// taken over after this long.
    pub claim_lease_seconds: u64,
    /// The jobs one worker process runs for all of them (the events-stream poller, the
    /// reconciler) are held with a lease renewed every third of this: a process that died
    /// holding them leaves them to another within this long.
    pub singleton_lease_seconds: u64,
    /// Completed dedupe keys are remembered this long (copies arriving later are duplicates).
    pub dedupe_retention_days: u64,
    /// How often queue depths are sampled for metrics.
    pub depth_sample_seconds: u64,
}

impl WorkerSettings {
    /// Events of one tenant at once (see [`WorkerSettings::tenant_concurrency`]) when `tenants`
    /// are served.
    pub fn effective_tenant_concurrency(&self, tenants: usize) -> usize {
        self.tenant_concurrency.unwrap_or(if tenants > 1 {
            (self.concurrency / 2).max(1)
        } else {
            self.concurrency
        })
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 8,
            tenant_concurrency: None,
            shutdown_grace_seconds: 30,
            claim_lease_seconds: 300,
            singleton_lease_seconds: 30,
            dedupe_retention_days: 30,
            depth_sample_seconds: 15,
        }
    }
}

/// Checks `[worker]` (its concurrency against the queue's prefetch too).
pub(super) fn validate(settings: &super::Settings, error: &mut impl FnMut(String, String)) {
    let queue = &settings.queue;
    let worker = &settings.worker;
    if worker.concurrency == 0 {
        error("worker.concurrency".into(), "must be at least 1".into());
    }
    if worker.concurrency > usize::from(queue.prefetch) {
        error(
            "worker.concurrency".into(),
            format!(
                "must not exceed queue.prefetch ({}): a worker cannot process more than it is handed",
                queue.prefetch
            ),
        );
    }
    if let Some(limit) = worker.tenant_concurrency
        && (limit == 0 || limit > worker.concurrency)
    {
        error(
            "worker.tenant_concurrency".into(),
            format!(
                "must be between 1 and worker.concurrency ({})",
                worker.concurrency
            ),
        );
    }
    if !(3..=3_600).contains(&worker.singleton_lease_seconds) {
        error(
            "worker.singleton_lease_seconds".into(),
            "must be between 3 and 3600 (it is renewed every third of it)".into(),
        );
    }
    if worker.claim_lease_seconds == 0 {
        error(
            "worker.claim_lease_seconds".into(),
            "must be greater than 0".into(),
        );
    }
    if worker.dedupe_retention_days == 0 {
        error("worker.dedupe_retention_days".into(), "must be at least 1".into());
    }
    if worker.depth_sample_seconds == 0 {
        error(
            "worker.depth_sample_seconds".into(),
            "must be greater than 0".into(),
        );
    }
}
