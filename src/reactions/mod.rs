//! Reactions at run time: the worker's [`Process`] that routes each event to the policies that
//! handle it, lets them plan through read-only ports, and hands the plans to the [`Executor`].
//!
//! `approval.granted` events (published when a person approves a pending plan) resume exactly the
//! plan that was recorded, not a new one.
//!
//! A [`Reactor`] serves one tenant (its policies, its clients, its decisions); the
//! [`tenants::TenantReactors`] in front of them hands each event to the reactor of the tenant it
//! is bound to, and keeps one tenant's slow or throttled events from taking every slot.

pub mod approvals;
pub mod executor;
pub mod live;
pub mod own_events;
pub mod perform;
mod read_once;
pub mod tenants;

use std::sync::Arc;

use async_trait::async_trait;
use handlers::ports::{AccountStatus, ConfluenceDirectory, ErrorKind, PortError, ScimDirectory};
use handlers::{Authority, Envelope, EventType, Handler, Plan, Ports, Scheme};

use crate::atlassian::AtlassianClients;
use crate::config::Settings;
use crate::store::decisions::{self, Decision};
use crate::store::{ApprovalState, Store};
use crate::worker::{Process, ProcessError, Processed};

pub use executor::{Executor, Ran};
pub use perform::{ActionError, Perform, Performed};

/// The read side of Atlassian the policies plan with.
#[derive(Clone)]
pub struct Directories {
    pub confluence: Arc<dyn ConfluenceDirectory>,
    pub scim: Option<Arc<dyn ScimDirectory>>,
}

impl std::fmt::Debug for Directories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directories")
            .field("scim", &self.scim.is_some())
            .finish_non_exhaustive()
    }
}

impl Directories {
    pub fn ports(&self) -> Ports<'_> {
        Ports {
            confluence: self.confluence.as_ref(),
            scim: self.scim.as_deref(),
        }
    }
}

/// The configured policies and what they read: makes plans, changes nothing.
pub struct Planner {
    handlers: Vec<Arc<dyn Handler>>,
    directories: Option<Directories>,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.handlers.iter().map(|h| h.name()).collect();
        f.debug_struct("Planner")
            .field("handlers", &names)
            .finish_non_exhaustive()
    }
}

impl Planner {
    pub fn new(handlers: Vec<Arc<dyn Handler>>, directories: Option<Directories>) -> Self {
        Planner {
            handlers,
            directories,
        }
    }

    /// The `[[policies]]` of `settings` that act for `tenant`, reading through that tenant's
    /// `clients` (config validation makes sure policies come with a tenant that has them).
    pub fn from_settings(settings: &Settings, tenant: &str, clients: Option<&AtlassianClients>) -> Self {
        let shared = Arc::new(handlers::policy::PolicyContext {
            product_groups: settings.reactions.product_groups.clone(),
        });
        let handlers = settings
            .policies
            .iter()
            .filter(|config| config.applies_to_tenant(tenant))
            .map(|config| {
                Arc::new(handlers::policy::Policy::new(config.clone(), shared.clone())) as Arc<dyn Handler>
            })
            .collect();
        let directories = clients.and_then(|clients| {
            let confluence = clients.confluence().ok()?.clone();
            Some(Directories {
                confluence: Arc::new(confluence),
                scim: clients
                    .scim()
                    .ok()
                    .map(|scim| Arc::new(scim.clone()) as Arc<dyn ScimDirectory>),
            })
        });
        Planner::new(handlers, directories)
    }

    fn handlers_for(&self, event_type: &EventType) -> Vec<&Arc<dyn Handler>> {
        self.handlers.iter().filter(|h| h.handles(event_type)).collect()
    }

    /// The account's status now, read from Confluence.
    pub async fn account_status(&self, account_id: &str) -> Result<Option<AccountStatus>, PortError> {
        let directories = self.directories.as_ref().ok_or_else(|| {
            PortError::permanent("reading an account's status needs [atlassian], and none is configured")
        })?;
        directories.confluence.account_status(account_id).await
    }

