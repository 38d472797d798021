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

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub use metrics::PollMetrics;

/// Runs `job` every `interval` while this process holds the lease `name`, one process at a time
/// among all that share the store. The holder renews the lease every third of `lease`, while the
/// job runs too, so however long the interval or the job, a holder that died (stopped renewing)
/// leaves the job to another process within `lease`; the others look every third of it, and the
/// one that takes over runs the job at once. `job` returns true to run again at once (more work
/// is waiting).
pub async fn run_singleton<F, Fut>(
    store: Store,
    name: &str,
    interval: Duration,
    lease: Duration,
    shutdown: CancellationToken,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let owner = lease_owner(name);
    let look_every = renewal_interval(lease);
    // When the job is due next while this process holds the lease.
    let mut due = Instant::now();
    loop {
        let holding = match store.acquire_lease(name, &owner, lease).await {
            Ok(holding) => holding,
            Err(error) => {
                tracing::warn!(%error, job = name, "cannot take or renew the lease; skipping this round");
                false
            }
        };
        let mut wait = look_every;
        if holding {
            if Instant::now() >= due {
                let again = run_renewing(&store, name, &owner, lease, look_every, job()).await;
                if shutdown.is_cancelled() {
                    break;
                }
                if again {
                    continue;
                }
                due = Instant::now() + interval;
            }
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        } else {
            // Another process runs it; taken over later, it runs at once.
            due = Instant::now();
        }
        if !crate::pacing::sleep_unless(wait, &shutdown).await {
            break;
        }
    }
    let _ = store.release_lease(name, &owner).await;
}

/// Runs `job` while holding the lease `name` (renewed every third of `lease` meanwhile, released
/// at the end), when no other holder has it: `Ok(None)` when another holds it, and `job` is not
/// run. For work that must not run twice at once whoever starts it (a background round and one
/// an operator started from the CLI), unlike [`run_singleton`]'s lease, which its holder keeps
/// between rounds.
pub async fn with_lease<T>(
    store: &Store,
    name: &str,
    lease: Duration,
    job: impl std::future::Future<Output = T>,
) -> Result<Option<T>, crate::store::StoreError> {
    let owner = lease_owner(name);
    if !store.acquire_lease(name, &owner, lease).await? {
        return Ok(None);
    }
    let every = renewal_interval(lease);
    // A job that panics, or a process stopped meanwhile, leaves the lease to run out by itself.
    let result = run_renewing(store, name, &owner, lease, every, job).await;
    if let Err(error) = store.release_lease(name, &owner).await {
        tracing::warn!(%error, job = name, "cannot release the lease; it runs out by itself");
    }
    Ok(Some(result))
}

/// This process's name as a holder of the lease `name` (each holding its own).
fn lease_owner(name: &str) -> String {
    format!("{name}-{}", ulid::Ulid::generate())
}

/// How often a lease of `lease` is renewed (and looked at by those waiting for it): every third
/// of it, so a holder survives two missed renewals.
fn renewal_interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

/// Runs `job` to its end, renewing the lease every `every` meanwhile. Losing it (this process
/// stalled past the lease) does not stop the job: the work it does is deduplicated downstream;
/// the warning says two ran at once.
async fn run_renewing<T>(
    store: &Store,
    name: &str,
    owner: &str,
    lease: Duration,
    every: Duration,
    job: impl std::future::Future<Output = T>,
) -> T {
    let renew = async {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match store.acquire_lease(name, owner, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        job = name,
                        "lost the lease while running (stalled past it); another process may run the job too"
                    )
                }
                Err(error) => tracing::warn!(%error, job = name, "cannot renew the lease"),
            }
        }
    };
    // The renewal does not end by itself: the job's end is the way out.
    tokio::pin!(job);
    tokio::pin!(renew);
    let mut renewing = true;
    loop {
        tokio::select! {
            value = &mut job => return value,
            () = &mut renew, if renewing => renewing = false,
        }
    }
}
