//! The ingress when RabbitMQ misbehaves: an unconfirmed publish answers 503, a lost broker
//! answers 503 fast with readiness red, and gatehouse heals by itself when the broker is back.

use std::time::{Duration, Instant};

use gatehouse::config::VerificationScheme;
use serde_json::Value;

use crate::helpers::{Observer, TcpProxy, TestApp, broker_addr, secret, signing, source};

async fn app_behind(proxy: &TcpProxy, publish_timeout_ms: u64) -> TestApp {
    let url = proxy.amqp_url();
    TestApp::spawn(move |s| {
        s.queue.url = gatehouse::config::BrokerUrls::new(url);
        s.queue.publish_timeout_ms = publish_timeout_ms;
        s.sources.push(source(
            "admin",
            VerificationScheme::HubSignature,
            vec![secret("hub-1", HUB)],
        ));
    })
    .await
}

const HUB: &str = "hub-secret-outage-0123456789";

/// One timestamp for the whole run, so a retried delivery is the same signed body.
fn timestamp_ms() -> i64 {
    static START: std::sync::LazyLock<i64> =
        std::sync::LazyLock::new(|| chrono::Utc::now().timestamp_millis());
    *START
}

/// A signed admin webhook body for `account`.
fn removed(account: &str) -> Vec<u8> {
    format!(
        r#"{{"webhookEvent":"user_deleted","timestamp":{},"user":{{"accountId":"{account}"}}}}"#,
        timestamp_ms()
    )
    .into_bytes()
}

async fn deliver(app: &TestApp, n: u32) -> reqwest::Response {
    let body = removed(&format!("acc-{n}"));
    app.post(
        "/webhooks/admin/user_removed",
        &body,
        &[
            ("x-hub-signature", signing::hub_signature(HUB, &body)),
            ("x-atlassian-webhook-identifier", format!("outage-{n}")),
        ],
    )
    .await
}

#[tokio::test]
async fn an_unconfirmed_publish_answers_503_and_a_retry_goes_through() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = app_behind(&proxy, 400).await;
    let observer = Observer::new(app.prefix(), "#").await;

    proxy.stall();
    let started = Instant::now();
    let response = deliver(&app, 1).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    proxy.restore();

    // The outcome was unknown: the message may or may not have arrived. The sender's retry with
    // the same identifier is not answered "duplicate" (a failed publish is not remembered).
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = deliver(&app, 1).await.status();
        if status != 503 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 202);
    let seen = observer.all(Duration::from_secs(1)).await;
    assert!((1..=2).contains(&seen.len()), "{seen:?}");
    let key = seen[0].message_id.clone().unwrap();
    assert!(key.starts_with("admin:sha256:"), "{key}");
    assert!(seen.iter().all(|m| m.message_id.as_deref() == Some(key.as_str())));
    app.stop().await;
}

#[tokio::test]
async fn broker_loss_answers_503_fast_turns_readiness_red_and_recovers_without_restart() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = app_behind(&proxy, 2_000).await;
    let observer = Observer::new(app.prefix(), "#").await;
    assert_eq!(deliver(&app, 1).await.status(), 202);

    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.ready().await {
        assert!(
            Instant::now() < deadline,
            "readiness stayed green after the broker went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready: Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["queue"], "down");
    assert_eq!(ready["store"], "up");
    let started = Instant::now();
    assert_eq!(deliver(&app, 2).await.status(), 503);
    // At once, not after the 2 s publish timeout (with room for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "503 took {:?}",
        started.elapsed()
    );

    proxy.restore();
    app.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(deliver(&app, 2).await.status(), 202);
    let seen = observer.all(Duration::from_secs(1)).await;
    let accounts: Vec<_> = seen
        .iter()
        .map(|m| m.body["subject"]["account_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(accounts, ["acc-1", "acc-2"]);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"gatehouse_ingress_requests_total{source="admin",outcome="unavailable"} 1"#),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn starting_while_the_broker_is_down_serves_503_until_it_appears() {
    let proxy = TcpProxy::start(broker_addr()).await;
    proxy.cut();
    let dir = crate::helpers::TempDir::new();
    let mut settings = crate::helpers::test_settings(&dir);
    settings.queue.url = gatehouse::config::BrokerUrls::new(proxy.amqp_url());
    settings.sources.push(source(
        "admin",
        VerificationScheme::HubSignature,
        vec![secret("hub-1", HUB)],
    ));
    let app = gatehouse::app::Application::build(settings.clone())
        .await
        .unwrap();
    let addr = app.local_addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    let http = crate::helpers::http();
    let ready = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = &removed("a");
    let response = http
        .post(format!("http://{addr}/webhooks/admin/user_removed"))
        .header("content-type", "application/json")
        .header("x-hub-signature", signing::hub_signature(HUB, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    crate::helpers::delete_topology(&settings).await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let app = app_behind(&proxy, 10_000).await;
    let observer = Observer::new(app.prefix(), "#").await;
    let addr = app.addr;
    proxy.stall();
    // A delivery is in flight, waiting for the broker's confirm...
    let in_flight = {
        let http = app.http.clone();
        let body = removed("in-flight");
        let signature = signing::hub_signature(HUB, &body);
        tokio::spawn(async move {
            http.post(format!("http://{addr}/webhooks/admin/user_removed"))
                .header("content-type", "application/json")
                .header("x-hub-signature", signature)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...when shutdown starts. The broker answers only afterwards.
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    assert_eq!(in_flight.await.unwrap(), 202);
    stopping.await.unwrap();
    assert_eq!(observer.all(Duration::from_millis(500)).await.len(), 1);
    // The listener is gone.
    assert!(
        crate::helpers::http()
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn load_beyond_the_concurrency_bound_is_shed_with_503_and_slow_senders_get_408() {
    let proxy = TcpProxy::start(broker_addr()).await;
    let url = proxy.amqp_url();
    let app = TestApp::spawn(move |s| {
        s.queue.url = gatehouse::config::BrokerUrls::new(url);
        s.queue.publish_timeout_ms = 3_000;
        s.server.max_concurrent_requests = 1;
        s.server.request_timeout_seconds = 4;
        s.sources.push(source(
            "admin",
            VerificationScheme::HubSignature,
            vec![secret("hub-1", HUB)],
        ));
    })
    .await;
    let _observer = Observer::new(app.prefix(), "#").await;
    proxy.stall();
    let addr = app.addr;
    let first = tokio::spawn(async move {
        let body = &removed("a");
        crate::helpers::http()
            .post(format!("http://{addr}/webhooks/admin/user_removed"))
            .header("content-type", "application/json")
            .header("x-hub-signature", signing::hub_signature(HUB, body))
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
            .status()
    });
    // The first holds the only place, waiting for a confirm that does not come (3 s).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let started = Instant::now();
    let shed = deliver(&app, 9).await;
    assert_eq!(shed.status(), 503);
    // Shed at once, not after a publish timeout of its own.
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "shed after {:?}",
        started.elapsed()
    );
    // The first one gets its 503 when the broker's confirm does not come in time.
    assert_eq!(first.await.unwrap(), 503);
    proxy.restore();

    // A sender that announces a body and never sends it is cut off by the timeout.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"POST /webhooks/admin HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(15), socket.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    app.stop().await;
}
