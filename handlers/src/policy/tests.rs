//! The policies against an in-memory Atlassian.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::*;
use crate::event::{Envelope, EventType, Scheme};
use crate::handler::Ports;
use crate::plan::Action;
use crate::ports::{
    AccountStatus, ConfluenceDirectory, Group, PortError, ScimDirectory, ScimGroup, ScimUser, User,
};

#[derive(Default)]
pub struct Fake {
    pub groups: Vec<Group>,
    pub memberships: HashMap<String, Vec<String>>,
    pub status: HashMap<String, AccountStatus>,
    pub scim_users: Vec<ScimUser>,
    pub scim_groups: Vec<ScimGroup>,
}

#[async_trait]
impl ConfluenceDirectory for Fake {
    async fn groups_of(&self, account_id: &str) -> Result<Vec<Group>, PortError> {
        let ids = self.memberships.get(account_id).cloned().unwrap_or_default();
        Ok(self
            .groups
            .iter()
            .filter(|g| ids.contains(&g.id))
            .cloned()
            .collect())
    }
    async fn members_of(&self, _group_id: &str) -> Result<Vec<User>, PortError> {
        Ok(Vec::new())
    }
    async fn group_by_name(&self, name: &str) -> Result<Option<Group>, PortError> {
        Ok(self.groups.iter().find(|g| g.name == name).cloned())
    }
    async fn account_status(&self, account_id: &str) -> Result<Option<AccountStatus>, PortError> {
        Ok(self.status.get(account_id).copied())
    }
}

#[async_trait]
impl ScimDirectory for Fake {
    async fn user_by_user_name(&self, user_name: &str) -> Result<Option<ScimUser>, PortError> {
        Ok(self.scim_users.iter().find(|u| u.user_name == user_name).cloned())
    }
    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<ScimUser>, PortError> {
        Ok(self
            .scim_users
            .iter()
            .find(|u| u.external_id.as_deref() == Some(external_id))
            .cloned())
    }
    async fn user_by_account_id(&self, account_id: &str) -> Result<Option<ScimUser>, PortError> {
        Ok(self
            .scim_users
            .iter()
            .find(|u| u.atlassian_account_id.as_deref() == Some(account_id))
            .cloned())
    }
    async fn group_by_display_name(&self, display_name: &str) -> Result<Option<ScimGroup>, PortError> {
        Ok(self
            .scim_groups
            .iter()
            .find(|g| g.display_name == display_name)
            .cloned())
    }
}

fn group(id: &str, name: &str) -> Group {
    Group {
        id: id.into(),
        name: name.into(),
    }
}

fn policy(json: &str, product_groups: &[&str]) -> Policy {
    let config: PolicyConfig = serde_json::from_str(json).unwrap();
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    Policy::new(
        config,
        Arc::new(PolicyContext {
            product_groups: product_groups.iter().map(|s| s.to_string()).collect(),
        }),
    )
}

fn event(event_type: EventType, account: Option<&str>, payload: &str) -> Envelope {
    let mut e = Envelope::new(
        event_type,
        "test",
        Scheme::Poll,
        "k",
        RawValue::from_string(payload.into()).unwrap(),
    );
    e.subject.account_id = account.map(str::to_owned);
    e
}

async fn plan(policy: &Policy, fake: &Fake, envelope: &Envelope) -> Result<Plan, PortError> {
    let ports = Ports {
        confluence: fake,
        scim: Some(fake),
    };
    policy.plan(envelope, &ports).await
}

fn world() -> Fake {
    let mut fake = Fake {
        groups: vec![
            group("g1", "confluence-users"),
            group("g2", "eng"),
            group("g3", "all-staff"),
            group("g4", "Eng"),
        ],
        ..Fake::default()
    };
    fake.memberships
        .insert("ann".into(), vec!["g1".into(), "g2".into(), "g3".into()]);
    fake.status.insert("ann".into(), AccountStatus::Inactive);
    fake
}

