//! Approvals in Slack, against a local fake of Slack's endpoints: a plan that waits is posted
//! (Block Kit, `ORG-WIDE` marked, Approve / Reject carrying the approval id); a signed click by an
//! approver decides through the same path as `gatehouse approvals` and replaces the message with
//! who decided; forged, stale and non-approver clicks decide nothing and are recorded. With a bot
//! token, a plan settled outside Slack (the CLI, the console) replaces the message too.

use gatehouse::audit::{AuditKind, AuditQuery, AuditRecord};
use gatehouse::config::{Secret, SlackSettings};
use gatehouse::store::ApprovalState;
use gatehouse::store::outbox::DeliveryState;
use gatehouse_sim::{Seed, SeedGroup, SeedUser, SimAccountStatus};
use serde_json::{Value, json};

use crate::helpers::receiver::{Receiver, Reply};
use crate::helpers::signing;
use crate::queue::eventually;
use crate::reactions::{LONG, World, policies};

const SIGNING_SECRET: &str = "3c1b6d52e0a94f8f9a17c0de51ac4cbb";
const APPROVER: &str = "U0APPROVER";
const RESPONSE_PATH: &str = "/actions/T0/42/r3sp0nse";

const ORG_WIDE: &str = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups", "lifecycle.disable"]
allow_org_wide = true
"#;

fn leaver(id: &str) -> Seed {
    let mut user = SeedUser::new(id, id);
    user.status = SimAccountStatus::Inactive;
    Seed {
        users: vec![user],
        groups: vec![SeedGroup::new("g-x", "team-x", vec![id.to_owned()])],
        ..Seed::default()
    }
}

/// `[approvals.slack]` on the fake: through an incoming webhook, or with a bot token.
fn slack_on(fake: &Receiver, bot: bool) -> SlackSettings {
    let mut slack = SlackSettings::with_webhook(
        Secret::new(fake.url("/services/T0/B0/hook")),
        Secret::new(SIGNING_SECRET),
        vec![APPROVER.to_owned()],
    );
    if bot {
        slack.webhook_url = None;
        slack.bot_token = Some(Secret::new("xoxb-0000-test"));
        slack.channel = Some("C0APPROVALS".to_owned());
        slack.api_url = fake.url("/api");
    }
    slack.hooks_url = fake.url("/actions/");
    slack.allow_http = true;
    slack.allow_private_addresses = true;
    slack.retry_seconds = vec![1, 1];
    slack
}

/// A plan waiting for `account`, and the message Slack got about it.
async fn waiting(world: &World, fake: &Receiver, post_path: &str, account: &str) -> (String, Value) {
    world
        .send(
            "user.deactivated",
            &format!("msg-{account}"),
            json!({"account_id": account}),
        )
        .await;
    eventually(LONG, "the approval message posted", || async {
        let posted = world
            .app
            .store
            .outbound_deliveries(Some("slack"), Some(DeliveryState::Delivered), 10);
        !posted.await.unwrap().is_empty()
    })
    .await;
    let approvals = world.app.store.approvals(ApprovalState::Pending).await.unwrap();
    assert_eq!(approvals.len(), 1);
    let message = fake.requests(post_path).last().unwrap().json();
    (approvals[0].id.clone(), message)
}

/// Slack's form body for a click on `action` of approval `id` by `user`.
fn click(user: &str, action: &str, id: &str, response_url: &str) -> Vec<u8> {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": "sam"},
        "team": {"id": "T0"},
        "response_url": response_url,
        "actions": [{"action_id": action, "block_id": "approval", "value": id, "type": "button", "action_ts": format!("{}.000100", chrono::Utc::now().timestamp_micros())}]
    });
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
        .into_bytes()
}