    /// The dry-run setting of the policy named `handler` that handles `event_type`, as
    /// configured now (`None`: the policy says nothing, or is gone). Names are unique only among
    /// policies that may meet on one event, hence the type.
    pub fn dry_run_of(&self, handler: &str, event_type: &EventType) -> Option<bool> {
        self.handlers
            .iter()
            .find(|h| h.name() == handler && h.handles(event_type))
            .and_then(|h| h.dry_run())
    }

    /// Does any policy react to events of this type?
    pub fn handles(&self, event_type: &EventType) -> bool {
        self.handlers.iter().any(|h| h.handles(event_type))
    }

    /// The plans `envelope` produces (also `gatehouse plan`); the first policy's error, if any.
    pub async fn plans(&self, envelope: &Envelope) -> Result<Vec<Plan>, PortError> {
        self.plans_each(envelope)
            .await?
            .into_iter()
            .map(|(_, plan)| plan)
            .collect()
    }

    /// Each policy's plan for `envelope`, or why it has none, by policy name: one policy's
    /// refusal (a provisioning request for someone else's account) is not another's.
    pub async fn plans_each(
        &self,
        envelope: &Envelope,
    ) -> Result<Vec<(String, Result<Plan, PortError>)>, PortError> {
        let handlers = self.handlers_for(&envelope.event_type);
        if handlers.is_empty() {
            return Ok(Vec::new());
        }
        let directories = self.directories.as_ref().ok_or_else(|| {
            PortError::permanent("policies need [atlassian] to read from, and none is configured")
        })?;
        // Several policies on one event read the same things: once each.
        let reads = read_once::ReadOnce::new(directories.ports());
        let ports = reads.ports();
        let mut plans = Vec::new();
        for handler in handlers {
            let plan = handler.plan(envelope, &ports).await;
            plans.push((handler.name().to_owned(), plan));
        }
        Ok(plans)
    }
}

/// One tenant's processor: plan with its policies, perform with the executor.
pub struct Reactor {
    /// The tenant served: its decisions and approvals are the only ones this reactor reads.
    tenant: String,
    planner: Planner,
    executor: Executor,
    store: Store,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("tenant", &self.tenant)
            .field("planner", &self.planner)
            .finish_non_exhaustive()
    }
}

impl Reactor {
    pub fn new(tenant: &str, planner: Planner, executor: Executor, store: Store) -> Self {
        Reactor {
            tenant: tenant.to_owned(),
            planner,
            executor,
            store,
        }
    }

    /// Why an approved plan must not run any more, if so, read now rather than when the plan was
    /// made. A decision's plan yields only to a newer decision about the account that points
    /// the other way (what Atlassian shows does not count: changing it is the point). An
    /// observed deactivation's plan yields when the person is active again (reactivated while
    /// the plan waited), an observed creation's or reactivation's when the person is
    /// deactivated now; not an observed removal: a person removed from a site usually keeps an
    /// active account, which is exactly what a `user.removed` plan may go on to disable.
    async fn superseded(&self, original: &Envelope) -> Result<Option<String>, ProcessError> {
        let Some(account) = original.subject.account_id.as_deref() else {
            return Ok(None);
        };
        if original.authority == Authority::Decision {
            return self.overtaken(original).await;
        }
        let status = match original.event_type {
            EventType::UserDeactivated | EventType::UserCreated | EventType::UserReactivated => {
                self.planner.account_status(account).await?
            }
            _ => return Ok(None),
        };
        Ok(match (&original.event_type, status) {
            (EventType::UserDeactivated, Some(AccountStatus::Active)) => Some(format!(
                "account {account} is active again: the approved {} plan is superseded and does not run",
                original.event_type
            )),
            // A joiner's groups must not go to someone deactivated while the plan waited.
            (
                EventType::UserCreated | EventType::UserReactivated,
                Some(AccountStatus::Inactive | AccountStatus::Closed),
            ) => Some(format!(
                "account {account} is deactivated now: the approved {} plan is superseded and does not run",
                original.event_type
            )),
            _ => None,
        })
    }

