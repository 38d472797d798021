//! The ingress against the real RabbitMQ: each scheme's deliveries land exactly once, with the
//! right envelope and routing key; forged, stale, tampered, oversized and malformed ones are
//! refused with the right status and leave nothing on the queue.

use std::time::Duration;

use gatehouse::config::VerificationScheme;
use serde_json::{Value, json};

use crate::helpers::{Observer, TestApp, secret, signing, source};

const QUIET: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(5);
const WHSEC_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_B: &str = "whsec_c2Vjb25kLXJvdGF0ZWQta2V5LTIwMjYtMTE=";
const HUB_A: &str = "hub-secret-first-2026-11";
const HUB_B: &str = "hub-secret-second-2026-05";

/// A Jira-style admin webhook body: it names its own event and carries a current timestamp.
fn user_event(event: &str, account_id: &str) -> Vec<u8> {
    json!({
        "timestamp": chrono::Utc::now().timestamp_millis(),
        "webhookEvent": event,
        "userAccountId": "admin-7",
        "user": {"accountId": account_id, "accountType": "atlassian", "displayName": "Ann", "email": null}
    })
    .to_string()
    .into_bytes()
}

async fn hub_app() -> TestApp {
    TestApp::spawn(|s| {
        s.sources.push(source(
            "admin",
            VerificationScheme::HubSignature,
            vec![secret("hub-1", HUB_A), secret("hub-2", HUB_B)],
        ));
    })
    .await
}

#[tokio::test]
async fn hub_signature_delivery_lands_exactly_once_and_duplicates_get_200() {
    let app = hub_app().await;
    let observer = Observer::new(app.prefix(), "#").await;
    let body = user_event("user_deactivated", "5b10-ann");
    let headers = vec![
        ("x-hub-signature", signing::hub_signature(HUB_A, &body)),
        ("x-atlassian-webhook-identifier", "hook-0001".to_owned()),
        ("x-atlassian-webhook-retry", "1".to_owned()),
    ];
    let response = app
        .post("/webhooks/admin/user_deactivated", &body, &headers)
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "accepted");
    // The body is signed and the delivery id header is not: the key is the body's digest.
    let key = answer["dedupe_key"].as_str().unwrap().to_owned();
    assert_eq!(key, signing::hub_dedupe_key("admin", &body));

    let seen = observer.all(QUIET.max(Duration::from_millis(800))).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let message = &seen[0];
    assert_eq!(message.routing_key, "admin.user.deactivated");
    assert_eq!(message.message_id.as_deref(), Some(key.as_str()));
    assert!(message.persistent);
    let envelope = &message.body;
    assert_eq!(envelope["id"], answer["id"]);
    assert_eq!(envelope["type"], "user.deactivated");
    assert_eq!(envelope["source"], "admin");
    assert_eq!(envelope["scheme"], "hub-signature");
    assert_eq!(envelope["dedupe_key"], key.as_str());
    assert_eq!(envelope["subject"]["account_id"], "5b10-ann");
    assert_eq!(envelope["actor"]["account_id"], "admin-7");
    assert_eq!(
        envelope["delivery"],
        json!({"id": "hook-0001", "retry": 1, "key_id": "hub-1"})
    );
    assert_eq!(
        envelope["payload"],
        serde_json::from_slice::<Value>(&body).unwrap()
    );

    // The sender retries (same identifier): 200, nothing published again.
    let again = app
        .post("/webhooks/admin/user_deactivated", &body, &headers)
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "duplicate");
    // A replay under a fresh (unsigned) delivery id is the same signed body: a duplicate too.
    let replayed = app
        .post(
            "/webhooks/admin/user_deactivated",
            &body,
            &[
                ("x-hub-signature", signing::hub_signature(HUB_A, &body)),
                ("x-atlassian-webhook-identifier", "hook-9999".to_owned()),
            ],
        )
        .await;
    assert_eq!(replayed.status(), 200);
    assert_eq!(
        replayed.json::<Value>().await.unwrap()["dedupe_key"],
        key.as_str()
    );
    assert!(observer.all(QUIET).await.is_empty());

    // The rotated (second) secret is accepted too, and says so.
    let other = user_event("user_deleted", "5b10-bob");
    let response = app
        .post(
            "/webhooks/admin/user_removed",
            &other,
            &[("x-hub-signature", signing::hub_signature(HUB_B, &other))],
        )
        .await;
    assert_eq!(response.status(), 202);
    let seen = observer.next(WAIT).await.unwrap();
    assert_eq!(seen.body["delivery"]["key_id"], "hub-2");
    assert_eq!(seen.routing_key, "admin.user.removed");
    assert_eq!(
        seen.body["dedupe_key"],
        signing::hub_dedupe_key("admin", &other).as_str()
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"gatehouse_ingress_requests_total{source="admin",outcome="accepted"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gatehouse_ingress_requests_total{source="admin",outcome="duplicate"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_publish_confirm_seconds_count 2"),
        "{metrics}"
    );
    // The window remembers the two published keys, in what it reserved for the default size.
    assert!(
        metrics.contains("gatehouse_ingress_dedupe_window_keys 2\n"),
        "{metrics}"
    );
    let reserved = gatehouse::ingress::dedupe::reserved_bytes(100_000);
    assert!(
        metrics.contains(&format!(
            "gatehouse_ingress_dedupe_window_reserved_bytes {reserved}\n"
        )),
        "{metrics}"
    );
    app.stop().await;
}

