//! `gatehouse demo`: the main job in one command, with nothing to install. It starts gatehouse on
//! the embedded queue and SQLite in a folder of its own, in front of an in-process simulator of a
//! small Atlassian organization, sends a short story of signed webhooks through the real ingress,
//! and prints what gatehouse did with each, then the audit trail and its verification.
//!
//! Everything runs as it would in production (the same config loader, ingress, worker, policies,
//! executor and audit trail); only Atlassian is simulated. The config it ran with is written
//! next to the data, so `gatehouse --config DIR/gatehouse.toml …` works on the same state
//! (`--keep-running` keeps the server and the simulator up for that). The operator console is on,
//! with one admin, `demo`, whose fresh password is printed and kept in `secrets/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Args;
use gatehouse_sim::{
    Behaviour, Seed, SeedGroup, SeedScimGroup, SeedUser, SimAccountStatus, SimHandle, Simulator,
};
use ring::rand::SecureRandom;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::audit::{AuditKind, AuditQuery, AuditRecord};
use crate::config::Settings;
use crate::store::{ApprovalState, Store};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the data (store, config, secrets) here instead of a temporary folder removed at the
    /// end.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Leave gatehouse and the simulator running after the story, for exploring (Ctrl-C stops).
    #[arg(long)]
    pub keep_running: bool,
}

/// The demo organization's tenant name.
const TENANT: &str = "acme";

/// The policies of the demo: the ones a deployment usually starts with (see
/// `config/production.example.toml`).
const POLICIES: &str = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
keep_groups = ["all-staff"]

[[policies]]
name = "offboarding"
on = "user.removed"
actions = ["confluence.remove_from_all_groups", "lifecycle.disable"]
keep_groups = ["all-staff"]
allow_org_wide = true               # disabling the account everywhere waits for a person

[[policies]]
name = "welcome"
on = "user.created"
actions = ["confluence.add_to_groups"]
groups = ["confluence-users", "all-staff"]

[[policies]]
name = "provisioning"
on = "user.provision_requested"
actions = ["scim.provision"]
allowed_groups = ["confluence-users"]

[[policies]]
name = "admins-guard"
on = "group.member_added"
actions = ["confluence.revert_protected_membership"]
protected_groups = [{ name = "confluence-administrators", allow = ["grace"] }]

[[policies]]
name = "group-hygiene"
on = ["group.created", "group.removed"]
actions = ["notify.group_changes"]
naming = { prefixes = ["team-", "confluence-"], lowercase = true, max_length = 64 }
protected_groups = [{ name = "confluence-administrators" }]
"#;

/// `println!` that does not panic when stdout is gone (`gatehouse demo | head`): the story is
/// told to the end all the same, its outcome decides the exit code, and its folder is removed.
macro_rules! say {
    () => {{
        let _ = super::terminal::print_out("\n");
    }};
    ($($words:tt)*) => {{
        let _ = super::terminal::print_out(&format!("{}\n", format!($($words)*)));
    }};
}

/// The organization: a dozen people, a few teams, and a protected administrators group that
/// Mallory has just added herself to.
fn organization() -> Seed {
    let people = [
        ("ada", "Ada Lovelace"),
        ("alan", "Alan Turing"),
        ("bob", "Bob Contractor"),
        ("grace", "Grace Hopper"),
        ("lin", "Lin Chen"),
        ("mallory", "Mallory Intruder"),
        ("omar", "Omar Haddad"),
        ("priya", "Priya Nair"),
        ("sam", "Sam Okafor"),
        ("tess", "Tess Novak"),
        ("yuki", "Yuki Sato"),
        ("zoe", "Zoe Martin"),
    ];
    let everyone = |except: &[&str]| -> Vec<String> {
        people
            .iter()
            .map(|(id, _)| (*id).to_owned())
            .filter(|id| !except.contains(&id.as_str()))
            .collect()
    };
    let names = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
    Seed {
        users: people
            .iter()
            .map(|(id, name)| {
                let user = SeedUser::new(*id, *name);
                if *id == "ada" {
                    // HR has already deactivated Ada's account; her groups are what is left.
                    SeedUser {
                        status: SimAccountStatus::Inactive,
                        ..user
                    }
                } else {
                    user.with_scim(format!("{id}@acme.example"), None)
                }
            })
            .collect(),
        groups: vec![
            SeedGroup::new("g-users", "confluence-users", everyone(&["alan"])),
            SeedGroup::new("g-staff", "all-staff", everyone(&["alan"])),
            SeedGroup::new("g-red", "team-red", names(&["ada", "lin", "omar", "bob"])),
            SeedGroup::new("g-blue", "team-blue", names(&["ada", "priya", "sam", "bob"])),
            SeedGroup::new(
                "g-admins",
                "confluence-administrators",
                names(&["grace", "mallory"]),
            ),
        ],
        scim_groups: vec![SeedScimGroup {
            id: Some("sg-users".to_owned()),
            display_name: "confluence-users".to_owned(),
            members: Vec::new(),
            confluence_group_id: Some("g-users".to_owned()),
        }],
        ..Seed::named(TENANT)
    }
}

