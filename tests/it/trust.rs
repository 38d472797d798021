//! The trust boundary, tried as an attacker would: a verified sender can cause only what it is
//! allowed to, and nobody can wear gatehouse down. One test per attack; each failed on the code
//! before these defences (the scrubber's UTF-8 panic is in `audit::secrets`).

use std::time::Duration;

use gatehouse::config::VerificationScheme;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Observer, TestApp, secret, signing, source};
use crate::queue::eventually;

const QUIET: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(5);
const HUB: &str = "hub-secret-dc-0123456789";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN_A: &str = "token-a-0123456789abcdef";
const TOKEN_B: &str = "token-b-0123456789abcdef";

/// A Data Center `user_created` webhook body, at `timestamp_ms`.
fn dc_user_created(account: &str, timestamp_ms: i64) -> Vec<u8> {
    json!({"event": "user_created", "timestamp": timestamp_ms, "user": {"accountId": account}})
        .to_string()
        .into_bytes()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn a_captured_hub_signed_body_cannot_be_replayed_as_another_event_or_again() {
    let app = TestApp::spawn(|s| {
        s.sources.push(source(
            "dc",
            VerificationScheme::HubSignature,
            vec![secret("dc-1", HUB)],
        ));
    })
    .await;
    let observer = Observer::new(app.prefix(), "#").await;
    let body = dc_user_created("5b10-ann", now_ms());
    let signed = |body: &[u8]| vec![("x-hub-signature", signing::hub_signature(HUB, body))];

    // The unsigned URL segment says user_removed; the signed body says user_created.
    let replayed = app.post("/webhooks/dc/user_removed", &body, &signed(&body)).await;
    assert_eq!(replayed.status(), 400);
    let answer: Value = replayed.json().await.unwrap();
    assert_eq!(answer["reason"], "event_mismatch", "{answer}");
    assert!(observer.all(QUIET).await.is_empty(), "nothing may be queued");

    // Delivered as what it is, it is queued as what it is.
    let genuine = app.post("/webhooks/dc/user_created", &body, &signed(&body)).await;
    assert_eq!(genuine.status(), 202);
    let seen = observer.next(WAIT).await.unwrap();
    assert_eq!(seen.body["type"], "user.created");

    // The same signed body again, with a fresh unsigned delivery id: a duplicate, not a second
    // event.
    let mut headers = signed(&body);
    headers.push(("x-atlassian-webhook-identifier", "fresh-id-1".to_owned()));
    let again = app.post("/webhooks/dc", &body, &headers).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "duplicate");

    // A captured body older than the source's tolerance is refused, signed or not.
    let old = dc_user_created("5b10-bob", now_ms() - 2 * 3_600 * 1000);
    let stale = app.post("/webhooks/dc", &old, &signed(&old)).await;
    assert_eq!(stale.status(), 401);
    assert_eq!(stale.json::<Value>().await.unwrap()["reason"], "expired");
    assert!(observer.all(QUIET).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_signed_webhook_id_decides_duplicates_not_an_unsigned_header() {
    let app = TestApp::spawn(|s| {
        s.sources.push(source(
            "relay",
            VerificationScheme::StandardWebhooks,
            vec![secret("relay-1", WHSEC)],
        ));
    })
    .await;
    let observer = Observer::new(app.prefix(), "#").await;
    let body = json!({"type": "user.deactivated", "timestamp": "2026-12-01T10:00:00Z", "data": {"account_id": "acc-1"}})
        .to_string()
        .into_bytes();
    let signed = signing::standard_webhooks(WHSEC, "msg_once", signing::now(), &body);
    let mut statuses = Vec::new();
    for unsigned_id in ["atl-1", "atl-2", "atl-3"] {
        let mut headers = signed.clone();
        headers.push(("x-atlassian-webhook-identifier", unsigned_id.to_owned()));
        statuses.push(
            app.post("/webhooks/relay", &body, &headers)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [202, 200, 200]);
    let seen = observer.all(QUIET).await;
    assert_eq!(seen.len(), 1, "one event, one plan");
    assert_eq!(seen[0].body["dedupe_key"], "relay:msg_once");
    app.stop().await;
}

#[tokio::test]
async fn sources_have_their_own_dedupe_namespace_and_cannot_reach_internal_keys() {
    let app = TestApp::spawn(|s| {
        for (name, token) in [("a", TOKEN_A), ("b", TOKEN_B)] {
            s.sources.push(source(
                name,
                VerificationScheme::UrlToken,
                vec![secret(&format!("{name}-1"), token)],
            ));
        }
    })
    .await;
    let observer = Observer::new(app.prefix(), "#").await;
    let alert = br#"{"alert":{"title":"Suspicious login"}}"#;
    let same_id = vec![("x-atlassian-webhook-identifier", "shared-id-7".to_owned())];
    let from_a = app
        .post(&format!("/webhooks/a/t/{TOKEN_A}"), alert, &same_id)
        .await;
    let from_b = app
        .post(&format!("/webhooks/b/t/{TOKEN_B}"), alert, &same_id)
        .await;
    assert_eq!((from_a.status().as_u16(), from_b.status().as_u16()), (202, 202));
    let mut keys: Vec<String> = observer
        .all(QUIET)
        .await
        .iter()
        .map(|m| m.body["dedupe_key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["a:shared-id-7", "b:shared-id-7"]);

    // A sender naming a key of gatehouse's own (here the reconciler's namespace) only ever
    // claims a key in its own namespace: once its event is handled, the internal key is free.
    let internal = handlers::internal_dedupe_key("reconcile", "user.deactivated:acc-9:abc:2026-12-02");
    let forged = vec![("x-atlassian-webhook-identifier", internal.clone())];
    let response = app
        .post(&format!("/webhooks/a/t/{TOKEN_A}"), alert, &forged)
        .await;
    assert_eq!(response.status(), 202);
    let queued = observer.next(WAIT).await.unwrap();
    assert_eq!(queued.body["dedupe_key"], format!("a:{internal}"));
    let event_id: ulid::Ulid = queued.body["id"].as_str().unwrap().parse().unwrap();
    let store = app.store.clone();
    eventually(Duration::from_secs(10), "the forged event is handled", || {
        let store = store.clone();
        async move {
            let query = gatehouse::audit::AuditQuery {
                event_id: Some(event_id),
                limit: 10,
                ..Default::default()
            };
            !gatehouse::audit::query::query(&store, &query)
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    let claim = app
        .store
        .claim(
            &internal,
            "reconciler",
            "probe",
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(claim, gatehouse::store::Claim::Acquired);
    app.stop().await;
}

#[tokio::test]
async fn a_source_may_cause_only_the_types_it_is_allowed() {
    let app = TestApp::spawn(|s| {
        // A URL token proves nothing about the body: by default it may cause other.* only.
        s.sources.push(source(
            "guard",
            VerificationScheme::UrlToken,
            vec![secret("g-1", TOKEN_A)],
        ));
        let mut hr = source("hr", VerificationScheme::UrlToken, vec![secret("hr-1", TOKEN_B)]);
        hr.allow_types = Some(vec!["user.deactivated".parse().unwrap()]);
        s.sources.push(hr);
    })
    .await;
    let observer = Observer::new(app.prefix(), "#").await;
    let leaver =
        br#"{"type":"user.deactivated","timestamp":"2026-12-01T10:00:00Z","data":{"account_id":"acc-1"}}"#;
    let refused = app
        .post(&format!("/webhooks/guard/t/{TOKEN_A}"), leaver, &[])
        .await;
    assert_eq!(refused.status(), 403);
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["reason"], "type_not_allowed", "{answer}");
    assert!(observer.all(QUIET).await.is_empty());

    let allowed = app.post(&format!("/webhooks/hr/t/{TOKEN_B}"), leaver, &[]).await;
    assert_eq!(allowed.status(), 202);
    assert_eq!(
        observer.next(WAIT).await.unwrap().body["type"],
        "user.deactivated"
    );
    let joiner =
        br#"{"type":"user.created","timestamp":"2026-12-01T10:00:00Z","data":{"account_id":"acc-2"}}"#;
    assert_eq!(
        app.post(&format!("/webhooks/hr/t/{TOKEN_B}"), joiner, &[])
            .await
            .status(),
        403
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"gatehouse_ingress_requests_total{source="guard",outcome="type_not_allowed"} 1"#),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_noisy_sender_is_limited_and_the_others_are_not() {
    let app = TestApp::spawn(|s| {
        let mut noisy = source(
            "noisy",
            VerificationScheme::UrlToken,
            vec![secret("n-1", TOKEN_A)],
        );
        // One delivery, then the next token in 100 s.
        noisy.rate_per_second = Some(0.01);
        s.sources.push(noisy);
        s.sources.push(source(
            "quiet",
            VerificationScheme::UrlToken,
            vec![secret("q-1", TOKEN_B)],
        ));
    })
    .await;
    let _observer = Observer::new(app.prefix(), "#").await;
    let alert = |n: usize| format!(r#"{{"alert":{{"id":"a-{n}"}}}}"#).into_bytes();
    // Anonymous noise on the noisy source's URL is refused before its budget: it spends none.
    for n in 0..5 {
        let forged = app
            .post("/webhooks/noisy/t/not-the-token-at-all", &alert(1_000 + n), &[])
            .await;
        assert_eq!(forged.status(), 401);
    }
    let mut noisy = Vec::new();
    let mut quiet = Vec::new();
    for n in 0..10 {
        let response = app
            .post(&format!("/webhooks/noisy/t/{TOKEN_A}"), &alert(n), &[])
            .await;
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        noisy.push((response.status().as_u16(), retry_after));
        quiet.push(
            app.post(&format!("/webhooks/quiet/t/{TOKEN_B}"), &alert(100 + n), &[])
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(noisy[0], (202, None));
    for (status, retry_after) in &noisy[1..] {
        assert_eq!(*status, 429);
        assert!(
            retry_after.is_some_and(|s| (1..=100).contains(&s)),
            "{retry_after:?}"
        );
    }
    assert!(quiet.iter().all(|s| *s == 202), "{quiet:?}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"gatehouse_ingress_requests_total{source="noisy",outcome="rate_limited"} 9"#),
        "{metrics}"
    );
    app.stop().await;
}

/// Reads until the server closes the connection; true if it did within `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A connection that has been answered one request and is kept alive.
async fn served_once(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 15];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200 OK");
    stream
}

#[tokio::test]
async fn half_sent_requests_and_idle_connections_are_closed() {
    let app = TestApp::spawn(|s| {
        s.server.header_read_timeout_seconds = 1;
        s.server.keep_alive_idle_seconds = 2;
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(b"POST /webhooks/relay HT").await.unwrap();
        slow.push(stream);
    }
    // A connection that says nothing at all is idle; one that finished a request is too.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut kept_alive = served_once(app.addr).await;
    // One served a request, then starts another and stalls in its head (hyper's own header
    // timer is off: this is gatehouse's timer alone).
    let mut served_then_slow = served_once(app.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    served_then_slow
        .write_all(b"POST /webhooks/relay HT")
        .await
        .unwrap();

    // Generous bounds: what matters is that they close at all (before, none ever did).
    for stream in &mut slow {
        assert!(
            closed_by_server(stream, Duration::from_secs(20)).await,
            "a half-sent request is still held"
        );
    }
    assert!(closed_by_server(&mut silent, Duration::from_secs(20)).await);
    assert!(closed_by_server(&mut served_then_slow, Duration::from_secs(20)).await);
    assert!(closed_by_server(&mut kept_alive, Duration::from_secs(20)).await);
    let metrics = app.metrics().await;
    // The half-sent ones, the silent one (a new connection must start a request in time) and
    // the one that stalled in its second request.
    assert!(
        metrics.contains(r#"gatehouse_http_connections_closed_by_server_total{reason="header_timeout"} 202"#),
        "{metrics}"
    );
    // The kept-alive one, and the test client's pooled connection from start-up.
    let idle: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"gatehouse_http_connections_closed_by_server_total{reason="idle_timeout"} "#)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(idle >= 1, "{metrics}");
    app.stop().await;
}

/// What the server answers on `stream` until it closes it (at most `within`): the answer's
/// text, and whether it closed.
async fn answer_and_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return (String::from_utf8_lossy(&answer).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&answer).into_owned(), true),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
}

/// A body announced and never sent, on the routes that read one besides the deliveries
/// (Slack's clicks, open to anyone; the console's sign-in form, open to anyone): answered 408
/// and closed once the request timeout is over, instead of holding the connection and its task
/// for ever (before, neither was ever answered).
#[tokio::test]
async fn slow_bodies_on_slack_clicks_and_console_forms_get_408_and_are_closed() {
    let app = TestApp::spawn(|s| {
        s.server.request_timeout_seconds = 1;
        s.queue.publish_timeout_ms = 600;
        s.approvals.slack = Some(gatehouse::config::SlackSettings::with_webhook(
            gatehouse::config::Secret::new("https://hooks.slack.com/services/T0/B0/x"),
            gatehouse::config::Secret::new("slack-signing-secret-0123456789"),
            vec!["U0APPROVER".to_owned()],
        ));
        s.console.enabled = true;
        s.console.operators = vec![gatehouse::config::OperatorSettings {
            name: "alice".to_owned(),
            role: gatehouse::config::OperatorRole::Admin,
            password_hash: Some(gatehouse::config::PasswordHash::from(
                gatehouse::console::hash_password("correct horse battery staple").unwrap(),
            )),
        }];
    })
    .await;
    for (path, content_type, length) in [
        ("/slack/actions", "application/x-www-form-urlencoded", 200_000),
        ("/console/sign-in", "application/x-www-form-urlencoded", 10_000),
    ] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\n\r\np"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // Generous: the timeout is 1 s; what matters is that an answer comes at all.
        let (answer, closed) = answer_and_close(&mut stream, Duration::from_secs(20)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer:?}");
        assert!(closed, "{path}: the connection is still held");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"gatehouse_ingress_requests_total{source="slack",outcome="timeout"} 1"#),
        "{metrics}"
    );
    app.stop().await;
}

/// The listener's header limit (hyper's default): a head with 100 headers is served, one with 101 is refused (431)
/// before any handler runs.
#[tokio::test]
async fn a_request_head_may_carry_a_hundred_headers_and_no_more() {
    let app = TestApp::spawn(|_| {}).await;
    for (headers, status) in [(100, "200"), (101, "431")] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let mut head = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
        for i in 2..headers {
            head.push_str(&format!("x-extra-{i}: {i}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&answer).unwrap(),
            format!("HTTP/1.1 {status}"),
            "{headers} headers"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_at_once() {
    refused_beyond_four(|s| s.server.max_connections = 4).await;
}

#[tokio::test]
async fn connections_beyond_the_cap_per_peer_get_503_at_once() {
    refused_beyond_four(|s| s.server.max_connections_per_peer = 4).await;
}

/// With room for four connections (as `configure` sets it), a fifth is refused with 503 at once,
/// and once one goes there is room again.
async fn refused_beyond_four(configure: impl FnOnce(&mut gatehouse::config::Settings)) {
    let app = TestApp::spawn(configure).await;
    let open = |metrics: String| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("gatehouse_http_connections_open "))
            .map(|v| v.trim().to_owned())
    };
    // The test's own HTTP client keeps its connection open (pooled): count it.
    let already: usize = open(app.metrics().await).unwrap().parse().unwrap();
    assert!(already < 4, "{already}");
    let mut held = Vec::new();
    for _ in already..4 {
        held.push(served_once(app.addr).await);
    }
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    let mut refused = Vec::new();
    extra.read_to_end(&mut refused).await.unwrap();
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");

    // Once a held connection goes, there is room again.
    drop(held.pop());
    let http = crate::helpers::http();
    let url = app.url("/healthz");
    eventually(Duration::from_secs(10), "a slot frees up", || {
        let http = http.clone();
        let url = url.clone();
        async move { matches!(http.get(&url).send().await, Ok(r) if r.status() == 200) }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn events_nothing_reacts_to_cost_one_compact_record_each() {
    let app = TestApp::spawn(|s| {
        s.sources.push(source(
            "guard",
            VerificationScheme::UrlToken,
            vec![secret("g-1", TOKEN_A)],
        ));
    })
    .await;
    let path = format!("/webhooks/guard/t/{TOKEN_A}");
    for n in 0..5 {
        let alert = format!(r#"{{"event":"page_created","page":{{"id":{n}}}}}"#).into_bytes();
        assert_eq!(app.post(&path, &alert, &[]).await.status(), 202);
    }
    let all = || async {
        let query = gatehouse::audit::AuditQuery {
            limit: 10_000,
            ..Default::default()
        };
        gatehouse::audit::query::query(&app.store, &query).await.unwrap()
    };
    eventually(Duration::from_secs(20), "five events handled", || async {
        all().await.len() >= 5
    })
    .await;
    // Let anything else that would be written land.
    tokio::time::sleep(QUIET).await;
    let records = all().await;
    assert_eq!(records.len(), 5, "one record per delivery: {records:?}");
    for record in &records {
        assert_eq!(record.record.kind.as_str(), "skipped");
        let why = record.record.outcome.error.as_deref().unwrap_or_default();
        assert_eq!(why, "no policy handles other.page_created");
    }
    app.stop().await;
}
