//! Outbound webhooks end to end: a leaver's event and the audit records of what was done reach a
//! local receiver, signed per Standard Webhooks (checked here with an independent HMAC), retried
//! through 5xx and 429, dead after the ladder with the reason, replayable; a slow endpoint holds
//! up neither another endpoint nor the reactions. On RabbitMQ with SQLite, and on the embedded
//! queue with PostgreSQL.

use std::time::Duration;

use gatehouse::audit::AuditKind;
use gatehouse::config::{OutboundSettings, QueueBackend, SensitiveUrl, Settings};
use gatehouse::store::outbox::{DeliveryState, OutboundDelivery};
use gatehouse_sim::{Seed, SeedGroup, SeedUser, SimAccountStatus};
use serde_json::json;

use crate::helpers::receiver::{Received, Receiver, Reply};
use crate::helpers::{secret, signing};
use crate::queue::eventually;
use crate::reactions::{LONG, World, policies};
use crate::store::PgDatabase;

/// Two keys, as during a rotation: each delivery carries a signature by each.
const KEY_A: &str = "whsec_c291dGgtYm91bmQta2V5LW51bWJlci1vbmUh";
const KEY_B: &str = "whsec_c291dGgtYm91bmQta2V5LW51bWJlci10d28h";

const LEAVER: &str = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
"#;

fn leavers(names: &[&str]) -> Seed {
    let mut users = Vec::new();
    for id in names {
        let mut user = SeedUser::new(*id, *id);
        user.status = SimAccountStatus::Inactive;
        users.push(user);
    }
    Seed {
        users,
        groups: vec![SeedGroup::new(
            "g-x",
            "team-x",
            names.iter().map(|n| (*n).to_owned()).collect(),
        )],
        ..Seed::default()
    }
}

/// An endpoint on the local receiver (plain HTTP on loopback, allowed on purpose), with one-second
/// rungs.
fn endpoint(name: &str, url: String) -> OutboundSettings {
    let mut endpoint = OutboundSettings::new(name, url, vec![secret("a", KEY_A), secret("b", KEY_B)]);
    endpoint.allow_http = true;
    endpoint.allow_private_addresses = true;
    endpoint.retry_seconds = vec![1, 1, 1];
    endpoint
}

/// Checks a delivery's signatures as a receiver would, with an HMAC computed here: every
/// configured key must have signed it, over `{id}.{timestamp}.{body}`.
fn assert_signed(request: &Received) {
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp: i64 = request.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 300);
    let signatures: Vec<&str> = request.header("webhook-signature").unwrap().split(' ').collect();
    for key in [KEY_A, KEY_B] {
        let expected = signing::standard_webhooks(key, id, timestamp, &request.body);
        assert!(
            signatures.contains(&expected[2].1.as_str()),
            "no valid signature by {key} among {signatures:?}"
        );
    }
}

async fn deliveries(world: &World, endpoint: &str) -> Vec<OutboundDelivery> {
    world
        .app
        .store
        .outbound_deliveries(Some(endpoint), None, 1_000)
        .await
        .unwrap()
}

/// Each of `endpoint`'s deliveries with its attempts.
async fn attempts_of(
    world: &World,
    endpoint: &str,
) -> Vec<(OutboundDelivery, Vec<gatehouse::store::outbox::Attempt>)> {
    let mut all = Vec::new();
    for delivery in deliveries(world, endpoint).await {
        let (_, attempts) = world
            .app
            .store
            .outbound_delivery(&delivery.id)
            .await
            .unwrap()
            .unwrap();
        all.push((delivery, attempts));
    }
    all
}

async fn all_in(world: &World, endpoint: &str, state: DeliveryState, count: usize) {
    eventually(
        LONG,
        &format!("{count} {endpoint} deliveries {}", state.as_str()),
        || async {
            let all = deliveries(world, endpoint).await;
            all.len() == count && all.iter().all(|d| d.state == state)
        },
    )
    .await;
}

