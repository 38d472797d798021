//! Decisions made elsewhere (an HR or IdP relay with `authority = "decision"`) are acted on
//! whatever Atlassian shows now; observations are checked against it; decisions about one
//! account are ordered by their own signed time.

use chrono::{Duration, Utc};
use gatehouse::config::Settings;
use gatehouse::reactions::approvals::approve;
use gatehouse::store::ApprovalState;
use gatehouse_sim::{Seed, SeedGroup, SeedUser};
use handlers::Authority;
use serde_json::json;

use super::{LONG, World, policies};
use crate::queue::eventually;

/// Groups go at once; the organization-wide disable waits for a person.
const LEAVER: &str = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]

[[policies]]
name = "leaver-org"
on = "user.deactivated"
actions = ["lifecycle.disable"]
allow_org_wide = true

[[policies]]
name = "welcome-back"
on = "user.reactivated"
actions = ["confluence.add_to_groups"]
groups = ["team-x"]
"#;

/// Ann is active in Atlassian and in one group.
fn active_ann() -> Seed {
    Seed {
        users: vec![SeedUser::new("ann", "Ann")],
        groups: vec![SeedGroup::new("g-x", "team-x", vec!["ann".into()])],
        ..Seed::default()
    }
}

fn decisions(settings: &mut Settings) {
    settings.sources[0].authority = Authority::Decision;
}

async fn pending(world: &World) -> Vec<gatehouse::store::Approval> {
    world.app.store.approvals(ApprovalState::Pending).await.unwrap()
}

async fn authorities(world: &World, event_id: &str) -> Vec<Option<Authority>> {
    let query = gatehouse::audit::AuditQuery {
        event_id: Some(event_id.parse().unwrap()),
        limit: 100,
        ..Default::default()
    };
    gatehouse::audit::query::query(&world.app.store, &query)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record.authority)
        .collect()
}

#[tokio::test]
async fn a_decision_is_acted_on_though_atlassian_shows_the_person_active() {
    let world = World::start(active_ann(), policies(LEAVER), decisions).await;
    let event_id = world
        .send("user.deactivated", "hr-ann-leaves", json!({"account_id": "ann"}))
        .await;
    eventually(LONG, "ann's groups removed", || async {
        world.groups_of("ann").await.is_empty()
    })
    .await;
    eventually(LONG, "the disable waits for a person", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let approval = pending(&world).await.remove(0);
    assert_eq!(approval.handler, "leaver-org");
    approve(
        &world.app.audit,
        world.app.queue.as_ref(),
        &approval.id,
        "security-lead",
        gatehouse::config::Span::parse("7d").unwrap(),
    )
    .await
    .unwrap();
    eventually(LONG, "the disable performed", || async {
        world
            .requests()
            .await
            .iter()
            .any(|r| r.path.ends_with("/lifecycle/disable"))
    })
    .await;
    // Every record about the event says it was a decision.
    let authorities = authorities(&world, &event_id).await;
    assert!(!authorities.is_empty());
    assert!(
        authorities.iter().all(|a| *a == Some(Authority::Decision)),
        "{authorities:?}"
    );
    world.stop().await;
}

#[tokio::test]
async fn the_same_from_an_observation_source_is_skipped_as_stale() {
    let world = World::start(active_ann(), policies(LEAVER), |_| {}).await;
    let event_id = world
        .send("user.deactivated", "seen-ann-leave", json!({"account_id": "ann"}))
        .await;
    world.settled(&event_id, &["skipped"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(world.groups_of("ann").await, ["team-x"]);
    assert!(pending(&world).await.is_empty());
    assert!(
        authorities(&world, &event_id)
            .await
            .iter()
            .all(|a| *a == Some(Authority::Observation))
    );
    world.stop().await;
}

#[tokio::test]
async fn an_older_decision_arriving_later_is_superseded() {
    let world = World::start(active_ann(), policies(LEAVER), decisions).await;
    let now = Utc::now();
    // HR decided at 10:00 that ann leaves; a reactivation decided at 09:00 arrives afterwards.
    let leaves = world
        .send_at("user.deactivated", "hr-1", json!({"account_id": "ann"}), now)
        .await;
    eventually(LONG, "ann's groups removed", || async {
        world.groups_of("ann").await.is_empty()
    })
    .await;
    world.settled(&leaves, &["executed"]).await;
    let stays = world
        .send_at(
            "user.reactivated",
            "hr-0",
            json!({"account_id": "ann"}),
            now - Duration::hours(1),
        )
        .await;
    world.settled(&stays, &["skipped"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        world.groups_of("ann").await.is_empty(),
        "the older decision changed nothing"
    );
    let query = gatehouse::audit::AuditQuery {
        event_id: Some(stays.parse().unwrap()),
        limit: 100,
        ..Default::default()
    };
    let why: Vec<String> = gatehouse::audit::query::query(&world.app.store, &query)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.record.outcome.error)
        .collect();
    assert!(
        why.iter()
            .any(|w| w.contains("superseded by the newer decision user.deactivated")),
        "{why:?}"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_newer_decision_supersedes_an_older_plan_still_waiting() {
    let world = World::start(active_ann(), policies(LEAVER), decisions).await;
    let now = Utc::now();
    world
        .send_at(
            "user.deactivated",
            "hr-1",
            json!({"account_id": "ann"}),
            now - Duration::minutes(5),
        )
        .await;
    eventually(LONG, "the disable waits for a person", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let waiting = pending(&world).await.remove(0);
    // HR changed its mind: ann stays.
    world
        .send_at("user.reactivated", "hr-2", json!({"account_id": "ann"}), now)
        .await;
    eventually(LONG, "the waiting plan superseded", || async {
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
    eventually(LONG, "ann back in her group", || async {
        world.groups_of("ann").await == ["team-x"]
    })
    .await;
    assert!(
        world
            .requests()
            .await
            .iter()
            .all(|r| !r.path.ends_with("/lifecycle/disable"))
    );
    world.stop().await;
}

/// Two worker processes calling one tenant each take half of its budget (counted through
/// leases in the store they share).
#[tokio::test]
async fn worker_processes_share_the_tenant_budget() {
    let world = World::start(active_ann(), policies(LEAVER), |s| {
        s.atlassian.as_mut().unwrap().rate_limit.tenant_per_second = Some(20.0);
    })
    .await;
    let second =
        crate::helpers::TestApp::start_roles(world.app.settings.clone(), None, gatehouse::app::Roles::WORKER)
            .await;
    let share = |app: &crate::helpers::TestApp| {
        app.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("gatehouse_atlassian_budget_share "))
            .map(|v| v.trim().to_owned())
    };
    eventually(LONG, "each process takes half", || async {
        share(&world.app).as_deref() == Some("0.5") && share(&second).as_deref() == Some("0.5")
    })
    .await;
    second.shutdown().await;
    world.stop().await;
}
