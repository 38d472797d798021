//! The reactions gatehouse ships, configured by `[[policies]]` entries.
//!
//! A [`Policy`] is one entry: the events it reacts to, the capabilities it uses, their settings.
//! Planning is split by concern, one file each: `deprovision` (a person leaves),
//! `onboarding` (default groups), `provision` (SCIM provisioning requests),
//! `guard` (protected groups and group naming).

pub mod config;
mod deprovision;
mod freshness;
mod guard;
mod onboarding;
mod provision;

use std::sync::Arc;

use async_trait::async_trait;

use crate::event::{Envelope, EventType};
use crate::handler::{Handler, Ports};
use crate::plan::Plan;
use crate::ports::PortError;

pub use config::{ApprovalMode, ApprovalRule, Capability, NamingRule, PolicyConfig, ProtectedGroup};

/// Settings every policy shares.
#[derive(Debug, Clone, Default)]
pub struct PolicyContext {
    /// Group names mapped to the Confluence product in Atlassian Admin. Membership of any other
    /// group grants no access, which the plan warns about.
    pub product_groups: Vec<String>,
}

/// One configured policy.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    name: String,
    shared: Arc<PolicyContext>,
}

impl Policy {
    pub fn new(config: PolicyConfig, shared: Arc<PolicyContext>) -> Self {
        Policy {
            name: config.display_name(),
            config,
            shared,
        }
    }

    fn is_product_group(&self, name: &str) -> bool {
        self.shared.product_groups.iter().any(|g| g == name)
    }

    /// The warning for a group whose membership grants no Confluence access.
    fn unmapped_warning(&self, group: &str) -> Option<String> {
        (!self.is_product_group(group)).then(|| {
            format!(
                "group `{group}` is not listed as mapped to the Confluence product (reactions.product_groups): membership alone does not let the person log in"
            )
        })
    }
}

/// The account an event is about, or a permanent error (retrying will not add one).
fn account_of(envelope: &Envelope) -> Result<&str, PortError> {
    envelope
        .subject
        .account_id
        .as_deref()
        .ok_or_else(|| PortError::permanent(format!("{} event has no account id", envelope.event_type)))
}

#[async_trait]
impl Handler for Policy {
    fn name(&self) -> &str {
        &self.name
    }

    fn handles(&self, event_type: &EventType) -> bool {
        self.config.on.contains(event_type)
    }

    fn dry_run(&self) -> Option<bool> {
        self.config.dry_run
    }

    async fn plan(&self, envelope: &Envelope, ports: &Ports<'_>) -> Result<Plan, PortError> {
        let mut plan = Plan::new(&self.name, envelope.id);
        plan.dry_run = self.config.dry_run;
        if !self.config.accepts_source(&envelope.source) {
            plan.note = Some(format!(
                "policy {} does not act on events from source `{}` (its sources: {})",
                self.name,
                envelope.source,
                self.config.sources.join(", ")
            ));
            return Ok(plan);
        }
        if !freshness::is_current(envelope, ports, &mut plan).await? {
            return Ok(plan);
        }
        let capabilities = &self.config.actions;
        for capability in capabilities {
            if !capability.events().contains(&envelope.event_type) {
                continue;
            }
            match capability {
                Capability::RemoveFromAllGroups => {
                    deprovision::remove_from_all_groups(self, envelope, ports, &mut plan).await?
                }
                Capability::ScimDeactivate => {
                    deprovision::scim_deactivate(envelope, ports, &mut plan).await?
                }
                Capability::LifecycleDisable => deprovision::lifecycle_disable(envelope, &mut plan)?,
                Capability::AddToGroups => {
                    onboarding::add_to_groups(self, envelope, ports, &mut plan).await?
                }
                Capability::ScimProvision => provision::provision(self, envelope, ports, &mut plan).await?,
                Capability::RevertProtectedMembership => {
                    guard::revert_membership(self, envelope, ports, &mut plan).await?
                }
                Capability::GroupChanges => guard::group_changes(self, envelope, &mut plan),
            }
        }
        // An action its capability already sent to a person (see `guard`) stays with them.
        for planned in &mut plan.actions {
            planned.needs_approval |= self.config.requires_approval(&planned.action);
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests;
