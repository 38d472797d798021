//! One account at a time across workers: a `user.created` and a `user.deactivated` about one
//! person, decided by HR a second apart and arriving together, handed to three worker processes
//! sharing the queue and the store, never leave the leaver in the default groups, whichever
//! worker takes which and in whatever order: on RabbitMQ, and on the embedded queue in
//! PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use gatehouse::app::Roles;
use gatehouse_sim::{Fault, Seed, SeedGroup, SeedUser};
use handlers::Authority;
use serde_json::json;

use gatehouse::config::{QueueBackend, SensitiveUrl};

use super::{World, policies};
use crate::helpers::TestApp;
use crate::queue::{eventually, metric};
use crate::store::PgDatabase;

const JOINER_AND_LEAVER: &str = r#"
[[policies]]
name = "joiner"
on = "user.created"
actions = ["confluence.add_to_groups"]
groups = ["team-x", "team-y", "team-z"]

[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
"#;

const PEOPLE: usize = 8;

fn settled(apps: &[&TestApp]) -> f64 {
    apps.iter()
        .map(|app| {
            ["ok", "skipped"]
                .iter()
                .map(|outcome| {
                    metric(
                        app,
                        &format!(
                            r#"gatehouse_worker_attempts_total{{tenant="default",outcome="{outcome}"}}"#
                        ),
                    )
                })
                .sum::<f64>()
        })
        .sum()
}

#[tokio::test]
async fn a_joiner_who_leaves_at_once_is_left_in_no_group_by_several_workers_on_rabbitmq() {
    joiner_who_leaves_at_once(None).await;
}

/// The same with the embedded queue, the three processes sharing it and the store in one
/// PostgreSQL database (what a deployment without a broker scales out on).
#[tokio::test]
async fn a_joiner_who_leaves_at_once_is_left_in_no_group_by_several_workers_on_postgres() {
    let database = PgDatabase::create().await;
    joiner_who_leaves_at_once(Some(&database.url)).await;
    database.drop_now().await;
}

async fn joiner_who_leaves_at_once(postgres: Option<&str>) {
    let people: Vec<String> = (0..PEOPLE).map(|i| format!("person-{i}")).collect();
    let seed = Seed {
        users: people
            .iter()
            .map(|p| SeedUser::new(p.as_str(), p.as_str()))
            .collect(),
        groups: vec![
            SeedGroup::new("g-x", "team-x", vec![]),
            SeedGroup::new("g-y", "team-y", vec![]),
            SeedGroup::new("g-z", "team-z", vec![]),
        ],
        ..Seed::default()
    };
    let world = World::start(seed, policies(JOINER_AND_LEAVER), |settings| {
        settings.sources[0].authority = Authority::Decision;
        settings.queue.retry_delays_seconds = vec![0.1, 0.2];
        // Small, so the three processes share the deliveries.
        settings.queue.prefetch = 2;
        settings.worker.concurrency = 2;
        if let Some(url) = postgres {
            settings.queue.backend = QueueBackend::Embedded;
            settings.queue.embedded_poll_ms = 25;
            settings.store.url = SensitiveUrl::new(url);
        }
    })
    .await;
    // Two more worker processes on the same queue and store.
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(TestApp::start_roles(world.app.settings.clone(), None, Roles::WORKER).await);
    }
    // Every Atlassian call takes a while, so plans overlap unless something keeps them apart.
    world
        .fault(Fault {
            times: None,
            ..Fault::delay("/rest/", 60, 0)
        })
        .await;

    let created_at = Utc::now() - chrono::Duration::seconds(2);
    let sends = people.iter().flat_map(|person| {
        let account = json!({"account_id": person});
        [
            ("user.created", format!("{person}-joins"), created_at),
            (
                "user.deactivated",
                format!("{person}-leaves"),
                created_at + chrono::Duration::seconds(1),
            ),
        ]
        .map(|(kind, delivery, at)| {
            let world = &world;
            let account = account.clone();
            async move { world.send_at(kind, &delivery, account, at).await }
        })
    });
    futures_util::future::join_all(sends).await;

    let mut apps: Vec<&TestApp> = vec![&world.app];
    apps.extend(workers.iter());
    eventually(Duration::from_secs(60), "every event settled", || async {
        settled(&apps) >= (2 * PEOPLE) as f64
    })
    .await;
    // Anything still planned would show now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for person in &people {
        assert!(
            world.groups_of(person).await.is_empty(),
            "{person} left in {:?}",
            world.groups_of(person).await
        );
    }
    // The work was shared, and some deliveries found their account held by another (and
    // waited for it).
    let sharing = apps.iter().filter(|app| settled(&[app]) > 0.0).count();
    assert!(sharing >= 2, "only {sharing} worker process took events");
    let waited: f64 = apps
        .iter()
        .map(|app| metric(app, "gatehouse_worker_account_waits_total"))
        .sum();
    assert!(waited >= 1.0, "no delivery ever waited for its account");
    for worker in workers {
        worker.shutdown().await;
    }
    world.stop().await;
}
