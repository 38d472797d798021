//! Each gatehouse process's share of its tenant's rate budget (`tenant_per_second`): with N
//! worker processes calling the tenant, each takes 1/N. The N is counted through leases in the
//! store, one per process, renewed every few seconds: a process that starts or stops changes
//! everyone's share within one renewal, and one that dies stops counting when its lease runs out.
//! Meanwhile the sum may briefly exceed the budget (by one process's share, for a few seconds),
//! which the 429 handling absorbs.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::limiter::RateLimiter;
use super::metrics::{AtlassianMetrics, TenantLabels};
use crate::store::Store;

/// How often a process renews its lease and recounts the others.
const RENEW: Duration = Duration::from_secs(5);
/// A process that stopped renewing stops counting after this.
const LEASE: Duration = Duration::from_secs(15);

/// Keeps this process's share of `site`'s budget up to date until `stop`.
pub async fn keep_share(
    limiter: Arc<RateLimiter>,
    metrics: AtlassianMetrics,
    store: Store,
    site: Arc<str>,
    stop: CancellationToken,
) {
    let prefix = format!("rate-share:{site}:");
    let owner = ulid::Ulid::generate().to_string();
    let name = format!("{prefix}{owner}");
    let mut tick = tokio::time::interval(RENEW);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(error) = store.acquire_lease(&name, &owner, LEASE).await {
            tracing::warn!(%error, "cannot renew this process's share of the tenant's rate budget");
            continue;
        }
        match store.live_leases(&prefix).await {
            Ok(processes) => {
                let share = 1.0 / processes.max(1) as f64;
                metrics
                    .budget_share
                    .get_or_create(&TenantLabels { tenant: site.clone() })
                    .set(share);
                limiter
                    .state()
                    .set_share(&site, share, tokio::time::Instant::now());
            }
            Err(error) => {
                tracing::warn!(%error, "cannot count the processes sharing the tenant's rate budget")
            }
        }
    }
    let _ = store.release_lease(&name, &owner).await;
}
