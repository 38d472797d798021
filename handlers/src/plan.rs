//! Plans: what a handler decided should happen, as data.
//!
//! A handler never calls Atlassian itself; it returns a [`Plan`] of [`PlannedAction`]s. The
//! runtime's executor performs them, which is where dry-run, approvals, idempotency, rate limits
//! and the audit trail live, once for every handler. Every action is idempotent and converges:
//! performing it when the desired state already holds is a success.

use std::fmt;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// How much harm an action can do if it is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Danger {
    /// Reversible and confined to Confluence or a notice.
    Low,
    /// Organization-wide: the account loses Jira, Confluence and every other product.
    High,
}

/// Names a SCIM user that may not exist yet when the plan is made (it is created by an earlier
/// action of the same plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScimUserRef {
    Id(String),
    ExternalId(String),
    UserName(String),
}

impl fmt::Display for ScimUserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScimUserRef::Id(id) => write!(f, "scim-user:{id}"),
            ScimUserRef::ExternalId(id) => write!(f, "scim-user:externalId={id}"),
            ScimUserRef::UserName(name) => write!(f, "scim-user:userName={name}"),
        }
    }
}

/// A notice for other automations: published as a `policy.violation` envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// e.g. `protected_group_intrusion`, `group_naming`.
    pub rule: String,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::GroupRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_account_id: Option<String>,
}

/// One change, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Remove a Confluence group membership (converges: a non-member is a success).
    ConfluenceRemoveMember {
        group_id: String,
        group_name: String,
        account_id: String,
    },
    /// Add a Confluence group membership (converges: an existing member is a success).
    ConfluenceAddMember {
        group_id: String,
        group_name: String,
        account_id: String,
    },
    /// Deactivate the SCIM user (organization-wide).
    ScimDeactivate {
        user_id: String,
        account_id: Option<String>,
    },
    /// Create the SCIM user (an existing one is found, not duplicated).
    ScimCreateUser {
        user_name: String,
        external_id: Option<String>,
        display_name: Option<String>,
        email: Option<String>,
    },
    /// Add the SCIM user to a SCIM group.
    ScimAddGroupMember {
        group_id: String,
        group_name: String,
        user: ScimUserRef,
    },
    /// Disable the managed account (organization-wide, user management API).
    LifecycleDisable { account_id: String },
    /// Publish a `policy.violation` envelope for other automations.
    Notify { violation: Violation },
}

impl Action {
    /// The action type as audit records and approvals name it, e.g. `confluence.remove_member`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Action::ConfluenceRemoveMember { .. } => "confluence.remove_member",
            Action::ConfluenceAddMember { .. } => "confluence.add_member",
            Action::ScimDeactivate { .. } => "scim.deactivate",
            Action::ScimCreateUser { .. } => "scim.create_user",
            Action::ScimAddGroupMember { .. } => "scim.add_group_member",
            Action::LifecycleDisable { .. } => "lifecycle.disable",
            Action::Notify { .. } => "notify",
        }
    }

    /// What the action acts on, e.g. `group:<id>/account:<id>`.
    pub fn target(&self) -> String {
        match self {
            Action::ConfluenceRemoveMember {
                group_id, account_id, ..
            }
            | Action::ConfluenceAddMember {
                group_id, account_id, ..
            } => {
                format!("group:{group_id}/account:{account_id}")
            }
            Action::ScimDeactivate { user_id, .. } => format!("scim-user:{user_id}"),
            Action::ScimCreateUser {
                user_name,
                external_id,
                ..
            } => match external_id {
                Some(id) => format!("scim-user:externalId={id}"),
                None => format!("scim-user:userName={user_name}"),
            },
            Action::ScimAddGroupMember { group_id, user, .. } => format!("scim-group:{group_id}/{user}"),
            Action::LifecycleDisable { account_id } => format!("account:{account_id}"),
            Action::Notify { violation } => format!("violation:{}", violation.rule),
        }
    }

    /// Organization-wide actions cut every product, not only Confluence.
    pub fn org_wide(&self) -> bool {
        matches!(
            self,
            Action::ScimDeactivate { .. } | Action::LifecycleDisable { .. }
        )
    }

    pub fn danger(&self) -> Danger {
        if self.org_wide() {
            Danger::High
        } else {
            Danger::Low
        }
    }

    /// The account the action is about, for audit queries by person.
    pub fn account_id(&self) -> Option<&str> {
        match self {
            Action::ConfluenceRemoveMember { account_id, .. }
            | Action::ConfluenceAddMember { account_id, .. }
            | Action::LifecycleDisable { account_id } => Some(account_id),
            Action::ScimDeactivate { account_id, .. } => account_id.as_deref(),
            Action::Notify { violation } => violation.account_id.as_deref(),
            Action::ScimCreateUser { .. } | Action::ScimAddGroupMember { .. } => None,
        }
    }
}

