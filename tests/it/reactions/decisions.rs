//! Decisions made elsewhere (an HR or IdP relay with `authority = "decision"`) are acted on
//! whatever Atlassian shows now; observations are checked against it; decisions about one
//! account are ordered by their own signed time.

use chrono::{Duration, Utc};
use gatehouse::config::Settings;
use gatehouse::reactions::approvals::{Deciders, approve};
use gatehouse::store::ApprovalState;
use gatehouse_sim::{Seed, SeedGroup, SeedUser};
use handlers::Authority;
use serde_json::json;

use super::{LONG, World, policies};
use crate::queue::eventually;
use gatehouse::outbound::Outbox;

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
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &approval.id),
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

/// A decision no policy acts on is still ordered: an older one arriving later is superseded.
#[tokio::test]
async fn a_decision_no_policy_handles_still_orders_the_others() {
    let leaver_only = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
"#;
    let world = World::start(active_ann(), policies(leaver_only), decisions).await;
    let now = Utc::now();
    // HR: ann stays (nothing to do about it here)...
    let stays = world
        .send_at("user.reactivated", "hr-2", json!({"account_id": "ann"}), now)
        .await;
    world.settled(&stays, &["skipped"]).await;
    // ...and an older leave decision arriving afterwards must not take her groups.
    let leaves = world
        .send_at(
            "user.deactivated",
            "hr-1",
            json!({"account_id": "ann"}),
            now - Duration::hours(1),
        )
        .await;
    world.settled(&leaves, &["skipped"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(world.groups_of("ann").await, ["team-x"]);
    world.stop().await;
}

/// Only a decision pointing the other way undoes an older one: an HR leaver decision is
/// performed, and its plan keeps waiting for approval, though newer decisions that agree with it
/// (a removal no policy acts on) were recorded before and after it.
#[tokio::test]
async fn a_newer_decision_pointing_the_same_way_cancels_nothing() {
    let world = World::start(active_ann(), policies(LEAVER), decisions).await;
    let now = Utc::now();
    let removed = world
        .send_at(
            "user.removed",
            "hr-2",
            json!({"account_id": "ann"}),
            now - Duration::minutes(1),
        )
        .await;
    world.settled(&removed, &["skipped"]).await;
    // Older, arriving later: still performed.
    world
        .send_at(
            "user.deactivated",
            "hr-1",
            json!({"account_id": "ann"}),
            now - Duration::minutes(5),
        )
        .await;
    eventually(LONG, "ann's groups removed", || async {
        world.groups_of("ann").await.is_empty()
    })
    .await;
    eventually(LONG, "the disable waits for a person", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let waiting = pending(&world).await.remove(0);
    // Newer than the waiting plan, and agreeing with it: the plan keeps waiting.
    let removed_again = world
        .send_at("user.removed", "hr-3", json!({"account_id": "ann"}), now)
        .await;
    world.settled(&removed_again, &["skipped"]).await;
    assert_eq!(
        world
            .app
            .store
            .approval(&waiting.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ApprovalState::Pending
    );
    approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &waiting.id),
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
    world.stop().await;
}

/// An observation that contradicts a decision waiting for approval (Atlassian reports the
/// person active) does not cancel it; approved, it is performed.
#[tokio::test]
async fn an_observation_does_not_cancel_a_decision_waiting_for_approval() {
    let world = World::start(active_ann(), policies(LEAVER), |s| {
        decisions(s);
        let mut seen = s.sources[0].clone();
        seen.name = "seen".into();
        seen.authority = Authority::Observation;
        s.sources.push(seen);
    })
    .await;
    world
        .send("user.deactivated", "hr-ann", json!({"account_id": "ann"}))
        .await;
    eventually(LONG, "the disable waits for a person", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let waiting = pending(&world).await.remove(0);
    let observed = world
        .send_via(
            "seen",
            "user.reactivated",
            "seen-ann",
            json!({"account_id": "ann"}),
        )
        .await;
    // Its own plan performed (welcome back to team-x): anything it would supersede is by now.
    world.settled(&observed, &["executed"]).await;
    assert_eq!(
        world
            .app
            .store
            .approval(&waiting.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ApprovalState::Pending,
        "the observation did not cancel the decision's plan"
    );
    approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &waiting.id),
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
    world.stop().await;
}

/// A decision without a signed time of its own cannot be ordered: refused, and one dated ahead
/// of the source's tolerance too.
#[tokio::test]
async fn decisions_need_a_signed_time_that_is_not_in_the_future() {
    let world = World::start(active_ann(), policies(LEAVER), decisions).await;
    let future = world
        .post_relay(
            json!({"type": "user.deactivated", "timestamp": (Utc::now() + Duration::hours(2)).to_rfc3339(), "data": {"account_id": "ann"}}),
            "hr-future",
        )
        .await;
    assert_eq!(future, 401);
    // Without a body timestamp, the signed webhook-timestamp dates it: accepted.
    let undated = world
        .post_relay(
            json!({"type": "user.deactivated", "data": {"account_id": "ann"}}),
            "hr-undated",
        )
        .await;
    assert_eq!(undated, 202);
    world.stop().await;
}

/// Copies of one leaver (the admin webhook and the org-events poll, or HR retrying with a new
/// delivery id) ask a person once: a copy whose policy would ask for exactly the same actions
/// joins the approval already waiting. A decision does not join an observation's approval (that
/// one yields when Atlassian shows the person active again; the decision's must not).
#[tokio::test]
async fn copies_of_a_leaver_ask_once_and_a_decision_does_not_wait_on_an_observation() {
    let mut seed = active_ann();
    seed.users[0].status = gatehouse_sim::SimAccountStatus::Inactive;
    let world = World::start(seed, policies(LEAVER), |s| {
        decisions(s);
        let mut seen = s.sources[0].clone();
        seen.name = "seen".into();
        seen.authority = Authority::Observation;
        s.sources.push(seen);
    })
    .await;
    let ann = || json!({"account_id": "ann"});
    let already_asked = |event_id: String| {
        let world = &world;
        async move {
            let query = gatehouse::audit::AuditQuery {
                event_id: Some(event_id.parse().unwrap()),
                limit: 100,
                ..Default::default()
            };
            gatehouse::audit::query::query(&world.app.store, &query)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.record.handler.as_deref() == Some("leaver-org"))
                .find_map(|r| r.record.outcome.error.filter(|e| e.contains("not asked again")))
        }
    };

    world
        .send_via("seen", "user.deactivated", "seen-ann-1", ann())
        .await;
    eventually(LONG, "the observation's disable waits", || async {
        pending(&world).await.len() == 1
    })
    .await;
    let observed = pending(&world).await.remove(0);
    let copy = world
        .send_via("seen", "user.deactivated", "seen-ann-2", ann())
        .await;
    eventually(LONG, "the copy joins the waiting approval", || async {
        already_asked(copy.clone()).await.is_some()
    })
    .await;
    let why = already_asked(copy.clone()).await.unwrap();
    assert!(why.contains(&observed.id), "{why}");
    assert_eq!(pending(&world).await.len(), 1);

    // HR's decision asks on its own; HR's retry with a new delivery id joins it.
    world.send("user.deactivated", "hr-ann-1", ann()).await;
    eventually(LONG, "the decision's disable waits on its own", || async {
        pending(&world).await.len() == 2
    })
    .await;
    let decided = pending(&world)
        .await
        .into_iter()
        .find(|a| a.id != observed.id)
        .unwrap();
    let retry = world.send("user.deactivated", "hr-ann-2", ann()).await;
    eventually(LONG, "the retry joins the decision's approval", || async {
        already_asked(retry.clone()).await.is_some()
    })
    .await;
    assert!(already_asked(retry).await.unwrap().contains(&decided.id));
    assert_eq!(pending(&world).await.len(), 2);

    approve(
        Deciders::new(&world.app.audit, &Outbox::default()),
        world.app.queue.as_ref(),
        ("default", &decided.id),
        "security-lead",
        gatehouse::config::Span::parse("7d").unwrap(),
    )
    .await
    .unwrap();
    eventually(LONG, "the disable performed", || async {
        world
            .app
            .store
            .approval(&decided.id)
            .await
            .unwrap()
            .unwrap()
            .state
            == ApprovalState::Executed
    })
    .await;
    let disables = world
        .requests()
        .await
        .iter()
        .filter(|r| r.path.ends_with("/lifecycle/disable"))
        .count();
    assert_eq!(disables, 1);
    world.stop().await;
}