    /// Orders a decision about an account's lifecycle among the others about that account: an
    /// older one that a newer one contradicts is superseded (why, returned) and never
    /// performed; the latest supersedes the plans of older decisions still waiting for approval
    /// that it contradicts (see [`contradicts`]).
    async fn order_decision(
        &self,
        envelope: &Envelope,
        attempt: u32,
    ) -> Result<Option<String>, ProcessError> {
        let Some(account) = decided_account(envelope) else {
            return Ok(None);
        };
        let decision = Decision {
            tenant: self.tenant.clone(),
            account_id: account.to_owned(),
            decided_at: envelope.occurred_at,
            event_id: envelope.id.to_string(),
            event_type: envelope.event_type.to_string(),
            source: envelope.source.clone(),
        };
        if let Some(newer) = self.store.record_decision(&decision).await.map_err(store_error)?
            && contradicts(&newer.event_type, &envelope.event_type)
        {
            return Ok(Some(superseded_by(&newer)));
        }
        // The latest decision about the account (or one a newer decision agrees with): older
        // decisions' plans still waiting for a person, which would now undo it, are superseded.
        for approval in self
            .store
            .pending_approvals_for(account)
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|approval| approval.tenant() == self.tenant)
        {
            let Ok(older) = serde_json::from_str::<Envelope>(&approval.envelope) else {
                continue;
            };
            let undone = decided_account(&older).is_some()
                && older.id != envelope.id
                && decisions::order(older.occurred_at, &older.id.to_string()) < decision.order()
                && contradicts(&decision.event_type, &older.event_type);
            if !undone {
                continue;
            }
            let Ok(plan) = serde_json::from_str::<Plan>(&approval.plan) else {
                tracing::warn!(approval = %approval.id, "a waiting plan cannot be read; left for a person to reject");
                continue;
            };
            let why = superseded_by(&decision);
            self.executor
                .supersede(&approval, ApprovalState::Pending, &plan, &older, attempt, &why)
                .await?;
            tracing::warn!(approval = %approval.id, %why, "a waiting plan was superseded by a newer decision");
        }
        Ok(None)
    }

    /// Whether a newer decision about the account that points the other way has been recorded
    /// since `envelope`'s (a decision) was: then it must not be performed.
    async fn overtaken(&self, envelope: &Envelope) -> Result<Option<String>, ProcessError> {
        let Some(account) = decided_account(envelope) else {
            return Ok(None);
        };
        let latest = self
            .store
            .latest_decision(&self.tenant, account)
            .await
            .map_err(store_error)?;
        Ok(latest
            .filter(|latest| latest.event_id != envelope.id.to_string())
            .filter(|latest| {
                latest.order() > decisions::order(envelope.occurred_at, &envelope.id.to_string())
            })
            .filter(|latest| contradicts(&latest.event_type, &envelope.event_type))
            .map(|latest| superseded_by(&latest)))
    }

    /// Performs an approved plan, exactly as recorded, unless what it was about changed since.
    async fn resume(&self, envelope: &Envelope, attempt: u32) -> Result<Processed, ProcessError> {
        let own_events::ApprovalGranted { approval_id } = serde_json::from_str(envelope.payload.get())
            .map_err(|_| ProcessError::permanent("approval.granted without an approval_id"))?;
        let approval = self
            .store
            .approval(&approval_id)
            .await
            .map_err(|e| ProcessError::transient(format!("store: {e}")))?
            .ok_or_else(|| ProcessError::permanent(format!("no approval {approval_id}")))?;
        match approval.state {
            // Noted as queued if its decider could not note it (it stopped right after the
            // publish, or is a process older than the note): the sweep then leaves it alone.
            ApprovalState::Approved if approval.queued_at.is_none() => {
                self.store
                    .mark_approval_queued(&approval_id)
                    .await
                    .map_err(|e| ProcessError::transient(format!("store: {e}")))?;
            }
            ApprovalState::Approved => {}
            ApprovalState::Executed | ApprovalState::Superseded => {
                return Ok(Processed::Skipped(format!(
                    "approval {approval_id} was already {}",
                    approval.state.as_str()
                )));
            }
            other => {
                return Err(ProcessError::permanent(format!(
                    "approval {approval_id} is {}, not approved",
                    other.as_str()
                )));
            }
        }
        let plan: Plan = serde_json::from_str(&approval.plan)
            .map_err(|e| ProcessError::permanent(format!("stored plan: {e}")))?;
        let original: Envelope = serde_json::from_str(&approval.envelope)
            .map_err(|e| ProcessError::permanent(format!("stored envelope: {e}")))?;
        if original.tenant_name() != self.tenant {
            return Err(ProcessError::permanent(format!(
                "approval {approval_id} is for tenant `{}`, not `{}`; refused",
                original.tenant_name(),
                self.tenant
            )));
        }
        if let Some(why) = self.superseded(&original).await? {
            self.executor
                .supersede(
                    &approval,
                    ApprovalState::Approved,
                    &plan,
                    &original,
                    attempt,
                    &why,
                )
                .await?;
            tracing::warn!(approval = %approval_id, %why, "approved plan superseded");
            return Ok(Processed::Done);
        }
        // Dry run switched on since the plan was asked for (an operator stopping every
        // action): nothing is performed. What it would do is recorded as a dry run, and the
        // event is dead-lettered: the approval stays approved, and approving it again (or
        // replaying the letter) once dry run is off performs it. Skipping it instead would
        // complete its dedupe key, and approving again would then be a duplicate.
        if self
            .planner
            .dry_run_of(&plan.handler, &original.event_type)
            .unwrap_or(self.executor.dry_run())
        {
            self.executor.record_dry_run(&plan, &original, attempt).await?;
            tracing::warn!(approval = %approval_id, "approved plan not performed: dry_run is on");
            return Err(ProcessError::permanent(format!(
                "dry_run is on: approved plan {approval_id} was not performed; approve it again \
                 with `gatehouse approvals approve` (or replay this letter) once dry_run is off"
            )));
        }
        self.executor.execute(&plan, &original, attempt).await?;
        self.store
            .mark_approval_executed(&approval_id)
            .await
            .map_err(|e| ProcessError::transient(format!("store: {e}")))?;
        Ok(Processed::Done)
    }
}

