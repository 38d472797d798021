//! What a `[[policies]]` entry says, and the checks that make a bad one a start-up error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::EventType;
use crate::plan::Action;

/// Accepts one value or a list (`on = "user.removed"` or `on = ["user.deactivated", …]`), with
/// the element's own error message when one is wrong.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OneOrMany<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Vec<T>, E> {
            use serde::de::IntoDeserializer;
            T::deserialize(value.into_deserializer()).map(|one| vec![one])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }

    deserializer.deserialize_any(OneOrMany(std::marker::PhantomData))
}

/// What a policy can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Capability {
    /// Remove the account from every Confluence group (except `keep_groups`).
    #[serde(rename = "confluence.remove_from_all_groups")]
    RemoveFromAllGroups,
    /// Add the account to `groups`.
    #[serde(rename = "confluence.add_to_groups")]
    AddToGroups,
    /// Deactivate the SCIM user: organization-wide, needs `allow_org_wide = true`.
    #[serde(rename = "scim.deactivate")]
    ScimDeactivate,
    /// Disable the managed account: organization-wide, needs `allow_org_wide = true`.
    #[serde(rename = "lifecycle.disable")]
    LifecycleDisable,
    /// Find or create the SCIM user of a provisioning request and add it to its groups.
    #[serde(rename = "scim.provision")]
    ScimProvision,
    /// Undo a membership of a protected group that is not allowed, and notify.
    #[serde(rename = "confluence.revert_protected_membership")]
    RevertProtectedMembership,
    /// Check group names (created) and protected groups (removed), and notify.
    #[serde(rename = "notify.group_changes")]
    GroupChanges,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::RemoveFromAllGroups => "confluence.remove_from_all_groups",
            Capability::AddToGroups => "confluence.add_to_groups",
            Capability::ScimDeactivate => "scim.deactivate",
            Capability::LifecycleDisable => "lifecycle.disable",
            Capability::ScimProvision => "scim.provision",
            Capability::RevertProtectedMembership => "confluence.revert_protected_membership",
            Capability::GroupChanges => "notify.group_changes",
        }
    }

    /// The event types it makes sense for.
    pub fn events(self) -> &'static [EventType] {
        match self {
            Capability::RemoveFromAllGroups | Capability::ScimDeactivate | Capability::LifecycleDisable => {
                &[EventType::UserDeactivated, EventType::UserRemoved]
            }
            Capability::AddToGroups => &[EventType::UserCreated, EventType::UserReactivated],
            Capability::ScimProvision => &[EventType::UserProvisionRequested],
            Capability::RevertProtectedMembership => &[EventType::GroupMemberAdded],
            Capability::GroupChanges => &[EventType::GroupCreated, EventType::GroupRemoved],
        }
    }

    pub fn org_wide(self) -> bool {
        matches!(self, Capability::ScimDeactivate | Capability::LifecycleDisable)
    }

    pub fn needs_scim(self) -> bool {
        matches!(self, Capability::ScimDeactivate | Capability::ScimProvision)
    }
}

/// A group only some accounts may be in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedGroup {
    /// The exact (case-sensitive) group name.
    pub name: String,
    /// Accounts allowed as members.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Accounts allowed to add anyone (e.g. the admins who own the group).
    #[serde(default)]
    pub allowed_actors: Vec<String>,
}

/// What a new group's name must look like.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamingRule {
    /// The name must start with one of these (any, when empty).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// The name must not contain any of these.
    #[serde(default)]
    pub forbidden: Vec<String>,
    /// Only lowercase letters, digits, `-` and `_`.
    #[serde(default)]
    pub lowercase: bool,
    #[serde(default)]
    pub max_length: Option<usize>,
}

