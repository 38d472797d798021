//! Filling the gaps Atlassian's webhooks leave: Confluence Cloud sends no `user_deactivated`, no
//! membership events at all, and never retries a lost delivery.
//!
//! - [`org_events`]: polls the organization events-stream with its cursor and queues every event
//!   (scheme `poll`, dedupe key = the org event id, so a webhook and a poll of one fact are one
//!   event);
//! - [`reconcile`]: compares the real state with what should be (deactivated accounts holding
//!   memberships, protected groups' members against the last snapshot) and queues what it finds
//!   (scheme `reconcile`).
//!
//! Both are singletons across processes: a lease in the store says which worker runs them.

pub mod mapping;
pub mod metrics;
pub mod org_events;
pub mod reconcile;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub use metrics::PollMetrics;

/// Runs `job` every `interval` while this process holds the lease `name` (taken over from a
/// process that stopped renewing it after three intervals). `job` returns true to run again at
/// once (more work is waiting).
pub async fn run_singleton<F, Fut>(
    store: Store,
    name: &str,
    interval: Duration,
    shutdown: CancellationToken,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let owner = format!("{name}-{}", ulid::Ulid::generate());
    let ttl = (interval * 3).max(Duration::from_secs(30));
    loop {
        let again = match store.acquire_lease(name, &owner, ttl).await {
            Ok(true) => job().await,
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(%error, job = name, "cannot take the lease; skipping this round");
                false
            }
        };
        if again && !shutdown.is_cancelled() {
            continue;
        }
        if !crate::pacing::sleep_unless(interval, &shutdown).await {
            break;
        }
    }
    let _ = store.release_lease(name, &owner).await;
}
