//! Two tenants in one deployment, end to end on one simulator serving two Atlassian sites: each
//! tenant's sources cause events on its own site only, with its own credentials and policies;
//! the audit trail and the metrics say which tenant; an envelope bound to a tenant gatehouse does
//! not serve is dead-lettered without a call; and a tenant Atlassian throttles hard does not hold
//! up the other's reactions.

use gatehouse::config::{AtlassianSettings, AuthSettings, Secret, Settings, VerificationScheme};
use gatehouse::queue::OutgoingMessage;
use gatehouse_sim::{
    Behaviour, BurstPolicy, Seed, SeedGroup, SeedUser, SimAccountStatus, SimHandle, Simulator,
};
use handlers::{Envelope, EventType, Scheme};
use serde_json::{Value, json};

use crate::helpers::{TempDir, TestApp, secret, signing, source, test_settings};
use crate::queue::{dead_letters, eventually, metric};
use crate::reactions::{LONG, WHSEC, policies};

/// Each tenant's leaver policy: `a` keeps `all-staff`, `b` keeps `team-2` too.
const LEAVERS: &str = r#"
[[policies]]
name = "leaver-a"
tenants = ["a"]
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
keep_groups = ["all-staff"]

[[policies]]
name = "leaver-b"
tenants = ["b"]
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
keep_groups = ["all-staff", "team-2"]
"#;

/// Tenant `name`'s site: its own ids and credentials, and `people` (deactivated) in
/// `team-1`, `team-2` and `all-staff`.
fn site(name: &str, people: &[String]) -> Seed {
    let members: Vec<String> = people.to_vec();
    let mut seed = Seed {
        users: people
            .iter()
            .map(|id| {
                let mut user = SeedUser::new(id.clone(), id.clone());
                user.status = SimAccountStatus::Inactive;
                user
            })
            .collect(),
        groups: vec![
            SeedGroup::new(format!("{name}-g1"), "team-1", members.clone()),
            SeedGroup::new(format!("{name}-g2"), "team-2", members.clone()),
            SeedGroup::new(format!("{name}-all"), "all-staff", members),
        ],
        ..Seed::named(name)
    };
    // A scoped token: gatehouse reaches each site through the gateway, by its cloud id.
    seed.credentials.api_tokens[0].scoped = true;
    seed
}

/// Tenant `name` on the simulator: a scoped token through the gateway, SCIM and admin with its
/// own credentials.
fn tenant_settings(sim: &SimHandle, name: &str) -> AtlassianSettings {
    let cloud_id = format!("{name}-cloud");
    let mut tenant = AtlassianSettings::new(Some(AuthSettings::Basic {
        email: format!("bot@{name}.example"),
        token: Secret::new(format!("{name}-api-token")),
        cloud_id: Some(cloud_id.clone()),
        token_expires_at: None,
    }));
    let view = sim.tenant(&cloud_id).unwrap();
    tenant.name = Some(name.to_owned());
    tenant.gateway_base_url = sim.api_base_url();
    tenant.scim_base_url = Some(view.scim_base_url());
    tenant.scim_token = Some(Secret::new(format!("{name}-scim-token")));
    tenant.admin_base_url = sim.api_base_url();
    tenant.admin_api_key = Some(Secret::new(format!("{name}-admin-key")));
    tenant.org_id = Some(view.org_id().to_owned());
    crate::atlassian::quick_and_unpaced(&mut tenant);
    tenant
}

/// gatehouse serving tenants `a` and `b` of `sim`, each with its own relay source (`hr-a`,
/// `hr-b`) and leaver policy.
async fn two_tenants(sim: &SimHandle, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = TempDir::new();
    let mut settings = test_settings(&dir);
    for name in ["a", "b"] {
        settings.tenants.push(tenant_settings(sim, name));
        let mut hr = source(
            &format!("hr-{name}"),
            VerificationScheme::StandardWebhooks,
            vec![secret("hr-1", WHSEC)],
        );
        hr.tenant = Some(name.to_owned());
        settings.sources.push(hr);
    }
    settings.policies = policies(LEAVERS);
    settings.queue.retry_delays_seconds = vec![0.2, 0.4];
    configure(&mut settings);
    TestApp::start(settings, Some(dir)).await
}

