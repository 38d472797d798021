//! Each gatehouse process's share of its tenant's rate budget (`tenant_per_second`): with N
//! worker processes calling the tenant, each takes 1/N. The N is counted through leases in the
//! store, one per process, renewed every few seconds: a process that starts or stops changes
//! everyone's share within one renewal, and one that dies stops counting when its lease runs out.
//! Meanwhile the sum may briefly exceed the budget (by one process's share, for a few seconds),
//! which the 429 handling absorbs.
//!
//! Several processes together take `SHARED` of the budget, not all of it: each paces itself
//! exactly, but their calls reach Atlassian with independent timing jitter, and N pacers adding
//! up to exactly the limit drift into it now and then (measured: 10 × 429 in 800 calls with four
//! workers at 100 %, none at 95 %; `gatehouse-bench scale`). One process alone takes it all.

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
/// What several processes take of the budget together (see the module's documentation).
const SHARED: f64 = 0.95;

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
                let share = share_of(processes);
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

/// One process's share of the budget when `processes` share it.
fn share_of(processes: u64) -> f64 {
    match processes {
        0 | 1 => 1.0,
        n => SHARED / n as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::share_of;

    #[test]
    fn alone_a_process_takes_the_budget_and_several_leave_slack_together() {
        assert_eq!(share_of(0), 1.0);
        assert_eq!(share_of(1), 1.0);
        for n in 2..=8 {
            let together = share_of(n) * n as f64;
            assert!((together - 0.95).abs() < 1e-9, "{n}: {together}");
        }
    }
}
