//! Reactions at run time: the worker's [`Process`] that routes each event to the policies that
//! handle it, lets them plan through read-only ports, and hands the plans to the [`Executor`].
//!
//! `approval.granted` events (published when a person approves a pending plan) resume exactly the
//! plan that was recorded, not a new one.

pub mod approvals;
pub mod executor;
pub mod perform;

use std::sync::Arc;

use async_trait::async_trait;
use handlers::ports::{ConfluenceDirectory, ErrorKind, PortError, ScimDirectory};
use handlers::{Envelope, EventType, Handler, Plan, Ports};

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

fn from_port(error: PortError) -> ProcessError {
    match error.kind {
        ErrorKind::Transient => ProcessError::transient(error.message),
        ErrorKind::Permanent => ProcessError::permanent(error.message),
    }
}

/// The worker's processor when policies are configured.
pub struct Reactor {
    handlers: Vec<Arc<dyn Handler>>,
    directories: Directories,
    executor: Executor,
    store: Store,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.handlers.iter().map(|h| h.name()).collect();
        f.debug_struct("Reactor")
            .field("handlers", &names)
            .finish_non_exhaustive()
    }
}

impl Reactor {
    pub fn new(
        handlers: Vec<Arc<dyn Handler>>,
        directories: Directories,
        executor: Executor,
        store: Store,
    ) -> Self {
        Reactor {
            handlers,
            directories,
            executor,
            store,
        }
    }

    /// The plans `envelope` produces, changing nothing (also `gatehouse plan`).
    pub async fn plans(&self, envelope: &Envelope) -> Result<Vec<Plan>, PortError> {
        let ports = self.directories.ports();
        let mut plans = Vec::new();
        for handler in self.handlers.iter().filter(|h| h.handles(&envelope.event_type)) {
            plans.push(handler.plan(envelope, &ports).await?);
        }
        Ok(plans)
    }

    /// Performs an approved plan, exactly as recorded.
    async fn resume(&self, envelope: &Envelope, attempt: u32) -> Result<Processed, ProcessError> {
        let approval_id = serde_json::from_str::<serde_json::Value>(envelope.payload.get())
            .ok()
            .and_then(|p| p["approval_id"].as_str().map(str::to_owned))
            .ok_or_else(|| ProcessError::permanent("approval.granted without an approval_id"))?;
        let approval = self
            .store
            .approval(&approval_id)
            .await
            .map_err(|e| ProcessError::transient(format!("store: {e}")))?
            .ok_or_else(|| ProcessError::permanent(format!("no approval {approval_id}")))?;
        match approval.state {
            ApprovalState::Approved => {}
            ApprovalState::Executed => {
                return Ok(Processed::Skipped(format!(
                    "approval {approval_id} was already executed"
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
        self.executor.execute(&plan, &original, attempt).await?;
        self.store
            .decide_approval(
                &approval_id,
                ApprovalState::Approved,
                ApprovalState::Executed,
                None,
                None,
            )
            .await
            .map_err(|e| ProcessError::transient(format!("store: {e}")))?;
        Ok(Processed::Done)
    }
}

#[async_trait]
impl Process for Reactor {
    async fn process(&self, envelope: &Envelope, attempt: u32) -> Result<Processed, ProcessError> {
        if envelope.event_type == EventType::ApprovalGranted {
            return self.resume(envelope, attempt).await;
        }
        let handlers: Vec<&Arc<dyn Handler>> = self
            .handlers
            .iter()
            .filter(|h| h.handles(&envelope.event_type))
            .collect();
        if handlers.is_empty() {
            return Ok(Processed::Skipped(format!(
                "no policy handles {}",
                envelope.event_type
            )));
        }
        let ports = self.directories.ports();
        for handler in handlers {
            let plan = handler.plan(envelope, &ports).await.map_err(from_port)?;
            let ran = self.executor.run(&plan, envelope, attempt).await?;
            tracing::info!(handler = handler.name(), outcome = ?ran, "plan handled");
        }
        Ok(Processed::Done)
    }
}