/// One step of the story: what is sent, and what the simulator must show afterwards.
struct StoryStep {
    title: &'static str,
    event_type: &'static str,
    data: Value,
    expect: Expectation,
}

enum Expectation {
    /// `account` is in exactly these groups.
    GroupsOf(&'static str, &'static [&'static str]),
    /// A SCIM user with this user name exists.
    ScimUser(&'static str),
    /// The plan waits for a person's approval, and nothing of it has run.
    AwaitsApproval,
}

fn story() -> Vec<StoryStep> {
    vec![
        StoryStep {
            title: "Ada leaves: HR says her last day was today",
            event_type: "user.deactivated",
            data: json!({"account_id": "ada"}),
            expect: Expectation::GroupsOf("ada", &["all-staff"]),
        },
        StoryStep {
            title: "Alan joins: his Atlassian account was just created",
            event_type: "user.created",
            data: json!({"account_id": "alan"}),
            expect: Expectation::GroupsOf("alan", &["all-staff", "confluence-users"]),
        },
        StoryStep {
            title: "HR asks for an account for Eve, a new hire",
            event_type: "user.provision_requested",
            data: json!({"email": "eve@acme.example", "name": "Eve Adams", "external_id": "hr-4711", "groups": ["confluence-users"]}),
            expect: Expectation::ScimUser("eve@acme.example"),
        },
        StoryStep {
            title: "Mallory added herself to confluence-administrators",
            event_type: "group.member_added",
            data: json!({"account_id": "mallory", "group": {"name": "confluence-administrators"}}),
            expect: Expectation::GroupsOf("mallory", &["all-staff", "confluence-users"]),
        },
        StoryStep {
            title: "Bob's contract ends: remove him, and disable his account everywhere",
            event_type: "user.removed",
            data: json!({"account_id": "bob"}),
            expect: Expectation::AwaitsApproval,
        },
    ]
}

/// What the story showed: each step as expected or not, and the audit chain's state.
#[derive(Debug)]
pub struct StoryOutcome {
    pub steps_as_expected: usize,
    pub steps: usize,
    pub chain_intact: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let (dir, temporary) = match &args.data {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("gatehouse-demo-{}", ulid::Ulid::generate())),
            !args.keep_running,
        ),
    };
    // Removed however the run ends, a panic included: it holds the demo's secrets.
    let _remove = temporary.then(|| RemoveOnDrop(dir.clone()));
    let outcome = run_in(&dir, !temporary, args.keep_running).await?;
    anyhow::ensure!(
        outcome.steps_as_expected == outcome.steps && outcome.chain_intact,
        "the demo did not go as expected: {} of {} steps, chain {}",
        outcome.steps_as_expected,
        outcome.steps,
        if outcome.chain_intact { "intact" } else { "BROKEN" }
    );
    Ok(())
}

/// A folder removed when this is dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The story in `dir` (`kept`: it stays after the run). gatehouse and the simulator are stopped
/// before this returns, whether the story went through or not.
async fn run_in(dir: &Path, kept: bool, keep_running: bool) -> anyhow::Result<StoryOutcome> {
    make_private_dir(dir)?;
    make_private_dir(&dir.join("secrets"))?;
    // Absolute, so the config it writes works from anywhere.
    let dir = &std::fs::canonicalize(dir).with_context(|| format!("reading {}", dir.display()))?;
    let sim = Simulator::start(organization(), Behaviour::default())
        .await
        .context("starting the Atlassian simulator")?;
    let hook_secret = webhook_secret()?;
    let console_password = random_text(18, "the console password")?;
    let config = write_config(dir, &sim, &hook_secret, &console_password)?;
    // The environment's `GATEHOUSE__…` overrides are not applied: a demo run inside a
    // deployment must not write its story into that deployment's store (or need its broker).
    let (settings, _) =
        Settings::load_with(&config, std::iter::empty()).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let app = Application::build(settings).await.context("starting gatehouse")?;
    let running = DemoParts {
        addr: app.local_addr(),
        store: app.store(),
        sim: &sim,
        hook_secret: &hook_secret,
        console_password: &console_password,
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    let outcome = tell(&running, dir, &config, (kept, keep_running)).await;
    if outcome.is_ok() && keep_running {
        say!("gatehouse and the simulator keep running; Ctrl-C stops them.");
        super::cancel_on_signal(shutdown.clone()).await;
    }
    shutdown.cancel();
    let stopped = server.await.context("gatehouse stopped abnormally");
    sim.stop().await;
    stopped??;
    outcome
}

/// The demo's running parts, as the story uses them.
struct DemoParts<'a> {
    addr: std::net::SocketAddr,
    store: Store,
    sim: &'a SimHandle,
    hook_secret: &'a str,
    /// The console's `demo` admin signs in with it.
    console_password: &'a str,
}

/// Tells the story against `running`, printing as it goes; then the audit trail and what to try
/// next.
async fn tell(
    running: &DemoParts<'_>,
    dir: &Path,
    config: &Path,
    (kept, keep_running): (bool, bool),
) -> anyhow::Result<StoryOutcome> {
    let (addr, store, sim, hook_secret) = (running.addr, &running.store, running.sim, running.hook_secret);
    say!("gatehouse demo");
    say!(
        "  gatehouse      http://{addr} (embedded queue, SQLite in {})",
        dir.display()
    );
    say!(
        "  Atlassian      simulated at {} (organization `{TENANT}`: 12 people, 5 groups)",
        sim.url("")
    );
    say!("  source         `hr`, Standard Webhooks, an HR system's decisions");
    say!("  policies       leaver, offboarding, welcome, provisioning, admins-guard, group-hygiene");
    say!();

    let http = reqwest::Client::new();
    let mut as_expected = 0;
    let steps = story();
    let mut waiting = None;
    for (i, step) in steps.iter().enumerate() {
        say!("{}. {}", i + 1, step.title);
        let event_id = send(&http, addr, hook_secret, step, i).await?;
        let met = wait_for(sim, store, &event_id, &step.expect).await?;
        for line in describe(store, &event_id).await? {
            say!("     {line}");
        }
        if let Expectation::AwaitsApproval = step.expect
            && let Some(approval) = pending_approval(store, &event_id).await?
        {
            waiting = Some(approval);
        }
        if met {
            as_expected += 1;
            say!("   ok: {}", expectation_text(&step.expect));
        } else {
            say!("   NOT AS EXPECTED: {}", expectation_text(&step.expect));
        }
        say!();
    }

    let records = crate::audit::query::query(
        store,
        &AuditQuery {
            limit: 0,
            ..AuditQuery::default()
        },
    )
    .await?;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for record in &records {
        *by_kind.entry(record.record.kind.as_str()).or_default() += 1;
    }
    let summary: Vec<String> = by_kind.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    say!("audit trail: {} records ({})", records.len(), summary.join(", "));
    let report = crate::audit::verify(store, 1, |_| {}).await?;
    let chain_intact = report.broken.is_none();
    match &report.broken {
        None => say!(
            "audit verify: chain intact, {} records, head hash {}",
            report.checked,
            report.head_hash
        ),
        Some(broken) => say!("audit verify: chain BROKEN at {broken}"),
    }
    say!();
    next_steps(
        dir,
        config,
        (addr, running.console_password),
        hook_secret,
        waiting.as_deref(),
        (kept, keep_running),
    );

    Ok(StoryOutcome {
        steps_as_expected: as_expected,
        steps: steps.len(),
        chain_intact,
    })
}

/// Creates `dir` (and its parents), readable by this user only: the demo's store and secrets are
/// in it.
fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

/// A fresh Standard Webhooks secret (`whsec_` and 32 random bytes in base64).
fn webhook_secret() -> anyhow::Result<String> {
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("no randomness for the webhook secret"))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// `bytes` random bytes as URL-safe base64 (something typed or pasted, such as a password).
fn random_text(bytes: usize, what: &str) -> anyhow::Result<String> {
    let mut value = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut value)
        .map_err(|_| anyhow::anyhow!("no randomness for {what}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value))
}

/// Writes the demo's secrets and config into `dir`; the config's path. The console's admin
/// password is kept beside its hash (`secrets/console-password`), for a later `--config` run.
fn write_config(
    dir: &Path,
    sim: &SimHandle,
    hook_secret: &str,
    console_password: &str,
) -> anyhow::Result<PathBuf> {
    let secret = |name: &str, value: &str| -> anyhow::Result<String> {
        let path = dir.join("secrets").join(name);
        std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
        Ok(format!("file:{}", path.display()))
    };
    secret("console-password", console_password)?;
    let console_hash = crate::console::hash_password(console_password).map_err(anyhow::Error::msg)?;
    let text = format!(
        r#"# Written by `gatehouse demo`: gatehouse in front of a simulated organization.
[server]
listen = "127.0.0.1:0"

[log]
level = "warn"

[store]
url = "sqlite://{store}"

[queue]
backend = "embedded"
embedded_poll_ms = 50
retry_delays_seconds = [1, 5, 30]

[console]
enabled = true

[[console.operators]]
name = "demo"
role = "admin"
password_hash = "{console_hash}"

[[tenants]]
name = "{TENANT}"
confluence_base_url = "{site}"
auth = {{ kind = "basic", email = "bot@{TENANT}.example", token = "{api_token}" }}
scim_base_url = "{scim}"
scim_token = "{scim_token}"
admin_base_url = "{api}"
admin_api_key = "{admin_key}"
org_id = "{org}"

[[sources]]
name = "hr"
scheme = "standard-webhooks"
authority = "decision"
secrets = [{{ id = "demo", value = "{hook}" }}]

[reactions]
product_groups = ["confluence-users"]
{POLICIES}"#,
        store = dir.join("gatehouse.db").display(),
        site = sim.site_base_url(),
        api_token = secret("api-token", &format!("{TENANT}-api-token"))?,
        scim = sim.scim_base_url(),
        scim_token = secret("scim-token", &format!("{TENANT}-scim-token"))?,
        api = sim.api_base_url(),
        admin_key = secret("admin-key", &format!("{TENANT}-admin-key"))?,
        org = sim.org_id(),
        hook = secret("hr-webhook", hook_secret)?,
        console_hash = secret("console-admin-hash", &console_hash)?,
    );
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Sends `step` as a signed relay webhook; the envelope id gatehouse answered with.
async fn send(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    secret: &str,
    step: &StoryStep,
    index: usize,
) -> anyhow::Result<String> {
    let body = json!({
        "type": step.event_type,
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "data": step.data,
    })
    .to_string();
    let id = format!("demo-{}-{}", index + 1, ulid::Ulid::generate());
    let timestamp = chrono::Utc::now().timestamp();
    let key = crate::config::standard_webhooks_key(secret).map_err(anyhow::Error::msg)?;
    let signature = crate::ingress::verify::standard_webhooks::sign(&key, &id, timestamp, body.as_bytes());
    let response = http
        .post(format!("http://{addr}/webhooks/hr"))
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .context("sending a webhook to gatehouse")?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    say!(
        "   sent {} (signed, POST /webhooks/hr): {}",
        step.event_type,
        status.as_u16()
    );
    anyhow::ensure!(status.is_success(), "gatehouse refused the webhook: {answer}");
    answer["id"]
        .as_str()
        .map(str::to_owned)
        .context("gatehouse's answer names no event id")
}

/// Waits (up to 30 s) until the simulator shows what `expect` says and the event's outcome is
/// recorded; whether it did.
async fn wait_for(
    sim: &SimHandle,
    store: &Store,
    event_id: &str,
    expect: &Expectation,
) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let met = match expect {
            Expectation::GroupsOf(account, groups) => {
                let mut names: Vec<String> = sim
                    .state()
                    .groups
                    .into_iter()
                    .filter(|g| g.members.contains(*account))
                    .map(|g| g.name)
                    .collect();
                names.sort();
                names == *groups
            }
            Expectation::ScimUser(user_name) => sim.state().scim_user_by_name(user_name).is_some(),
            Expectation::AwaitsApproval => pending_approval(store, event_id).await?.is_some(),
        };
        let settled = settled(&event_records(store, event_id).await?);
        if met && settled {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the event's plans are done with: each action planned to run has its outcome
/// recorded, or the plan waits for approval.
fn settled(records: &[AuditRecord]) -> bool {
    let with_action = |kinds: &[AuditKind], status: Option<&str>| {
        records
            .iter()
            .filter(|r| r.record.action.is_some() && kinds.contains(&r.record.kind))
            .filter(|r| status.is_none_or(|s| r.record.outcome.status == s))
            .count()
    };
    let to_run = with_action(&[AuditKind::Planned], Some("planned"));
    let ran = with_action(
        &[AuditKind::Executed, AuditKind::Skipped, AuditKind::Failed],
        None,
    );
    let waiting = with_action(&[AuditKind::Planned], Some("pending_approval"));
    waiting > 0 || (to_run > 0 && ran >= to_run)
}

async fn event_records(store: &Store, event_id: &str) -> anyhow::Result<Vec<AuditRecord>> {
    let query = AuditQuery {
        event_id: Some(
            event_id
                .parse()
                .context("gatehouse answered an event id that is no ULID")?,
        ),
        ..AuditQuery::default()
    };
    Ok(crate::audit::query::query(store, &query).await?)
}

/// What gatehouse did with the event: one line per action performed, skipped, failed or
/// waiting for approval (the `planned` record before each performed action left out).
async fn describe(store: &Store, event_id: &str) -> anyhow::Result<Vec<String>> {
    Ok(event_records(store, event_id)
        .await?
        .iter()
        .filter_map(|record| {
            let r = &record.record;
            let action = r.action.as_ref()?;
            if r.kind == AuditKind::Planned && r.outcome.status == "planned" {
                return None;
            }
            let handler = r.handler.as_deref().unwrap_or("-");
            let outcome = match (&r.outcome.http_status, &r.outcome.error) {
                (Some(status), _) => format!("{} ({status})", r.outcome.status),
                (None, Some(error)) => format!("{}: {error}", r.outcome.status),
                (None, None) => r.outcome.status.clone(),
            };
            let org_wide = if action.org_wide { " ORG-WIDE" } else { "" };
            Some(format!(
                "{:<9} {handler}: {}{org_wide} {} -> {outcome}",
                r.kind.as_str(),
                action.action_type,
                action.target
            ))
        })
        .collect())
}

async fn pending_approval(store: &Store, event_id: &str) -> anyhow::Result<Option<String>> {
    Ok(store
        .approvals(ApprovalState::Pending)
        .await?
        .into_iter()
        .find(|a| a.event_id == event_id)
        .map(|a| a.id))
}

fn expectation_text(expect: &Expectation) -> String {
    match expect {
        Expectation::GroupsOf(account, groups) => format!("{account} is in {}", groups.join(", ")),
        Expectation::ScimUser(user_name) => format!("{user_name} exists in the SCIM directory"),
        Expectation::AwaitsApproval => "the plan waits for a person's approval; nothing of it ran".to_owned(),
    }
}

/// What to try next, with this run's paths, address and secret (commands that need the server
/// only while it keeps running).
fn next_steps(
    dir: &Path,
    config: &Path,
    (addr, console_password): (std::net::SocketAddr, &str),
    secret: &str,
    approval: Option<&str>,
    (kept, running): (bool, bool),
) {
    if !kept && !running {
        say!("explore it yourself: `gatehouse demo --keep-running` leaves gatehouse and the simulator up");
        say!("(or `--data DIR` keeps the store and the audit trail), and prints what to try.");
        return;
    }
    let config = config.display();
    say!("try next:");
    if running {
        say!(
            "  open http://{addr}/console and sign in as `demo` with `{console_password}` (an admin: approvals, the trail, dead letters)"
        );
    }
    if running && let Some(id) = approval {
        say!("  gatehouse --config {config} approvals show {id}");
        say!("  gatehouse --config {config} approvals approve {id} --by you   # Bob's plan runs");
    }
    say!("  gatehouse --config {config} audit tail --from 1 --format table");
    say!("  gatehouse --config {config} audit verify");
    if running {
        say!("  # a signed delivery of your own (Standard Webhooks), with the demo's secret:");
        say!("  secret='{secret}'; id=msg-$(date +%s); ts=$(date +%s)");
        say!(
            r#"  body='{{"type":"user.deactivated","timestamp":"'$(date -u +%FT%TZ)'","data":{{"account_id":"lin"}}}}'"#
        );
        say!(
            "  sig=$(printf '%s' \"$id.$ts.$body\" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$(printf '%s' \"${{secret#whsec_}}\" | base64 -d | xxd -p -c 256) -binary | base64)"
        );
        say!(
            "  curl -i http://{addr}/webhooks/hr -H 'content-type: application/json' -H \"webhook-id: $id\" -H \"webhook-timestamp: $ts\" -H \"webhook-signature: v1,$sig\" -d \"$body\""
        );
    } else {
        say!("  (gatehouse demo --keep-running also lets you approve Bob's plan and send your own webhooks)");
    }
    say!(
        "  (data, config and secrets: {}; the console's password is in secrets/console-password)",
        dir.display()
    );
    say!();
}