/// A worker-only process takes no deliveries, so it reserves no duplicate window for them: the
/// default 100,000 keys would be 8.5 MiB it never uses.
#[tokio::test]
async fn a_worker_only_process_takes_no_delivery_and_reserves_no_dedupe_window() {
    let ingress = hub_app().await;
    let worker = TestApp::start_roles(ingress.settings.clone(), None, gatehouse::app::Roles::WORKER).await;
    let body = user_event("user_deactivated", "5b10-ann");
    let signed = [("x-hub-signature", signing::hub_signature(HUB_A, &body))];
    let refused = worker
        .post("/webhooks/admin/user_deactivated", &body, &signed)
        .await;
    assert_eq!(refused.status(), 404);

    let reserved = |metrics: &str| -> usize {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("gatehouse_ingress_dedupe_window_reserved_bytes "))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no reserved-bytes gauge in {metrics}"))
    };
    let window = gatehouse::ingress::dedupe::reserved_bytes;
    assert_eq!(reserved(&worker.metrics().await), window(1));
    assert_eq!(reserved(&ingress.metrics().await), window(100_000));
    assert!(window(1) < 1_024, "{}", window(1));
    // The two share the prefix: the last one out deletes its queues.
    worker.shutdown().await;
    ingress.stop().await;
}

