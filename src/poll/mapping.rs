//! Organization event actions → envelope types. Atlassian has not confirmed every action name,
//! so the defaults cover the likely spellings and config adds or overrides (`[poll.actions]`);
//! an action nobody mapped becomes `other.<action>` and is still queued.

use std::collections::BTreeMap;

use handlers::EventType;

/// The default table.
const DEFAULTS: &[(&str, EventType)] = &[
    ("user_created", EventType::UserCreated),
    ("user_added_to_org", EventType::UserCreated),
    ("user_deactivated", EventType::UserDeactivated),
    // Access to the organization taken away, the account itself left active (what an external,
    // unmanaged account can only be): as a removal, whose plan does not wait for Atlassian to
    // show the account deactivated. As a deactivation it was always judged stale, the account
    // being active, and the person kept every group.
    ("user_suspended", EventType::UserRemoved),
    ("user_access_revoked", EventType::UserRemoved),
    ("user_reactivated", EventType::UserReactivated),
    ("user_restored", EventType::UserReactivated),
    ("user_removed", EventType::UserRemoved),
    ("user_removed_from_org", EventType::UserRemoved),
    ("user_deleted", EventType::UserRemoved),
    ("user_closed", EventType::UserRemoved),
    ("group_created", EventType::GroupCreated),
    ("group_deleted", EventType::GroupRemoved),
    ("group_removed", EventType::GroupRemoved),
    ("group_member_added", EventType::GroupMemberAdded),
    ("user_added_to_group", EventType::GroupMemberAdded),
    ("group_member_removed", EventType::GroupMemberRemoved),
    ("user_removed_from_group", EventType::GroupMemberRemoved),
];

/// The effective table.
#[derive(Debug, Clone)]
pub struct ActionMap {
    overrides: BTreeMap<String, EventType>,
}

impl ActionMap {
    /// Defaults plus `overrides` (validated at config load; an unparsable one is ignored here).
    pub fn new(overrides: &BTreeMap<String, String>) -> Self {
        ActionMap {
            overrides: overrides
                .iter()
                .filter_map(|(action, t)| Some((action.clone(), t.parse().ok()?)))
                .collect(),
        }
    }

    pub fn type_for(&self, action: &str) -> EventType {
        if let Some(event_type) = self.overrides.get(action) {
            return event_type.clone();
        }
        DEFAULTS
            .iter()
            .find(|(name, _)| *name == action)
            .map(|(_, event_type)| event_type.clone())
            .unwrap_or_else(|| EventType::other(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_unmapped() {
        let mut overrides = BTreeMap::new();
        overrides.insert("user_offboarded".to_owned(), "user.deactivated".to_owned());
        overrides.insert(
            "group_created".to_owned(),
            "other.group_created_custom".to_owned(),
        );
        let map = ActionMap::new(&overrides);
        assert_eq!(map.type_for("user_deactivated"), EventType::UserDeactivated);
        assert_eq!(map.type_for("user_offboarded"), EventType::UserDeactivated);
        assert_eq!(map.type_for("user_suspended"), EventType::UserRemoved);
        assert_eq!(map.type_for("user_access_revoked"), EventType::UserRemoved);
        assert_eq!(
            map.type_for("group_created"),
            EventType::other("group_created_custom")
        );
        assert_eq!(
            map.type_for("api_token_created"),
            EventType::other("api_token_created")
        );
    }
}
