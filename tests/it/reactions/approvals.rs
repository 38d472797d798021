//! Organization-wide actions wait for a person: nothing happens until approval, then exactly the
//! recorded plan; a rejected plan is never performed.

use gatehouse::config::Span;
use gatehouse::reactions::approvals::{
    Deciders, DecisionError, approve, expire_overdue, queue_unqueued, reject,
};
use gatehouse::store::ApprovalState;
use gatehouse_sim::{Seed, SeedGroup, SeedUser, SimAccountStatus};
use serde_json::json;

use super::{LONG, World, policies};
use crate::queue::eventually;
use gatehouse::outbound::Outbox;

fn ttl() -> Span {
    Span::parse("7d").unwrap()
}

const ORG_WIDE: &str = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups", "lifecycle.disable"]
allow_org_wide = true
"#;

fn leavers() -> Seed {
    let mut users = Vec::new();
    for id in ["cara", "dan"] {
        let mut user = SeedUser::new(id, id);
        user.status = SimAccountStatus::Inactive;
        users.push(user);
    }
    Seed {
        users,
        groups: vec![SeedGroup::new("g-x", "team-x", vec!["cara".into(), "dan".into()])],
        ..Seed::default()
    }
}

async fn pending(world: &World) -> Vec<gatehouse::store::Approval> {
    world.app.store.approvals(ApprovalState::Pending).await.unwrap()
}

/// A world where `account`'s deactivation planned org-wide actions, now waiting for a person;
/// with the event's id and the pending approval.
async fn leaver_awaiting_approval(account: &str) -> (World, String, gatehouse::store::Approval) {
    let world = World::start(leavers(), policies(ORG_WIDE), |_| {}).await;
    let event_id = world
        .send(
            "user.deactivated",
            &format!("msg-{account}"),
            json!({"account_id": account}),
        )
        .await;
    eventually(LONG, "a pending approval", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let approval = pending(&world).await.remove(0);
    (world, event_id, approval)
}

#[tokio::test]
async fn nothing_happens_until_approval_then_exactly_the_plan() {
    let (world, event_id, approval) = leaver_awaiting_approval("cara").await;
    assert_eq!(approval.event_id, event_id);
    assert_eq!(approval.handler, "leaver");
    // Waiting: nothing was changed.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Reads only (the v2 users-bulk status read is a POST).
    let writes = |requests: Vec<gatehouse_sim::LoggedRequest>| {
        requests
            .into_iter()
            .filter(|r| r.method != "GET" && !r.path.ends_with("/users-bulk"))
            .count()
    };
    assert_eq!(writes(world.requests().await), 0);
    assert_eq!(world.groups_of("cara").await, ["team-x"]);
    let audit = world.audit(&event_id).await;
    assert_eq!(audit.iter().filter(|(k, _)| k == "planned").count(), 2);

    // Someone changes the world meanwhile (cara joins another group): the approved plan is
    // still the recorded one, which knew nothing of it; a re-planned one would remove it too.
    let http = crate::helpers::http();
    let created = http
        .post(world.sim.url("/_sim/groups"))
        .json(&json!({"name": "team-late", "id": "g-late"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let joined = http
        .put(world.sim.url("/_sim/groups/g-late/members/cara"))
        .send()
        .await
        .unwrap();
    assert!(joined.status().is_success(), "{}", joined.status());
    assert_eq!(world.groups_of("cara").await, ["team-late", "team-x"]);
    let approved = approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &approval.id),
        "security-lead",
        ttl(),
    )
    .await
    .unwrap();
    assert_eq!(approved.id, approval.id);
    eventually(LONG, "the plan performed", || async {
        world
            .app
            .store
            .approval(&approval.id)
            .await
            .unwrap()
            .unwrap()
            .state
            == ApprovalState::Executed
    })
    .await;
    assert_eq!(world.groups_of("cara").await, ["team-late"]);
    let requests = world.requests().await;
    assert_eq!(requests.iter().filter(|r| r.method == "DELETE").count(), 1);
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.path.ends_with("/lifecycle/disable"))
            .count(),
        1
    );
    let audit = world.audit(&event_id).await;
    let kinds: Vec<&str> = audit.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains(&"approved"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "executed").count(), 2, "{kinds:?}");
    // Approving again does nothing more.
    assert!(
        approve(
            Deciders::new(&world.app.audit, &Outbox::default()),
            world.app.queue.as_ref(),
            ("default", &approval.id),
            "someone",
            ttl()
        )
        .await
        .is_err()
    );
    world.stop().await;
}

