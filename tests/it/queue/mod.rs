//! The queue and worker runtime, on both backends: one conformance suite with the same
//! assertions for RabbitMQ and the embedded queue, plus what only RabbitMQ has (a broker that
//! can go away, its topology), what only the embedded queue does (its own delivery limit) and
//! the `gatehouse dlq` command line.

mod cli;
mod conformance;
mod embedded;
mod rabbitmq;
pub mod scripted;
mod store_outage;

use std::sync::Arc;
use std::time::Duration;

use gatehouse::app::Roles;
use gatehouse::config::{QueueBackend, Settings};
use gatehouse::queue::OutgoingMessage;
use gatehouse::store::DeadLetterFilter;
use handlers::{Envelope, EventType, Scheme};
use serde_json::value::RawValue;

use crate::helpers::{TempDir, TestApp, test_settings};
use scripted::Scripted;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Rabbitmq,
    Embedded,
}

/// Settings for a worker test on `backend`: short retry rungs, a fast poll.
pub fn settings(backend: Backend, dir: &TempDir) -> Settings {
    let mut settings = test_settings(dir);
    settings.queue.retry_delays_seconds = vec![0.3, 0.6];
    settings.queue.prefetch = 8;
    settings.worker.concurrency = 4;
    settings.worker.shutdown_grace_seconds = 5;
    settings.worker.depth_sample_seconds = 1;
    if backend == Backend::Embedded {
        settings.queue.backend = QueueBackend::Embedded;
        settings.queue.embedded_poll_ms = 25;
    }
    settings
}

/// A worker-only gatehouse with a scripted processor.
pub async fn worker(settings: Settings, processor: Arc<Scripted>) -> TestApp {
    TestApp::start_with(settings, None, Roles::WORKER, processor).await
}

/// Publishes a `user.deactivated` for `account` with dedupe key `key`; returns the event id.
pub async fn publish(app: &TestApp, account: &str, key: &str) -> String {
    let (message, event_id) = message(account, key);
    app.queue.publish(&message).await.unwrap();
    event_id
}

/// A `user.deactivated` for `account` with dedupe key `key`, and its event id.
pub fn message(account: &str, key: &str) -> (OutgoingMessage, String) {
    let payload = RawValue::from_string(format!(r#"{{"account":"{account}"}}"#)).unwrap();
    let mut envelope = Envelope::new(
        EventType::UserDeactivated,
        "test",
        Scheme::StandardWebhooks,
        key,
        payload,
    );
    envelope.subject.account_id = Some(account.to_owned());
    let message = OutgoingMessage::from_envelope(&envelope, "test");
    (message, envelope.id.to_string())
}

/// Polls `check` until it holds, panicking with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Dead letters currently parked.
pub async fn dead_letters(app: &TestApp) -> Vec<gatehouse::store::DeadLetterRow> {
    app.store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap()
}

/// The value of a metric line, e.g. `gatehouse_worker_attempts_total{tenant="default",outcome="ok"}`.
pub fn metric(app: &TestApp, series: &str) -> f64 {
    app.metrics
        .render()
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The kinds of the audit records about `event_id`, in order.
pub async fn audit_kinds(app: &TestApp, event_id: &str) -> Vec<String> {
    let query = gatehouse::audit::AuditQuery {
        event_id: Some(event_id.parse().unwrap()),
        limit: 1_000,
        ..Default::default()
    };
    gatehouse::audit::query::query(&app.store, &query)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record.kind.as_str().to_owned())
        .collect()
}