#[tokio::test]
async fn deactivation_removes_every_group_but_the_keep_list() {
    let policy = policy(
        r#"{"on": ["user.deactivated", "user.removed"], "actions": ["confluence.remove_from_all_groups"], "keep_groups": ["all-staff"]}"#,
        &[],
    );
    let plan = plan(
        &policy,
        &world(),
        &event(EventType::UserDeactivated, Some("ann"), "{}"),
    )
    .await
    .unwrap();
    let removed: Vec<&str> = plan
        .actions
        .iter()
        .map(|a| match &a.action {
            Action::ConfluenceRemoveMember { group_name, .. } => group_name.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(removed, ["confluence-users", "eng"]);
    assert!(plan.actions.iter().all(|a| !a.needs_approval));
}

#[tokio::test]
async fn a_keep_list_entry_in_another_case_keeps_nothing_and_the_plan_says_so() {
    let policy = policy(
        r#"{"on": "user.deactivated", "actions": ["confluence.remove_from_all_groups"], "keep_groups": ["All-Staff"]}"#,
        &[],
    );
    let plan = plan(
        &policy,
        &world(),
        &event(EventType::UserDeactivated, Some("ann"), "{}"),
    )
    .await
    .unwrap();
    assert_eq!(plan.actions.len(), 3, "all-staff is removed too");
    assert_eq!(
        plan.warnings,
        ["keep_groups names `All-Staff`, but the group is `all-staff` (names are case-sensitive): not kept"]
    );
}

#[tokio::test]
async fn a_stale_deactivation_of_an_active_account_changes_nothing() {
    let mut fake = world();
    fake.status.insert("ann".into(), AccountStatus::Active);
    let policy = policy(
        r#"{"on": "user.deactivated", "actions": ["confluence.remove_from_all_groups"]}"#,
        &[],
    );
    let plan = plan(
        &policy,
        &fake,
        &event(EventType::UserDeactivated, Some("ann"), "{}"),
    )
    .await
    .unwrap();
    assert!(plan.is_empty());
    assert!(plan.note.unwrap().contains("stale"));
}

#[tokio::test]
async fn org_wide_actions_are_dangerous_and_wait_for_approval_by_default() {
    let mut fake = world();
    fake.scim_users.push(ScimUser {
        id: "s-1".into(),
        user_name: "ann@x".into(),
        external_id: None,
        active: true,
        atlassian_account_id: Some("ann".into()),
    });
    let policy = policy(
        r#"{"on": "user.deactivated", "actions": ["scim.deactivate", "lifecycle.disable"], "allow_org_wide": true}"#,
        &[],
    );
    let plan = plan(
        &policy,
        &fake,
        &event(EventType::UserDeactivated, Some("ann"), "{}"),
    )
    .await
    .unwrap();
    assert_eq!(plan.actions.len(), 2);
    assert!(
        plan.actions
            .iter()
            .all(|a| a.needs_approval && a.action.org_wide())
    );
    assert_eq!(
        plan.actions[0].action,
        Action::ScimDeactivate {
            user_id: "s-1".into(),
            account_id: Some("ann".into())
        }
    );
    assert!(plan.needs_approval());
}

#[tokio::test]
async fn default_groups_warn_about_unmapped_and_missing_groups() {
    let mut fake = world();
    fake.status.insert("bob".into(), AccountStatus::Active);
    let policy = policy(
        r#"{"on": ["user.created", "user.reactivated"], "actions": ["confluence.add_to_groups"], "groups": ["confluence-users", "eng", "ENG-typo"]}"#,
        &["confluence-users"],
    );
    let plan = plan(&policy, &fake, &event(EventType::UserCreated, Some("bob"), "{}"))
        .await
        .unwrap();
    assert_eq!(plan.actions.len(), 2);
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    assert!(plan.warnings[0].contains("`eng` is not listed as mapped"));
    assert!(plan.warnings[1].contains("`ENG-typo` does not exist"));
    // A reactivation that a later deactivation overtook changes nothing.
    fake.status.insert("bob".into(), AccountStatus::Inactive);
    let stale = plan_for(&policy, &fake, EventType::UserReactivated, "bob").await;
    assert!(stale.is_empty() && stale.note.is_some());
    // So does a creation observed after the person was deactivated.
    let stale = plan_for(&policy, &fake, EventType::UserCreated, "bob").await;
    assert!(stale.is_empty());
    assert!(stale.note.unwrap().contains("deactivated now"));
}

async fn plan_for(policy: &Policy, fake: &Fake, event_type: EventType, account: &str) -> Plan {
    plan(policy, fake, &event(event_type, Some(account), "{}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn provisioning_creates_then_adds_groups_and_warns() {
    let mut fake = world();
    fake.scim_groups.push(ScimGroup {
        id: "sg-1".into(),
        display_name: "confluence-users".into(),
    });
    fake.scim_groups.push(ScimGroup {
        id: "sg-2".into(),
        display_name: "contractors".into(),
    });
    let policy = policy(
        r#"{"on": "user.provision_requested", "actions": ["scim.provision"],
            "allowed_groups": ["confluence-users", "contractors", "nope"]}"#,
        &["confluence-users"],
    );
    let body = r#"{"type":"user.provision_requested","timestamp":"2026-11-29T10:00:00Z","data":{"email":"cy@example.com","name":"Cy","external_id":"hr-42","groups":["confluence-users","contractors","nope","confluence-administrators"]}}"#;
    let plan = plan(
        &policy,
        &fake,
        &event(EventType::UserProvisionRequested, None, body),
    )
    .await
    .unwrap();
    let types: Vec<&str> = plan.actions.iter().map(|a| a.action.type_name()).collect();
    assert_eq!(
        types,
        [
            "scim.create_user",
            "scim.add_group_member",
            "scim.add_group_member"
        ]
    );
    assert!(
        matches!(&plan.actions[1].action, Action::ScimAddGroupMember { user: crate::plan::ScimUserRef::ExternalId(id), .. } if id == "hr-42")
    );
    // `contractors` is unmapped, `nope` does not exist, `confluence-administrators` is not allowed.
    assert_eq!(plan.warnings.len(), 3, "{:?}", plan.warnings);
    assert!(
        plan.warnings[2].contains("`confluence-administrators` is not in this policy's allowed_groups"),
        "{:?}",
        plan.warnings
    );
    // Someone already there is not created again.
    fake.scim_users.push(ScimUser {
        id: "s-9".into(),
        user_name: "cy@example.com".into(),
        external_id: Some("hr-42".into()),
        active: true,
        atlassian_account_id: None,
    });
    let plan = plan_for_body(&policy, &fake, body).await;
    assert_eq!(
        plan.actions
            .iter()
            .filter(|a| a.action.type_name() == "scim.create_user")
            .count(),
        0
    );
    let bad = plan_result(
        &policy,
        &fake,
        r#"{"type":"user.provision_requested","data":{"groups":[]}}"#,
    )
    .await;
    assert!(bad.unwrap_err().message.contains("no email"));
}

async fn plan_for_body(policy: &Policy, fake: &Fake, body: &str) -> Plan {
    plan_result(policy, fake, body).await.unwrap()
}

async fn plan_result(policy: &Policy, fake: &Fake, body: &str) -> Result<Plan, PortError> {
    plan(
        policy,
        fake,
        &event(EventType::UserProvisionRequested, None, body),
    )
    .await
}

#[tokio::test]
async fn protected_group_intrusions_are_reverted_and_reported() {
    let policy = policy(
        r#"{"on": "group.member_added", "actions": ["confluence.revert_protected_membership"],
            "protected_groups": [{"name": "eng", "allow": ["ann"], "allowed_actors": ["owner"]}]}"#,
        &[],
    );
    let mut intrusion = event(EventType::GroupMemberAdded, Some("mallory"), "{}");
    intrusion.subject.group = Some(crate::GroupRef {
        id: None,
        name: Some("eng".into()),
    });
    let plan = plan(&policy, &world(), &intrusion).await.unwrap();
    assert_eq!(
        plan.actions
            .iter()
            .map(|a| a.action.type_name())
            .collect::<Vec<_>>(),
        ["confluence.remove_member", "notify"]
    );
    // Who added mallory is unknown (a reconciler finding), and the group has allowed actors:
    // a person decides. Without allowed actors, nobody could have added mallory: reverted at once.
    assert!(plan.needs_approval(), "{plan:?}");
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("waits for a person's approval")),
        "{:?}",
        plan.warnings
    );
    // Even under `approval = "none"`: that says the policy's actions need nobody, not that an
    // owner's addition may be undone unseen.
    let no_approvals = policy_needing_no_approval();
    assert!(plan_of(&no_approvals, &intrusion).await.needs_approval());
    let no_owners = policy_with_no_owners();
    let at_once = plan_of(&no_owners, &intrusion).await;
    assert_eq!(at_once.actions.len(), 2, "{at_once:?}");
    assert!(!at_once.needs_approval(), "{at_once:?}");
    assert!(at_once.warnings.is_empty(), "{:?}", at_once.warnings);
    let mut by_someone = intrusion.clone();
    by_someone.actor.account_id = Some("mallory-friend".into());
    let known = plan_of(&policy, &by_someone).await;
    assert_eq!(known.actions.len(), 2, "{known:?}");
    assert!(
        !known.needs_approval(),
        "a known actor not allowed: reverted at once"
    );
    // Allowed members, allowed actors, and other groups (names are case-sensitive) are left alone.
    let mut allowed = intrusion.clone();
    allowed.subject.account_id = Some("ann".into());
    assert!(plan_of(&policy, &allowed).await.is_empty());
    let mut by_owner = intrusion.clone();
    by_owner.actor.account_id = Some("owner".into());
    assert!(plan_of(&policy, &by_owner).await.is_empty());
    let mut other_case = intrusion.clone();
    other_case.subject.group = Some(crate::GroupRef {
        id: Some("g4".into()),
        name: Some("Eng".into()),
    });
    assert!(plan_of(&policy, &other_case).await.is_empty());
}