#[tokio::test]
async fn a_rejected_plan_is_never_performed() {
    let (world, event_id, approval) = leaver_awaiting_approval("dan").await;
    reject(
        Deciders::new(&world.app.audit, &Outbox::default()),
        ("default", &approval.id),
        "security-lead",
        Some("dan is a contractor, handled by HR"),
    )
    .await
    .unwrap();
    assert_eq!(
        world
            .app
            .store
            .approval(&approval.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ApprovalState::Rejected
    );
    assert!(
        approve(
            Deciders::new(&world.app.audit, &Outbox::default()),
            world.app.queue.as_ref(),
            ("default", &approval.id),
            "someone",
            ttl()
        )
        .await
        .is_err()
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(world.groups_of("dan").await, ["team-x"]);
    assert!(world.audit(&event_id).await.iter().any(|(k, _)| k == "rejected"));
    world.stop().await;
}

#[tokio::test]
async fn an_approval_from_anyone_but_gatehouse_is_not_believed() {
    let (world, _, approval) = leaver_awaiting_approval("cara").await;

    // A signed sender naming the internal type gets an `other.*` event, which nothing acts on.
    let forged = world
        .send(
            "approval.granted",
            "msg-forged",
            json!({"approval_id": approval.id}),
        )
        .await;
    world.settled(&forged, &["skipped"]).await;

    // Even an approval.granted that reached the queue some other way, for a plan that is
    // approved, is refused unless gatehouse itself published it.
    let mut tx = world.app.store.begin_write().await.unwrap();
    let approved = gatehouse::store::approvals::decide(
        &mut tx,
        &approval.id,
        ApprovalState::Pending,
        ApprovalState::Approved,
        Some("security-lead"),
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(approved);
    let payload =
        serde_json::value::RawValue::from_string(json!({"approval_id": approval.id}).to_string()).unwrap();
    let envelope = handlers::Envelope::new(
        handlers::EventType::ApprovalGranted,
        "relay",
        handlers::Scheme::StandardWebhooks,
        "forged-approval",
        payload,
    );
    let message = gatehouse::queue::OutgoingMessage::from_envelope(&envelope, "relay");
    world.app.queue.publish(&message).await.unwrap();
    eventually(LONG, "the forged approval dead-lettered", || async {
        world
            .app
            .store
            .dead_letters(&Default::default())
            .await
            .unwrap()
            .iter()
            .any(|l| l.reason.contains("is not gatehouse's own"))
    })
    .await;
    assert_eq!(world.groups_of("cara").await, ["team-x"], "nothing performed");
    let requests = world.requests().await;
    assert!(requests.iter().all(|r| r.method != "DELETE"), "no removal");
    world.stop().await;
}

/// The `approved` records about `event_id`, oldest first.
async fn approved_records(world: &World, event_id: &str) -> Vec<gatehouse::audit::AuditRecord> {
    gatehouse::audit::query::query(
        &world.app.store,
        &gatehouse::audit::AuditQuery {
            event_id: Some(event_id.parse().unwrap()),
            kinds: vec![gatehouse::audit::AuditKind::Approved],
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn state_of(world: &World, id: &str) -> ApprovalState {
    world.app.store.approval(id).await.unwrap().unwrap().state
}

#[tokio::test]
async fn a_plan_nobody_approved_in_time_expires_and_never_runs() {
    let (world, event_id, approval) = leaver_awaiting_approval("dan").await;
    let short = Span::parse("1s").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // Approving it now is refused, and the refusal expires it.
    let refused = approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &approval.id),
        "late",
        short,
    )
    .await;
    assert!(
        matches!(refused, Err(DecisionError::Expired { .. })),
        "{refused:?}"
    );
    assert_eq!(state_of(&world, &approval.id).await, ApprovalState::Expired);
    // The sweep finds nothing more to do; the plan never runs.
    assert_eq!(
        expire_overdue(Deciders::new(&world.app.audit, &Outbox::default()), short)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(world.groups_of("dan").await, ["team-x"]);
    assert!(world.requests().await.iter().all(|r| r.method != "DELETE"));
    let skipped: Vec<String> = gatehouse::audit::query::query(
        &world.app.store,
        &gatehouse::audit::AuditQuery {
            event_id: Some(event_id.parse().unwrap()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_iter()
    .filter(|r| r.record.kind.as_str() == "skipped")
    .map(|r| r.record.outcome.status)
    .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].starts_with("expired"), "{skipped:?}");
    world.stop().await;
}

#[tokio::test]
async fn the_periodic_sweep_expires_overdue_plans_once() {
    let (world, _, approval) = leaver_awaiting_approval("cara").await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let short = Span::parse("1s").unwrap();
    assert_eq!(
        expire_overdue(Deciders::new(&world.app.audit, &Outbox::default()), short)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        expire_overdue(Deciders::new(&world.app.audit, &Outbox::default()), short)
            .await
            .unwrap(),
        0
    );
    assert_eq!(state_of(&world, &approval.id).await, ApprovalState::Expired);
    world.stop().await;
}

#[tokio::test]
async fn an_approved_plan_for_someone_reactivated_since_does_not_run() {
    let (world, event_id, approval) = leaver_awaiting_approval("cara").await;
    // While the plan waited, cara came back.
    world.set_status("cara", "active").await;
    approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &approval.id),
        "security-lead",
        ttl(),
    )
    .await
    .unwrap();
    eventually(LONG, "the approval superseded", || async {
        state_of(&world, &approval.id).await == ApprovalState::Superseded
    })
    .await;
    assert_eq!(world.groups_of("cara").await, ["team-x"]);
    let requests = world.requests().await;
    assert!(requests.iter().all(|r| r.method != "DELETE"), "no removal");
    assert!(
        requests.iter().all(|r| !r.path.ends_with("/lifecycle/disable")),
        "no org-wide disable"
    );
    let audit = world.audit(&event_id).await;
    assert!(!audit.iter().any(|(k, _)| k == "executed"), "{audit:?}");
    assert!(audit.iter().any(|(k, _)| k == "skipped"), "{audit:?}");
    world.stop().await;
}

#[tokio::test]
async fn an_approved_plan_for_a_removed_user_runs_though_the_account_is_active() {
    // Removed from the site, still active in the organization: that is what the disable is for.
    let seed = Seed {
        users: vec![SeedUser::new("eli", "eli")],
        groups: vec![SeedGroup::new("g-x", "team-x", vec!["eli".into()])],
        ..Seed::default()
    };
    let removal = r#"
[[policies]]
name = "leaver"
on = "user.removed"
actions = ["confluence.remove_from_all_groups", "lifecycle.disable"]
allow_org_wide = true
"#;
    let world = World::start(seed, policies(removal), |_| {}).await;
    world
        .send("user.removed", "msg-eli", json!({"account_id": "eli"}))
        .await;
    eventually(LONG, "a pending approval", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let approval = pending(&world).await.remove(0);
    approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &approval.id),
        "security-lead",
        ttl(),
    )
    .await
    .unwrap();
    eventually(LONG, "the plan performed", || async {
        state_of(&world, &approval.id).await == ApprovalState::Executed
    })
    .await;
    assert!(world.groups_of("eli").await.is_empty());
    assert!(
        world
            .requests()
            .await
            .iter()
            .any(|r| r.path.ends_with("/lifecycle/disable"))
    );
    world.stop().await;
}

/// A joiner's plan waiting for approval is not performed for someone deactivated meanwhile:
/// approved, it is superseded, and no group is given.
#[tokio::test]
async fn an_approved_joiner_plan_yields_when_the_person_left_meanwhile() {
    let seed = Seed {
        users: vec![SeedUser::new("newt", "Newt")],
        groups: vec![SeedGroup::new("g-u", "confluence-users", vec![])],
        ..Seed::default()
    };
    let welcome = policies(
        r#"
[[policies]]
name = "welcome"
on = "user.created"
actions = ["confluence.add_to_groups"]
groups = ["confluence-users"]
approval = "required"
"#,
    );
    let world = World::start(seed, welcome, |_| {}).await;
    world
        .send("user.created", "msg-newt", json!({"account_id": "newt"}))
        .await;
    eventually(LONG, "the welcome waiting for a person", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let waiting = pending(&world).await.remove(0);
    world.set_status("newt", "inactive").await;
    approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &waiting.id),
        "security-lead",
        ttl(),
    )
    .await
    .unwrap();
    eventually(LONG, "the approved plan superseded", || async {
        world
            .app
            .store
            .approval(&waiting.id)
            .await
            .unwrap()
            .unwrap()
            .state
            == ApprovalState::Superseded
    })
    .await;
    assert!(world.groups_of("newt").await.is_empty());
    assert!(
        world
            .requests()
            .await
            .iter()
            .all(|r| r.method != "POST" || r.path.ends_with("/users-bulk")),
        "no membership added"
    );
    world.stop().await;
}

/// Dry run switched on (a restart with `dry_run = true`) after a plan was asked for: approving
/// it performs nothing, records what it would do as a dry run, dead-letters the event saying
/// why, and leaves it approved; approving it again once dry run is off performs it.
#[tokio::test]
async fn an_approved_plan_is_not_performed_while_dry_run_is_on_and_runs_when_approved_again() {
    let sim = gatehouse_sim::Simulator::start(leavers(), gatehouse_sim::Behaviour::default())
        .await
        .unwrap();
    let dir = crate::helpers::TempDir::new();
    let mut settings = super::settings_for_sim(&sim, &dir);
    settings.policies = policies(ORG_WIDE);
    let app = crate::helpers::TestApp::start(settings.clone(), None).await;
    let world = World {
        sim,
        app,
        http: crate::helpers::http(),
    };
    let event_id = world
        .send("user.deactivated", "msg-cara", json!({"account_id": "cara"}))
        .await;
    eventually(LONG, "a pending approval", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let waiting = pending(&world).await.remove(0);
    let World { sim, app, http } = world;
    app.shutdown().await;
    settings.reactions.dry_run = true;
    let app = crate::helpers::TestApp::start(settings.clone(), None).await;
    let world = World { sim, app, http };

    approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &waiting.id),
        "security-lead",
        ttl(),
    )
    .await
    .unwrap();
    eventually(LONG, "the approval's event dead-lettered", || async {
        world
            .app
            .store
            .dead_letters(&Default::default())
            .await
            .unwrap()
            .iter()
            .any(|l| l.reason.contains("dry_run is on") && l.reason.contains(&waiting.id))
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
    assert!(
        records
            .iter()
            .any(|r| r.record.kind == gatehouse::audit::AuditKind::Planned
                && r.record.dry_run
                && r.record
                    .action
                    .as_ref()
                    .is_some_and(|a| a.action_type == "confluence.remove_member")),
        "what the plan would do is recorded as a dry run"
    );
    assert!(
        records
            .iter()
            .all(|r| r.record.kind != gatehouse::audit::AuditKind::Executed),
        "nothing performed"
    );
    assert_eq!(state_of(&world, &waiting.id).await, ApprovalState::Approved);
    assert_eq!(world.groups_of("cara").await, ["team-x"]);
    assert!(world.requests().await.iter().all(|r| r.method != "DELETE"));

    // Dry run off again: approving once more performs the plan.
    let World { sim, app, http } = world;
    app.shutdown().await;
    settings.reactions.dry_run = false;
    let app = crate::helpers::TestApp::start(settings, None).await;
    let world = World { sim, app, http };
    approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &waiting.id),
        "security-lead",
        ttl(),
    )
    .await
    .unwrap();
    eventually(LONG, "the approved plan performed", || async {
        world.groups_of("cara").await.is_empty()
    })
    .await;
    let again = approved_records(&world, &event_id).await;
    assert!(
        again.iter().any(|r| r
            .record
            .outcome
            .status
            .contains("approved again by security-lead")),
        "whoever queued it again is on the trail: {again:?}"
    );
    eventually(LONG, "the approval executed", || async {
        state_of(&world, &waiting.id).await == ApprovalState::Executed
    })
    .await;
    world.stop().await;
}

/// The broker refuses the plan's publish after the decision committed (or the process stopped
/// in between): the plan is approved and never queued. The approvals sweep queues it, once, and
/// the trail says who did; a click on it meanwhile would have queued it too.
#[tokio::test]
async fn a_plan_approved_but_never_queued_is_queued_by_the_sweep() {
    let (world, event_id, approval) = leaver_awaiting_approval("cara").await;
    // A queue whose connection is gone: its publish fails.
    let closed = gatehouse::app::open_queue(&world.app.settings, &world.app.store)
        .await
        .unwrap();
    closed.close().await;
    let outbox = Outbox::default();
    let deciders = Deciders::new(&world.app.audit, &outbox);
    let failed = approve(
        deciders,
        closed.as_ref(),
        ("default", &approval.id),
        "security-lead",
        ttl(),
    )
    .await;
    assert!(matches!(failed, Err(DecisionError::Queue(_))), "{failed:?}");
    let stuck = world.app.store.approval(&approval.id).await.unwrap().unwrap();
    assert_eq!(stuck.state, ApprovalState::Approved);
    assert_eq!(stuck.queued_at, None);

    let swept = |at| queue_unqueued(deciders, world.app.queue.as_ref(), ttl(), at);
    // Too recent for a sweep a minute behind: its decider may still be publishing.
    assert_eq!(swept(stuck.decided_at.unwrap()).await.unwrap(), 0);
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(swept(now).await.unwrap(), 1);
    assert_eq!(swept(now).await.unwrap(), 0, "queued once");
    eventually(LONG, "the plan performed", || async {
        state_of(&world, &approval.id).await == ApprovalState::Executed
    })
    .await;
    assert!(world.groups_of("cara").await.is_empty());
    let approved = approved_records(&world, &event_id).await;
    let said: Vec<&str> = approved
        .iter()
        .map(|r| r.record.outcome.status.as_str())
        .collect();
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said[1].contains("approved again by gatehouse (its queuing"),
        "{said:?}"
    );
    world.stop().await;
}