async fn post_click(world: &World, body: &[u8], headers: Vec<(&'static str, String)>) -> u16 {
    let mut request = world
        .app
        .http
        .post(world.app.url("/slack/actions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn signed_click(world: &World, body: &[u8]) -> u16 {
    let headers = signing::slack(SIGNING_SECRET, chrono::Utc::now().timestamp(), body);
    post_click(world, body, headers).await
}

async fn records(world: &World, kind: AuditKind) -> Vec<AuditRecord> {
    let query = AuditQuery {
        kinds: vec![kind],
        limit: 1_000,
        ..Default::default()
    };
    gatehouse::audit::query::query(&world.app.store, &query)
        .await
        .unwrap()
}

fn text_of(message: &Value) -> String {
    message.to_string()
}

#[tokio::test]
async fn an_approver_approves_in_slack_and_the_plan_is_performed_as_recorded() {
    let fake = Receiver::start().await;
    // Slack's Web API answers 200 with `ok: false` when it wants a caller to slow down.
    fake.script(
        "/api/chat.postMessage",
        [Reply::Answer(
            200,
            Vec::new(),
            r#"{"ok":false,"error":"ratelimited"}"#.into(),
        )],
    );
    fake.always(
        "/api/chat.postMessage",
        Reply::Answer(200, Vec::new(), r#"{"ok":true,"ts":"1.2"}"#.into()),
    );
    let world = World::start(leaver("cara"), policies(ORG_WIDE), |settings| {
        settings.approvals.slack = Some(slack_on(&fake, true));
    })
    .await;
    let (id, message) = waiting(&world, &fake, "/api/chat.postMessage", "cara").await;
    let posts = fake.requests("/api/chat.postMessage");
    assert_eq!(posts.len(), 2, "the rate-limited post was retried");
    assert_eq!(posts[1].header("authorization"), Some("Bearer xoxb-0000-test"));
    assert_eq!(message["channel"], "C0APPROVALS");
    let text = text_of(&message);
    assert!(text.contains("`cara`"), "{text}");
    assert!(text.contains("`leaver`"), "{text}");
    assert!(text.contains("*ORG-WIDE* `lifecycle.disable`"), "{text}");
    let buttons = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .unwrap()["elements"]
        .as_array()
        .unwrap()
        .clone();
    let values: Vec<(&str, &str)> = buttons
        .iter()
        .map(|b| (b["action_id"].as_str().unwrap(), b["value"].as_str().unwrap()))
        .collect();
    assert_eq!(values, [("approve", id.as_str()), ("reject", id.as_str())]);
    // Nothing happened yet.
    assert_eq!(world.groups_of("cara").await, ["team-x"]);

    let response_url = fake.url(RESPONSE_PATH);
    assert_eq!(
        signed_click(&world, &click(APPROVER, "approve", &id, &response_url)).await,
        200
    );
    eventually(LONG, "the approved plan performed", || async {
        world.app.store.approval(&id).await.unwrap().unwrap().state == ApprovalState::Executed
    })
    .await;
    assert!(world.groups_of("cara").await.is_empty());
    let approved = records(&world, AuditKind::Approved).await;
    assert_eq!(approved.len(), 1);
    assert_eq!(
        approved[0].record.outcome.status,
        format!("approved by slack:{APPROVER} (sam) (approval {id})")
    );
    assert_eq!(records(&world, AuditKind::Executed).await.len(), 2);
    eventually(LONG, "the message replaced with the decision", || async {
        !fake.requests(RESPONSE_PATH).is_empty()
    })
    .await;
    let update = fake.requests(RESPONSE_PATH)[0].json();
    assert_eq!(update["replace_original"], true);
    assert!(
        text_of(&update).contains(&format!("*Approved* by <@{APPROVER}>")),
        "{update}"
    );

    // A second click decides nothing more, and says so to the clicker alone.
    assert_eq!(
        signed_click(&world, &click(APPROVER, "reject", &id, &response_url)).await,
        200
    );
    eventually(LONG, "the second click answered", || async {
        fake.requests(RESPONSE_PATH).len() == 2
    })
    .await;
    let second = fake.requests(RESPONSE_PATH)[1].json();
    assert_eq!(second["response_type"], "ephemeral");
    assert!(second["text"].as_str().unwrap().contains("already"), "{second}");
    assert_eq!(records(&world, AuditKind::Rejected).await.len(), 0);
    // Nor does Approve again (a stale message, a replayed click): the clicker is not credited.
    assert_eq!(
        signed_click(&world, &click(APPROVER, "approve", &id, &response_url)).await,
        200
    );
    eventually(LONG, "the third click answered", || async {
        fake.requests(RESPONSE_PATH).len() == 3
    })
    .await;
    let third = fake.requests(RESPONSE_PATH)[2].json();
    assert_eq!(third["response_type"], "ephemeral");
    assert!(third["text"].as_str().unwrap().contains("already"), "{third}");
    assert!(!text_of(&third).contains("*Approved* by"), "{third}");
    assert_eq!(records(&world, AuditKind::Approved).await.len(), 1);
    world.stop().await;
}

/// The fake answers `chat.postMessage` as Slack does (where the message went: the channel's id
/// and the message's `ts`), and `chat.update` with `ok`.
fn answers_as_the_web_api(fake: &Receiver, ts: &str) {
    fake.always(
        "/api/chat.postMessage",
        Reply::Answer(
            200,
            Vec::new(),
            json!({"ok": true, "channel": "C0APPROVALS", "ts": ts}).to_string(),
        ),
    );
    fake.always(
        "/api/chat.update",
        Reply::Answer(200, Vec::new(), r#"{"ok":true}"#.into()),
    );
}

/// Decided outside Slack, as `gatehouse approvals` and the console decide.
async fn decide_outside_slack(world: &World, id: &str, approve: bool, by: &str) {
    let outbox = gatehouse::outbound::Outbox::from_settings(&world.app.settings);
    let deciders = gatehouse::reactions::approvals::Deciders::new(&world.app.audit, &outbox);
    let tenant = gatehouse::reactions::approvals::tenant_of(&world.app.store, id)
        .await
        .unwrap();
    if approve {
        let ttl = world.app.settings.reactions.approval_ttl;
        gatehouse::reactions::approvals::approve(deciders, world.app.queue.as_ref(), (&tenant, id), by, ttl)
            .await
            .unwrap();
    } else {
        gatehouse::reactions::approvals::reject(deciders, (&tenant, id), by, Some("not a leaver <!channel>"))
            .await
            .unwrap();
    }
}

/// Every delivery of the Slack outbox, newest first.
async fn slack_deliveries(world: &World) -> Vec<gatehouse::store::outbox::OutboundDelivery> {
    world
        .app
        .store
        .outbound_deliveries(Some("slack"), None, 20)
        .await
        .unwrap()
}

/// The Slack outbox's delivery of type `message_type` and its attempts (there is one).
async fn slack_delivery(
    world: &World,
    message_type: &str,
) -> (
    gatehouse::store::outbox::OutboundDelivery,
    Vec<gatehouse::store::outbox::Attempt>,
) {
    let found = slack_deliveries(world)
        .await
        .into_iter()
        .find(|d| d.message_type == message_type)
        .unwrap_or_else(|| panic!("no {message_type} delivery"));
    world
        .app
        .store
        .outbound_delivery(&found.id)
        .await
        .unwrap()
        .unwrap()
}

/// The plan waiting in `world` (there is one).
async fn pending_approval(world: &World) -> String {
    eventually(LONG, "the plan waiting", || async {
        !world
            .app
            .store
            .approvals(ApprovalState::Pending)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    world.app.store.approvals(ApprovalState::Pending).await.unwrap()[0]
        .id
        .clone()
}

#[tokio::test]
async fn a_plan_approved_outside_slack_replaces_its_message_once_it_was_posted() {
    let fake = Receiver::start().await;
    // Slack is down: the request cannot be posted.
    fake.always(
        "/api/chat.postMessage",
        Reply::Answer(503, Vec::new(), String::new()),
    );
    let world = World::start(leaver("erin"), policies(ORG_WIDE), |settings| {
        let mut slack = slack_on(&fake, true);
        slack.retry_seconds = vec![1; 10];
        settings.approvals.slack = Some(slack);
    })
    .await;
    world
        .send("user.deactivated", "msg-erin", json!({"account_id": "erin"}))
        .await;
    let id = pending_approval(&world).await;
    decide_outside_slack(&world, &id, true, "ops-alice").await;

    // The update waits for the request, without spending its ladder.
    eventually(LONG, "the update waiting for the request", || async {
        !slack_delivery(&world, "slack.settled").await.1.is_empty()
    })
    .await;
    let (waiting, attempts) = slack_delivery(&world, "slack.settled").await;
    assert_eq!(waiting.failures, 0);
    assert!(
        attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not posted to Slack yet")),
        "{attempts:?}"
    );
    assert!(fake.requests("/api/chat.update").is_empty());

    // Slack is back: the request is posted, then replaced.
    answers_as_the_web_api(&fake, "1764900000.000100");
    eventually(LONG, "the message replaced", || async {
        !fake.requests("/api/chat.update").is_empty()
    })
    .await;
    let update = fake.requests("/api/chat.update")[0].clone();
    assert_eq!(update.header("authorization"), Some("Bearer xoxb-0000-test"));
    let update = update.json();
    assert_eq!(update["channel"], "C0APPROVALS");
    assert_eq!(update["ts"], "1764900000.000100");
    let text = text_of(&update);
    assert!(
        text.contains(&format!("*Approved* by `ops-alice`: the plan is queued and will be performed as recorded (approval `{id}`)")),
        "{text}"
    );
    assert!(!text.contains("\"actions\""), "no buttons left: {text}");
    eventually(LONG, "the approved plan performed", || async {
        world.app.store.approval(&id).await.unwrap().unwrap().state == ApprovalState::Executed
    })
    .await;
    assert!(world.groups_of("erin").await.is_empty());
    // Exactly one update: the plan's execution is not a settlement of its own (the outbox,
    // where an update is written with what it announces, holds one).
    let updates = slack_deliveries(&world)
        .await
        .into_iter()
        .filter(|d| d.message_type == "slack.settled")
        .count();
    assert_eq!(updates, 1);
    assert_eq!(fake.requests("/api/chat.update").len(), 1);
    world.stop().await;
}

#[tokio::test]
async fn a_request_slack_already_has_is_not_posted_again() {
    let fake = Receiver::start().await;
    fake.always(
        "/api/chat.postMessage",
        Reply::Answer(503, Vec::new(), String::new()),
    );
    let world = World::start(leaver("hal"), policies(ORG_WIDE), |settings| {
        let mut slack = slack_on(&fake, true);
        slack.retry_seconds = vec![1; 10];
        settings.approvals.slack = Some(slack);
    })
    .await;
    world
        .send("user.deactivated", "msg-hal", json!({"account_id": "hal"}))
        .await;
    let id = pending_approval(&world).await;
    eventually(LONG, "a first attempt at the request", || async {
        !slack_delivery(&world, "slack.approval").await.1.is_empty()
    })
    .await;
    // An attempt Slack took and gatehouse remembered, whose settlement was then lost (the
    // process ended between the two): the request is still pending in the outbox.
    let posted = gatehouse::store::slack_messages::SlackMessage {
        channel: "C0APPROVALS".to_owned(),
        ts: "1764900000.000200".to_owned(),
    };
    world.app.store.record_slack_message(&id, &posted).await.unwrap();
    let posts = fake.requests("/api/chat.postMessage").len();
    answers_as_the_web_api(&fake, "1764900000.000999");

    eventually(LONG, "the request settled", || async {
        slack_delivery(&world, "slack.approval").await.0.state == DeliveryState::Delivered
    })
    .await;
    assert_eq!(
        fake.requests("/api/chat.postMessage").len(),
        posts,
        "not posted again"
    );
    let (request, _) = slack_delivery(&world, "slack.approval").await;
    assert!(
        request.last_error.as_deref().is_some_and(
            |e| e.contains("already posted to Slack (channel C0APPROVALS, ts 1764900000.000200)")
        ),
        "{request:?}"
    );
    // The message Slack has is the one a settlement replaces.
    decide_outside_slack(&world, &id, false, "ops-bob").await;
    eventually(LONG, "the message replaced", || async {
        !fake.requests("/api/chat.update").is_empty()
    })
    .await;
    assert_eq!(
        fake.requests("/api/chat.update")[0].json()["ts"],
        "1764900000.000200"
    );
    world.stop().await;
}

#[tokio::test]
async fn an_unreachable_incoming_webhook_is_retried_without_its_url_in_the_reason() {
    let fake = Receiver::start().await;
    // A port nothing listens on: every attempt fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let hook = format!("http://127.0.0.1:{port}/services/T0/B0/s3cretHookToken");
    let world = World::start(leaver("ivy"), policies(ORG_WIDE), |settings| {
        let mut slack = slack_on(&fake, false);
        slack.webhook_url = Some(Secret::new(hook.clone()));
        settings.approvals.slack = Some(slack);
    })
    .await;
    world
        .send("user.deactivated", "msg-ivy", json!({"account_id": "ivy"}))
        .await;
    pending_approval(&world).await;
    eventually(LONG, "the request tried again", || async {
        slack_delivery(&world, "slack.approval").await.1.len() >= 2
    })
    .await;
    let (request, attempts) = slack_delivery(&world, "slack.approval").await;
    // The incoming webhook's URL is its credential: not in what is stored or shown (nor in the
    // log line, which says the same reason).
    let last = request.last_error.clone().expect("the last attempt's reason");
    for reason in attempts
        .iter()
        .filter_map(|a| a.error.as_deref())
        .chain([last.as_str()])
    {
        assert!(reason.starts_with("could not send"), "{reason}");
        assert!(!reason.contains("s3cretHookToken"), "{reason}");
    }
    world.stop().await;
}

/// Approve clicked again on a plan approved but not yet performed (a stale message, a replayed
/// click): the clicker decided nothing and queued nothing again, and Slack says so to them
/// alone (a plan held while dry run was on is queued again only by an operator's deliberate
/// `gatehouse approvals approve`).
#[tokio::test]
async fn approve_clicked_on_an_approved_plan_credits_nobody() {
    let fake = Receiver::start().await;
    answers_as_the_web_api(&fake, "1764900000.000300");
    let world = World::start(leaver("kim"), policies(ORG_WIDE), |settings| {
        settings.approvals.slack = Some(slack_on(&fake, true));
    })
    .await;
    let (id, _) = waiting(&world, &fake, "/api/chat.postMessage", "kim").await;
    // Atlassian is down: the approved plan stays approved, retried later.
    world
        .fault(gatehouse_sim::Fault::status("/userByGroupId", 503, 10_000))
        .await;
    let response_url = fake.url(RESPONSE_PATH);
    for _ in 0..2 {
        assert_eq!(
            signed_click(&world, &click(APPROVER, "approve", &id, &response_url)).await,
            200
        );
    }
    eventually(LONG, "both clicks answered", || async {
        fake.requests(RESPONSE_PATH).len() == 2
    })
    .await;
    assert_eq!(
        world.app.store.approval(&id).await.unwrap().unwrap().state,
        ApprovalState::Approved
    );
    let second = fake.requests(RESPONSE_PATH)[1].json();
    assert_eq!(second["response_type"], "ephemeral");
    assert!(
        second["text"].as_str().unwrap().contains("already approved"),
        "{second}"
    );
    // One decision, and nothing queued again.
    let approved: Vec<String> = records(&world, AuditKind::Approved)
        .await
        .into_iter()
        .map(|r| r.record.outcome.status)
        .collect();
    assert_eq!(approved.len(), 1, "{approved:?}");
    assert!(approved[0].starts_with("approved by slack:"), "{approved:?}");
    world.stop().await;
}

/// `gatehouse outbound replay` of a request Slack has: posted again on purpose (the message was
/// lost or deleted), and the new message is the one a settlement replaces.
#[tokio::test]
async fn a_request_replayed_by_an_operator_is_posted_again_and_its_new_message_replaced() {
    let fake = Receiver::start().await;
    answers_as_the_web_api(&fake, "1764900000.000100");
    let world = World::start(leaver("jo"), policies(ORG_WIDE), |settings| {
        settings.approvals.slack = Some(slack_on(&fake, true));
    })
    .await;
    let (id, _) = waiting(&world, &fake, "/api/chat.postMessage", "jo").await;
    eventually(LONG, "where the message went remembered", || async {
        world.app.store.slack_message(&id).await.unwrap().is_some()
    })
    .await;
    answers_as_the_web_api(&fake, "1764900000.000200");
    let (request, _) = slack_delivery(&world, "slack.approval").await;
    gatehouse::cli::outbound::run(
        world.app.settings.clone(),
        gatehouse::cli::outbound::OutboundCommand::Replay {
            ids: vec![request.id.clone()],
            dead: false,
            endpoint: None,
        },
    )
    .await
    .unwrap();
    eventually(LONG, "the request posted again", || async {
        fake.requests("/api/chat.postMessage").len() == 2
    })
    .await;
    decide_outside_slack(&world, &id, false, "ops-bob").await;
    eventually(LONG, "the message replaced", || async {
        !fake.requests("/api/chat.update").is_empty()
    })
    .await;
    assert_eq!(
        fake.requests("/api/chat.update")[0].json()["ts"],
        "1764900000.000200"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_request_slack_refused_leaves_its_update_dead_with_the_reason() {
    let fake = Receiver::start().await;
    fake.always(
        "/api/chat.postMessage",
        Reply::Answer(
            200,
            Vec::new(),
            r#"{"ok":false,"error":"channel_not_found"}"#.into(),
        ),
    );
    let world = World::start(leaver("gus"), policies(ORG_WIDE), |settings| {
        settings.approvals.slack = Some(slack_on(&fake, true));
    })
    .await;
    world
        .send("user.deactivated", "msg-gus", json!({"account_id": "gus"}))
        .await;
    let id = pending_approval(&world).await;
    eventually(LONG, "the request dead", || async {
        slack_delivery(&world, "slack.approval").await.0.state == DeliveryState::Dead
    })
    .await;
    decide_outside_slack(&world, &id, false, "ops-bob").await;
    eventually(LONG, "the update settled", || async {
        slack_delivery(&world, "slack.settled").await.0.state != DeliveryState::Pending
    })
    .await;
    let (update, attempts) = slack_delivery(&world, "slack.settled").await;
    assert_eq!(update.state, DeliveryState::Dead);
    assert_eq!(attempts.len(), 1, "not retried: {attempts:?}");
    assert!(
        update
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("nothing to replace")),
        "{update:?}"
    );
    assert!(fake.requests("/api/chat.update").is_empty());
    world.stop().await;
}

#[tokio::test]
async fn a_click_on_an_overdue_plan_expires_it_and_replaces_the_message() {
    let fake = Receiver::start().await;
    answers_as_the_web_api(&fake, "1764900000.000300");
    let world = World::start(leaver("hal"), policies(ORG_WIDE), |settings| {
        settings.approvals.slack = Some(slack_on(&fake, true));
        settings.reactions.approval_ttl = gatehouse::config::Span::parse("2s").unwrap();
    })
    .await;
    let (id, _) = waiting(&world, &fake, "/api/chat.postMessage", "hal").await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let response_url = fake.url(RESPONSE_PATH);
    assert_eq!(
        signed_click(&world, &click(APPROVER, "approve", &id, &response_url)).await,
        200
    );
    assert_eq!(
        world.app.store.approval(&id).await.unwrap().unwrap().state,
        ApprovalState::Expired
    );
    eventually(LONG, "the message replaced", || async {
        !fake.requests("/api/chat.update").is_empty()
    })
    .await;
    let text = text_of(&fake.requests("/api/chat.update")[0].json());
    assert!(text.contains("*Expired*"), "{text}");
    assert!(world.groups_of("hal").await == ["team-x"], "the plan did not run");
    world.stop().await;
}

#[tokio::test]
async fn a_rejection_outside_slack_replaces_a_bot_message_and_leaves_a_webhook_one() {
    for bot in [true, false] {
        let fake = Receiver::start().await;
        answers_as_the_web_api(&fake, "1764900000.000200");
        let world = World::start(leaver("finn"), policies(ORG_WIDE), |settings| {
            settings.approvals.slack = Some(slack_on(&fake, bot));
        })
        .await;
        let post_path = if bot {
            "/api/chat.postMessage"
        } else {
            "/services/T0/B0/hook"
        };
        let (id, _) = waiting(&world, &fake, post_path, "finn").await;
        decide_outside_slack(&world, &id, false, "ops-bob").await;
        assert_eq!(
            world.app.store.approval(&id).await.unwrap().unwrap().state,
            ApprovalState::Rejected
        );
        if bot {
            eventually(LONG, "the message replaced", || async {
                !fake.requests("/api/chat.update").is_empty()
            })
            .await;
            let text = text_of(&fake.requests("/api/chat.update")[0].json());
            assert!(
                text.contains("*Rejected* by `ops-bob`: nothing of the plan will be performed"),
                "{text}"
            );
            // The reason is quoted, escaped: it notifies no one.
            assert!(text.contains("not a leaver &lt;!channel&gt;"), "{text}");
        } else {
            // An incoming webhook's message cannot be changed: nothing is queued for it.
            let slack = slack_deliveries(&world).await;
            assert_eq!(slack.len(), 1, "only the request: {slack:?}");
            assert!(fake.requests("/api/chat.update").is_empty());
        }
        world.stop().await;
    }
}

#[tokio::test]
async fn an_update_a_later_settlement_overtook_is_not_sent() {
    let fake = Receiver::start().await;
    answers_as_the_web_api(&fake, "1764900000.000400");
    let world = World::start(leaver("ida"), policies(ORG_WIDE), |settings| {
        settings.approvals.slack = Some(slack_on(&fake, true));
    })
    .await;
    let (id, _) = waiting(&world, &fake, "/api/chat.postMessage", "ida").await;
    decide_outside_slack(&world, &id, false, "ops-bob").await;
    eventually(LONG, "the rejection shown", || async {
        !fake.requests("/api/chat.update").is_empty()
    })
    .await;
    // An update announcing another settlement turns up late (one retried past a later one).
    let slack = world.app.settings.approvals.slack.clone().unwrap();
    let late = gatehouse::outbound::slack::settled_update(&slack, &id, ApprovalState::Approved, "x", None)
        .unwrap()
        .unwrap();
    world.app.store.enqueue_outbound(&[late]).await.unwrap();
    eventually(LONG, "the late update settled", || async {
        world
            .app
            .store
            .outbound_deliveries(Some("slack"), Some(DeliveryState::Pending), 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let late = slack_deliveries(&world)
        .await
        .into_iter()
        .find(|d| d.source_key.ends_with(":approved"))
        .unwrap();
    assert_eq!(late.state, DeliveryState::Delivered);
    assert!(
        late.last_error
            .as_deref()
            .is_some_and(|e| e.contains("is rejected now")),
        "{late:?}"
    );
    assert_eq!(
        fake.requests("/api/chat.update").len(),
        1,
        "the late one was not sent"
    );
    world.stop().await;
}

#[tokio::test]
async fn forged_stale_and_non_approver_clicks_decide_nothing_and_are_recorded() {
    let fake = Receiver::start().await;
    let world = World::start(leaver("dan"), policies(ORG_WIDE), |settings| {
        settings.approvals.slack = Some(slack_on(&fake, false));
    })
    .await;
    let (id, message) = waiting(&world, &fake, "/services/T0/B0/hook", "dan").await;
    assert!(message.get("channel").is_none());
    let response_url = fake.url(RESPONSE_PATH);
    let approve = click(APPROVER, "approve", &id, &response_url);

    // Forged: signed with another secret.
    let forged = signing::slack(
        "not-the-signing-secret-at-all!!",
        chrono::Utc::now().timestamp(),
        &approve,
    );
    assert_eq!(post_click(&world, &approve, forged).await, 401);
    // Stale: signed correctly ten minutes ago (a replay).
    let stale = signing::slack(SIGNING_SECRET, chrono::Utc::now().timestamp() - 600, &approve);
    assert_eq!(post_click(&world, &approve, stale).await, 401);
    // Unsigned.
    assert_eq!(post_click(&world, &approve, Vec::new()).await, 401);
    // Signed, by someone who may not decide.
    let intruder = click("U0INTRUDER", "approve", &id, &response_url);
    assert_eq!(signed_click(&world, &intruder).await, 200);

    assert_eq!(
        world.app.store.approval(&id).await.unwrap().unwrap().state,
        ApprovalState::Pending
    );
    assert_eq!(records(&world, AuditKind::Approved).await.len(), 0);
    let refused = records(&world, AuditKind::Refused).await;
    let reasons: Vec<&str> = refused
        .iter()
        .map(|r| r.record.outcome.error.as_deref().unwrap())
        .collect();
    assert_eq!(refused.len(), 4, "{reasons:?}");
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("verification failed"))
            .count(),
        3,
        "{reasons:?}"
    );
    assert!(
        reasons[3].contains("U0INTRUDER is not in approvals.slack.approvers"),
        "{reasons:?}"
    );
    assert_eq!(refused[3].record.account_id.as_deref(), Some("dan"));
    eventually(LONG, "the intruder told", || async {
        !fake.requests(RESPONSE_PATH).is_empty()
    })
    .await;
    let told = fake.requests(RESPONSE_PATH)[0].json();
    assert_eq!(told["response_type"], "ephemeral");
    assert!(
        told["text"]
            .as_str()
            .unwrap()
            .contains("not one of the approvers")
    );
    assert!(
        world
            .app
            .metrics()
            .await
            .contains(r#"gatehouse_verification_failures_total{source="slack",reason="expired"} 1"#)
    );

    // The approver rejects: nothing is performed.
    assert_eq!(
        signed_click(&world, &click(APPROVER, "reject", &id, &response_url)).await,
        200
    );
    eventually(LONG, "the rejection recorded", || async {
        world.app.store.approval(&id).await.unwrap().unwrap().state == ApprovalState::Rejected
    })
    .await;
    let rejected = records(&world, AuditKind::Rejected).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].record.outcome.error.as_deref(),
        Some("rejected in Slack")
    );
    eventually(LONG, "the message replaced with the rejection", || async {
        fake.requests(RESPONSE_PATH).len() == 2
    })
    .await;
    assert!(text_of(&fake.requests(RESPONSE_PATH)[1].json()).contains("*Rejected* by"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(world.groups_of("dan").await, ["team-x"]);
    world.stop().await;
}

/// Anyone can post to `/slack/actions`: a flood of forged clicks is refused one by one, but
/// reaches the audit trail only up to `unverified_records_per_minute`; every click is counted.
#[tokio::test]
async fn a_flood_of_forged_clicks_is_counted_not_recorded_one_by_one() {
    let fake = Receiver::start().await;
    let world = World::start(leaver("fay"), policies(ORG_WIDE), |settings| {
        let mut slack = slack_on(&fake, false);
        slack.unverified_records_per_minute = 3;
        settings.approvals.slack = Some(slack);
    })
    .await;
    let approve = click(APPROVER, "approve", "01JNOAPPROVAL", &fake.url(RESPONSE_PATH));
    for _ in 0..8 {
        let forged = signing::slack(
            "not-the-signing-secret-at-all!!",
            chrono::Utc::now().timestamp(),
            &approve,
        );
        assert_eq!(post_click(&world, &approve, forged).await, 401);
    }
    let refused = records(&world, AuditKind::Refused).await;
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|r| {
        r.record
            .outcome
            .error
            .as_deref()
            .is_some_and(|e| e.contains("verification failed"))
    }));
    assert!(
        world
            .app
            .metrics()
            .await
            .contains(r#"gatehouse_verification_failures_total{source="slack",reason="bad_signature"} 8"#)
    );
    world.stop().await;
}