#[async_trait]
impl Process for Reactor {
    async fn process(&self, envelope: &Envelope, attempt: u32) -> Result<Processed, ProcessError> {
        if envelope.event_type == EventType::ApprovalGranted {
            // Only `gatehouse approvals approve` publishes these (the ingress renames any that
            // arrive from outside); anything else claiming to be one is refused.
            if envelope.scheme != Scheme::Internal {
                return Err(ProcessError::permanent(format!(
                    "approval.granted from {} ({}) is not gatehouse's own; refused",
                    envelope.source,
                    envelope.scheme.as_str()
                )));
            }
            return self.resume(envelope, attempt).await;
        }
        if envelope.authority == Authority::Decision
            && let Some(why) = self.order_decision(envelope, attempt).await?
        {
            return Ok(Processed::Skipped(why));
        }
        let planned = self.planner.plans_each(envelope).await?;
        if planned.is_empty() {
            return Ok(Processed::Skipped(no_policy(envelope)));
        }
        // Policies are independent (see below), in planning too; a transient failure (a read
        // that timed out) stops here, and the retry plans them all again.
        let mut refused: Option<ProcessError> = None;
        let mut plans = Vec::with_capacity(planned.len());
        for (handler, plan) in planned {
            match plan {
                Ok(plan) => plans.push(plan),
                Err(error) if error.kind == ErrorKind::Permanent => {
                    tracing::warn!(%handler, error = %error, "a policy cannot plan for this event; the others go on");
                    refused.get_or_insert(refused_by(&handler, &error));
                }
                Err(error) => return Err(error.into()),
            }
        }
        // Planning read Atlassian, which takes time: a newer decision may have come meanwhile.
        if envelope.authority == Authority::Decision
            && let Some(why) = self.overtaken(envelope).await?
        {
            return Ok(Processed::Skipped(why));
        }
        // Policies are independent: one whose plan Atlassian refused for good (a group the IdP
        // manages) must not keep the others from running, or from asking for approval (the
        // organization-wide disable of a leaver). A transient failure stops here: the retry
        // runs every plan again, and what was performed is not performed twice.
        for plan in &plans {
            match self.executor.run(plan, envelope, attempt).await {
                Ok(ran) => tracing::info!(handler = %plan.handler, outcome = ?ran, "plan handled"),
                Err(error) if error.kind == ErrorKind::Permanent => {
                    tracing::warn!(handler = %plan.handler, error = %error.message, "a policy's plan failed for good; the others go on");
                    refused.get_or_insert(refused_by(&plan.handler, &error.message));
                }
                Err(error) => return Err(error),
            }
        }
        if let Some(refused) = refused {
            return Err(refused);
        }
        Ok(Processed::Done)
    }

