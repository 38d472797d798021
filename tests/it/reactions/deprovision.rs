//! A person leaves: every Confluence group membership goes (however many pages of them), the
//! keep-list stays, copies of the event change nothing more, dry runs change nothing at all, and a
//! reordered pair of events ends in the state of the newer one.

use gatehouse_sim::{Seed, SeedGroup, SeedUser};
use serde_json::json;

use super::{LONG, World, policies};
use crate::queue::eventually;

const DEPROVISION: &str = r#"
[[policies]]
name = "deprovision"
on = ["user.deactivated", "user.removed"]
actions = ["confluence.remove_from_all_groups"]
keep_groups = ["all-staff"]
"#;

/// `ann` (deactivated) in 120 groups plus `all-staff`.
fn crowded() -> Seed {
    let mut ann = SeedUser::new("ann", "Ann");
    ann.status = gatehouse_sim::SimAccountStatus::Inactive;
    let mut groups: Vec<SeedGroup> = (0..120)
        .map(|i| SeedGroup::new(format!("g-{i:03}"), format!("team-{i:03}"), vec!["ann".into()]))
        .collect();
    groups.push(SeedGroup::new("g-all", "all-staff", vec!["ann".into()]));
    Seed {
        users: vec![ann, SeedUser::new("zoe", "Zoe")],
        groups,
        ..Seed::default()
    }
}

fn deletes(requests: &[gatehouse_sim::LoggedRequest]) -> usize {
    requests.iter().filter(|r| r.method == "DELETE").count()
}

#[tokio::test]
async fn a_deactivation_removes_every_group_but_the_keep_list_and_copies_change_nothing() {
    let world = World::start(crowded(), policies(DEPROVISION), |_| {}).await;
    let event_id = world
        .send("user.deactivated", "msg-ann-1", json!({"account_id": "ann"}))
        .await;
    eventually(LONG, "ann keeps only all-staff", || async {
        world.groups_of("ann").await == ["all-staff"]
    })
    .await;
    // The simulator's state changes before the worker writes the last `executed` record: wait
    // for all of them, not for the first.
    eventually(LONG, "120 removals recorded as executed", || async {
        let audit = world.audit(&event_id).await;
        audit.iter().filter(|(k, _)| k == "executed").count() >= 120
    })
    .await;

    let requests = world.requests().await;
    assert!(
        requests
            .iter()
            .filter(|r| r.path.ends_with("/user/memberof"))
            .count()
            >= 2,
        "the memberships span several pages"
    );
    assert_eq!(deletes(&requests), 120);
    let audit = world.audit(&event_id).await;
    let count = |kind: &str| audit.iter().filter(|(k, _)| k == kind).count();
    assert_eq!(count("received"), 1);
    assert_eq!(count("planned"), 120);
    assert_eq!(count("executed"), 120);
    assert!(
        audit
            .iter()
            .filter(|(k, _)| k == "executed")
            .all(|(_, a)| a.as_deref() == Some("confluence.remove_member"))
    );

    // The sender delivers the same webhook again: the ingress answers 200 and queues nothing.
    let again = json!({
        "type": "user.deactivated",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "data": {"account_id": "ann"},
    });
    assert_eq!(world.post_relay(again, "msg-ann-1").await, 200);
    // The same fact arrives again by another path (a new delivery id, a redelivery): a duplicate.
    let envelope: handlers::Envelope = {
        let mut e = handlers::Envelope::new(
            handlers::EventType::UserDeactivated,
            "relay",
            handlers::Scheme::StandardWebhooks,
            handlers::source_dedupe_key("relay", "msg-ann-1"),
            serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        );
        e.subject.account_id = Some("ann".into());
        e
    };
    let copy = envelope.id.to_string();
    world
        .app
        .queue
        .publish(&gatehouse::queue::OutgoingMessage::from_envelope(
            &envelope, "relay",
        ))
        .await
        .unwrap();
    world.settled(&copy, &["duplicate"]).await;
    assert_eq!(deletes(&world.requests().await), 120, "no second call");
    world.stop().await;
}

#[tokio::test]
async fn a_dry_run_records_the_plan_and_changes_nothing() {
    let world = World::start(crowded(), policies(DEPROVISION), |s| s.reactions.dry_run = true).await;
    let event_id = world
        .send("user.deactivated", "msg-ann-dry", json!({"account_id": "ann"}))
        .await;
    world.settled(&event_id, &["planned"]).await;
    eventually(LONG, "120 planned", || async {
        world
            .audit(&event_id)
            .await
            .iter()
            .filter(|(k, _)| k == "planned")
            .count()
            == 120
    })
    .await;
    let records = gatehouse::audit::query::query(
        &world.app.store,
        &gatehouse::audit::AuditQuery {
            event_id: Some(event_id.parse().unwrap()),
            limit: 1_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        records
            .iter()
            .filter(|r| r.record.kind.as_str() == "planned")
            .all(|r| r.record.dry_run)
    );
    assert!(!records.iter().any(|r| r.record.kind.as_str() == "executed"));
    assert_eq!(world.groups_of("ann").await.len(), 121);
    assert_eq!(deletes(&world.requests().await), 0);
    world.stop().await;
}

const REORDER: &str = r#"
[[policies]]
name = "deprovision"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]

[[policies]]
name = "welcome-back"
on = "user.reactivated"
actions = ["confluence.add_to_groups"]
groups = ["confluence-users"]
"#;

