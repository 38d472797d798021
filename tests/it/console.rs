//! The operator console: in a real browser (headless Chromium over chromedriver, driven by
//! a small WebDriver client) an operator signs in, sees the plan a `user.deactivated` event is waiting with,
//! approves it, and watches its actions executed in the audit view while the simulated
//! organization changes; a viewer cannot approve; a forged form is refused. Over plain HTTP: the
//! security headers, CSRF and role refusals, the redirect of every page to the sign-in page,
//! sign-out, the lockout, and the proxy header believed only from a trusted address.
//!
//! The browser tests need Debian's `chromium` and `chromium-driver` (`.ci/run` installs them);
//! where they are genuinely absent, those tests say so and pass without a browser.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use gatehouse::config::{OperatorRole, OperatorSettings, PasswordHash, Settings};
use gatehouse::store::{ApprovalState, ReconcileRun};
use gatehouse_sim::{Seed, SeedGroup, SeedUser, SimAccountStatus};
use serde_json::json;

use crate::helpers::webdriver::{Element, WebDriver};
use crate::helpers::{TempDir, TestApp};
use crate::queue::eventually;
use crate::reactions::{LONG, World, policies};

const PASSWORD: &str = "correct horse battery staple";

/// A leaver's deactivation plans a removal from every group and an organization-wide disable:
/// the plan waits for a person.
const LEAVER: &str = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups", "lifecycle.disable"]
allow_org_wide = true
"#;

fn leavers() -> Seed {
    let mut users = vec![SeedUser::new("staff-1", "Staff One")];
    for id in ["cara", "dan"] {
        let mut user = SeedUser::new(id, id);
        user.status = SimAccountStatus::Inactive;
        users.push(user);
    }
    Seed {
        users,
        groups: vec![
            SeedGroup::new(
                "g-x",
                "team-x",
                vec!["cara".into(), "dan".into(), "staff-1".into()],
            ),
            SeedGroup::new("g-all", "all-staff", vec!["cara".into(), "staff-1".into()]),
        ],
        ..Seed::default()
    }
}

/// One hash for every operator of a test (hashing costs as much as checking).
fn password_hash() -> PasswordHash {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PasswordHash::from(
        HASH.get_or_init(|| gatehouse::console::hash_password(PASSWORD).unwrap())
            .clone(),
    )
}

fn operator(name: &str, role: OperatorRole) -> OperatorSettings {
    OperatorSettings {
        name: name.to_owned(),
        role,
        password_hash: Some(password_hash()),
    }
}

/// The console on, with `alice` (admin), `april` (approver) and `vera` (viewer).
fn with_console(settings: &mut Settings) {
    settings.console.enabled = true;
    settings.console.operators = vec![
        operator("alice", OperatorRole::Admin),
        operator("april", OperatorRole::Approver),
        operator("vera", OperatorRole::Viewer),
    ];
}

async fn console_world(configure: impl FnOnce(&mut Settings)) -> World {
    World::start(leavers(), policies(LEAVER), |settings| {
        with_console(settings);
        configure(settings);
    })
    .await
}

/// Sends `account`'s deactivation and waits for its plan to wait for approval; the approval.
async fn pending_leaver(world: &World, account: &str) -> gatehouse::store::Approval {
    world
        .send(
            "user.deactivated",
            &format!("msg-{account}"),
            json!({"account_id": account}),
        )
        .await;
    eventually(LONG, "a pending approval", || async {
        pending_about(world, account).await.is_some()
    })
    .await;
    pending_about(world, account).await.unwrap()
}

async fn pending_about(world: &World, account: &str) -> Option<gatehouse::store::Approval> {
    world
        .app
        .store
        .approvals(ApprovalState::Pending)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.account_id.as_deref() == Some(account))
}

