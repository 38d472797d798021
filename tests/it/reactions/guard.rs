//! A protected group: an intrusion is reverted and reported on the exchange; provisioning
//! requests create the person in SCIM and warn about groups that grant no access.

use gatehouse_sim::{Seed, SeedGroup, SeedScimGroup, SeedUser};
use serde_json::json;

use super::{LONG, World, policies};
use crate::helpers::Observer;
use crate::queue::eventually;

const GUARD: &str = r#"
[[policies]]
name = "admins-guard"
on = "group.member_added"
actions = ["confluence.revert_protected_membership"]
protected_groups = [{ name = "confluence-administrators", allow = ["admin-1"] }]
"#;

#[tokio::test]
async fn a_protected_group_intrusion_is_reverted_and_a_violation_is_published() {
    let seed = Seed {
        users: vec![
            SeedUser::new("admin-1", "Admin"),
            SeedUser::new("mallory", "Mallory"),
        ],
        groups: vec![SeedGroup::new(
            "g-admins",
            "confluence-administrators",
            vec!["admin-1".into(), "mallory".into()],
        )],
        ..Seed::default()
    };
    let world = World::start(seed, policies(GUARD), |_| {}).await;
    let violations = Observer::new(world.app.prefix(), "*.policy.violation").await;
    let event_id = world
        .send(
            "group.member_added",
            "msg-intrusion",
            json!({"account_id": "mallory", "group": {"name": "confluence-administrators"}}),
        )
        .await;
    eventually(LONG, "mallory removed", || async {
        world.groups_of("mallory").await.is_empty()
    })
    .await;
    assert_eq!(world.groups_of("admin-1").await, ["confluence-administrators"]);
    let notice = violations
        .next(LONG)
        .await
        .expect("a policy.violation on the exchange");
    assert_eq!(notice.routing_key, "gatehouse.policy.violation");
    assert_eq!(notice.body["type"], "policy.violation");
    assert_eq!(notice.body["subject"]["account_id"], "mallory");
    assert_eq!(
        notice.body["payload"]["violation"]["rule"],
        "protected_group_intrusion"
    );
    assert_eq!(notice.body["payload"]["event_id"], event_id.as_str());
    // An allowed member added again is left alone.
    let allowed = world
        .send(
            "group.member_added",
            "msg-allowed",
            json!({"account_id": "admin-1", "group": {"name": "confluence-administrators"}}),
        )
        .await;
    // Its plan is settled (empty: `skipped`) before anything it could publish would be.
    world.settled(&allowed, &["skipped"]).await;
    assert!(
        violations
            .next(std::time::Duration::from_millis(800))
            .await
            .is_none()
    );
    world.stop().await;
}

/// The revert refused for good (a group the IdP manages): no notice says the intruder was
/// removed again, and the event is dead-lettered saying why.
#[tokio::test]
async fn a_revert_refused_for_good_publishes_no_notice_claiming_it_was_done() {
    let seed = Seed {
        users: vec![SeedUser::new("mallory", "Mallory")],
        groups: vec![SeedGroup::new(
            "g-admins",
            "confluence-administrators",
            vec!["mallory".into()],
        )],
        ..Seed::default()
    };
    let world = World::start(seed, policies(GUARD), |_| {}).await;
    world
        .fault(gatehouse_sim::Fault::status("/userByGroupId", 403, 1).method("DELETE"))
        .await;
    let violations = Observer::new(world.app.prefix(), "*.policy.violation").await;
    let event_id = world
        .send(
            "group.member_added",
            "msg-intrusion-403",
            json!({"account_id": "mallory", "group": {"name": "confluence-administrators"}}),
        )
        .await;
    eventually(LONG, "the event dead-lettered", || async {
        !crate::queue::dead_letters(&world.app).await.is_empty()
    })
    .await;
    let letter = crate::queue::dead_letters(&world.app).await.remove(0);
    assert_eq!(letter.event_id, event_id);
    assert!(
        letter
            .reason
            .contains("1 held back as they report or build on the others"),
        "{}",
        letter.reason
    );
    assert_eq!(world.groups_of("mallory").await, ["confluence-administrators"]);
    assert!(
        violations
            .next(std::time::Duration::from_millis(800))
            .await
            .is_none(),
        "no notice claims mallory was removed"
    );
    world.stop().await;
}