#[tokio::test]
async fn hub_signature_forgeries_are_refused_and_nothing_is_queued() {
    let app = hub_app().await;
    let observer = Observer::new(app.prefix(), "#").await;
    let body = user_event("user_deactivated", "5b10-ann");
    let path = "/webhooks/admin/user_deactivated";

    let wrong = app
        .post(
            path,
            &body,
            &[("x-hub-signature", signing::hub_signature("not-the-secret", &body))],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await.unwrap()["reason"], "bad_signature");

    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let tampered = app
        .post(
            path,
            &tampered,
            &[("x-hub-signature", signing::hub_signature(HUB_A, &body))],
        )
        .await;
    assert_eq!(tampered.status(), 401);

    let missing = app.post(path, &body, &[]).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["reason"],
        "missing_credentials"
    );

    assert!(observer.all(QUIET).await.is_empty());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"gatehouse_verification_failures_total{source="admin",reason="bad_signature"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"gatehouse_verification_failures_total{source="admin",reason="missing_credentials"} 1"#
        ),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn standard_webhooks_relay_rotation_expiry_and_duplicates() {
    let app = TestApp::spawn(|s| {
        s.sources.push(source(
            "relay",
            VerificationScheme::StandardWebhooks,
            vec![secret("k-old", WHSEC_A), secret("k-new", WHSEC_B)],
        ));
    })
    .await;
    let observer = Observer::new(app.prefix(), "relay.#").await;
    let body = json!({"type": "user.deactivated", "timestamp": "2026-11-29T10:00:00Z", "data": {"account_id": "acc-1", "email": "ann@example.com"}})
        .to_string()
        .into_bytes();
    let now = signing::now();

    let response = app
        .post(
            "/webhooks/relay",
            &body,
            &signing::standard_webhooks(WHSEC_A, "msg_1", now, &body),
        )
        .await;
    assert_eq!(response.status(), 202);
    let seen = observer.next(WAIT).await.unwrap();
    assert_eq!(seen.routing_key, "relay.user.deactivated");
    assert_eq!(seen.body["scheme"], "standard-webhooks");
    assert_eq!(seen.body["dedupe_key"], "relay:msg_1");
    assert_eq!(
        seen.body["subject"],
        json!({"account_id": "acc-1", "email": "ann@example.com"})
    );
    assert_eq!(seen.body["occurred_at"], "2026-11-29T10:00:00Z");
    assert_eq!(seen.body["delivery"]["key_id"], "k-old");

    // Same webhook-id, signed with the other live key: still the same delivery.
    let again = app
        .post(
            "/webhooks/relay",
            &body,
            &signing::standard_webhooks(WHSEC_B, "msg_1", now, &body),
        )
        .await;
    assert_eq!(again.status(), 200);

    let second = app
        .post(
            "/webhooks/relay",
            &body,
            &signing::standard_webhooks(WHSEC_B, "msg_2", now, &body),
        )
        .await;
    assert_eq!(second.status(), 202);
    assert_eq!(
        observer.next(WAIT).await.unwrap().body["delivery"]["key_id"],
        "k-new"
    );

    let stale = app
        .post(
            "/webhooks/relay",
            &body,
            &signing::standard_webhooks(WHSEC_A, "msg_3", signing::now() - 400, &body),
        )
        .await;
    assert_eq!(stale.status(), 401);
    assert_eq!(stale.json::<Value>().await.unwrap()["reason"], "expired");
    let future = app
        .post(
            "/webhooks/relay",
            &body,
            &signing::standard_webhooks(WHSEC_A, "msg_4", signing::now() + 400, &body),
        )
        .await;
    assert_eq!(future.status(), 401);
    let mut headers = signing::standard_webhooks(WHSEC_A, "msg_5", now, &body);
    headers.retain(|(name, _)| *name != "webhook-timestamp");
    assert_eq!(app.post("/webhooks/relay", &body, &headers).await.status(), 401);
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let tampered_headers = signing::standard_webhooks(WHSEC_A, "msg_6", now, &body);
    assert_eq!(
        app.post("/webhooks/relay", &tampered, &tampered_headers)
            .await
            .status(),
        401
    );

    assert!(observer.all(QUIET).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn url_token_in_path_or_header() {
    let app = TestApp::spawn(|s| {
        let mut guard = source(
            "guard",
            VerificationScheme::UrlToken,
            vec![
                secret("t1", "tok-7f3a9c-0123456789"),
                secret("t2", "tok-rotated-11-abcdefgh"),
            ],
        );
        guard.kind = Some("guard".into());
        s.sources.push(guard);
    })
    .await;
    let observer = Observer::new(app.prefix(), "#").await;
    let alert = br#"{"alert":{"title":"Suspicious login","id":"a-1"}}"#;

    assert_eq!(
        app.post("/webhooks/guard/t/tok-7f3a9c-0123456789", alert, &[])
            .await
            .status(),
        202
    );
    let seen = observer.next(WAIT).await.unwrap();
    assert_eq!(seen.routing_key, "guard.other.unknown");
    assert_eq!(seen.body["scheme"], "url-token");
    assert_eq!(seen.body["delivery"]["key_id"], "t1");

    let other = br#"{"event":"alert_created","alert":{"title":"Another","id":"a-2"}}"#;
    let response = app
        .post(
            "/webhooks/guard/alert_created",
            other,
            &[("x-gatehouse-token", "tok-rotated-11-abcdefgh".into())],
        )
        .await;
    assert_eq!(response.status(), 202);
    let seen = observer.next(WAIT).await.unwrap();
    assert_eq!(seen.routing_key, "guard.other.alert_created");
    assert_eq!(seen.body["delivery"]["key_id"], "t2");

    assert_eq!(
        app.post("/webhooks/guard/t/tok-wrong", alert, &[]).await.status(),
        401
    );
    assert_eq!(app.post("/webhooks/guard", alert, &[]).await.status(), 401);
    assert!(observer.all(QUIET).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn limits_media_type_unknown_source_and_malformed_bodies() {
    let app = TestApp::spawn(|s| {
        s.server.max_body_bytes = 1024;
        s.sources.push(source(
            "admin",
            VerificationScheme::HubSignature,
            vec![secret("hub-1", HUB_A)],
        ));
    })
    .await;
    let observer = Observer::new(app.prefix(), "#").await;

    let big = format!(r#"{{"padding":"{}"}}"#, "x".repeat(2048)).into_bytes();
    let response = app
        .post(
            "/webhooks/admin",
            &big,
            &[("x-hub-signature", signing::hub_signature(HUB_A, &big))],
        )
        .await;
    assert_eq!(response.status(), 413);

    let body = user_event("user_created", "acc");
    let response = app
        .http
        .post(app.url("/webhooks/admin"))
        .header("content-type", "text/plain")
        .header("x-hub-signature", signing::hub_signature(HUB_A, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let sig = signing::hub_signature(HUB_A, &body);
    let response = app
        .post("/webhooks/nobody", &body, &[("x-hub-signature", sig.clone())])
        .await;
    assert_eq!(response.status(), 404);
    // Vendor JSON types are JSON too.
    let response = app
        .http
        .post(app.url("/webhooks/admin/user_created"))
        .header("content-type", "application/vnd.atlassian+json; charset=utf-8")
        .header("x-hub-signature", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(observer.next(WAIT).await.is_some());

    // Correctly signed, but not JSON: verified first, then refused as malformed.
    let garbage = b"{not json".to_vec();
    let response = app
        .post(
            "/webhooks/admin",
            &garbage,
            &[("x-hub-signature", signing::hub_signature(HUB_A, &garbage))],
        )
        .await;
    assert_eq!(response.status(), 400);
    let array = b"[1,2]".to_vec();
    let response = app
        .post(
            "/webhooks/admin",
            &array,
            &[("x-hub-signature", signing::hub_signature(HUB_A, &array))],
        )
        .await;
    assert_eq!(response.status(), 400);

    // What no route serves is answered in the same error shape as everything else.
    let error_of = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body["error"].as_str().unwrap_or_default().to_owned())
    };
    let broken_escape = app.post("/webhooks/ad%FFmin", &array, &[]).await;
    assert_eq!(error_of(broken_escape).await, (400, "malformed".to_owned()));
    let nowhere = app.http.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(error_of(nowhere).await, (404, "not_found".to_owned()));
    let wrong_method = app.http.get(app.url("/webhooks/admin")).send().await.unwrap();
    assert_eq!(
        error_of(wrong_method).await,
        (405, "method_not_allowed".to_owned())
    );

    assert!(observer.all(QUIET).await.is_empty());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"gatehouse_ingress_requests_total{source="unknown",outcome="unknown_source"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gatehouse_ingress_requests_total{source="admin",outcome="too_large"} 1"#),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_source_without_usable_secrets_refuses_everything() {
    let app = TestApp::spawn(|s| {
        let mut expired = secret("old", HUB_A);
        expired.not_after = Some(chrono::Utc::now() - chrono::Duration::minutes(1));
        s.sources
            .push(source("admin", VerificationScheme::HubSignature, vec![expired]));
    })
    .await;
    let body = user_event("user_created", "acc");
    let response = app
        .post(
            "/webhooks/admin",
            &body,
            &[("x-hub-signature", signing::hub_signature(HUB_A, &body))],
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["reason"],
        "no_usable_secret"
    );
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = hub_app().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready, json!({"status": "ready", "queue": "up", "store": "up"}));
    app.stop().await;
}