impl NamingRule {
    /// Every way `name` breaks the rule.
    pub fn check(&self, name: &str) -> Vec<String> {
        let mut broken = Vec::new();
        if !self.prefixes.is_empty() && !self.prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            broken.push(format!("does not start with one of {}", self.prefixes.join(", ")));
        }
        for word in &self.forbidden {
            if name.contains(word.as_str()) {
                broken.push(format!("contains `{word}`"));
            }
        }
        if self.lowercase
            && !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            broken.push("is not lowercase letters, digits, `-` and `_`".to_owned());
        }
        if let Some(max) = self.max_length
            && name.chars().count() > max
        {
            broken.push(format!("is longer than {max} characters"));
        }
        broken
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    Required,
    None,
}

/// Which actions wait for a person: one mode for all, or one per action type
/// (`{ "scim.deactivate" = "required", "confluence.remove_member" = "none" }`). Unlisted action
/// types: organization-wide ones require approval, the rest do not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApprovalRule {
    All(ApprovalMode),
    PerAction(BTreeMap<String, ApprovalMode>),
}

/// Action types an approval table may name.
pub const ACTION_TYPES: &[&str] = &[
    "confluence.remove_member",
    "confluence.add_member",
    "scim.deactivate",
    "scim.create_user",
    "scim.add_group_member",
    "lifecycle.disable",
    "notify",
];

/// One `[[policies]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Names the policy in plans, approvals and the audit trail (default: derived from `on`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub on: Vec<EventType>,
    /// The sources whose events this policy acts on (`[[sources]]` names, or gatehouse's own
    /// `org-events` and `reconcile`); empty: all. An event from another source is recorded as
    /// skipped with the reason.
    #[serde(default)]
    pub sources: Vec<String>,
    /// The tenants this policy acts for (`[[tenants]]` names); empty: all. The worker gives
    /// each tenant's events only to that tenant's policies.
    #[serde(default)]
    pub tenants: Vec<String>,
    pub actions: Vec<Capability>,
    /// `confluence.remove_from_all_groups`: groups the account keeps (exact names).
    #[serde(default)]
    pub keep_groups: Vec<String>,
    /// `confluence.add_to_groups`: the groups (exact names).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `scim.provision`: the SCIM groups (exact display names) a provisioning request may add
    /// someone to. Any other requested group is refused in the plan, with a warning, and never
    /// sent to SCIM. Empty: requests may create people but add them to no group.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// `confluence.revert_protected_membership` / `notify.group_changes`.
    #[serde(default)]
    pub protected_groups: Vec<ProtectedGroup>,
    /// `notify.group_changes`: the rule new group names must follow.
    #[serde(default)]
    pub naming: Option<NamingRule>,
    /// Explicit opt-in for organization-wide actions (`scim.deactivate`, `lifecycle.disable`).
    #[serde(default)]
    pub allow_org_wide: bool,
    /// Plan and record, but call nothing (overrides the global setting).
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub approval: Option<ApprovalRule>,
}