const PROVISION: &str = r#"
[[policies]]
name = "provisioning"
on = "user.provision_requested"
actions = ["scim.provision"]
allowed_groups = ["confluence-users", "contractors"]
"#;

#[tokio::test]
async fn a_provisioning_request_creates_the_person_and_warns_about_unmapped_groups() {
    let seed = Seed {
        groups: vec![SeedGroup::new("g-cu", "confluence-users", vec![])],
        scim_groups: vec![
            SeedScimGroup {
                id: Some("sg-cu".into()),
                display_name: "confluence-users".into(),
                members: vec![],
                confluence_group_id: Some("g-cu".into()),
            },
            SeedScimGroup {
                id: Some("sg-ct".into()),
                display_name: "contractors".into(),
                members: vec![],
                confluence_group_id: None,
            },
        ],
        ..Seed::default()
    };
    let world = World::start(seed, policies(PROVISION), |s| {
        s.reactions.product_groups = vec!["confluence-users".into()]
    })
    .await;
    let event_id = world
        .send(
            "user.provision_requested",
            "msg-new-hire",
            json!({"email": "eve@example.com", "name": "Eve", "external_id": "hr-7", "groups": ["confluence-users", "contractors"]}),
        )
        .await;
    eventually(LONG, "eve in both SCIM groups", || async {
        let state = world.state().await;
        let Some(eve) = state.scim_user_by_name("eve@example.com") else {
            return false;
        };
        state
            .scim_groups
            .iter()
            .filter(|g| g.members.contains(&eve.id))
            .count()
            == 2
    })
    .await;
    let records = gatehouse::audit::query::query(
        &world.app.store,
        &gatehouse::audit::AuditQuery {
            event_id: Some(event_id.parse().unwrap()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let warnings: Vec<&String> = records.iter().flat_map(|r| r.record.warnings.iter()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`contractors` is not listed as mapped")),
        "{warnings:?}"
    );
    world.stop().await;
}

/// A request for a new hire whose email is a former employee's SCIM userName (another
/// externalId): nothing is given to the former employee's account. And a group named only in
/// another case (`Contractors`, which SCIM's filter would match) is not the allowed
/// `contractors`.
#[tokio::test]
async fn provisioning_gives_nothing_to_someone_else_or_to_a_group_named_in_another_case() {
    let mut former = SeedUser::new("old-jo", "Jo (left)");
    former.status = gatehouse_sim::SimAccountStatus::Inactive;
    former.scim = Some(gatehouse_sim::SeedScimIdentity {
        id: Some("scim-old-jo".into()),
        user_name: "jo@example.com".into(),
        external_id: Some("hr-123".into()),
        active: Some(false),
    });
    let seed = Seed {
        users: vec![former],
        scim_groups: vec![
            SeedScimGroup {
                id: Some("sg-cu".into()),
                display_name: "confluence-users".into(),
                members: vec![],
                confluence_group_id: None,
            },
            SeedScimGroup {
                id: Some("sg-ct".into()),
                display_name: "Contractors".into(),
                members: vec![],
                confluence_group_id: None,
            },
        ],
        ..Seed::default()
    };
    let world = World::start(seed, policies(PROVISION), |_| {}).await;
    let rehire = world
        .send(
            "user.provision_requested",
            "msg-jo",
            json!({"email": "jo@example.com", "external_id": "hr-900", "groups": ["confluence-users"]}),
        )
        .await;
    eventually(LONG, "the request dead-lettered", || async {
        !crate::queue::dead_letters(&world.app).await.is_empty()
    })
    .await;
    let letter = crate::queue::dead_letters(&world.app).await.remove(0);
    assert_eq!(letter.event_id, rehire);
    assert!(
        letter
            .reason
            .contains("exists with another externalId, not hr-900"),
        "{}",
        letter.reason
    );
    let state = world.state().await;
    assert!(
        state.scim_groups.iter().all(|g| g.members.is_empty()),
        "nobody was added to any group"
    );

    let contractor = world
        .send(
            "user.provision_requested",
            "msg-kit",
            json!({"email": "kit@example.com", "external_id": "hr-901", "groups": ["contractors"]}),
        )
        .await;
    world.settled(&contractor, &["executed"]).await;
    let state = world.state().await;
    assert!(
        state.scim_user_by_name("kit@example.com").is_some(),
        "kit was created"
    );
    assert!(
        state.scim_groups.iter().all(|g| g.members.is_empty()),
        "`Contractors` is not `contractors`"
    );
    world.stop().await;
}