    fn ignores(&self, envelope: &Envelope) -> Option<String> {
        // A decision about an account is ordered among the others even when no policy acts on
        // it: an older decision arriving later must still find it newer.
        let handled = envelope.event_type == EventType::ApprovalGranted
            || self.planner.handles(&envelope.event_type)
            || decided_account(envelope).is_some();
        (!handled).then(|| no_policy(envelope))
    }
}

/// The account a decision about an account's lifecycle is about; `None` for anything else
/// (observations, other types, no account).
fn decided_account(envelope: &Envelope) -> Option<&str> {
    let lifecycle = matches!(
        envelope.event_type,
        EventType::UserCreated
            | EventType::UserDeactivated
            | EventType::UserReactivated
            | EventType::UserRemoved
    );
    envelope
        .subject
        .account_id
        .as_deref()
        .filter(|_| lifecycle && envelope.authority == Authority::Decision)
}

/// Which way a decision about an account's lifecycle points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// The person is to have access: created, reactivated.
    Joins,
    /// The person is to lose it: deactivated, removed.
    Leaves,
}

fn lifecycle(event_type: &EventType) -> Option<Lifecycle> {
    match event_type {
        EventType::UserCreated | EventType::UserReactivated => Some(Lifecycle::Joins),
        EventType::UserDeactivated | EventType::UserRemoved => Some(Lifecycle::Leaves),
        _ => None,
    }
}

/// Whether the newer decision (`newer`, a type as the store keeps it) undoes an older one of
/// type `older`. Only a decision pointing the other way does: an HR system's `user.deactivated`
/// is not cancelled by a newer `user.removed`, nor by another source's newer `user.deactivated`
/// that no policy acts on; performing it goes the way the latest decision points. A type the
/// store holds that this build does not know is taken to undo, as every newer decision once did.
fn contradicts(newer: &str, older: &EventType) -> bool {
    let newer = EventType::from_wire_name(newer);
    match (newer.as_ref().and_then(lifecycle), lifecycle(older)) {
        (Some(newer), Some(older)) => newer != older,
        _ => true,
    }
}

/// The event's outcome when policy `handler` failed for good (the first such policy names it).
fn refused_by(handler: &str, why: &dyn std::fmt::Display) -> ProcessError {
    ProcessError::permanent(format!("policy `{handler}`: {why}"))
}

fn store_error(error: crate::store::StoreError) -> ProcessError {
    ProcessError::transient(format!("store: {error}"))
}

fn superseded_by(newer: &Decision) -> String {
    format!(
        "superseded by the newer decision {} of {} (event {}, from {}): an older decision never undoes a newer one",
        newer.event_type,
        newer.decided_at.to_rfc3339(),
        newer.event_id,
        newer.source
    )
}

fn no_policy(envelope: &Envelope) -> String {
    format!("no policy handles {}", envelope.event_type)
}
