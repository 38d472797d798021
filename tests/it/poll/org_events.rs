//! The poller: a deactivation made in Atlassian (no webhook) is acted on after the next poll; an
//! event naming a malformed id names no one and does not stop the stream; a restart mid-stream
//! resumes from the saved cursor, losing nothing and acting on nothing twice; a killed poller is
//! taken over.

use std::time::Duration;

use gatehouse::app::Roles;
use gatehouse_sim::{Fault, Seed, SeedGroup, SeedUser};
use serde_json::json;

use gatehouse::config::Settings;
use gatehouse_sim::SimHandle;

use super::fast_events;
use crate::helpers::TcpProxy;
use crate::queue::eventually;
use crate::queue::scripted::Scripted;
use crate::reactions::{LONG, World, policies};

/// An org event naming an account id that is none (a path, here) is queued without it, so no
/// policy acts on it and no request carries it, and the poller goes on past it: the next event
/// on the stream is acted on.
#[tokio::test]
async fn an_org_event_with_a_malformed_id_is_queued_naming_no_one_and_the_poller_goes_on() {
    let seed = Seed {
        users: vec![SeedUser::new("ann", "Ann")],
        groups: vec![SeedGroup::new("g-a", "team-a", vec!["ann".into()])],
        ..Seed::default()
    };
    let deprovision = policies(
        r#"
        [[policies]]
        on = "user.deactivated"
        actions = ["confluence.remove_from_all_groups"]
        "#,
    );
    let world = World::start(seed, deprovision, |s| {
        s.poll.org_events = true;
        s.poll.interval_seconds = 1;
        fast_events(s);
    })
    .await;
    let forged = crate::helpers::http()
        .post(world.sim.url("/_sim/events"))
        .json(
            &json!({"action": "user_deactivated", "account_id": "../group/member?groupId=g-a&accountId=ann"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 201);
    world.set_status("ann", "inactive").await;
    eventually(LONG, "ann's own deactivation acted on", || async {
        world.groups_of("ann").await.is_empty()
    })
    .await;
    let polled = world.app.metrics.render();
    assert!(
        polled.contains(r#"gatehouse_poll_events_total{tenant="default",event_type="user.deactivated"} 2"#),
        "{polled}"
    );
    // Both were received (the forged one perhaps after ann's, on a busy machine); the forged
    // one names no one.
    let accounts = || async {
        gatehouse::audit::query::query(
            &world.app.store,
            &gatehouse::audit::AuditQuery {
                kinds: vec![gatehouse::audit::AuditKind::Received],
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record.account_id)
        .collect::<Vec<Option<String>>>()
    };
    eventually(LONG, "both events received", || async {
        accounts().await.len() >= 2
    })
    .await;
    let accounts = accounts().await;
    assert_eq!(accounts.len(), 2, "{accounts:?}");
    assert!(accounts.contains(&Some("ann".to_owned())), "{accounts:?}");
    assert!(accounts.contains(&None), "{accounts:?}");
    // The forged id reached no request.
    let requests = world.requests().await;
    assert!(
        requests
            .iter()
            .all(|r| !r.path.contains("..") && !r.query.as_deref().unwrap_or("").contains("..")),
        "{requests:?}"
    );
    world.stop().await;
}

/// Access suspended in the organization (the account stays active, as an external account's
/// does): the person's groups go, though Atlassian shows the account active.
#[tokio::test]
async fn a_suspended_account_that_stays_active_loses_its_groups() {
    let seed = Seed {
        users: vec![SeedUser::new("eve", "Eve")],
        groups: vec![SeedGroup::new("g-a", "team-a", vec!["eve".into()])],
        ..Seed::default()
    };
    let deprovision = policies(
        r#"
        [[policies]]
        on = ["user.deactivated", "user.removed"]
        actions = ["confluence.remove_from_all_groups"]
        "#,
    );
    let world = World::start(seed, deprovision, |s| {
        s.poll.org_events = true;
        s.poll.interval_seconds = 1;
        fast_events(s);
    })
    .await;
    let suspended = crate::helpers::http()
        .post(world.sim.url("/_sim/events"))
        .json(&json!({"action": "user_suspended", "account_id": "eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(suspended.status(), 201);
    eventually(LONG, "eve's groups removed", || async {
        world.groups_of("eve").await.is_empty()
    })
    .await;
    let polled = world.app.metrics.render();
    assert!(
        polled.contains(r#"gatehouse_poll_events_total{tenant="default",event_type="user.removed"} 1"#),
        "{polled}"
    );
    world.stop().await;
}

/// An org event that cannot be read at all (here a context item without an id), served between
/// two deactivations in one page, is skipped and counted: both deactivations on its page are
/// acted on, the cursor moves past the page, and a deactivation on the next page is acted on too.
#[tokio::test]
async fn an_unreadable_org_event_is_skipped_and_the_rest_of_its_page_and_the_stream_acted_on() {
    let seed = Seed {
        users: vec![
            SeedUser::new("ann", "Ann"),
            SeedUser::new("bob", "Bob"),
            SeedUser::new("cat", "Cat"),
        ],
        groups: vec![SeedGroup::new(
            "g-a",
            "team-a",
            vec!["ann".into(), "bob".into(), "cat".into()],
        )],
        ..Seed::default()
    };
    let deprovision = policies(
        r#"
        [[policies]]
        on = "user.deactivated"
        actions = ["confluence.remove_from_all_groups"]
        "#,
    );
    // The stream is unavailable until the page is in place, so the first page read holds all
    // three events.
    let unavailable = Fault {
        times: None,
        ..Fault::status("events-stream", 503, 0)
    };
    let world = World::start_with_faults(seed, deprovision, vec![unavailable], |s| {
        s.poll.org_events = true;
        s.poll.interval_seconds = 1;
        s.poll.backfill_from = Some(chrono::Utc::now() - chrono::Duration::minutes(5));
        fast_events(s);
    })
    .await;
    let http = crate::helpers::http();
    world.set_status("ann", "inactive").await;
    let broken = http
        .post(world.sim.url("/_sim/events/raw"))
        .json(&json!({
            "id": "e-broken", "type": "events",
            "attributes": {
                "time": "2026-01-01T00:00:00Z", "action": "user_deactivated",
                "context": [{"type": "users", "attributes": {"email": "dan@example.com"}}]
            }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 201);
    world.set_status("bob", "inactive").await;
    let cleared = http.delete(world.sim.url("/_sim/faults")).send().await.unwrap();
    assert_eq!(cleared.status(), 204);

    eventually(LONG, "ann's and bob's deactivations acted on", || async {
        world.groups_of("ann").await.is_empty() && world.groups_of("bob").await.is_empty()
    })
    .await;
    let pages: Vec<_> = world
        .requests()
        .await
        .into_iter()
        .filter(|r| r.path.ends_with("/events-stream") && r.status == Some(200))
        .collect();
    assert!(!pages.is_empty());
    assert!(
        !pages[0].query.as_deref().unwrap_or("").contains("cursor="),
        "the three events were on the first page read: {pages:?}"
    );
    // The next page: the stream goes on past the unreadable event.
    world.set_status("cat", "inactive").await;
    eventually(LONG, "cat's deactivation, on a later page, acted on", || async {
        world.groups_of("cat").await.is_empty()
    })
    .await;
    let metrics = world.app.metrics.render();
    assert!(
        metrics.contains(r#"gatehouse_poll_events_total{tenant="default",event_type="user.deactivated"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gatehouse_poll_events_unreadable_total{tenant="default"} 1"#),
        "{metrics}"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_deactivation_without_any_webhook_is_acted_on_after_the_next_poll() {
    let seed = Seed {
        users: vec![SeedUser::new("ann", "Ann")],
        groups: vec![
            SeedGroup::new("g-a", "team-a", vec!["ann".into()]),
            SeedGroup::new("g-all", "all-staff", vec!["ann".into()]),
        ],
        ..Seed::default()
    };
    let deprovision = policies(
        r#"
        [[policies]]
        on = "user.deactivated"
        actions = ["confluence.remove_from_all_groups"]
        keep_groups = ["all-staff"]
        "#,
    );
    let world = World::start(seed, deprovision, |s| {
        s.poll.org_events = true;
        s.poll.interval_seconds = 1;
        fast_events(s);
    })
    .await;
    // An admin deactivates Ann in Atlassian: Confluence Cloud sends no webhook for that.
    world.set_status("ann", "inactive").await;
    eventually(LONG, "ann loses team-a", || async {
        world.groups_of("ann").await == ["all-staff"]
    })
    .await;
    let polled = world.app.metrics.render().lines().any(|l| {
        l.starts_with(r#"gatehouse_poll_events_total{tenant="default",event_type="user.deactivated"}"#)
    });
    assert!(polled);
    world.stop().await;
}

/// A simulator whose organization has 25 `user_created` events (`u-00`..`u-24`) waiting, its
/// pages served slowly, and worker settings polling it five at a time from the beginning.
async fn slow_stream(dir: &crate::helpers::TempDir) -> (SimHandle, Settings) {
    let seed = Seed {
        users: (0..25).map(|i| SeedUser::new(format!("u-{i:02}"), "U")).collect(),
        ..Seed::default()
    };
    let sim = gatehouse_sim::Simulator::start(seed, gatehouse_sim::Behaviour::default())
        .await
        .unwrap();
    gatehouse::app::install_crypto_provider();
    let http = crate::helpers::http();
    for i in 0..25 {
        let created = http
            .post(sim.url("/_sim/events"))
            .json(&json!({"action": "user_created", "account_id": format!("u-{i:02}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    // Pages come slowly, so a process can be stopped with the stream half read.
    let slow = Fault::delay("events-stream", 300, 1_000);
    assert_eq!(
        http.post(sim.url("/_sim/faults"))
            .json(&slow)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let mut settings = crate::reactions::settings_for_sim(&sim, dir);
    settings.worker.concurrency = 2;
    settings.poll.org_events = true;
    settings.poll.interval_seconds = 1;
    settings.poll.page_size = 5;
    settings.poll.backfill_from = Some(chrono::DateTime::UNIX_EPOCH);
    fast_events(&mut settings);
    (sim, settings)
}

/// Polls of the events-stream in `requests` made without a cursor (from the beginning).
fn polls_without_cursor(requests: &[gatehouse_sim::LoggedRequest]) -> (usize, usize) {
    let polls: Vec<&gatehouse_sim::LoggedRequest> = requests
        .iter()
        .filter(|r| r.path.ends_with("/events-stream"))
        .collect();
    let without = polls
        .iter()
        .filter(|r| !r.query.as_deref().unwrap_or("").contains("cursor="))
        .count();
    (polls.len(), without)
}

#[tokio::test]
async fn a_restart_mid_stream_resumes_from_the_saved_cursor() {
    let dir = crate::helpers::TempDir::new();
    let (sim, settings) = slow_stream(&dir).await;
    let first = Scripted::new();
    let a = crate::helpers::TestApp::start_with(settings.clone(), None, Roles::WORKER, first.clone()).await;
    eventually(LONG, "the first page handled", || async {
        (0..25)
            .filter(|i| first.completions(&format!("u-{i:02}")) == 1)
            .count()
            >= 5
    })
    .await;
    a.shutdown().await;
    let handled_by_a = (0..25)
        .filter(|i| first.completions(&format!("u-{i:02}")) == 1)
        .count();
    assert!(handled_by_a < 25, "the first process read the whole stream");
    let cursor = gatehouse::store::Store::connect(&settings.store)
        .await
        .unwrap()
        .poll_cursor("org-events@default")
        .await
        .unwrap();
    assert!(cursor.is_some(), "a cursor was saved");

    // What the first process asked is behind us (its first poll may have been repeated: a page
    // is read again when queuing it failed, e.g. before the broker connection was up).
    let asked_before = sim.requests().len();
    let second = Scripted::new();
    let b = crate::helpers::TestApp::start_with(settings, None, Roles::WORKER, second.clone()).await;
    let total = |i: usize| first.completions(&format!("u-{i:02}")) + second.completions(&format!("u-{i:02}"));
    eventually(LONG, "every event handled", || async {
        (0..25).all(|i| total(i) >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..25 {
        assert_eq!(total(i), 1, "u-{i:02} acted on exactly once");
    }
    // The second process started from the cursor, not from the beginning.
    let (polls, without_cursor) = polls_without_cursor(&sim.requests()[asked_before..]);
    assert!(polls > 0);
    assert_eq!(
        without_cursor, 0,
        "the second process resumed from the saved cursor"
    );
    b.stop().await;
    sim.stop().await;
}

/// Two worker processes share the organization; the first to start holds the poller. Killed
/// mid-stream (no goodbye: its lease is left to run out, its broker connection dropped), it
/// leaves the poller to the other within the lease, which reads on from the saved cursor:
/// every event acted on exactly once, no page lost.
#[tokio::test]
async fn a_killed_pollers_lease_is_taken_over_by_another_process() {
    let dir = crate::helpers::TempDir::new();
    let (sim, mut settings) = slow_stream(&dir).await;
    settings.worker.singleton_lease_seconds = 3;
    // What the killed process was in the middle of is taken over quickly too.
    settings.worker.claim_lease_seconds = 2;
    // The first process reaches RabbitMQ through a proxy, so killing it drops its connection.
    let proxy = TcpProxy::start(crate::helpers::broker_addr()).await;
    let mut settings_a = settings.clone();
    settings_a.queue.url = gatehouse::config::BrokerUrls::new(proxy.amqp_url());
    let first = Scripted::new();
    let a = crate::helpers::TestApp::start_with(settings_a, None, Roles::WORKER, first.clone()).await;
    eventually(LONG, "the first pages handled", || async {
        (0..25)
            .filter(|i| first.completions(&format!("u-{i:02}")) == 1)
            .count()
            >= 5
    })
    .await;
    // The second process stands by: the first holds the lease.
    let second = Scripted::new();
    let b = crate::helpers::TestApp::start_with(settings, None, Roles::WORKER, second.clone()).await;
    let _ = a.kill(); // started without a folder of its own
    proxy.cut();
    let asked_before = sim.requests().len();
    let total = |i: usize| first.completions(&format!("u-{i:02}")) + second.completions(&format!("u-{i:02}"));
    eventually(LONG, "every event handled after the takeover", || async {
        (0..25).all(|i| total(i) >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..25 {
        assert_eq!(total(i), 1, "u-{i:02} acted on exactly once");
    }
    assert!(
        first.completions("u-24") == 0,
        "the first process read the whole stream before its kill"
    );
    let (polls, without_cursor) = polls_without_cursor(&sim.requests()[asked_before..]);
    assert!(polls > 0, "the second process polled");
    assert_eq!(without_cursor, 0, "it read on from the saved cursor");
    b.stop().await;
    sim.stop().await;
}

/// Atlassian allows the events-stream a few requests a minute: gatehouse keeps to that in every
/// window, while draining a backlog and across a restart (the request times are in the store).
#[tokio::test]
async fn the_events_stream_limit_holds_in_every_window_and_across_a_restart() {
    let seed = Seed {
        users: (0..40).map(|i| SeedUser::new(format!("w-{i:02}"), "W")).collect(),
        ..Seed::default()
    };
    let sim = gatehouse_sim::Simulator::start(seed, gatehouse_sim::Behaviour::default())
        .await
        .unwrap();
    let http = crate::helpers::http();
    for i in 0..40 {
        let created = http
            .post(sim.url("/_sim/events"))
            .json(&json!({"action": "user_created", "account_id": format!("w-{i:02}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let dir = crate::helpers::TempDir::new();
    let mut settings = crate::reactions::settings_for_sim(&sim, &dir);
    settings.poll.org_events = true;
    settings.poll.interval_seconds = 1;
    // A backlog of 40 events at 2 a page is 20 pages: far more than the window allows.
    settings.poll.page_size = 2;
    settings.poll.backfill_from = Some(chrono::DateTime::UNIX_EPOCH);
    settings.poll.requests_per_window = 3;
    settings.poll.window_seconds = 2;
    let first = Scripted::new();
    let a = crate::helpers::TestApp::start_with(settings.clone(), None, Roles::WORKER, first.clone()).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    a.shutdown().await;
    // Restarted at once: its first request must still respect the window.
    let second = Scripted::new();
    let b = crate::helpers::TestApp::start_with(settings, None, Roles::WORKER, second.clone()).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    b.stop().await;

    let polls: Vec<i64> = sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/events-stream"))
        .map(|r| r.at_ms)
        .collect();
    assert!(polls.len() >= 4, "it kept polling: {polls:?}");
    for (i, first) in polls.iter().enumerate() {
        let within = polls[i..].iter().take_while(|t| **t < first + 2_000).count();
        assert!(
            within <= 3,
            "{within} requests within 2 s from {first}: {polls:?}"
        );
    }
    sim.stop().await;
}

/// A first start whose first rounds fail (the stream unavailable, a wrong key) does not lose the
/// deactivations made meanwhile: until Atlassian gives a cursor, every round reads from when
/// polling first started, not from its own "now". The failed rounds are counted, and the first
/// success is stamped.
#[tokio::test]
async fn deactivations_while_the_first_rounds_fail_are_read_once_polling_works() {
    let seed = Seed {
        users: vec![SeedUser::new("ann", "Ann")],
        groups: vec![SeedGroup::new("g-a", "team-a", vec!["ann".into()])],
        ..Seed::default()
    };
    let deprovision = policies(
        r#"
        [[policies]]
        on = "user.deactivated"
        actions = ["confluence.remove_from_all_groups"]
        "#,
    );
    let unavailable = Fault {
        times: None,
        ..Fault::status("events-stream", 503, 0)
    };
    let world = World::start_with_faults(seed, deprovision, vec![unavailable], |s| {
        s.poll.org_events = true;
        s.poll.interval_seconds = 1;
        fast_events(s);
    })
    .await;
    let refused = || async {
        world
            .requests()
            .await
            .iter()
            .filter(|r| r.path.ends_with("/events-stream") && r.status == Some(503))
            .count()
    };
    eventually(LONG, "a first round failed", || async { refused().await >= 1 }).await;
    world.set_status("ann", "inactive").await;
    // A round after the deactivation fails too: its own "now" is past it.
    let before = refused().await;
    eventually(LONG, "a later round failed", || async {
        refused().await > before
    })
    .await;
    let metrics = world.app.metrics.render();
    assert!(
        metrics.contains(r#"gatehouse_poll_failures_total{tenant="default"}"#)
            && !metrics.contains("gatehouse_poll_last_success_timestamp_seconds{"),
        "{metrics}"
    );
    let cleared = crate::helpers::http()
        .delete(world.sim.url("/_sim/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    eventually(LONG, "ann's deactivation acted on", || async {
        world.groups_of("ann").await.is_empty()
    })
    .await;
    assert!(
        world
            .app
            .metrics
            .render()
            .contains(r#"gatehouse_poll_last_success_timestamp_seconds{tenant="default"}"#)
    );
    world.stop().await;
}
