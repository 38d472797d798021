//! Logs: every line about a delivery carries its source (and, once known, its event id); no
//! secret value ever reaches a log line or a `Debug` rendering.

use std::io::Write;
use std::sync::{Arc, Mutex};

use gatehouse::config::{LogFormat, LogSettings, VerificationScheme};
use serde_json::Value;

use crate::helpers::{TestApp, secret, signing, source};

/// Captures everything logged (other modules use it too).
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    /// What was captured so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Captures, as JSON lines, what this thread logs at `warn` and above until the guard is
/// dropped (with a current-thread runtime: every task of the test).
pub fn capture_warnings() -> (Capture, tracing::subscriber::DefaultGuard, tracing::Dispatch) {
    let capture = Capture::default();
    let log = LogSettings {
        format: LogFormat::Json,
        level: "warn".into(),
    };
    let guard =
        tracing::subscriber::set_default(gatehouse::telemetry::subscriber(&log, false, capture.clone()));
    (capture, guard, crate::helpers::interest_from_every_subscriber())
}

const HUB_SECRET: &str = "hub-secret-value-6d1f0a";
const URL_TOKEN: &str = "url-token-value-93be11";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// A current-thread runtime keeps every task of the app on this thread, under this subscriber.
#[tokio::test(flavor = "current_thread")]
async fn request_logs_carry_source_and_event_id_and_never_secrets() {
    let capture = Capture::default();
    let settings = LogSettings {
        format: LogFormat::Json,
        level: "trace".into(),
    };
    let _guard = tracing::subscriber::set_default(gatehouse::telemetry::subscriber(
        &settings,
        false,
        capture.clone(),
    ));
    let _interest = crate::helpers::interest_from_every_subscriber();

    let app = TestApp::spawn(|s| {
        s.sources.push(source(
            "admin",
            VerificationScheme::HubSignature,
            vec![secret("hub-1", HUB_SECRET)],
        ));
        s.sources.push(source(
            "guard",
            VerificationScheme::UrlToken,
            vec![secret("tok-1", URL_TOKEN)],
        ));
        s.sources.push(source(
            "relay",
            VerificationScheme::StandardWebhooks,
            vec![secret("sw-1", WHSEC)],
        ));
    })
    .await;
    // Something must be bound to the exchange, or every publish is (rightly) unroutable.
    let _observer = crate::helpers::Observer::new(app.prefix(), "#").await;
    let body = serde_json::json!({"timestamp": chrono::Utc::now().timestamp_millis(), "webhookEvent": "user_deleted", "user": {"accountId": "acc-1"}}).to_string();
    let body = body.as_bytes();
    let accepted = app
        .post(
            "/webhooks/admin/user_removed",
            body,
            &[("x-hub-signature", signing::hub_signature(HUB_SECRET, body))],
        )
        .await;
    assert_eq!(accepted.status(), 202);
    let event_id = accepted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.post(
            "/webhooks/admin",
            body,
            &[("x-hub-signature", signing::hub_signature("wrong", body))]
        )
        .await
        .status(),
        401
    );
    assert_eq!(
        app.post(
            &format!("/webhooks/guard/t/{URL_TOKEN}"),
            br#"{"alert":{"title":"Suspicious login"}}"#,
            &[]
        )
        .await
        .status(),
        202
    );
    assert_eq!(
        app.post("/webhooks/guard/t/not-the-token", body, &[])
            .await
            .status(),
        401
    );
    let relay_headers = signing::standard_webhooks(WHSEC, "msg_log", signing::now(), body);
    assert_eq!(
        app.post("/webhooks/relay", body, &relay_headers).await.status(),
        202
    );
    let debug = format!("{:?}", app.settings);
    app.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    for secret in [
        HUB_SECRET,
        URL_TOKEN,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "guest:guest",
    ] {
        assert!(!logs.contains(secret), "secret {secret} leaked into logs");
        assert!(
            !debug.contains(secret),
            "secret {secret} leaked into Debug output"
        );
    }
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let queued: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "delivery queued")
        .collect();
    assert_eq!(queued.len(), 3, "{logs}");
    let admin = queued
        .iter()
        .find(|l| l["span"]["source"] == "admin")
        .expect("admin line");
    assert_eq!(admin["span"]["event_id"], event_id.as_str());
    assert_eq!(admin["fields"]["key_id"], "hub-1");
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "delivery refused")
        .collect();
    assert_eq!(refused.len(), 2, "{logs}");
    assert!(refused.iter().all(|l| l["span"]["source"].is_string()));
}