/// An action with why it is planned and how it is recognized when performed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub action: Action,
    /// Why, in words an auditor reads.
    pub reason: String,
    /// `{event id}:{action type}:{target}`: the executor performs an action with a given key at
    /// most once, so redeliveries and retries never repeat it.
    pub idempotency_key: String,
    pub danger: Danger,
    /// A person must approve before this (and so the whole plan) is performed.
    #[serde(default)]
    pub needs_approval: bool,
}

impl PlannedAction {
    pub fn new(event_id: Ulid, action: Action, reason: impl Into<String>) -> Self {
        PlannedAction {
            idempotency_key: format!("{event_id}:{}:{}", action.type_name(), action.target()),
            danger: action.danger(),
            action,
            reason: reason.into(),
            needs_approval: false,
        }
    }
}

/// What one handler decided for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The handler (policy) that made it.
    pub handler: String,
    pub event_id: Ulid,
    pub actions: Vec<PlannedAction>,
    /// What a reader must know even though nothing fails (e.g. a group not mapped to the
    /// Confluence product: membership alone grants no access).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Why the plan is empty on purpose (e.g. "the account is active again"), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The policy's own dry-run setting, when it has one (else the global one applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

impl Plan {
    pub fn new(handler: impl Into<String>, event_id: Ulid) -> Self {
        Plan {
            handler: handler.into(),
            event_id,
            actions: Vec::new(),
            warnings: Vec::new(),
            note: None,
            dry_run: None,
        }
    }

    /// Adds an action unless the same one (same key) is already planned.
    pub fn push(&mut self, action: Action, reason: impl Into<String>) {
        let planned = PlannedAction::new(self.event_id, action, reason);
        if !self
            .actions
            .iter()
            .any(|a| a.idempotency_key == planned.idempotency_key)
        {
            self.actions.push(planned);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Whether any action waits for a person's approval (then the whole plan does).
    pub fn needs_approval(&self) -> bool {
        self.actions.iter().any(|a| a.needs_approval)
    }

    /// The most dangerous action's level.
    pub fn danger(&self) -> Danger {
        self.actions.iter().map(|a| a.danger).max().unwrap_or(Danger::Low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_duplicates_collapse() {
        let event = Ulid::from_string("01J0000000000000000000000A").unwrap();
        let mut plan = Plan::new("deprovision", event);
        let remove = Action::ConfluenceRemoveMember {
            group_id: "g1".into(),
            group_name: "eng".into(),
            account_id: "a1".into(),
        };
        plan.push(remove.clone(), "deactivated");
        plan.push(remove, "again");
        assert_eq!(plan.actions.len(), 1);
        assert_eq!(
            plan.actions[0].idempotency_key,
            "01J0000000000000000000000A:confluence.remove_member:group:g1/account:a1"
        );
        assert_eq!(plan.danger(), Danger::Low);
        plan.push(
            Action::LifecycleDisable {
                account_id: "a1".into(),
            },
            "opt-in",
        );
        assert_eq!(plan.danger(), Danger::High);
        assert!(plan.actions[1].action.org_wide());
        let json = serde_json::to_value(&plan.actions[1].action).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "lifecycle_disable", "account_id": "a1"})
        );
    }
}