/// Sends `user.deactivated` for `account` through `source`; the envelope id.
async fn leaves(app: &TestApp, source: &str, account: &str) -> String {
    let body = json!({"type": "user.deactivated", "timestamp": chrono::Utc::now().to_rfc3339(), "data": {"account_id": account}})
        .to_string()
        .into_bytes();
    let delivery = format!("{source}-{account}-{}", ulid::Ulid::generate());
    let headers = signing::standard_webhooks(WHSEC, &delivery, signing::now(), &body);
    let response = app.post(&format!("/webhooks/{source}"), &body, &headers).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    answer["id"].as_str().unwrap().to_owned()
}

/// The groups `account` is in on tenant `cloud_id`'s site, sorted.
fn groups_of(sim: &SimHandle, cloud_id: &str, account: &str) -> Vec<String> {
    let mut names: Vec<String> = sim
        .tenant(cloud_id)
        .unwrap()
        .state()
        .groups
        .into_iter()
        .filter(|g| g.members.contains(account))
        .map(|g| g.name)
        .collect();
    names.sort();
    names
}

async fn records(app: &TestApp, tenant: Option<&str>) -> Vec<gatehouse::audit::AuditRecord> {
    let query = gatehouse::audit::AuditQuery {
        tenant: tenant.map(str::to_owned),
        limit: 10_000,
        ..Default::default()
    };
    gatehouse::audit::query::query(&app.store, &query).await.unwrap()
}

