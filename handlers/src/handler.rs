//! The [`Handler`] trait: turn one event into a [`Plan`], reading Atlassian through the
//! read-only [`Ports`] and changing nothing.

use async_trait::async_trait;

use crate::event::{Envelope, EventType};
use crate::plan::Plan;
use crate::ports::{ConfluenceDirectory, PortError, ScimDirectory};

/// What a handler may read.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub confluence: &'a dyn ConfluenceDirectory,
    /// Absent when no SCIM directory is configured.
    pub scim: Option<&'a dyn ScimDirectory>,
}

impl std::fmt::Debug for Ports<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("scim", &self.scim.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Ports<'a> {
    /// The SCIM directory, or a permanent error naming what needs it.
    pub fn scim(&self, needed_for: &str) -> Result<&'a dyn ScimDirectory, PortError> {
        self.scim.ok_or_else(|| {
            PortError::permanent(format!(
                "{needed_for} needs a SCIM directory, and none is configured"
            ))
        })
    }
}

/// Reacts to events by planning. Pure: reads through `ports`, returns data.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Names the handler in plans, audit records and approvals.
    fn name(&self) -> &str;

    /// Does this handler react to events of this type?
    fn handles(&self, event_type: &EventType) -> bool;

    /// The plan for `envelope`. Errors are classified transient (retry) or permanent.
    async fn plan(&self, envelope: &Envelope, ports: &Ports<'_>) -> Result<Plan, PortError>;

    /// Whether this handler's plans are dry runs whatever `[reactions] dry_run` says (`Some`),
    /// or as it says (`None`). Read again when an approved plan is about to run.
    fn dry_run(&self) -> Option<bool> {
        None
    }
}
