//! The worker's processor across tenants: each event goes to the reactor of the tenant it is
//! bound to (its clients, its policies, its decisions), and no tenant holds more than its share
//! of the worker's slots.
//!
//! The binding is the envelope's `tenant.name`, set by gatehouse from how the event arrived
//! (never from the body). An envelope bound to a tenant this deployment does not serve is
//! dead-lettered with the reason and nothing is called: acting on another tenant's behalf is
//! exactly what the binding exists to prevent.
//!
//! Why a share of the slots: a tenant Atlassian throttles (a quota spent, a 429 storm) makes its
//! calls wait out pauses, up to `retry.max_wait_ms` each. Without a bound its events would fill
//! every slot and the prefetch behind them, and every other tenant would wait too. With one, the
//! throttled tenant's extra events go back to the queue (the first rung of the ladder, no
//! attempt counted) and the other tenants' events keep the remaining slots.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use handlers::Envelope;
use tokio::sync::Semaphore;

use crate::worker::{Admission, Process, ProcessError, Processed};

/// One tenant's reactor and its slots.
struct Served {
    reactor: Arc<dyn Process>,
    slots: Arc<Semaphore>,
    limit: usize,
}

/// Routes events to their tenant's reactor.
pub struct TenantReactors {
    tenants: HashMap<String, Served>,
}

impl std::fmt::Debug for TenantReactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("TenantReactors")
            .field("tenants", &names)
            .finish_non_exhaustive()
    }
}

impl TenantReactors {
    /// Routes to `reactors` (tenant name → its reactor), each tenant holding at most
    /// `tenant_concurrency` events at once.
    pub fn new(reactors: Vec<(String, Arc<dyn Process>)>, tenant_concurrency: usize) -> Self {
        let limit = tenant_concurrency.max(1);
        let tenants = reactors
            .into_iter()
            .map(|(name, reactor)| {
                let served = Served {
                    reactor,
                    slots: Arc::new(Semaphore::new(limit)),
                    limit,
                };
                (name, served)
            })
            .collect();
        TenantReactors { tenants }
    }

    fn served(&self, envelope: &Envelope) -> Result<&Served, ProcessError> {
        let tenant = envelope.tenant_name();
        self.tenants.get(tenant).ok_or_else(|| {
            let mut have: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
            have.sort_unstable();
            ProcessError::permanent(format!(
                "the event is bound to tenant `{tenant}`, which this deployment does not serve \
                 (serving: {}); nothing was called",
                have.join(", ")
            ))
        })
    }
}

#[async_trait]
impl Process for TenantReactors {
    async fn process(&self, envelope: &Envelope, attempt: u32) -> Result<Processed, ProcessError> {
        self.served(envelope)?.reactor.process(envelope, attempt).await
    }

    fn ignores(&self, envelope: &Envelope) -> Option<String> {
        // An unknown tenant is not ignored: it is processed, and dead-lettered with the reason.
        self.served(envelope).ok()?.reactor.ignores(envelope)
    }

    fn admit(&self, envelope: &Envelope) -> Admission {
        let Ok(served) = self.served(envelope) else {
            return Admission::Now(None);
        };
        match served.slots.clone().try_acquire_owned() {
            Ok(permit) => Admission::Now(Some(permit)),
            Err(_) => Admission::Later {
                why: format!(
                    "tenant `{}` already has {} events in progress here (worker.tenant_concurrency)",
                    envelope.tenant_name(),
                    served.limit
                ),
                after: std::time::Duration::ZERO,
            },
        }
    }
}