#[tokio::test]
async fn each_tenant_acts_on_its_own_site_with_its_own_credentials_and_policies() {
    // The same account id on both sites: one person in two organizations.
    let ann = vec!["ann".to_owned()];
    let sim = Simulator::start_tenants(vec![
        (site("a", &ann), Behaviour::default()),
        (site("b", &ann), Behaviour::default()),
    ])
    .await
    .unwrap();
    let app = two_tenants(&sim, |s| {
        s.audit.api_token = Some(Secret::new("siem-token-0123456789abcdef"));
    })
    .await;

    let left_a = leaves(&app, "hr-a", "ann").await;
    eventually(LONG, "ann leaves a's teams", || async {
        groups_of(&sim, "a-cloud", "ann") == ["all-staff"]
    })
    .await;
    eventually(LONG, "a's plan recorded as executed", || async {
        records(&app, Some("a"))
            .await
            .iter()
            .any(|r| r.record.event_id.to_string() == left_a && r.record.kind.as_str() == "executed")
    })
    .await;
    assert_eq!(
        groups_of(&sim, "b-cloud", "ann"),
        ["all-staff", "team-1", "team-2"],
        "b's site is untouched by a's event"
    );
    let b_view = sim.tenant("b-cloud").unwrap();
    assert!(b_view.requests().is_empty(), "nothing was asked of b's site");

    let left_b = leaves(&app, "hr-b", "ann").await;
    eventually(
        LONG,
        "ann leaves b's team-1 only (b's policy keeps team-2)",
        || async { groups_of(&sim, "b-cloud", "ann") == ["all-staff", "team-2"] },
    )
    .await;
    // b's calls went to b's site with b's credentials, and were answered.
    assert!(
        b_view
            .requests()
            .iter()
            .all(|r| r.status.is_some_and(|s| s < 400)),
        "{:?}",
        b_view.requests()
    );

    // The audit trail says whose each record is, and filters by it.
    eventually(LONG, "b's plan recorded as executed", || async {
        records(&app, Some("b"))
            .await
            .iter()
            .any(|r| r.record.event_id.to_string() == left_b && r.record.kind.as_str() == "executed")
    })
    .await;
    let of_a = records(&app, Some("a")).await;
    let of_b = records(&app, Some("b")).await;
    assert!(of_a.iter().all(|r| r.record.event_id.to_string() == left_a));
    assert!(of_b.iter().all(|r| r.record.event_id.to_string() == left_b));
    assert!(
        of_a.iter()
            .all(|r| r.record.handler.as_deref() != Some("leaver-b"))
    );
    assert!(
        of_b.iter()
            .any(|r| r.record.handler.as_deref() == Some("leaver-b"))
    );
    assert_eq!(records(&app, None).await.len(), of_a.len() + of_b.len());
    let pulled: Value = app
        .http
        .get(app.url("/audit?tenant=b&format=ocsf"))
        .bearer_auth("siem-token-0123456789abcdef")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pulled = pulled["records"].as_array().unwrap();
    assert_eq!(pulled.len(), of_b.len());
    assert!(
        pulled
            .iter()
            .all(|e| e["metadata"]["tenant_uid"] == "b" && e["cloud"]["account"]["uid"] == "b")
    );

    // Metrics carry the tenant.
    let metrics = app.metrics().await;
    for tenant in ["a", "b"] {
        assert!(
            metrics.contains(&format!(
                "gatehouse_worker_attempts_total{{tenant=\"{tenant}\",outcome=\"ok\"}} 1"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "gatehouse_atlassian_requests_total{{tenant=\"{tenant}\","
            )),
            "{metrics}"
        );
    }

    // An envelope bound to a tenant this deployment does not serve: dead-lettered with the
    // reason, and nothing is asked of any site.
    let calls_before = sim.requests().len();
    let payload = serde_json::value::to_raw_value(&json!({})).unwrap();
    let mut stray = Envelope::new(
        EventType::UserDeactivated,
        "hr-a",
        Scheme::StandardWebhooks,
        "hr-a:stray-1",
        payload,
    );
    stray.tenant.name = Some("ghost".to_owned());
    stray.subject.account_id = Some("ann".to_owned());
    app.queue
        .publish(&OutgoingMessage::from_envelope(&stray, "hr-a"))
        .await
        .unwrap();
    eventually(LONG, "the stray envelope is dead-lettered", || async {
        dead_letters(&app)
            .await
            .iter()
            .any(|l| l.event_id == stray.id.to_string())
    })
    .await;
    let letter = dead_letters(&app)
        .await
        .into_iter()
        .find(|l| l.event_id == stray.id.to_string())
        .unwrap();
    assert!(letter.reason.contains("tenant `ghost`"), "{}", letter.reason);
    assert_eq!(letter.tenant(), "ghost");
    assert_eq!(sim.requests().len(), calls_before, "nothing was called");
    app.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn a_tenant_throttled_hard_does_not_hold_up_the_other() {
    let people = |name: &str| (0..8).map(|i| format!("{name}-u{i}")).collect::<Vec<_>>();
    // a's site answers one request every ten seconds in all (and 429 to the rest, with no
    // Retry-After to go by); b's answers whatever it is asked.
    let throttled = Behaviour {
        tenant: Some(BurstPolicy {
            capacity: 1,
            per_second: 0.1,
            retry_after_seconds: None,
            near_limit: false,
        }),
        ..Behaviour::default()
    };
    let sim = Simulator::start_tenants(vec![
        (site("a", &people("a")), throttled),
        (site("b", &people("b")), Behaviour::default()),
    ])
    .await
    .unwrap();
    let app = two_tenants(&sim, |s| {
        s.worker.concurrency = 4;
        s.worker.tenant_concurrency = Some(2);
    })
    .await;

    // a's events first: without a bound on a's slots they would take all four and wait out a's
    // pauses while b's events queued behind them.
    for account in people("a") {
        leaves(&app, "hr-a", &account).await;
    }
    for account in people("b") {
        leaves(&app, "hr-b", &account).await;
    }
    eventually(LONG, "every b leaver is out of b's teams", || async {
        people("b")
            .iter()
            .all(|account| groups_of(&sim, "b-cloud", account) == ["all-staff", "team-2"])
    })
    .await;
    let a_done = people("a")
        .iter()
        .filter(|account| groups_of(&sim, "a-cloud", account) == ["all-staff"])
        .count();
    assert!(
        a_done < 4,
        "b finished while a, throttled, had most of its leavers still to do (a done: {a_done})"
    );
    assert!(
        metric(
            &app,
            r#"gatehouse_worker_attempts_total{tenant="a",outcome="postponed"}"#
        ) > 0.0,
        "a's extra events went back to the queue instead of waiting in a slot"
    );
    assert_eq!(
        metric(
            &app,
            r#"gatehouse_worker_attempts_total{tenant="b",outcome="postponed"}"#
        ),
        0.0
    );
    assert!(
        sim.tenant("a-cloud")
            .unwrap()
            .requests()
            .iter()
            .any(|r| r.status == Some(429)),
        "a was throttled"
    );
    app.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn each_tenant_is_polled_and_reconciled_on_its_own() {
    let ann = vec!["ann".to_owned()];
    let sim = Simulator::start_tenants(vec![
        (site("a", &ann), Behaviour::default()),
        (site("b", &ann), Behaviour::default()),
    ])
    .await
    .unwrap();
    // No webhook at all: ann, deactivated on both sites, is found by each tenant's reconciler and
    // handled by that tenant's policy; each organization's events-stream is read with its own
    // cursor.
    let app = two_tenants(&sim, |s| {
        s.poll.org_events = true;
        s.poll.interval_seconds = 1;
        s.reconcile.enabled = true;
        s.reconcile.interval_seconds = 1;
        s.reconcile.protected_groups = vec!["team-1".to_owned()];
    })
    .await;
    eventually(
        LONG,
        "each site's ann handled by its own tenant's policy",
        || async {
            groups_of(&sim, "a-cloud", "ann") == ["all-staff"]
                && groups_of(&sim, "b-cloud", "ann") == ["all-staff", "team-2"]
        },
    )
    .await;
    eventually(LONG, "each tenant's snapshots and cursor are its own", || async {
        let store = &app.store;
        store.group_snapshot("a", "a-g1").await.unwrap().is_some()
            && store.group_snapshot("b", "b-g1").await.unwrap().is_some()
            && store.group_snapshot("a", "b-g1").await.unwrap().is_none()
            && store.poll_cursor("org-events@a").await.unwrap().is_some()
            && store.poll_cursor("org-events@b").await.unwrap().is_some()
    })
    .await;
    // The findings were queued as each tenant's, and acted on by each tenant's policy only.
    let of_b = records(&app, Some("b")).await;
    assert!(
        of_b.iter()
            .any(|r| r.record.handler.as_deref() == Some("leaver-b"))
    );
    assert!(
        of_b.iter()
            .all(|r| r.record.handler.as_deref() != Some("leaver-a"))
    );
    for name in ["a", "b"] {
        let polled = sim
            .tenant(&format!("{name}-cloud"))
            .unwrap()
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/events-stream"))
            .count();
        assert!(polled > 0, "{name}'s events-stream was read");
    }
    app.stop().await;
    sim.stop().await;
}

/// A config file for tenants `a` and `b` of `sim` (scoped tokens through the gateway, read from
/// files), with each tenant's leaver policy and a SQLite store, written into `dir`.
fn config_file(sim: &SimHandle, dir: &TempDir) -> std::path::PathBuf {
    let mut tenants = String::new();
    for name in ["a", "b"] {
        let token = dir.0.join(format!("{name}-token"));
        std::fs::write(&token, format!("{name}-api-token\n")).unwrap();
        tenants.push_str(&format!(
            "[[tenants]]\nname = \"{name}\"\ngateway_base_url = \"{api}\"\n\
             auth = {{ kind = \"basic\", email = \"bot@{name}.example\", token = \"file:{token}\", cloud_id = \"{name}-cloud\" }}\n",
            api = sim.api_base_url(),
            token = token.display(),
        ));
    }
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{store}/gatehouse.db\"\n{tenants}{LEAVERS}",
            store = dir.0.display()
        ),
    )
    .unwrap();
    config
}

