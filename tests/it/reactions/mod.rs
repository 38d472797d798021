//! Reactions end to end: a signed webhook → the queue (RabbitMQ) → a worker → the policies → the
//! Atlassian simulator → the audit trail. Assertions read the simulator's state and request log,
//! the audit trail, approvals and what reached the exchange.

mod approvals;
mod decisions;
mod deprovision;
mod guard;
mod independence;
mod one_account;
mod pacing;
mod plan_cli;

use std::time::Duration;

use gatehouse::config::{Settings, VerificationScheme};
use gatehouse_sim::{Behaviour, LoggedRequest, Seed, SimHandle, Simulator, StateSnapshot};
use handlers::policy::PolicyConfig;
use serde_json::{Value, json};

use crate::helpers::{TempDir, TestApp, secret, signing, source, test_settings};
use crate::queue::eventually;

pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const LONG: Duration = Duration::from_secs(30);

/// A simulator, and gatehouse pointed at it with a relay source and `policies`.
pub struct World {
    pub sim: SimHandle,
    pub app: TestApp,
    http: reqwest::Client,
}

/// Parses `[[policies]]` entries written as TOML.
pub fn policies(toml: &str) -> Vec<PolicyConfig> {
    #[derive(serde::Deserialize)]
    struct File {
        policies: Vec<PolicyConfig>,
    }
    toml::from_str::<File>(toml).unwrap().policies
}

/// Test settings for gatehouse in front of `sim`: a relay source, `[atlassian]` on the simulator,
/// short retry rungs.
pub fn settings_for_sim(sim: &SimHandle, dir: &TempDir) -> Settings {
    let mut settings = test_settings(dir);
    settings.sources.push(source(
        "relay",
        VerificationScheme::StandardWebhooks,
        vec![secret("relay-1", WHSEC)],
    ));
    settings.atlassian = Some(crate::atlassian::settings_for(sim));
    settings.queue.retry_delays_seconds = vec![0.2, 0.4];
    settings
}

impl World {
    pub async fn start(
        seed: Seed,
        policies: Vec<PolicyConfig>,
        configure: impl FnOnce(&mut Settings),
    ) -> World {
        World::start_with_faults(seed, policies, Vec::new(), configure).await
    }

    /// Like [`World::start`], with `faults` scripted into the simulator before gatehouse starts
    /// (so its first calls meet them).
    pub async fn start_with_faults(
        seed: Seed,
        policies: Vec<PolicyConfig>,
        faults: Vec<gatehouse_sim::Fault>,
        configure: impl FnOnce(&mut Settings),
    ) -> World {
        let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
        let http = crate::helpers::http();
        for fault in faults {
            let response = http
                .post(sim.url("/_sim/faults"))
                .json(&fault)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 204);
        }
        let dir = TempDir::new();
        let mut settings = settings_for_sim(&sim, &dir);
        settings.policies = policies;
        configure(&mut settings);
        let app = TestApp::start(settings, Some(dir)).await;
        World {
            sim,
            app,
            http: crate::helpers::http(),
        }
    }

    /// Sends a relay event (`{"type", "timestamp", "data"}`) through the ingress; returns the
    /// envelope id.
    pub async fn send(&self, event_type: &str, delivery_id: &str, data: Value) -> String {
        self.send_at(event_type, delivery_id, data, chrono::Utc::now())
            .await
    }

    /// Like [`World::send`], through the source named `source` (signed with the same secret).
    pub async fn send_via(&self, source: &str, event_type: &str, delivery_id: &str, data: Value) -> String {
        let body = json!({"type": event_type, "timestamp": chrono::Utc::now().to_rfc3339(), "data": data})
            .to_string()
            .into_bytes();
        let headers = signing::standard_webhooks(WHSEC, delivery_id, signing::now(), &body);
        let response = self
            .app
            .post(&format!("/webhooks/{source}"), &body, &headers)
            .await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status == 202 || status == 200, "{status} {answer}");
        answer["id"].as_str().unwrap_or_default().to_owned()
    }

    /// Posts `body` to the relay source, signed; the status.
    pub async fn post_relay(&self, body: Value, delivery_id: &str) -> u16 {
        let body = body.to_string().into_bytes();
        let headers = signing::standard_webhooks(WHSEC, delivery_id, signing::now(), &body);
        self.app
            .post("/webhooks/relay", &body, &headers)
            .await
            .status()
            .as_u16()
    }

    /// Like [`World::send`], with the event's own (signed) time `at`.
    pub async fn send_at(
        &self,
        event_type: &str,
        delivery_id: &str,
        data: Value,
        at: chrono::DateTime<chrono::Utc>,
    ) -> String {
        let body = json!({"type": event_type, "timestamp": at.to_rfc3339(), "data": data})
            .to_string()
            .into_bytes();
        let headers = signing::standard_webhooks(WHSEC, delivery_id, signing::now(), &body);
        let response = self.app.post("/webhooks/relay", &body, &headers).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status == 202 || status == 200, "{status} {answer}");
        answer["id"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn state(&self) -> StateSnapshot {
        self.sim.state()
    }

    /// API calls the simulator received (control calls excluded).
    pub async fn requests(&self) -> Vec<LoggedRequest> {
        self.sim.requests()
    }

    pub async fn set_status(&self, account: &str, status: &str) {
        let response = self
            .http
            .put(self.sim.url(&format!("/_sim/accounts/{account}/status")))
            .json(&json!({"status": status}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    /// Scripts a fault (a delay, an error status) into the simulator.
    pub async fn fault(&self, fault: gatehouse_sim::Fault) {
        let response = self
            .http
            .post(self.sim.url("/_sim/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    /// The names of the groups `account` is in, sorted.
    pub async fn groups_of(&self, account: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .state()
            .await
            .groups
            .into_iter()
            .filter(|g| g.members.contains(account))
            .map(|g| g.name)
            .collect();
        names.sort();
        names
    }

    /// The kinds of the audit records about `event_id` (with their action types).
    pub async fn audit(&self, event_id: &str) -> Vec<(String, Option<String>)> {
        let query = gatehouse::audit::AuditQuery {
            event_id: Some(event_id.parse().unwrap()),
            limit: 10_000,
            ..Default::default()
        };
        gatehouse::audit::query::query(&self.app.store, &query)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.record.kind.as_str().to_owned(),
                    r.record.action.map(|a| a.action_type),
                )
            })
            .collect()
    }

    /// Waits for a successful round of the background reconciler of the default tenant.
    pub async fn reconciled(&self) {
        eventually(LONG, "a recorded, successful reconciler round", || async {
            self.app
                .store
                .last_reconcile_run("default")
                .await
                .unwrap()
                .is_some_and(|run| run.error.is_none())
        })
        .await;
    }

    /// Waits until the audit trail holds a record of each of `kinds_present` about `event_id`.
    /// Only that: `received` is written before anything is planned, so a check that nothing
    /// came of an event must wait for a record its plan writes at its end.
    pub async fn settled(&self, event_id: &str, kinds_present: &[&str]) {
        eventually(LONG, &format!("event {event_id} settled"), || async {
            let audit = self.audit(event_id).await;
            kinds_present
                .iter()
                .all(|k| audit.iter().any(|(kind, _)| kind == k))
        })
        .await;
    }

    pub async fn stop(self) {
        self.app.stop().await;
        self.sim.stop().await;
    }
}
