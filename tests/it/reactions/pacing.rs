//! The pace of reactions across processes: every worker takes its share of the tenant's budget.

use super::{LONG, World, policies};
use crate::queue::eventually;

/// Two worker processes calling one tenant each take half of 95 % of its budget (counted
/// through leases in the store they share; several leave 5 % as slack together).
#[tokio::test]
async fn worker_processes_share_the_tenant_budget() {
    let world = World::start(ann(), policies(LEAVER), |s| {
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
            .find_map(|l| l.strip_prefix("gatehouse_atlassian_budget_share{tenant=\"default\"} "))
            .map(|v| v.trim().to_owned())
    };
    let half = |app: &crate::helpers::TestApp| {
        share(app)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| (v - 0.475).abs() < 1e-9)
    };
    eventually(LONG, "each process takes half of 95 %", || async {
        half(&world.app) && half(&second)
    })
    .await;
    second.shutdown().await;
    world.stop().await;
}

const LEAVER: &str = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
"#;

fn ann() -> gatehouse_sim::Seed {
    gatehouse_sim::Seed {
        users: vec![gatehouse_sim::SeedUser::new("ann", "Ann")],
        ..gatehouse_sim::Seed::default()
    }
}

/// A leaver's event waiting out a rate-limit pause when gatehouse is told to stop: the wait is
/// cut short and the event handed back at once (not after the grace period), its attempt not
/// counted; the next process performs what is left, and nothing twice.
#[tokio::test]
async fn a_shutdown_does_not_wait_out_a_rate_limit_pause() {
    use gatehouse_sim::{Behaviour, Fault, SeedGroup, SeedUser, SimAccountStatus, Simulator};

    let mut ann = SeedUser::new("ann", "Ann");
    ann.status = SimAccountStatus::Inactive;
    let seed = gatehouse_sim::Seed {
        users: vec![ann],
        groups: ["g-1", "g-2", "g-3"]
            .into_iter()
            .map(|id| SeedGroup::new(id, format!("team-{id}"), vec!["ann".into()]))
            .collect(),
        ..gatehouse_sim::Seed::default()
    };
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    let dir = crate::helpers::TempDir::new();
    let mut settings = super::settings_for_sim(&sim, &dir);
    settings.policies = policies(LEAVER);
    // Without the cut, the shutdown would wait out the 200 s Retry-After: a call may wait that
    // long, and the worker's grace period is longer still.
    settings.worker.shutdown_grace_seconds = 300;
    settings.atlassian.as_mut().unwrap().retry.max_wait_ms = 600_000;
    let world = World {
        sim,
        app: crate::helpers::TestApp::start(settings.clone(), None).await,
        http: crate::helpers::http(),
    };
    world
        .fault(Fault {
            retry_after_seconds: Some(200),
            ..Fault::status("userByGroupId?groupId=g-2", 429, 1_000).method("DELETE")
        })
        .await;
    let event_id = world
        .send(
            "user.deactivated",
            "msg-ann-paused",
            serde_json::json!({"account_id": "ann"}),
        )
        .await;
    let removals = |requests: &[gatehouse_sim::LoggedRequest], group: &str| {
        requests
            .iter()
            .filter(|r| r.method == "DELETE" && r.query_param("groupId") == Some(group))
            .filter(|r| r.status == Some(204))
            .count()
    };
    eventually(
        LONG,
        "g-1 removed and g-2 refused with a long Retry-After",
        || async {
            let requests = world.requests().await;
            removals(&requests, "g-1") == 1
                && requests
                    .iter()
                    .any(|r| r.query_param("groupId") == Some("g-2") && r.status == Some(429))
        },
    )
    .await;

    let World { sim, app, http } = world;
    if tokio::time::timeout(std::time::Duration::from_secs(60), app.shutdown())
        .await
        .is_err()
    {
        // The app was dropped unfinished: its queues are still on the shared broker.
        crate::helpers::delete_topology(&settings).await;
        panic!("the shutdown waited out the rate-limit pause");
    }
    let reopened = gatehouse::app::open_store(&settings).await.unwrap();
    let before = records_of(&reopened, &event_id).await;
    let interrupted = before
        .iter()
        .find(|r| r.record.kind.as_str() == "failed")
        .expect("the interrupted removal is recorded");
    assert!(
        interrupted
            .record
            .outcome
            .error
            .as_deref()
            .is_some_and(|e| e.contains("shutting down")),
        "{:?}",
        interrupted.record.outcome
    );
    assert!(
        !before.iter().any(|r| r.record.kind.as_str() == "dead_lettered"),
        "handed back, not parked"
    );
    reopened.close().await;

    // Atlassian answers again; the next process performs what is left, on the same attempt.
    let response = http.delete(sim.url("/_sim/faults")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let world = World {
        sim,
        app: crate::helpers::TestApp::start(settings, Some(dir)).await,
        http,
    };
    eventually(LONG, "ann is in no group", || async {
        world.groups_of("ann").await.is_empty()
    })
    .await;
    eventually(LONG, "three removals recorded as executed", || async {
        let records = records_of(&world.app.store, &event_id).await;
        records
            .iter()
            .filter(|r| r.record.kind.as_str() == "executed")
            .count()
            == 3
    })
    .await;
    let requests = world.requests().await;
    for group in ["g-1", "g-2", "g-3"] {
        assert_eq!(removals(&requests, group), 1, "{group} removed once");
    }
    let records = records_of(&world.app.store, &event_id).await;
    assert!(
        records.iter().all(|r| r.record.attempt == 1),
        "the handed-back event kept its attempt: {:?}",
        records
            .iter()
            .map(|r| (r.record.kind.as_str(), r.record.attempt))
            .collect::<Vec<_>>()
    );
    world.stop().await;
}

/// Every audit record about `event_id`.
async fn records_of(store: &gatehouse::store::Store, event_id: &str) -> Vec<gatehouse::audit::AuditRecord> {
    let query = gatehouse::audit::AuditQuery {
        event_id: Some(event_id.parse().unwrap()),
        limit: 10_000,
        ..Default::default()
    };
    gatehouse::audit::query::query(store, &query).await.unwrap()
}