fn policy_needing_no_approval() -> Policy {
    policy(
        r#"{"on": "group.member_added", "actions": ["confluence.revert_protected_membership"],
            "approval": "none",
            "protected_groups": [{"name": "eng", "allow": ["ann"], "allowed_actors": ["owner"]}]}"#,
        &[],
    )
}

fn policy_with_no_owners() -> Policy {
    policy(
        r#"{"on": "group.member_added", "actions": ["confluence.revert_protected_membership"],
            "protected_groups": [{"name": "eng", "allow": ["ann"]}]}"#,
        &[],
    )
}

async fn plan_of(policy: &Policy, envelope: &Envelope) -> Plan {
    plan(policy, &world(), envelope).await.unwrap()
}

#[tokio::test]
async fn group_naming_and_protected_removal_are_reported() {
    let policy = policy(
        r#"{"on": ["group.created", "group.removed"], "actions": ["notify.group_changes"],
            "naming": {"prefixes": ["team-"]}, "protected_groups": [{"name": "confluence-administrators"}]}"#,
        &[],
    );
    let mut created = event(EventType::GroupCreated, None, "{}");
    created.subject.group = Some(crate::GroupRef {
        id: None,
        name: Some("random".into()),
    });
    let plan = plan_of(&policy, &created).await;
    assert_eq!(plan.actions.len(), 1);
    created.subject.group = Some(crate::GroupRef {
        id: None,
        name: Some("team-docs".into()),
    });
    assert!(plan_of(&policy, &created).await.is_empty());
    let mut removed = event(EventType::GroupRemoved, None, "{}");
    removed.subject.group = Some(crate::GroupRef {
        id: None,
        name: Some("confluence-administrators".into()),
    });
    assert_eq!(plan_of(&policy, &removed).await.actions.len(), 1);
}