/// Runs `gatehouse` with `args` and `--config config`.
async fn gatehouse(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let config = config.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--config", config.as_str()]);
    crate::helpers::run_gatehouse(&all).await
}

#[tokio::test]
async fn commands_work_on_the_tenant_they_are_told() {
    let sim = Simulator::start_tenants(vec![
        (site("a", &["ann".to_owned()]), Behaviour::default()),
        (site("b", &["bob".to_owned()]), Behaviour::default()),
    ])
    .await
    .unwrap();
    let dir = TempDir::new();
    let config = config_file(&sim, &dir);

    let (ok, _, stderr) = gatehouse(&config, &["check-config"]).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("tenants: a, b"), "{stderr}");

    // With several tenants, a command that works on one must be told which.
    let (ok, _, stderr) = gatehouse(&config, &["approvals", "list"]).await;
    assert!(!ok);
    assert!(stderr.contains("name one with --tenant (a, b)"), "{stderr}");
    let (ok, _, stderr) = gatehouse(&config, &["approvals", "list", "--tenant", "c"]).await;
    assert!(!ok);
    assert!(stderr.contains("no tenant `c`"), "{stderr}");
    let (ok, _, stderr) = gatehouse(&config, &["approvals", "--tenant", "b", "list"]).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("0 pending approval(s) of tenant `b`"), "{stderr}");

    // Listings read the named tenant's site, with its credentials.
    let (ok, stdout, stderr) = gatehouse(
        &config,
        &[
            "directory",
            "members",
            "team-1",
            "--tenant",
            "b",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let members: Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bob"]);
    assert!(sim.tenant("a-cloud").unwrap().requests().is_empty());

    // A plan is made with the named tenant's policies.
    let payload = serde_json::value::to_raw_value(&json!({})).unwrap();
    let mut envelope = Envelope::new(
        EventType::UserDeactivated,
        "hr-b",
        Scheme::StandardWebhooks,
        "hr-b:1",
        payload,
    );
    envelope.subject.account_id = Some("bob".to_owned());
    let event = dir.0.join("event.json");
    std::fs::write(&event, serde_json::to_string(&envelope).unwrap()).unwrap();
    let event = event.display().to_string();
    let (ok, stdout, stderr) = gatehouse(&config, &["plan", "--tenant", "b", "--event", &event]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("leaver-b"), "{stdout}");
    assert!(!stdout.contains("leaver-a"), "{stdout}");
    sim.stop().await;
}

/// A config that names no Atlassian site still files events under the tenant `default`;
/// `check-config` says there is no site behind it.
#[tokio::test]
async fn check_config_says_when_no_atlassian_site_is_configured() {
    let dir = TempDir::new();
    let config = dir.0.join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let (ok, _, stderr) =
        crate::helpers::run_gatehouse(&["--config", config.to_str().unwrap(), "check-config"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("tenants: default (no Atlassian site configured"),
        "{stderr}"
    );
}

/// `check-config --without-secrets` checks the production example where none of its secrets
/// exists (as in a pipeline): it passes, lists what the deployment must provide, and still
/// fails on any other mistake. Without the flag the same file fails on its missing secrets.
#[tokio::test]
async fn check_config_without_secrets_checks_the_rest() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/production.example.toml");
    let (ok, _, stderr) = crate::helpers::run_gatehouse(&["--config", example, "check-config"]).await;
    assert!(
        !ok && stderr.contains("config error: store.encryption_key"),
        "{stderr}"
    );

    let (ok, stdout, stderr) =
        crate::helpers::run_gatehouse(&["--config", example, "check-config", "--without-secrets"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("[[tenants]]"), "{stdout}");
    assert!(
        stderr.contains("secret not read: store.encryption_key = file:/run/secrets/gatehouse-store-key"),
        "{stderr}"
    );
    assert!(stderr.contains("config OK without its secrets ("), "{stderr}");

    let dir = TempDir::new();
    let broken = dir.0.join("broken.toml");
    let text =
        std::fs::read_to_string(example)
            .unwrap()
            .replacen("\nconcurrency = 16\n", "\nconcurrency = 0\n", 1);
    assert!(
        text.contains("\nconcurrency = 0\n"),
        "the example sets worker.concurrency"
    );
    std::fs::write(&broken, text).unwrap();
    let (ok, _, stderr) = crate::helpers::run_gatehouse(&[
        "--config",
        broken.to_str().unwrap(),
        "check-config",
        "--without-secrets",
    ])
    .await;
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("config error: worker.concurrency"), "{stderr}");
    assert!(!stderr.contains("secret"), "only the mistake: {stderr}");
}