async fn state_of(world: &World, id: &str) -> ApprovalState {
    world.app.store.approval(id).await.unwrap().unwrap().state
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP

/// An HTTP client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    gatehouse::app::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Form bodies (reqwest is built without its `form` feature).
trait FormPairs {
    fn form_pairs(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormPairs for reqwest::RequestBuilder {
    fn form_pairs(self, pairs: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

/// `name=value` of the `Set-Cookie` named `name` in `response`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The value of the hidden `csrf` field of the first form in `html`.
fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// Signs `name` in over HTTP; the session cookie (`gatehouse_console=…`).
async fn sign_in(world: &World, name: &str, password: &str) -> Result<String, reqwest::Response> {
    sign_in_at(&world.app, name, password).await
}

/// Signs `name` in to `app`'s console over HTTP; the session cookie.
pub async fn sign_in_at(app: &TestApp, name: &str, password: &str) -> Result<String, reqwest::Response> {
    let http = client();
    let form = http.get(app.url("/console/sign-in")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let nonce = set_cookie(&form, "gatehouse_console_sign_in").unwrap();
    let token = csrf_in(&form.text().await.unwrap());
    let response = http
        .post(app.url("/console/sign-in"))
        .header("cookie", nonce)
        .form_pairs(&[("csrf", token.as_str()), ("name", name), ("password", password)])
        .send()
        .await
        .unwrap();
    match set_cookie(&response, "gatehouse_console") {
        Some(cookie) if response.status() == 303 => Ok(cookie),
        _ => Err(response),
    }
}

/// A signed-in page's HTML and CSRF token.
async fn page_as(world: &World, cookie: &str, path: &str) -> (u16, String) {
    let response = client()
        .get(world.app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn post_as(world: &World, cookie: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(world.app.url(path))
        .header("cookie", cookie)
        .form_pairs(form)
        .send()
        .await
        .unwrap()
}

fn redirects_to_sign_in(response: &reqwest::Response) -> bool {
    response.status() == 303
        && response.headers().get("location").and_then(|l| l.to_str().ok()) == Some("/console/sign-in")
}

#[tokio::test]
async fn every_console_answer_carries_a_strict_content_security_policy() {
    let world = console_world(|_| {}).await;
    for path in [
        "/console/sign-in",
        "/console/approvals",
        "/console/console.css",
        "/console/nope",
        "/console",
        "/console/",
        // A form's route asked with GET: 405, still the console's answer.
        "/console/sign-out",
    ] {
        let response = client().get(world.app.url(path)).send().await.unwrap();
        let headers = response.headers();
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
    // No inline style or script anywhere: the stylesheet is a file.
    let page = client()
        .get(world.app.url("/console/sign-in"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("<script") && !page.contains("style="), "{page}");
    assert!(page.contains("href=\"/console/console.css\""), "{page}");
    // Paths outside /console keep the ingress's own answers, whatever the console's are.
    let outside = client().get(world.app.url("/nope")).send().await.unwrap();
    assert_eq!(outside.status(), 404);
    assert!(outside.headers().get("content-security-policy").is_none());
    world.stop().await;
}

/// The `seq`s of the records a console audit page lists, in page order.
fn seqs_in(page: &str) -> Vec<u64> {
    page.split("id=\"record-")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_audit_page_shows_the_newest_records_first_and_pages_back_without_gaps() {
    let world = console_world(|_| {}).await;
    let records: Vec<gatehouse::audit::NewRecord> = (0..105)
        .map(|_| {
            let mut record = gatehouse::audit::NewRecord::new(
                ulid::Ulid::generate(),
                gatehouse::audit::AuditKind::Skipped,
            );
            record.account_id = Some("paging".to_owned());
            record
        })
        .collect();
    let written = world.app.audit.append_all(records).await.unwrap();
    let all: Vec<u64> = written.iter().rev().map(|r| r.seq).collect();
    let alice = sign_in(&world, "alice", PASSWORD).await.unwrap();
    let (status, first) = page_as(&world, &alice, "/console/audit?account_id=paging").await;
    assert_eq!(status, 200);
    assert_eq!(seqs_in(&first), all[..100]);
    // The chain's badge: a trail this short is verified whole at the first check.
    let badge = "chain verified · every record up to seq ";
    let verified_to: u64 = first
        .split(badge)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .and_then(|seq| seq.trim().parse().ok())
        .unwrap_or_else(|| panic!("no intact badge: {first}"));
    assert!(verified_to >= written.last().unwrap().seq, "{verified_to}");
    assert!(
        first.contains("The last round over every record ended at"),
        "{first}"
    );
    let before_link = first
        .split("\" id=\"next-page\"")
        .next()
        .expect("a link to older records");
    let start = "href=\"/console/audit?";
    let link = before_link[before_link.rfind(start).unwrap() + start.len()..].replace("&amp;", "&");
    assert!(link.starts_with("account_id=paging&"), "{link}");
    assert!(link.contains(&format!("before_seq={}", all[99])), "{link}");
    let (_, older) = page_as(&world, &alice, &format!("/console/audit?{link}")).await;
    assert_eq!(seqs_in(&older), all[100..]);
    assert!(!older.contains("id=\"next-page\""));
    world.stop().await;
}

#[tokio::test]
async fn the_console_is_absent_until_enabled() {
    let world = World::start(leavers(), policies(LEAVER), |_| {}).await;
    for path in ["/console", "/console/sign-in", "/console/approvals"] {
        let response = client().get(world.app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    world.stop().await;
}

#[tokio::test]
async fn no_page_is_reachable_without_signing_in_and_nothing_is_done() {
    let world = console_world(|_| {}).await;
    let approval = pending_leaver(&world, "cara").await;
    let gets = [
        "/console",
        "/console/approvals",
        "/console/audit",
        "/console/audit?account_id=cara",
        "/console/dead-letters",
        "/console/dead-letters/anything",
        "/console/status",
    ];
    for cookie in [None, Some("gatehouse_console=forged-session-id")] {
        for path in gets {
            let mut request = client().get(world.app.url(path));
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let response = request.send().await.unwrap();
            assert!(redirects_to_sign_in(&response), "{path}: {}", response.status());
        }
        for path in [
            format!("/console/approvals/{}/approve", approval.id),
            format!("/console/approvals/{}/reject", approval.id),
            "/console/dead-letters/anything/replay".to_owned(),
            "/console/sign-out".to_owned(),
        ] {
            let mut request = client().post(world.app.url(&path)).form_pairs(&[("csrf", "x")]);
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let response = request.send().await.unwrap();
            assert!(redirects_to_sign_in(&response), "{path}: {}", response.status());
        }
    }
    assert_eq!(state_of(&world, &approval.id).await, ApprovalState::Pending);
    world.stop().await;
}

#[tokio::test]
async fn forms_without_the_session_csrf_token_are_refused_and_change_nothing() {
    let world = console_world(|_| {}).await;
    let approval = pending_leaver(&world, "cara").await;
    let alice = sign_in(&world, "alice", PASSWORD).await.unwrap();
    let approve = format!("/console/approvals/{}/approve", approval.id);
    let reject = format!("/console/approvals/{}/reject", approval.id);
    // Missing, empty, and another session's token.
    let bob_token = {
        let april = sign_in(&world, "april", PASSWORD).await.unwrap();
        csrf_in(&page_as(&world, &april, "/console/approvals").await.1)
    };
    for form in [vec![], vec![("csrf", "")], vec![("csrf", bob_token.as_str())]] {
        let response = post_as(&world, &alice, &approve, &form).await;
        assert_eq!(response.status(), 403);
        let mut with_reason = form.clone();
        with_reason.push(("reason", "forged"));
        let response = post_as(&world, &alice, &reject, &with_reason).await;
        assert_eq!(response.status(), 403);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&world, &approval.id).await, ApprovalState::Pending);
    assert_eq!(world.groups_of("cara").await, ["all-staff", "team-x"]);

    // With the token, the same operator's rejection goes through, attributed to her.
    let token = csrf_in(&page_as(&world, &alice, "/console/approvals").await.1);
    let response = post_as(
        &world,
        &alice,
        &reject,
        &[
            ("csrf", token.as_str()),
            ("reason", "cara is moving teams, not leaving"),
        ],
    )
    .await;
    assert_eq!(response.status(), 303);
    let decided = world.app.store.approval(&approval.id).await.unwrap().unwrap();
    assert_eq!(decided.state, ApprovalState::Rejected);
    assert_eq!(decided.decided_by.as_deref(), Some("console:alice"));
    assert_eq!(decided.note.as_deref(), Some("cara is moving teams, not leaving"));
    let records = world.audit(&approval.event_id).await;
    assert!(records.iter().any(|(kind, _)| kind == "rejected"), "{records:?}");
    world.stop().await;
}

#[tokio::test]
async fn roles_limit_what_an_operator_may_do() {
    let world = console_world(|_| {}).await;
    let approval = pending_leaver(&world, "cara").await;
    let vera = sign_in(&world, "vera", PASSWORD).await.unwrap();
    let (status, page) = page_as(&world, &vera, "/console/approvals").await;
    assert_eq!(status, 200);
    assert!(page.contains(&approval.id), "the viewer sees the plan");
    assert!(
        !page.contains(&format!("id=\"approve-{}\"", approval.id)),
        "but no button"
    );
    let token = csrf_in(&page);
    for action in ["approve", "reject"] {
        let response = post_as(
            &world,
            &vera,
            &format!("/console/approvals/{}/{action}", approval.id),
            &[("csrf", token.as_str())],
        )
        .await;
        assert_eq!(response.status(), 403, "{action}");
    }
    assert_eq!(state_of(&world, &approval.id).await, ApprovalState::Pending);

    // An approver may decide, not replay dead letters; the refusal comes before any lookup.
    let april = sign_in(&world, "april", PASSWORD).await.unwrap();
    let token = csrf_in(&page_as(&world, &april, "/console/dead-letters").await.1);
    let response = post_as(
        &world,
        &april,
        "/console/dead-letters/some-letter/replay",
        &[("csrf", token.as_str())],
    )
    .await;
    assert_eq!(response.status(), 403);
    world.stop().await;
}

/// A plan is approved once: the same form sent again (a refresh, a second approver) while the
/// approved plan is still being performed decides nothing (409) and queues nothing again.
#[tokio::test]
async fn an_approved_plan_is_not_approved_again() {
    let world = console_world(|_| {}).await;
    let approval = pending_leaver(&world, "cara").await;
    // Atlassian refuses the removals for now: the approved plan stays approved, retried later.
    world
        .fault(gatehouse_sim::Fault::status("/userByGroupId", 503, 10_000))
        .await;
    let april = sign_in(&world, "april", PASSWORD).await.unwrap();
    let approve = format!("/console/approvals/{}/approve", approval.id);
    let token = csrf_in(&page_as(&world, &april, "/console/approvals").await.1);
    let first = post_as(&world, &april, &approve, &[("csrf", token.as_str())]).await;
    assert_eq!(first.status(), 303);
    assert_eq!(state_of(&world, &approval.id).await, ApprovalState::Approved);
    let again = post_as(&world, &april, &approve, &[("csrf", token.as_str())]).await;
    assert_eq!(again.status(), 409);
    let records = world.audit(&approval.event_id).await;
    assert_eq!(
        records.iter().filter(|(kind, _)| kind == "approved").count(),
        1,
        "{records:?}"
    );
    world.stop().await;
}

/// Parks a real dead letter: an `approval.granted` that gatehouse did not publish itself is
/// refused by the worker and dead-lettered. Its id.
async fn park_a_dead_letter(world: &World) -> String {
    let payload =
        serde_json::value::RawValue::from_string(json!({"approval_id": "01FORGED"}).to_string()).unwrap();
    let envelope = handlers::Envelope::new(
        handlers::EventType::ApprovalGranted,
        "relay",
        handlers::Scheme::StandardWebhooks,
        "forged-approval",
        payload,
    );
    let message = gatehouse::queue::OutgoingMessage::from_envelope(&envelope, "relay");
    world.app.queue.publish(&message).await.unwrap();
    eventually(LONG, "the forged approval dead-lettered", || async {
        !crate::queue::dead_letters(&world.app).await.is_empty()
    })
    .await;
    crate::queue::dead_letters(&world.app).await.remove(0).id
}

#[tokio::test]
async fn an_admin_replays_a_dead_letter() {
    let world = console_world(|_| {}).await;
    let id = park_a_dead_letter(&world).await;
    let alice = sign_in(&world, "alice", PASSWORD).await.unwrap();
    let (status, list) = page_as(&world, &alice, "/console/dead-letters").await;
    assert_eq!(status, 200);
    assert!(list.contains(&id), "{list}");
    let (status, letter) = page_as(&world, &alice, &format!("/console/dead-letters/{id}")).await;
    assert_eq!(status, 200);
    assert!(letter.contains("is not gatehouse&#x27;s own"), "{letter}");
    assert!(letter.contains("id=\"replay\""), "an admin gets the button");
    let response = post_as(
        &world,
        &alice,
        &format!("/console/dead-letters/{id}/replay"),
        &[("csrf", csrf_in(&letter).as_str())],
    )
    .await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (_, listed) = page_as(&world, &alice, &location).await;
    assert!(listed.contains(&format!("Dead letter {id} replayed")), "{listed}");
    // Only a letter really replayed is said to be.
    let (_, spoofed) = page_as(&world, &alice, "/console/dead-letters?replayed=everything").await;
    assert!(!spoofed.contains("id=\"notice\""), "{spoofed}");
    let (_, still_dead) = world.app.store.dead_letter(&id).await.unwrap().unwrap();
    assert!(!still_dead, "marked replayed");
    // On the trail with who replayed it (the forged letter names an event of its own).
    let replayed = gatehouse::audit::query::query(
        &world.app.store,
        &gatehouse::audit::AuditQuery {
            kinds: vec![gatehouse::audit::AuditKind::Replayed],
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(
        replayed[0].record.outcome.status,
        format!("replayed dead letter {id} by console:alice")
    );
    let (_, letter) = page_as(&world, &alice, &format!("/console/dead-letters/{id}")).await;
    assert!(!letter.contains("id=\"replay\""), "replayed once only");
    let again = post_as(
        &world,
        &alice,
        &format!("/console/dead-letters/{id}/replay"),
        &[("csrf", csrf_in(&letter).as_str())],
    )
    .await;
    assert_eq!(again.status(), 409);
    world.stop().await;
}

/// Sessions outlive a restart, but not a password change: a session signed in with a password
/// whose hash config no longer holds signs nobody in (a leaked password is rotated, and the
/// sessions it opened end with it).
#[tokio::test]
async fn a_changed_password_ends_the_sessions_it_opened() {
    let sim = gatehouse_sim::Simulator::start(leavers(), gatehouse_sim::Behaviour::default())
        .await
        .unwrap();
    let dir = TempDir::new();
    let mut settings = crate::reactions::settings_for_sim(&sim, &dir);
    settings.policies = policies(LEAVER);
    with_console(&mut settings);
    let app = TestApp::start(settings.clone(), None).await;
    let alice = sign_in_at(&app, "alice", PASSWORD).await.unwrap();
    let april = sign_in_at(&app, "april", PASSWORD).await.unwrap();
    app.shutdown().await;

    // Alice's password is changed; April's is not.
    let rotated = gatehouse::console::hash_password("a new password for alice").unwrap();
    settings.console.operators[0].password_hash = Some(PasswordHash::from(rotated));
    let app = TestApp::start(settings, None).await;
    let status = |cookie: String| {
        let request = client().get(app.url("/console/status")).header("cookie", cookie);
        async move { request.send().await.unwrap() }
    };
    assert!(
        redirects_to_sign_in(&status(alice).await),
        "alice's old session ended"
    );
    assert_eq!(status(april).await.status(), 200, "april's session lives on");
    assert!(
        sign_in_at(&app, "alice", "a new password for alice")
            .await
            .is_ok()
    );
    app.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn wrong_passwords_are_refused_then_the_name_is_locked() {
    let world = console_world(|settings| settings.console.max_failed_sign_ins = 3).await;
    for name in ["alice", "nobody"] {
        let refused = sign_in(&world, name, "not the password").await.unwrap_err();
        assert_eq!(refused.status(), 401, "{name}");
        assert!(refused.text().await.unwrap().contains("Wrong name or password"));
    }
    // A stale or forged sign-in form (no paired cookie) is refused before any check.
    let response = client()
        .post(world.app.url("/console/sign-in"))
        .form_pairs(&[("csrf", "made-up"), ("name", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    for _ in 0..2 {
        let _ = sign_in(&world, "alice", "still wrong").await.unwrap_err();
    }
    // Locked: even the right password is refused for now; other names are not affected.
    let locked = sign_in(&world, "alice", PASSWORD).await.unwrap_err();
    assert_eq!(locked.status(), 429);
    assert!(sign_in(&world, "april", PASSWORD).await.is_ok());
    world.stop().await;
}

#[tokio::test]
async fn the_cli_makes_a_password_hash_the_console_accepts() {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["console", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"a brand new passphrase\n").await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("brand new"));

    let world = console_world(|settings| {
        settings.console.operators.push(OperatorSettings {
            name: "cli-made".to_owned(),
            role: OperatorRole::Viewer,
            password_hash: Some(PasswordHash::from(hash)),
        });
    })
    .await;
    assert!(
        sign_in(&world, "cli-made", "a brand new passphrase")
            .await
            .is_ok()
    );
    assert!(sign_in(&world, "cli-made", PASSWORD).await.is_err());
    world.stop().await;
}

#[tokio::test]
async fn sessions_decisions_and_reconciler_runs_work_on_postgresql() {
    let db = crate::store::PgDatabase::create().await;
    let url = db.url.clone();
    let world = console_world(move |settings| {
        settings.store.url = gatehouse::config::SensitiveUrl::new(url);
    })
    .await;
    let approval = pending_leaver(&world, "dan").await;
    let april = sign_in(&world, "april", PASSWORD).await.unwrap();
    let (status, page) = page_as(&world, &april, "/console/approvals").await;
    assert_eq!(status, 200);
    let response = post_as(
        &world,
        &april,
        &format!("/console/approvals/{}/reject", approval.id),
        &[("csrf", csrf_in(&page).as_str()), ("reason", "handled by HR")],
    )
    .await;
    assert_eq!(response.status(), 303);
    let decided = world.app.store.approval(&approval.id).await.unwrap().unwrap();
    assert_eq!(decided.state, ApprovalState::Rejected);
    assert_eq!(decided.decided_by.as_deref(), Some("console:april"));
    // The last run replaces the one before.
    for (checked, error) in [(1, Some("first")), (7, None)] {
        world
            .app
            .store
            .record_reconcile_run(&ReconcileRun {
                tenant: "default".to_owned(),
                ran_at: chrono::Utc::now(),
                findings: "[]".to_owned(),
                groups_scanned: 1,
                accounts_checked: checked,
                awaiting_approval: "[]".to_owned(),
                error: error.map(str::to_owned),
            })
            .await
            .unwrap();
    }
    let run = world
        .app
        .store
        .last_reconcile_run("default")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.accounts_checked, run.error), (7, None));
    let response = post_as(&world, &april, "/console/sign-out", &[("csrf", &csrf_in(&page))]).await;
    assert!(redirects_to_sign_in(&response));
    let (status, _) = page_as(&world, &april, "/console/approvals").await;
    assert_eq!(status, 303);
    world.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let world = console_world(|_| {}).await;
    let alice = sign_in(&world, "alice", PASSWORD).await.unwrap();
    let (status, page) = page_as(&world, &alice, "/console/status").await;
    assert_eq!(status, 200);
    let response = post_as(&world, &alice, "/console/sign-out", &[("csrf", &csrf_in(&page))]).await;
    assert!(redirects_to_sign_in(&response));
    assert!(
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("gatehouse_console=;"))
    );
    let again = client()
        .get(world.app.url("/console/status"))
        .header("cookie", &alice)
        .send()
        .await
        .unwrap();
    assert!(redirects_to_sign_in(&again));
    world.stop().await;
}

#[tokio::test]
async fn the_proxy_header_is_believed_only_from_a_trusted_address() {
    let world = console_world(|settings| {
        settings.console.proxy_user_header = Some("X-Forwarded-User".to_owned());
        settings.console.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        // Vera signs in only through the proxy.
        settings.console.operators.push(OperatorSettings {
            name: "pat".to_owned(),
            role: OperatorRole::Viewer,
            password_hash: None,
        });
    })
    .await;
    // From the proxy's address: signed in, with a session of its own.
    let response = client()
        .get(world.app.url("/console/status"))
        .header("x-forwarded-user", "pat")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = set_cookie(&response, "gatehouse_console").unwrap();
    assert!(response.text().await.unwrap().contains("id=\"operator\">pat<"));
    // Someone the proxy vouches for who is no operator: refused.
    let stranger = client()
        .get(world.app.url("/console/status"))
        .header("x-forwarded-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 403);
    // A client's own copy that the proxy appended to rather than replaced: the first would
    // choose who signs in, so two are refused, whichever comes first.
    for (first, second) in [("alice", "pat"), ("pat", "alice")] {
        let doubled = client()
            .get(world.app.url("/console/status"))
            .header("x-forwarded-user", first)
            .header("x-forwarded-user", second)
            .send()
            .await
            .unwrap();
        assert_eq!(doubled.status(), 403, "{first}, {second}");
    }

    // From another address (127.0.0.2 is loopback too, but not listed): the header is ignored.
    gatehouse::app::install_crypto_provider();
    let elsewhere = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/console/status", world.app.addr.port());
    let forged = elsewhere
        .get(&url)
        .header("x-forwarded-user", "alice")
        .send()
        .await
        .unwrap();
    assert!(redirects_to_sign_in(&forged), "{}", forged.status());
    // Nor does the proxy's session work around the proxy.
    let around = elsewhere
        .get(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(redirects_to_sign_in(&around), "{}", around.status());
    world.stop().await;
}

#[tokio::test]
async fn the_status_page_shows_sources_the_queue_and_the_reconcilers_last_run() {
    let world = console_world(|settings| {
        settings.sources[0].secrets[0].not_after = Some(chrono::Utc::now() + chrono::Duration::days(10));
    })
    .await;
    let alice = sign_in(&world, "alice", PASSWORD).await.unwrap();
    let (status, page) = page_as(&world, &alice, "/console/status").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"source-relay\""), "{page}");
    assert!(page.contains("relay-1") && page.contains("expiring"), "{page}");
    assert!(!page.contains(crate::reactions::WHSEC), "never a secret's value");
    assert!(page.contains("Never ran."), "{page}");
    assert!(page.contains("id=\"queue-work\""), "{page}");

    world
        .app
        .store
        .record_reconcile_run(&ReconcileRun {
            tenant: "default".to_owned(),
            ran_at: chrono::Utc::now(),
            findings: json!([{"event_type": "user.deactivated", "account_id": "dan", "group": "team-x",
                              "reason": "deactivated <b>but</b> still in team-x"}])
            .to_string(),
            groups_scanned: 2,
            accounts_checked: 3,
            awaiting_approval: json!(["cara"]).to_string(),
            error: None,
        })
        .await
        .unwrap();
    let (_, page) = page_as(&world, &alice, "/console/status").await;
    assert!(!page.contains("Never ran."), "{page}");
    assert!(page.contains("2 groups scanned, 3 accounts checked"), "{page}");
    assert!(
        page.contains("deactivated &lt;b&gt;but&lt;&#x2f;b&gt; still in team-x"),
        "{page}"
    );
    world.stop().await;
}

#[tokio::test]
async fn the_background_reconciler_records_its_last_run() {
    let world = console_world(|settings| {
        settings.reconcile.enabled = true;
        settings.reconcile.interval_seconds = 1;
    })
    .await;
    // A run before the broker is connected fails (and is recorded so); the next one succeeds.
    world.reconciled().await;
    let run = world
        .app
        .store
        .last_reconcile_run("default")
        .await
        .unwrap()
        .unwrap();
    // Cara and Dan are deactivated and still hold groups: found.
    let findings: Vec<serde_json::Value> = serde_json::from_str(&run.findings).unwrap();
    let accounts: Vec<&str> = findings.iter().filter_map(|f| f["account_id"].as_str()).collect();
    assert!(
        accounts.contains(&"cara") && accounts.contains(&"dan"),
        "{findings:?}"
    );
    let alice = sign_in(&world, "alice", PASSWORD).await.unwrap();
    let (_, page) = page_as(&world, &alice, "/console/status").await;
    assert!(page.contains("id=\"reconcile-default\""), "{page}");
    assert!(!page.contains("Never ran."), "{page}");
    world.stop().await;
}

// ---------------------------------------------------------------------------------------------
// In the browser

/// Headless Chromium under a chromedriver this test started; the driver is killed by its pid
/// when dropped.
struct Browser {
    client: WebDriver,
    driver: tokio::process::Child,
    profile: TempDir,
}

fn first_existing(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|path| std::path::Path::new(path).exists())
        .map(|path| (*path).to_owned())
}

impl Browser {
    /// Starts one, or says why not and returns `None` when Chromium is not installed.
    async fn start() -> Option<Browser> {
        let chromium = first_existing(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
        let driver = first_existing(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            eprintln!(
                "SKIPPED: browser test: Chromium or chromedriver is not installed \
                 (apt-get install chromium chromium-driver; .ci/run installs them)"
            );
            return None;
        };
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = crate::helpers::http();
        eventually(LONG, "chromedriver listening", || async {
            http.get(format!("{url}/status")).send().await.is_ok()
        })
        .await;
        let profile = TempDir::new();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1366,900", "--hide-scrollbars", "--disable-crash-reporter",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            }),
        );
        let client = WebDriver::new_session(&url, serde_json::Value::Object(capabilities)).await;
        Some(Browser {
            client,
            driver: child,
            profile,
        })
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await;
    }

    /// Waits (generously: the machine may be busy) for the element `css`.
    async fn wait_for(&self, css: &str) -> Element<'_> {
        self.client.wait_for(css, LONG).await
    }

    async fn text_of(&self, css: &str) -> String {
        self.wait_for(css).await.text().await
    }

    async fn path(&self) -> String {
        self.client.current_path().await
    }

    /// Signs `name` in through the sign-in form at `base`.
    async fn sign_in(&self, base: &str, name: &str) {
        self.goto(&format!("{base}/console/approvals")).await;
        // Not signed in: the sign-in page, whatever was asked for.
        self.wait_for("#sign-in-form").await;
        assert_eq!(self.path().await, "/console/sign-in");
        self.wait_for("#name").await.send_keys(name).await;
        self.wait_for("#password").await.send_keys(PASSWORD).await;
        self.wait_for("#sign-in").await.click().await;
        // The Secure session cookie was kept over http://127.0.0.1 (a secure context to Chromium).
        assert_eq!(self.text_of("#operator").await, name);
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/console")
            .join(format!("{name}.png"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, png).unwrap();
    }

    async fn close(mut self) {
        self.client.close().await;
        let _ = self.driver.start_kill();
        let _ = self.driver.wait().await;
        // Drop ends whatever of Chromium is left.
    }
}

impl Drop for Browser {
    /// A test that failed never reached [`Browser::close`]: its chromedriver is killed (by
    /// `kill_on_drop`), and its Chromium, which would outlive the driver, is ended here by the
    /// pids of the processes using this test's own profile folder.
    fn drop(&mut self) {
        let profile = format!("--user-data-dir={}", self.profile.0.display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let ours = cmdline.split(|b| *b == 0).any(|arg| arg == profile.as_bytes());
            if ours {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn base(world: &World) -> String {
    let addr: SocketAddr = world.app.addr;
    format!("http://127.0.0.1:{}", addr.port())
}

#[tokio::test]
async fn in_the_browser_an_operator_approves_a_leavers_plan_and_watches_it_performed() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let world = console_world(|_| {}).await;
    let approval = pending_leaver(&world, "cara").await;
    let base = base(&world);
    browser.sign_in(&base, "alice").await;

    // The plan: who, which policy, each action with the organization-wide one marked.
    let card = format!("#approval-{}", approval.id);
    let text = browser.text_of(&card).await;
    assert!(
        text.contains("user.deactivated") && text.contains("cara"),
        "{text}"
    );
    assert!(text.contains("leaver"), "{text}");
    assert!(
        text.contains("lifecycle.disable") && text.contains("ORG-WIDE"),
        "{text}"
    );
    assert!(
        text.contains("confluence.remove_member group:g-x/account:cara"),
        "{text}"
    );
    assert!(text.contains("needs approval"), "{text}");
    assert_eq!(world.groups_of("cara").await, ["all-staff", "team-x"]);

    browser
        .wait_for(&format!("#approve-{}", approval.id))
        .await
        .click()
        .await;
    let notice = browser.text_of("#notice").await;
    assert!(notice.contains("approved"), "{notice}");

    // Performed through the queue, exactly the recorded plan.
    eventually(LONG, "the approved plan performed", || async {
        state_of(&world, &approval.id).await == ApprovalState::Executed
    })
    .await;
    assert!(world.groups_of("cara").await.is_empty());
    assert!(
        world
            .requests()
            .await
            .iter()
            .any(|r| r.path.ends_with("/lifecycle/disable"))
    );

    // The audit view shows the decision, attributed, and the actions executed.
    browser
        .goto(&format!("{base}/console/audit?since=&account_id=cara"))
        .await;
    let badge = browser.text_of("#chain-badge").await;
    assert!(badge.contains("chain verified"), "{badge}");
    let records = browser.text_of("#records").await;
    assert!(records.contains("approved"), "{records}");
    assert!(records.contains("lifecycle.disable"), "{records}");
    let executed = browser.client.find_all("details.kind-executed").await;
    assert!(executed.len() >= 2, "{records}");
    // Each record expands to the whole of it.
    let approved = browser.wait_for("details.kind-approved").await;
    approved.find("summary").await.click().await;
    let whole = approved.find("pre").await.text().await;
    assert!(whole.contains("console:alice"), "{whole}");
    assert!(whole.contains(&approval.event_id), "{whole}");

    // Filtering by kind leaves only those.
    browser
        .goto(&format!("{base}/console/audit?since=&kind=executed"))
        .await;
    browser.wait_for("#records").await;
    let others = browser
        .client
        .find_all("details.record:not(.kind-executed)")
        .await;
    assert!(others.is_empty());

    browser.close().await;
    world.stop().await;
}

#[tokio::test]
async fn in_the_browser_a_viewer_cannot_approve() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let world = console_world(|_| {}).await;
    let approval = pending_leaver(&world, "cara").await;
    let base = base(&world);
    browser.sign_in(&base, "vera").await;
    let text = browser.text_of(&format!("#approval-{}", approval.id)).await;
    assert!(text.contains("cara"), "{text}");
    assert!(
        browser
            .client
            .find_all("button.approve, button.reject")
            .await
            .is_empty(),
        "a viewer gets no decision buttons"
    );
    // A crafted POST from the viewer's own session, with its valid CSRF token, is refused.
    let cookie = browser.client.cookie("gatehouse_console").await.unwrap();
    let cookie = format!("gatehouse_console={cookie}");
    let token = csrf_in(&browser.client.source().await);
    let response = post_as(
        &world,
        &cookie,
        &format!("/console/approvals/{}/approve", approval.id),
        &[("csrf", token.as_str())],
    )
    .await;
    assert_eq!(response.status(), 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&world, &approval.id).await, ApprovalState::Pending);
    browser.close().await;
    world.stop().await;
}

#[tokio::test]
async fn in_the_browser_a_form_stripped_of_its_csrf_token_is_refused() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let world = console_world(|_| {}).await;
    let approval = pending_leaver(&world, "cara").await;
    let base = base(&world);
    browser.sign_in(&base, "alice").await;
    browser.wait_for(&format!("#approve-{}", approval.id)).await;
    // The approve form, its token removed, submitted by the browser itself.
    browser
        .client
        .execute(
            "const form = document.getElementById(arguments[0]).form; \
             form.querySelector('input[name=csrf]').remove(); form.submit();",
            vec![json!(format!("approve-{}", approval.id))],
        )
        .await;
    let message = browser.text_of("#error-message").await;
    assert!(message.contains("CSRF"), "{message}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&world, &approval.id).await, ApprovalState::Pending);
    assert_eq!(world.groups_of("cara").await, ["all-staff", "team-x"]);
    browser.close().await;
    world.stop().await;
}

/// Saves the screenshots of `docs/console.md`: `cargo test --test it console::screenshots --
/// --ignored`.
#[tokio::test]
#[ignore = "writes docs/console/*.png; run by hand when the pages change"]
async fn screenshots() {
    let browser = Browser::start()
        .await
        .expect("Chromium is needed for screenshots");
    let world = console_world(|settings| {
        settings.reconcile.enabled = true;
        settings.reconcile.interval_seconds = 2;
        settings.sources[0].secrets[0].not_after = Some(chrono::Utc::now() + chrono::Duration::days(12));
    })
    .await;
    let dan = pending_leaver(&world, "dan").await;
    let cara = pending_leaver(&world, "cara").await;
    world.reconciled().await;
    let base = base(&world);
    browser.goto(&format!("{base}/console/sign-in")).await;
    browser.wait_for("#sign-in-form").await;
    browser.screenshot("sign-in").await;
    browser.sign_in(&base, "alice").await;
    browser.wait_for(&format!("#approval-{}", cara.id)).await;
    browser.screenshot("approvals").await;
    browser
        .wait_for(&format!("#approve-{}", dan.id))
        .await
        .click()
        .await;
    browser.wait_for("#notice").await;
    eventually(LONG, "dan's plan performed", || async {
        state_of(&world, &dan.id).await == ApprovalState::Executed
    })
    .await;
    browser.goto(&format!("{base}/console/audit?since=")).await;
    let last = browser.wait_for("details.kind-approved").await;
    last.find("summary").await.click().await;
    browser.screenshot("audit").await;
    park_a_dead_letter(&world).await;
    browser.goto(&format!("{base}/console/dead-letters")).await;
    browser.wait_for("table").await;
    browser.screenshot("dead-letters").await;
    browser.goto(&format!("{base}/console/status")).await;
    browser.wait_for("#reconcile-default").await;
    browser.screenshot("status").await;
    browser.close().await;
    world.stop().await;
}