#[tokio::test]
async fn provisioning_never_adds_to_a_group_the_policy_does_not_allow() {
    let mut fake = world();
    fake.scim_groups.push(ScimGroup {
        id: "sg-admins".into(),
        display_name: "confluence-administrators".into(),
    });
    // No allowed_groups at all: people may be created, and added to nothing.
    let policy = policy(
        r#"{"on": "user.provision_requested", "actions": ["scim.provision"]}"#,
        &[],
    );
    let body = r#"{"type":"user.provision_requested","data":{"email":"eve@example.com","groups":["confluence-administrators"]}}"#;
    let plan = plan_for_body(&policy, &fake, body).await;
    let types: Vec<&str> = plan.actions.iter().map(|a| a.action.type_name()).collect();
    assert_eq!(types, ["scim.create_user"]);
    assert!(plan.warnings[0].contains("refused"), "{:?}", plan.warnings);
}

#[tokio::test]
async fn a_policy_acts_only_on_the_sources_it_lists() {
    let policy = policy(
        r#"{"on": "user.deactivated", "actions": ["confluence.remove_from_all_groups"], "sources": ["hr"]}"#,
        &[],
    );
    let from_test = plan_of(&policy, &event(EventType::UserDeactivated, Some("ann"), "{}")).await;
    assert!(from_test.is_empty());
    let note = from_test.note.unwrap();
    assert!(
        note.contains("does not act on events from source `test`"),
        "{note}"
    );
    let mut from_hr = event(EventType::UserDeactivated, Some("ann"), "{}");
    from_hr.source = "hr".into();
    assert_eq!(plan_of(&policy, &from_hr).await.actions.len(), 3);
}