async fn signed_and_retried(configure: impl FnOnce(&mut Settings)) {
    let receiver = Receiver::start().await;
    // The first attempt meets a 503, the second a 429 asking for three seconds' patience.
    receiver.script(
        "/soar",
        [
            Reply::status(503),
            Reply::Answer(429, vec![("retry-after", "3".to_owned())], String::new()),
        ],
    );
    let world = World::start(leavers(&["cara"]), policies(LEAVER), |settings| {
        let mut soar = endpoint("soar", receiver.url("/soar"));
        soar.types = vec!["user.*".parse().unwrap()];
        soar.audit_kinds = vec![AuditKind::Executed];
        settings.outbound.push(soar);
        configure(settings);
    })
    .await;
    let event_id = world
        .send("user.deactivated", "msg-cara", json!({"account_id": "cara"}))
        .await;
    world.settled(&event_id, &["executed"]).await;
    assert!(world.groups_of("cara").await.is_empty());
    // The event and the one `executed` record: nothing else of the trail was subscribed to.
    all_in(&world, "soar", DeliveryState::Delivered, 2).await;

    let requests = receiver.requests("/soar");
    assert_eq!(requests.len(), 4, "two deliveries, tried four times in all");
    for request in &requests {
        assert_signed(request);
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let event = requests
        .iter()
        .map(Received::json)
        .find(|body| body["type"] == "user.deactivated")
        .expect("the event was delivered");
    assert_eq!(event["data"]["id"], event_id.as_str());
    assert_eq!(event["data"]["subject"]["account_id"], "cara");
    let record = requests
        .iter()
        .map(Received::json)
        .find(|body| body["type"] == "audit.executed")
        .expect("the executed record was delivered");
    assert_eq!(record["data"]["kind"], "executed");
    assert_eq!(record["data"]["event_id"], event_id.as_str());
    assert_eq!(record["data"]["hash"].as_str().unwrap().len(), 64);

    // Each delivery kept its id through its retries, and every attempt is on record: between
    // them, the 503, the 429 and the two 200s. The 429 asked for 3 s, longer than the 1 s rung.
    let mut statuses = Vec::new();
    for (delivery, attempts) in attempts_of(&world, "soar").await {
        let sent = requests
            .iter()
            .filter(|r| r.header("webhook-id") == Some(delivery.id.as_str()))
            .count();
        assert_eq!(sent, attempts.len());
        assert_eq!(attempts.last().unwrap().status, Some(200));
        assert!(attempts.last().unwrap().error.is_none());
        for pair in attempts.windows(2) {
            let waited = pair[1].at - pair[0].at;
            match pair[0].status {
                Some(429) => assert!(waited >= chrono::Duration::seconds(3), "{waited}"),
                _ => assert!(waited >= chrono::Duration::seconds(1), "{waited}"),
            }
            assert!(pair[0].error.as_deref().unwrap().contains("answered"));
        }
        statuses.extend(attempts.iter().map(|a| a.status.unwrap()));
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429, 503]);

    let metrics = world.app.metrics().await;
    assert!(
        metrics.contains(r#"gatehouse_outbound_attempts_total{endpoint="soar",outcome="delivered"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gatehouse_outbound_attempts_total{endpoint="soar",outcome="retried"} 2"#),
        "{metrics}"
    );
    world.stop().await;
}

#[tokio::test]
async fn events_and_records_reach_the_endpoint_signed_and_retried_on_rabbitmq() {
    signed_and_retried(|_| {}).await;
}

#[tokio::test]
async fn events_and_records_reach_the_endpoint_signed_and_retried_on_the_embedded_queue() {
    let database = PgDatabase::create().await;
    let url = database.url.clone();
    signed_and_retried(move |settings| {
        settings.queue.backend = QueueBackend::Embedded;
        settings.queue.embedded_poll_ms = 25;
        settings.store.url = SensitiveUrl::new(url);
    })
    .await;
    database.drop_now().await;
}

/// An endpoint that asks to slow down (a 429 with `Retry-After`) is left alone that long by every
/// delivery, not only the refused one: the others do not meet the same refusal and spend a rung
/// of their ladders on it (a burst of approval requests to Slack would otherwise die).
#[tokio::test]
async fn an_endpoint_that_asks_to_slow_down_is_left_alone_by_every_delivery() {
    let receiver = Receiver::start().await;
    receiver.script(
        "/soar",
        [Reply::Answer(
            429,
            vec![("retry-after", "2".to_owned())],
            String::new(),
        )],
    );
    let world = World::start(leavers(&["cara"]), policies(LEAVER), |settings| {
        let mut soar = endpoint("soar", receiver.url("/soar"));
        soar.types = vec!["user.*".parse().unwrap()];
        soar.audit_kinds = vec![AuditKind::Executed];
        // One at a time, so the refusal is answered before the other delivery is taken.
        soar.max_in_flight = 1;
        settings.outbound.push(soar);
    })
    .await;
    let event_id = world
        .send("user.deactivated", "msg-cara", json!({"account_id": "cara"}))
        .await;
    world.settled(&event_id, &["executed"]).await;
    all_in(&world, "soar", DeliveryState::Delivered, 2).await;
    let attempts: Vec<_> = attempts_of(&world, "soar")
        .await
        .into_iter()
        .flat_map(|(_, tried)| tried)
        .collect();
    assert_eq!(
        attempts.len(),
        3,
        "the refused delivery twice, the other once: {attempts:?}"
    );
    let refused = attempts.iter().find(|a| a.status == Some(429)).unwrap().at;
    for attempt in attempts.iter().filter(|a| a.status != Some(429)) {
        assert!(
            attempt.at - refused >= chrono::Duration::seconds(2),
            "sent {} after the 429",
            attempt.at - refused
        );
    }
    world.stop().await;
}

#[tokio::test]
async fn a_delivery_is_dead_after_the_ladder_or_at_once_when_retrying_cannot_help_and_replays() {
    let receiver = Receiver::start().await;
    receiver.always("/down", Reply::Answer(500, Vec::new(), "database is down".into()));
    receiver.always(
        "/moved",
        Reply::Answer(302, vec![("location", "http://10.0.0.1/".into())], String::new()),
    );
    receiver.always("/gone", Reply::Answer(410, Vec::new(), "no such hook".into()));
    // A receiver that answers with a megabyte: a little of it is read, less is kept.
    receiver.always("/loud", Reply::Answer(400, Vec::new(), "x".repeat(1 << 20)));
    let world = World::start(leavers(&["dan"]), policies(LEAVER), |settings| {
        for (name, path) in [
            ("down", "/down"),
            ("moved", "/moved"),
            ("gone", "/gone"),
            ("loud", "/loud"),
        ] {
            let mut endpoint = endpoint(name, receiver.url(path));
            endpoint.types = vec!["user.deactivated".parse().unwrap()];
            endpoint.retry_seconds = vec![1];
            settings.outbound.push(endpoint);
        }
    })
    .await;
    let event_id = world
        .send("user.deactivated", "msg-dan", json!({"account_id": "dan"}))
        .await;
    for name in ["down", "moved", "gone", "loud"] {
        all_in(&world, name, DeliveryState::Dead, 1).await;
    }
    let reason = |name: &'static str| {
        let world = &world;
        async move { deliveries(world, name).await[0].last_error.clone().unwrap() }
    };
    assert_eq!(
        reason("down").await,
        "gave up after 2 attempts: answered 500 Internal Server Error: database is down"
    );
    assert_eq!(receiver.requests("/down").len(), 2);
    // A redirect is not followed (it pointed into the private network), and a 410 is not retried.
    assert!(
        reason("moved").await.contains("redirects are not followed"),
        "{}",
        reason("moved").await
    );
    assert_eq!(receiver.requests("/moved").len(), 1);
    assert!(reason("gone").await.contains("410"));
    assert_eq!(receiver.requests("/gone").len(), 1);
    let loud = reason("loud").await;
    assert!(loud.starts_with("answered 400 Bad Request: xxx"), "{loud}");
    assert!(loud.len() < 300, "{} characters kept", loud.len());
    // None of it held up the reaction.
    assert!(world.groups_of("dan").await.is_empty());

    // The receiver is fixed; replaying sends the same delivery (same id) again.
    receiver.always("/down", Reply::status(204));
    let dead = deliveries(&world, "down").await.remove(0);
    assert!(world.app.store.replay_outbound(&dead.id, None).await.unwrap());
    assert!(
        !world
            .app
            .store
            .replay_outbound("01NOSUCHDELIVERY000000000", None)
            .await
            .unwrap()
    );
    all_in(&world, "down", DeliveryState::Delivered, 1).await;
    let requests = receiver.requests("/down");
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].header("webhook-id"), Some(dead.id.as_str()));
    assert_eq!(requests[2].json()["data"]["id"], event_id.as_str());
    let (_, attempts) = world
        .app
        .store
        .outbound_delivery(&dead.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.len(), 3);
    world.stop().await;
}