impl PolicyConfig {
    /// The policy's name.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let actions: Vec<&str> = self.actions.iter().map(|a| a.name()).collect();
            actions.join("+")
        })
    }

    /// Does this policy act on events from `source`?
    pub fn accepts_source(&self, source: &str) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|s| s == source)
    }

    /// Does this policy act for tenant `tenant`?
    pub fn applies_to_tenant(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }

    /// Does `action` wait for approval under this policy?
    pub fn requires_approval(&self, action: &Action) -> bool {
        let default = action.org_wide();
        match &self.approval {
            None => default,
            Some(ApprovalRule::All(mode)) => *mode == ApprovalMode::Required,
            Some(ApprovalRule::PerAction(modes)) => match modes.get(action.type_name()) {
                Some(mode) => *mode == ApprovalMode::Required,
                None => default,
            },
        }
    }

    /// Every problem, as `(key relative to the policy, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let events = self.on.as_slice();
        if events.is_empty() {
            problems.push(("on".to_owned(), "name at least one event type".to_owned()));
        }
        if self.actions.is_empty() {
            problems.push(("actions".to_owned(), "name at least one action".to_owned()));
        }
        for (i, capability) in self.actions.iter().enumerate() {
            let key = format!("actions[{i}]");
            for event in events {
                if !capability.events().contains(event) {
                    let fits: Vec<String> = capability.events().iter().map(|e| e.to_string()).collect();
                    problems.push((
                        key.clone(),
                        format!(
                            "{} does not apply to {event} (it reacts to {})",
                            capability.name(),
                            fits.join(", ")
                        ),
                    ));
                }
            }
            if capability.org_wide() && !self.allow_org_wide {
                problems.push((
                    key.clone(),
                    format!(
                        "{} is organization-wide (the account loses Jira, Confluence and every other product); set allow_org_wide = true to opt in",
                        capability.name()
                    ),
                ));
            }
            match capability {
                Capability::AddToGroups if self.groups.is_empty() => {
                    problems.push((
                        "groups".to_owned(),
                        "confluence.add_to_groups needs the groups to add to".to_owned(),
                    ));
                }
                Capability::RevertProtectedMembership if self.protected_groups.is_empty() => problems.push((
                    "protected_groups".to_owned(),
                    "confluence.revert_protected_membership needs protected_groups".to_owned(),
                )),
                Capability::GroupChanges if self.naming.is_none() && self.protected_groups.is_empty() => {
                    problems.push((
                        "naming".to_owned(),
                        "notify.group_changes needs a naming rule or protected_groups".to_owned(),
                    ))
                }
                _ => {}
            }
        }
        if let Some(ApprovalRule::PerAction(modes)) = &self.approval {
            for name in modes.keys() {
                if !ACTION_TYPES.contains(&name.as_str()) {
                    problems.push((
                        format!("approval.{name}"),
                        format!("unknown action type (have: {})", ACTION_TYPES.join(", ")),
                    ));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PolicyConfig {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn org_wide_actions_need_an_explicit_opt_in() {
        let policy = parse(
            r#"{"on": "user.deactivated", "actions": ["confluence.remove_from_all_groups", "scim.deactivate"]}"#,
        );
        let problems = policy.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "actions[1]");
        assert!(problems[0].1.contains("allow_org_wide"));
        let opted =
            parse(r#"{"on": "user.deactivated", "actions": ["scim.deactivate"], "allow_org_wide": true}"#);
        assert!(opted.problems().is_empty());
    }

    #[test]
    fn actions_must_fit_their_events_and_have_their_settings() {
        let policy = parse(
            r#"{"on": ["user.created"], "actions": ["confluence.remove_from_all_groups", "confluence.add_to_groups"]}"#,
        );
        let keys: Vec<String> = policy.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["actions[0]", "groups"]);
        let bad_approval = parse(
            r#"{"on": "user.removed", "actions": ["confluence.remove_from_all_groups"], "approval": {"scim.nuke": "required"}}"#,
        );
        assert_eq!(bad_approval.problems()[0].0, "approval.scim.nuke");
    }

    #[test]
    fn approval_defaults_to_org_wide_actions() {
        let remove = Action::ConfluenceRemoveMember {
            group_id: "g".into(),
            group_name: "n".into(),
            account_id: "a".into(),
        };
        let disable = Action::LifecycleDisable {
            account_id: "a".into(),
        };
        let default = parse(r#"{"on": "user.removed", "actions": ["confluence.remove_from_all_groups"]}"#);
        assert!(!default.requires_approval(&remove));
        assert!(default.requires_approval(&disable));
        let all = parse(
            r#"{"on": "user.removed", "actions": ["confluence.remove_from_all_groups"], "approval": "required"}"#,
        );
        assert!(all.requires_approval(&remove));
        let table = parse(
            r#"{"on": "user.removed", "actions": ["confluence.remove_from_all_groups"], "approval": {"lifecycle.disable": "none"}}"#,
        );
        assert!(!table.requires_approval(&disable));
    }

    #[test]
    fn naming_rules() {
        let rule = NamingRule {
            prefixes: vec!["team-".into()],
            forbidden: vec!["admin".into()],
            lowercase: true,
            max_length: Some(12),
        };
        assert!(rule.check("team-docs").is_empty());
        assert_eq!(rule.check("Team-admins-Of-All").len(), 4);
    }
}