#[tokio::test]
async fn the_guard_matches_groups_by_id_and_believes_actors_only_when_signed() {
    let policy = policy(
        r#"{"on": "group.member_added", "actions": ["confluence.revert_protected_membership"],
            "protected_groups": [{"name": "eng", "allowed_actors": ["owner"]}]}"#,
        &[],
    );
    // Named by id only, or by id with a harmless-looking name: the id decides.
    for name in [None, Some("harmless")] {
        let mut intrusion = event(EventType::GroupMemberAdded, Some("mallory"), "{}");
        intrusion.subject.group = Some(crate::GroupRef {
            id: Some("g2".into()),
            name: name.map(str::to_owned),
        });
        let plan = plan_of(&policy, &intrusion).await;
        assert_eq!(plan.actions.len(), 2, "{plan:?}");
        assert!(matches!(&plan.actions[0].action,
            Action::ConfluenceRemoveMember { group_id, group_name, .. } if group_id == "g2" && group_name == "eng"));
        assert_eq!(
            plan.warnings.iter().filter(|w| w.contains("calls group")).count(),
            usize::from(name.is_some()),
            "{:?}",
            plan.warnings
        );
    }
    // An allowed actor is believed only from a scheme that signs it.
    let mut by_owner = event(EventType::GroupMemberAdded, Some("mallory"), "{}");
    by_owner.subject.group = Some(crate::GroupRef {
        id: Some("g2".into()),
        name: None,
    });
    by_owner.actor.account_id = Some("owner".into());
    for (scheme, believed) in [
        (Scheme::HubSignature, true),
        (Scheme::StandardWebhooks, true),
        (Scheme::Poll, true),
        (Scheme::UrlToken, false),
        (Scheme::ConnectJwt, false),
    ] {
        by_owner.scheme = scheme;
        let plan = plan_of(&policy, &by_owner).await;
        assert_eq!(plan.is_empty(), believed, "{scheme}: {plan:?}");
        if !believed {
            // Not believed, and perhaps true: a person decides.
            assert!(plan.warnings[0].contains("not believed"), "{:?}", plan.warnings);
            assert!(plan.needs_approval(), "{scheme}: {plan:?}");
        }
    }
}

#[tokio::test]
async fn a_decision_is_acted_on_whatever_atlassian_shows_now() {
    let mut fake = world();
    fake.status.insert("ann".into(), AccountStatus::Active);
    let policy = policy(
        r#"{"on": "user.deactivated", "actions": ["confluence.remove_from_all_groups"]}"#,
        &[],
    );
    let mut decision = event(EventType::UserDeactivated, Some("ann"), "{}");
    decision.authority = crate::event::Authority::Decision;
    let plan = plan_of_with(&policy, &fake, &decision).await;
    assert_eq!(plan.actions.len(), 3, "{plan:?}");
    assert!(plan.note.is_none());
    // The same as an observation: stale, nothing to do.
    decision.authority = crate::event::Authority::Observation;
    assert!(plan_of_with(&policy, &fake, &decision).await.is_empty());
}

async fn plan_of_with(policy: &Policy, fake: &Fake, envelope: &Envelope) -> Plan {
    plan(policy, fake, envelope).await.unwrap()
}