#[tokio::test]
async fn a_slow_endpoint_holds_up_neither_another_endpoint_nor_the_reactions() {
    let slow = Receiver::start().await;
    slow.always("/slow", Reply::Hang(Duration::from_secs(60)));
    let fast = Receiver::start().await;
    let people = ["p1", "p2", "p3", "p4", "p5", "p6"];
    let world = World::start(leavers(&people), policies(LEAVER), |settings| {
        let mut stuck = endpoint("stuck", slow.url("/slow"));
        stuck.types = vec!["user.*".parse().unwrap()];
        stuck.timeout_seconds = 60;
        stuck.max_in_flight = 2;
        let mut quick = endpoint("quick", fast.url("/fast"));
        quick.types = vec!["user.*".parse().unwrap()];
        settings.outbound.extend([stuck, quick]);
    })
    .await;
    for person in people {
        world
            .send(
                "user.deactivated",
                &format!("msg-{person}"),
                json!({"account_id": person}),
            )
            .await;
    }
    all_in(&world, "quick", DeliveryState::Delivered, people.len()).await;
    eventually(LONG, "every leaver removed", || async {
        let mut all_gone = true;
        for person in people {
            all_gone &= world.groups_of(person).await.is_empty();
        }
        all_gone
    })
    .await;
    // Meanwhile the stuck endpoint has its two attempts hanging and the rest waiting.
    let stuck = deliveries(&world, "stuck").await;
    assert_eq!(stuck.len(), people.len());
    assert!(stuck.iter().all(|d| d.state == DeliveryState::Pending));
    // Its two places are taken (the second request may still be on its way on a busy machine),
    // and no third is sent while they hang.
    eventually(LONG, "two requests hanging at the stuck endpoint", || async {
        slow.requests("/slow").len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slow.requests("/slow").len(), 2);
    assert_eq!(fast.requests("/fast").len(), people.len());
    world.stop().await;
}

/// Runs `gatehouse outbound …` with `config`.
async fn outbound_cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(config)
        .arg("outbound")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_lists_shows_and_replays_dead_deliveries() {
    use gatehouse::store::outbox::{Attempt, NewDelivery, Settlement};

    let dir = crate::helpers::TempDir::new();
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!("[store]\nurl = \"sqlite://{}/gatehouse.db\"\n", dir.0.display()),
    )
    .unwrap();
    let settings = gatehouse::config::StoreSettings {
        url: SensitiveUrl::new(format!("sqlite://{}/gatehouse.db", dir.0.display())),
        max_connections: 2,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    };
    let store = gatehouse::store::Store::connect(&settings).await.unwrap();
    let new = |key: &str| NewDelivery {
        endpoint: "soar".into(),
        source_key: key.into(),
        message_type: "user.deactivated".into(),
        url: None,
        payload: r#"{"type":"user.deactivated"}"#.into(),
    };
    assert_eq!(
        store
            .enqueue_outbound(&[new("event:1"), new("event:2")])
            .await
            .unwrap(),
        2
    );
    // Offered again, nothing more is written.
    assert_eq!(store.enqueue_outbound(&[new("event:1")]).await.unwrap(), 0);
    let taken = store
        .take_outbound("soar", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let attempt = Attempt {
        attempt: 1,
        at: chrono::Utc::now(),
        millis: 12,
        status: Some(410),
        error: Some("answered 410 Gone: retrying cannot help".into()),
    };
    assert!(
        store
            .settle_outbound(&taken, &attempt, &Settlement::Dead)
            .await
            .unwrap()
    );
    // A settlement by a sender whose lease another took over writes nothing.
    assert!(
        !store
            .settle_outbound(&taken, &attempt, &Settlement::Delivered)
            .await
            .unwrap()
    );
    let dead_id = taken.delivery.id.clone();

    let (ok, listed, said) = outbound_cli(&config, &["list", "--state", "dead"]).await;
    assert!(ok, "{said}");
    assert!(
        listed.contains(&dead_id) && listed.contains("410 Gone"),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let (ok, shown, _) = outbound_cli(&config, &["show", &dead_id]).await;
    assert!(ok);
    assert!(
        shown.contains("state:     dead") && shown.contains("12 ms"),
        "{shown}"
    );
    let (ok, _, said) = outbound_cli(&config, &["list", "--state", "lost"]).await;
    assert!(!ok);
    assert!(said.contains("unknown state lost"), "{said}");
    let (ok, _, said) = outbound_cli(&config, &["replay", "--dead"]).await;
    assert!(ok, "{said}");
    assert!(said.contains("1 of 1 deliveries will be sent again"), "{said}");
    let (delivery, _) = store.outbound_delivery(&dead_id).await.unwrap().unwrap();
    assert_eq!(delivery.state, DeliveryState::Pending);
    assert_eq!(delivery.failures, 0);
    // A pending one cannot be replayed: it is on its way.
    let (ok, _, said) = outbound_cli(&config, &["replay", &dead_id]).await;
    assert!(!ok);
    assert!(said.contains("still pending"), "{said}");
    store.close().await;
}

#[tokio::test]
async fn a_policy_violation_gatehouse_publishes_itself_reaches_the_endpoint() {
    let receiver = Receiver::start().await;
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
    let guard = r#"
[[policies]]
name = "admins-guard"
on = "group.member_added"
actions = ["confluence.revert_protected_membership"]
protected_groups = [{ name = "confluence-administrators", allow = ["admin-1"] }]
"#;
    let world = World::start(seed, policies(guard), |settings| {
        let mut soar = endpoint("soar", receiver.url("/soar"));
        soar.types = vec!["policy.violation".parse().unwrap()];
        settings.outbound.push(soar);
    })
    .await;
    let event_id = world
        .send(
            "group.member_added",
            "msg-intrusion",
            json!({"account_id": "mallory", "group": {"name": "confluence-administrators"}}),
        )
        .await;
    // Only the violation: the group event itself is not subscribed to.
    all_in(&world, "soar", DeliveryState::Delivered, 1).await;
    let requests = receiver.requests("/soar");
    assert_eq!(requests.len(), 1);
    assert_signed(&requests[0]);
    let body = requests[0].json();
    assert_eq!(body["type"], "policy.violation");
    assert_eq!(body["data"]["subject"]["account_id"], "mallory");
    assert_eq!(body["data"]["payload"]["event_id"], event_id.as_str());
    assert!(world.groups_of("mallory").await.is_empty());
    world.stop().await;
}

/// Deliveries left for an endpoint that is no longer configured (renamed or removed) are said
/// to be waiting for nothing when the sender starts: nothing sends them, and no gauge counts
/// them.
#[tokio::test]
async fn deliveries_for_an_endpoint_no_longer_configured_are_warned_about() {
    let dir = crate::helpers::TempDir::new();
    let mut settings = crate::helpers::test_settings(&dir);
    settings
        .outbound
        .push(endpoint("soar", "http://127.0.0.1:9/soar".to_owned()));
    let store = gatehouse::app::open_store(&settings).await.unwrap();
    store
        .enqueue_outbound(&[gatehouse::store::outbox::NewDelivery {
            endpoint: "old-soar".to_owned(),
            source_key: "event:01ORPHAN".to_owned(),
            message_type: "user.deactivated".to_owned(),
            url: None,
            payload: "{}".to_owned(),
        }])
        .await
        .unwrap();
    let (capture, _guard, _interest) = crate::logging::capture_warnings();
    let metrics = gatehouse::telemetry::Metrics::new();
    let sender = gatehouse::outbound::sender::Sender::from_settings(
        &settings,
        store.clone(),
        metrics.outbound.clone(),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    sender.run(stop).await;
    let logged = capture.text();
    assert!(
        logged.contains("no longer configured") && logged.contains("old-soar"),
        "{logged}"
    );
    assert!(!logged.contains("\"endpoint\":\"soar\""), "{logged}");
    // With no endpoint left at all (nothing to run), it is said all the same.
    capture.0.lock().unwrap().clear();
    settings.outbound.clear();
    let none = gatehouse::outbound::sender::Sender::from_settings(
        &settings,
        store.clone(),
        metrics.outbound.clone(),
    )
    .unwrap();
    assert!(none.is_empty());
    none.warn_of_orphans().await;
    let logged = capture.text();
    assert!(logged.contains("old-soar"), "{logged}");
    store.close().await;
}