fn bob() -> Seed {
    Seed {
        users: vec![SeedUser::new("bob", "Bob")],
        groups: vec![
            SeedGroup::new("g-a", "team-a", vec!["bob".into()]),
            SeedGroup::new("g-cu", "confluence-users", vec![]),
        ],
        ..Seed::default()
    }
}

#[tokio::test]
async fn a_late_deactivation_does_not_undo_a_newer_reactivation() {
    let world = World::start(bob(), policies(REORDER), |s| {
        s.reactions.product_groups = vec!["confluence-users".into()]
    })
    .await;
    // Bob was deactivated, then reactivated (he is active now); the reactivation arrives first.
    let reactivated = world
        .send("user.reactivated", "msg-bob-2", json!({"account_id": "bob"}))
        .await;
    world.settled(&reactivated, &["executed"]).await;
    let deactivated = world
        .send("user.deactivated", "msg-bob-1", json!({"account_id": "bob"}))
        .await;
    world.settled(&deactivated, &["skipped"]).await;
    assert_eq!(world.groups_of("bob").await, ["confluence-users", "team-a"]);
    world.stop().await;
}

#[tokio::test]
async fn a_late_reactivation_does_not_undo_a_newer_deactivation() {
    let world = World::start(bob(), policies(REORDER), |s| {
        s.reactions.product_groups = vec!["confluence-users".into()]
    })
    .await;
    // Bob was reactivated, then deactivated (he is inactive now); the deactivation arrives first.
    world.set_status("bob", "inactive").await;
    let deactivated = world
        .send("user.deactivated", "msg-bob-4", json!({"account_id": "bob"}))
        .await;
    world.settled(&deactivated, &["executed"]).await;
    let reactivated = world
        .send("user.reactivated", "msg-bob-3", json!({"account_id": "bob"}))
        .await;
    world.settled(&reactivated, &["skipped"]).await;
    assert!(world.groups_of("bob").await.is_empty());
    world.stop().await;
}

/// A removal Atlassian refuses for good (a group the IdP manages, one deleted meanwhile) does not
/// keep the leaver in the groups after it: every other removal is performed, and the event is
/// dead-lettered naming what failed.
#[tokio::test]
async fn a_removal_refused_for_good_does_not_stop_the_others() {
    let mut ann = SeedUser::new("ann", "Ann");
    ann.status = gatehouse_sim::SimAccountStatus::Inactive;
    let seed = Seed {
        users: vec![ann],
        groups: (0..3)
            .map(|i| SeedGroup::new(format!("g-{i}"), format!("team-{i}"), vec!["ann".into()]))
            .collect(),
        ..Seed::default()
    };
    let world = World::start(seed, policies(DEPROVISION), |_| {}).await;
    // The first removal is refused: 403, which no retry fixes.
    world
        .fault(gatehouse_sim::Fault::status("/userByGroupId", 403, 1).method("DELETE"))
        .await;
    let event_id = world
        .send("user.deactivated", "msg-ann-403", json!({"account_id": "ann"}))
        .await;
    eventually(LONG, "the event dead-lettered", || async {
        !crate::queue::dead_letters(&world.app).await.is_empty()
    })
    .await;
    assert_eq!(
        world.groups_of("ann").await.len(),
        1,
        "only the refused one is left"
    );
    assert_eq!(deletes(&world.requests().await), 3);
    let audit = world.audit(&event_id).await;
    let count = |kind: &str| audit.iter().filter(|(k, _)| k == kind).count();
    assert_eq!((count("executed"), count("failed")), (2, 1), "{audit:?}");
    let letter = crate::queue::dead_letters(&world.app).await.remove(0);
    assert_eq!(letter.event_id, event_id);
    assert!(
        letter.reason.contains("1 of 3 action(s) failed for good")
            && letter.reason.contains("confluence.remove_member"),
        "{}",
        letter.reason
    );
    world.stop().await;
}

/// Policies are independent: the leaver's group removals refused for good do not keep the
/// organization-wide disable (a policy of its own) from asking for approval.
#[tokio::test]
async fn a_plan_refused_for_good_does_not_keep_another_policy_from_asking() {
    let mut ann = SeedUser::new("ann", "Ann");
    ann.status = gatehouse_sim::SimAccountStatus::Inactive;
    let seed = Seed {
        users: vec![ann],
        groups: vec![SeedGroup::new("g-0", "team-0", vec!["ann".into()])],
        ..Seed::default()
    };
    let two_policies = policies(
        r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]

[[policies]]
name = "leaver-org"
on = "user.deactivated"
actions = ["lifecycle.disable"]
allow_org_wide = true
"#,
    );
    let world = World::start(seed, two_policies, |_| {}).await;
    world
        .fault(gatehouse_sim::Fault::status("/userByGroupId", 403, 1).method("DELETE"))
        .await;
    world
        .send("user.deactivated", "msg-ann-two", json!({"account_id": "ann"}))
        .await;
    eventually(LONG, "the event dead-lettered", || async {
        !crate::queue::dead_letters(&world.app).await.is_empty()
    })
    .await;
    let letter = crate::queue::dead_letters(&world.app).await.remove(0);
    assert!(letter.reason.contains("policy `leaver`"), "{}", letter.reason);
    let waiting = world
        .app
        .store
        .approvals(gatehouse::store::ApprovalState::Pending)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].handler, "leaver-org");
    world.stop().await;
}
