//! Atlassian Connect end to end: the descriptor, signed-install lifecycle callbacks verified
//! against a local key server, and webhooks verified with the installation's shared secret and
//! a qsh bound to the exact request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use gatehouse::config::VerificationScheme;
use serde_json::{Value, json};

use crate::helpers::{Observer, TestApp, signing, source};

const BASE_URL: &str = "https://gatehouse.test";
const CLIENT_KEY: &str = "confluence:1a2b3c";
const SHARED_SECRET: &str = "shared-secret-from-atlassian-9f8e7d6c";

/// Serves the test public key as Atlassian's install-keys service would; counts the requests.
async fn key_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = Router::new().route(
        "/{kid}",
        get(move |Path(kid): Path<String>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if kid == "test-kid" {
                    (
                        StatusCode::OK,
                        include_str!("../fixtures/connect/install-key.public.pem"),
                    )
                } else {
                    (StatusCode::NOT_FOUND, "")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

/// gatehouse with a Connect source that may cause user events (allowed on purpose).
async fn connect_app() -> TestApp {
    connect_app_with(Some(&["user.*", "group.*", "other.*"])).await.0
}

/// gatehouse with a Connect source (`allow_types` as given), and the key server's request count.
async fn connect_app_with(allow_types: Option<&[&str]>) -> (TestApp, Arc<AtomicUsize>) {
    let (keys, hits) = key_server().await;
    let allow_types = allow_types.map(|types| types.iter().map(|t| t.parse().unwrap()).collect());
    let app = TestApp::spawn(move |s| {
        // Two tenants: `acme` is the site of the test installs; `beta` is another customer's.
        for (name, cloud_id) in [("acme", "cloud-123"), ("beta", "cloud-beta")] {
            let mut tenant = gatehouse::config::AtlassianSettings::new(None);
            tenant.name = Some(name.to_owned());
            tenant.cloud_id = Some(cloud_id.to_owned());
            s.tenants.push(tenant);
        }
        s.connect.base_url = Some(BASE_URL.to_owned());
        s.connect.install_keys_url = keys;
        let mut confluence = source("confluence", VerificationScheme::ConnectJwt, vec![]);
        confluence.allow_types = allow_types;
        s.sources.push(confluence);
    })
    .await;
    (app, hits)
}

/// Atlassian's signed token for a lifecycle callback. Each is its own (`jti`): Atlassian's
/// carry no id, but two made in one second for one site and path would be the same token, and a
/// lifecycle token changes an installation once.
fn lifecycle_token(path: &str, iss: &str, aud: &str, kid: &str) -> String {
    let now = signing::now();
    signing::connect_rs256(
        json!({"iss": iss, "aud": aud, "iat": now, "exp": now + 180, "qsh": signing::qsh("POST", path, ""),
               "jti": ulid::Ulid::generate().to_string()}),
        kid,
    )
}

fn lifecycle_body(event: &str) -> Vec<u8> {
    json!({
        "key": "gatehouse", "clientKey": CLIENT_KEY, "sharedSecret": SHARED_SECRET,
        "baseUrl": "https://acme.atlassian.net/wiki", "cloudId": "cloud-123", "eventType": event,
        "productType": "confluence"
    })
    .to_string()
    .into_bytes()
}

/// Posts a signed `installed` callback whose token names `kid`; the answer's status.
async fn install_signed_with(app: &TestApp, kid: &str) -> u16 {
    let token = lifecycle_token("/connect/installed", CLIENT_KEY, BASE_URL, kid);
    app.post(
        "/connect/installed",
        &lifecycle_body("installed"),
        &[("authorization", format!("JWT {token}"))],
    )
    .await
    .status()
    .as_u16()
}

async fn install(app: &TestApp) {
    assert_eq!(install_signed_with(app, "test-kid").await, 204);
}

fn webhook_token(path: &str, query: &str, secret: &str, qsh: Option<&str>, exp_in: i64) -> String {
    let now = signing::now();
    let qsh = qsh
        .map(str::to_owned)
        .unwrap_or_else(|| signing::qsh("POST", path, query));
    signing::connect_hs256(
        json!({"iss": CLIENT_KEY, "iat": now - 5, "exp": now + exp_in, "qsh": qsh}),
        secret,
    )
}

#[tokio::test]
async fn descriptor_is_generated_from_config() {
    let app = connect_app().await;
    let descriptor: Value = app
        .http
        .get(app.url("/connect/atlassian-connect.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(descriptor["baseUrl"], BASE_URL);
    assert_eq!(descriptor["authentication"]["type"], "jwt");
    assert_eq!(descriptor["lifecycle"]["installed"], "/connect/installed");
    assert_eq!(descriptor["apiMigrations"]["signed-install"], true);
    let hooks = descriptor["modules"]["webhooks"].as_array().unwrap();
    assert!(
        hooks.contains(&json!({"event": "user_removed", "url": "/webhooks/confluence/user_removed"})),
        "{hooks:?}"
    );
    assert_eq!(hooks.len(), 6);
    app.stop().await;
}

#[tokio::test]
async fn lifecycle_callbacks_are_verified_before_secrets_are_stored() {
    let app = connect_app().await;
    let body = lifecycle_body("installed");
    let path = "/connect/installed";
    let post = |token: String| {
        let body = body.clone();
        let app = &app;
        async move {
            app.post(path, &body, &[("authorization", format!("JWT {token}"))])
                .await
                .status()
        }
    };
    assert_eq!(
        post(lifecycle_token(path, CLIENT_KEY, "https://evil.test", "test-kid")).await,
        401
    );
    assert_eq!(
        post(lifecycle_token(path, CLIENT_KEY, BASE_URL, "unknown-kid")).await,
        401
    );
    assert_eq!(
        post(lifecycle_token(
            path,
            "confluence:someone-else",
            BASE_URL,
            "test-kid"
        ))
        .await,
        401
    );
    assert_eq!(
        post(lifecycle_token(
            "/connect/uninstalled",
            CLIENT_KEY,
            BASE_URL,
            "test-kid"
        ))
        .await,
        401
    );
    // An HS256 token signed with the secret the body is trying to install proves nothing.
    let now = signing::now();
    let forged = signing::connect_hs256(
        json!({"iss": CLIENT_KEY, "iat": now, "exp": now + 60, "qsh": signing::qsh("POST", path, "")}),
        SHARED_SECRET,
    );
    assert_eq!(post(forged).await, 401);
    assert_eq!(app.post(path, &body, &[]).await.status(), 401);
    // Nothing was installed: a webhook signed with that secret is refused.
    let hook = webhook_token("/webhooks/confluence/user_created", "", SHARED_SECRET, None, 120);
    let response = app
        .post(
            "/webhooks/confluence/user_created",
            b"{}",
            &[("authorization", format!("JWT {hook}"))],
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["reason"],
        "unknown_issuer"
    );

    assert_eq!(
        post(lifecycle_token(path, CLIENT_KEY, BASE_URL, "test-kid")).await,
        204
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"gatehouse_verification_failures_total{source="connect-lifecycle",reason="wrong_audience"} 1"#
        ),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn connect_webhooks_verify_with_the_installation_secret_and_qsh() {
    let app = connect_app().await;
    install(&app).await;
    let observer = Observer::new(app.prefix(), "confluence.#").await;
    let path = "/webhooks/confluence/user_removed";
    let query = "lic=none&tags=b&tags=a%20c&x=*";
    let body = br#"{"timestamp":1718000000000,"userAccountId":"admin","user":{"accountId":"5b10-gone","email":null}}"#;
    let token = webhook_token(path, query, SHARED_SECRET, None, 120);
    let response = app
        .post(
            &format!("{path}?{query}"),
            body,
            &[
                ("authorization", format!("JWT {token}")),
                ("x-atlassian-webhook-identifier", "c-1".into()),
            ],
        )
        .await;
    assert_eq!(response.status(), 202);
    let seen = observer.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(seen.routing_key, "confluence.user.removed");
    assert_eq!(seen.body["scheme"], "connect-jwt");
    assert_eq!(
        seen.body["tenant"],
        json!({"name": "acme", "cloud_id": "cloud-123", "client_key": CLIENT_KEY})
    );
    assert_eq!(seen.body["delivery"]["key_id"], CLIENT_KEY);
    assert_eq!(seen.body["subject"]["account_id"], "5b10-gone");

    // The token in the query string works as well as the header.
    let token = webhook_token(path, "lic=none", SHARED_SECRET, None, 120);
    let response = app
        .post(
            &format!("{path}?lic=none&jwt={token}"),
            body,
            &[("x-atlassian-webhook-identifier", "c-2".into())],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert!(observer.next(Duration::from_secs(5)).await.is_some());

    let refusals = [
        (
            "context-qsh",
            webhook_token(path, query, SHARED_SECRET, Some("context-qsh"), 120),
            "context_qsh",
        ),
        (
            "other path",
            webhook_token(
                "/webhooks/confluence/user_created",
                query,
                SHARED_SECRET,
                None,
                120,
            ),
            "qsh_mismatch",
        ),
        (
            "expired",
            webhook_token(path, query, SHARED_SECRET, None, -120),
            "expired",
        ),
        (
            "wrong secret",
            webhook_token(path, query, "not-the-shared-secret", None, 120),
            "bad_signature",
        ),
    ];
    for (what, token, reason) in refusals {
        let response = app
            .post(
                &format!("{path}?{query}"),
                body,
                &[("authorization", format!("JWT {token}"))],
            )
            .await;
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["reason"],
            reason,
            "{what}"
        );
    }
    // Tampering with the query after signing breaks the qsh.
    let token = webhook_token(path, query, SHARED_SECRET, None, 120);
    let response = app
        .post(
            &format!("{path}?{query}&extra=1"),
            body,
            &[("authorization", format!("JWT {token}"))],
        )
        .await;
    assert_eq!(response.status(), 401);

    // Uninstall: the secret is forgotten and the site's webhooks are refused.
    let token = lifecycle_token("/connect/uninstalled", CLIENT_KEY, BASE_URL, "test-kid");
    let response = app
        .post(
            "/connect/uninstalled",
            &lifecycle_body("uninstalled"),
            &[("authorization", format!("JWT {token}"))],
        )
        .await;
    assert_eq!(response.status(), 204);
    let token = webhook_token(path, query, SHARED_SECRET, None, 120);
    let response = app
        .post(
            &format!("{path}?{query}"),
            body,
            &[("authorization", format!("JWT {token}"))],
        )
        .await;
    assert_eq!(response.status(), 401);
    assert!(observer.all(Duration::from_millis(400)).await.is_empty());
    app.stop().await;
}

/// Anyone can post an install naming any key id or any issuer: a flood of random ones costs a
/// bounded number of key fetches in all (and unknown issuers are answered from memory).
#[tokio::test]
async fn floods_of_unknown_key_ids_and_issuers_cost_almost_nothing() {
    let (app, hits) = connect_app_with(None).await;
    install(&app).await;
    let fetched_for_install = hits.load(Ordering::SeqCst);
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..60 {
        let status = install_signed_with(&app, &format!("random-kid-{n}")).await;
        *statuses.entry(status).or_insert(0) += 1;
    }
    // The same unknown kid again and again: asked once.
    for _ in 0..20 {
        assert_eq!(install_signed_with(&app, "random-kid-0").await, 401);
    }
    let fetches = hits.load(Ordering::SeqCst) - fetched_for_install;
    assert!(
        fetches <= 12,
        "{fetches} key fetches for 80 forged installs ({statuses:?})"
    );
    assert!(statuses.keys().all(|s| *s == 401 || *s == 503), "{statuses:?}");
    // The site whose key is known still installs.
    install(&app).await;

    // Webhooks naming issuers that never installed: refused, the real one still works.
    for n in 0..50 {
        let path = "/webhooks/confluence/user_created";
        let now = signing::now();
        let token = signing::connect_hs256(
            json!({"iss": format!("forged:{n}"), "iat": now, "exp": now + 60, "qsh": signing::qsh("POST", path, "")}),
            SHARED_SECRET,
        );
        let response = app
            .post(path, b"{}", &[("authorization", format!("JWT {token}"))])
            .await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.json::<Value>().await.unwrap()["reason"],
            "unknown_issuer"
        );
    }
    app.stop().await;
}

/// Any Atlassian site that installs the app holds a valid secret: by default a Connect source
/// may cause group changes and `other.*` only, and user events must be allowed on purpose.
#[tokio::test]
async fn connect_user_events_are_refused_unless_allowed() {
    let (app, _) = connect_app_with(None).await;
    install(&app).await;
    let observer = Observer::new(app.prefix(), "confluence.#").await;
    let deliver = |path: &'static str| {
        let token = webhook_token(path, "", SHARED_SECRET, None, 120);
        let app = &app;
        async move {
            app.post(
                path,
                br#"{"group":{"name":"team-x"},"user":{"accountId":"a1"}}"#,
                &[("authorization", format!("JWT {token}"))],
            )
            .await
        }
    };
    let removed = deliver("/webhooks/confluence/user_removed").await;
    assert_eq!(removed.status(), 403);
    assert_eq!(
        removed.json::<Value>().await.unwrap()["reason"],
        "type_not_allowed"
    );
    assert_eq!(deliver("/webhooks/confluence/group_created").await.status(), 202);
    assert_eq!(
        observer.next(Duration::from_secs(5)).await.unwrap().routing_key,
        "confluence.group.created"
    );
    app.stop().await;
}

/// An `installed` body for a site at `base_url` with cloud id `cloud_id`.
fn lifecycle_body_for(event: &str, base_url: &str, cloud_id: &str) -> Vec<u8> {
    json!({
        "key": "gatehouse", "clientKey": CLIENT_KEY, "sharedSecret": SHARED_SECRET,
        "baseUrl": base_url, "cloudId": cloud_id, "eventType": event, "productType": "confluence"
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn installs_from_sites_no_tenant_names_are_refused_and_their_secrets_verify_nothing() {
    let app = connect_app().await;
    // An installation stored before sites were bound (the old hole): it must sign nothing.
    app.store
        .upsert_installation(&gatehouse::store::Installation {
            client_key: "confluence:old-hole".to_owned(),
            shared_secret: gatehouse::config::Secret::new("old-hole-secret-0123456789abcdef"),
            base_url: "https://attacker.atlassian.net/wiki".to_owned(),
            cloud_id: Some("cloud-evil".to_owned()),
            installed_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let post = |path: &'static str, body: Vec<u8>| {
        let app = &app;
        async move {
            let token = lifecycle_token(path, CLIENT_KEY, BASE_URL, "test-kid");
            app.post(path, &body, &[("authorization", format!("JWT {token}"))])
                .await
        }
    };
    // Signed by Atlassian, for the app, but from a site no tenant names (any developer site can
    // install a public descriptor): 403 with the reason.
    let refused = post(
        "/connect/installed",
        lifecycle_body_for("installed", "https://attacker.atlassian.net/wiki", "cloud-evil"),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["reason"], "site_not_a_tenant");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("attacker.atlassian.net"),
        "{answer}"
    );
    // The tenant's own cloud id claimed by another client key is refused too, once the tenant
    // names its key; here the cloud id must match: a right host with the wrong cloud id is not
    // the tenant's site.
    let wrong_cloud = post(
        "/connect/installed",
        lifecycle_body_for("installed", "https://acme.atlassian.net/wiki", "cloud-other"),
    )
    .await;
    assert_eq!(wrong_cloud.status(), 403);
    // Uninstalls are bound the same way.
    let uninstall = post(
        "/connect/uninstalled",
        lifecycle_body_for("uninstalled", "https://attacker.atlassian.net/wiki", "cloud-evil"),
    )
    .await;
    assert_eq!(uninstall.status(), 403);

    // No secret was stored: a webhook signed with the one the site would have had gets 401.
    let path = "/webhooks/confluence/group_removed";
    let hook = webhook_token(path, "", SHARED_SECRET, None, 120);
    let response = app
        .post(
            path,
            br#"{"group":{"name":"admins"}}"#,
            &[("authorization", format!("JWT {hook}"))],
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["reason"],
        "unknown_issuer"
    );

    // Each refusal is in the audit trail, with the site and the reason.
    let refusals: Vec<_> = gatehouse::audit::query::query(
        &app.store,
        &gatehouse::audit::AuditQuery {
            kinds: vec![gatehouse::audit::AuditKind::Refused],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    let first = &refusals[0].record;
    let action = first.action.as_ref().unwrap();
    assert_eq!(action.action_type, "connect.install");
    assert_eq!(
        action.target,
        format!("site:attacker.atlassian.net/client:{CLIENT_KEY}")
    );
    assert_eq!(first.outcome.http_status, Some(403));
    assert!(
        first
            .outcome
            .error
            .as_deref()
            .unwrap()
            .contains("not a configured tenant")
    );
    assert_eq!(
        refusals[2].record.action.as_ref().unwrap().action_type,
        "connect.uninstall"
    );

    // That old installation signs nothing either: its site is not a tenant's.
    let now = signing::now();
    let old = signing::connect_hs256(
        json!({"iss": "confluence:old-hole", "iat": now - 5, "exp": now + 120, "qsh": signing::qsh("POST", path, "")}),
        "old-hole-secret-0123456789abcdef",
    );
    let response = app
        .post(
            path,
            br#"{"group":{"name":"admins"}}"#,
            &[("authorization", format!("JWT {old}"))],
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["reason"], "unbound_site");

    // The tenant's own site installs, and its webhooks carry the tenant.
    assert_eq!(install_signed_with(&app, "test-kid").await, 204);
    app.stop().await;
}

#[tokio::test]
async fn a_reinstall_cannot_move_an_installation_to_another_tenant() {
    let app = connect_app().await;
    install(&app).await;
    // Whoever holds acme's shared secret signs a re-install (HS256, the pre-2021 flow) naming
    // beta's site: the token does not cover the body, so the binding must.
    let path = "/connect/installed";
    let now = signing::now();
    let token = signing::connect_hs256(
        json!({"iss": CLIENT_KEY, "iat": now, "exp": now + 60, "qsh": signing::qsh("POST", path, "")}),
        SHARED_SECRET,
    );
    let body = lifecycle_body_for("installed", "https://beta.atlassian.net/wiki", "cloud-beta");
    let response = app
        .post(path, &body, &[("authorization", format!("JWT {token}"))])
        .await;
    assert_eq!(response.status(), 403);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("cannot move it to tenant `beta`"),
        "{answer}"
    );
    let kept = app.store.installation(CLIENT_KEY).await.unwrap().unwrap();
    assert_eq!(kept.cloud_id.as_deref(), Some("cloud-123"), "still acme's");
    // Re-installing on its own site still works.
    let body = lifecycle_body("installed");
    let response = app
        .post(path, &body, &[("authorization", format!("JWT {token}"))])
        .await;
    assert_eq!(response.status(), 204);
    app.stop().await;
}

/// An installation stored before sites were bound (or whose tenant was removed) holds a shared
/// secret no tenant ever vouched for: a re-install signed with it (HS256, whose token does not
/// cover the body) naming a tenant's site must not make it that tenant's. Only Atlassian's
/// signed install (RS256) may bind it.
#[tokio::test]
async fn an_unbound_installation_cannot_bind_itself_to_a_tenant_with_its_own_secret() {
    const OLD_KEY: &str = "confluence:old-hole";
    const OLD_SECRET: &str = "old-hole-secret-0123456789abcdef";
    let app = connect_app().await;
    app.store
        .upsert_installation(&gatehouse::store::Installation {
            client_key: OLD_KEY.to_owned(),
            shared_secret: gatehouse::config::Secret::new(OLD_SECRET),
            base_url: "https://attacker.atlassian.net/wiki".to_owned(),
            cloud_id: Some("cloud-evil".to_owned()),
            installed_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let path = "/connect/installed";
    let body = json!({
        "key": "gatehouse", "clientKey": OLD_KEY, "sharedSecret": "a-secret-of-its-choosing-0123456789",
        "baseUrl": "https://acme.atlassian.net/wiki", "cloudId": "cloud-123", "eventType": "installed",
        "productType": "confluence"
    })
    .to_string()
    .into_bytes();
    let now = signing::now();
    let token = signing::connect_hs256(
        json!({"iss": OLD_KEY, "iat": now, "exp": now + 60, "qsh": signing::qsh("POST", path, "")}),
        OLD_SECRET,
    );
    let response = app
        .post(path, &body, &[("authorization", format!("JWT {token}"))])
        .await;
    assert_eq!(response.status(), 403);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["reason"], "site_not_a_tenant");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("bound to no tenant") && detail.contains("signed by Atlassian"),
        "{answer}"
    );
    // Nothing moved: still the old site and secret, and still signing nothing.
    let kept = app.store.installation(OLD_KEY).await.unwrap().unwrap();
    assert_eq!(kept.cloud_id.as_deref(), Some("cloud-evil"));
    assert_eq!(kept.shared_secret.expose(), OLD_SECRET);
    let hook_path = "/webhooks/confluence/group_removed";
    let hook = signing::connect_hs256(
        json!({"iss": OLD_KEY, "iat": now, "exp": now + 60, "qsh": signing::qsh("POST", hook_path, "")}),
        "a-secret-of-its-choosing-0123456789",
    );
    let response = app
        .post(
            hook_path,
            br#"{"group":{"name":"admins"}}"#,
            &[("authorization", format!("JWT {hook}"))],
        )
        .await;
    assert_eq!(response.status(), 401);
    // The refusal is in the audit trail, with the reason.
    let refusals = gatehouse::audit::query::query(
        &app.store,
        &gatehouse::audit::AuditQuery {
            kinds: vec![gatehouse::audit::AuditKind::Refused],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let refusal = &refusals[0].record;
    assert_eq!(
        refusal.action.as_ref().unwrap().target,
        format!("site:acme.atlassian.net/client:{OLD_KEY}")
    );
    assert!(
        refusal
            .outcome
            .error
            .as_deref()
            .unwrap()
            .contains("bound to no tenant")
    );

    // Atlassian's own signed install of that site binds it.
    let token = lifecycle_token(path, OLD_KEY, BASE_URL, "test-kid");
    let response = app
        .post(path, &body, &[("authorization", format!("JWT {token}"))])
        .await;
    assert_eq!(response.status(), 204);
    let bound = app.store.installation(OLD_KEY).await.unwrap().unwrap();
    assert_eq!(bound.cloud_id.as_deref(), Some("cloud-123"));
    app.stop().await;
}

/// A `group_created` webhook for `group` to `app`, signed as installation `iss` with `secret`:
/// the status and the answer's reason.
async fn group_created(app: &TestApp, iss: &str, secret: &str, group: &str) -> (u16, Value) {
    let path = "/webhooks/confluence/group_created";
    let now = signing::now();
    let token = signing::connect_hs256(
        json!({"iss": iss, "iat": now - 5, "exp": now + 120, "qsh": signing::qsh("POST", path, "")}),
        secret,
    );
    let response = app
        .post(
            path,
            json!({"group": {"name": group}}).to_string().as_bytes(),
            &[("authorization", format!("JWT {token}"))],
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Two ingress processes on one store: a site installed, or re-installed with a new secret,
/// through one is recognized by the other at once, not after its cache expires (Connect never
/// retries a webhook answered 401: it would be lost). Before, the other process answered
/// `unknown_issuer` for up to 10 s and `bad_signature` for up to a minute.
#[tokio::test]
async fn an_install_through_one_process_is_honoured_by_another_at_once() {
    let one = connect_app().await;
    let other = TestApp::start_roles(one.settings.clone(), None, gatehouse::app::Roles::INGRESS).await;
    let observer = Observer::new(one.prefix(), "confluence.#").await;
    install(&one).await;
    // The other process reads the installation (and the set of installed keys) into its caches.
    assert_eq!(
        group_created(&other, CLIENT_KEY, SHARED_SECRET, "g-1").await.0,
        202
    );

    // A new site (beta's) installs through the first process.
    const BETA_KEY: &str = "confluence:beta";
    const BETA_SECRET: &str = "beta-shared-secret-0123456789abcdef";
    let body = json!({
        "key": "gatehouse", "clientKey": BETA_KEY, "sharedSecret": BETA_SECRET,
        "baseUrl": "https://beta.atlassian.net/wiki", "cloudId": "cloud-beta", "eventType": "installed",
        "productType": "confluence"
    })
    .to_string()
    .into_bytes();
    let token = lifecycle_token("/connect/installed", BETA_KEY, BASE_URL, "test-kid");
    let installed = one
        .post(
            "/connect/installed",
            &body,
            &[("authorization", format!("JWT {token}"))],
        )
        .await;
    assert_eq!(installed.status(), 204);
    let (status, answer) = group_created(&other, BETA_KEY, BETA_SECRET, "g-2").await;
    assert_eq!(status, 202, "{answer}");

    // acme re-installs through the first process with a new secret.
    const NEW_SECRET: &str = "rotated-shared-secret-0123456789abcd";
    let mut body: Value = serde_json::from_slice(&lifecycle_body("installed")).unwrap();
    body["sharedSecret"] = json!(NEW_SECRET);
    let token = lifecycle_token("/connect/installed", CLIENT_KEY, BASE_URL, "test-kid");
    let reinstalled = one
        .post(
            "/connect/installed",
            body.to_string().as_bytes(),
            &[("authorization", format!("JWT {token}"))],
        )
        .await;
    assert_eq!(reinstalled.status(), 204);
    let (status, answer) = group_created(&other, CLIENT_KEY, NEW_SECRET, "g-3").await;
    assert_eq!(status, 202, "{answer}");
    // The old secret signs nothing any more.
    let (status, answer) = group_created(&other, CLIENT_KEY, SHARED_SECRET, "g-4").await;
    assert_eq!(status, 401);
    assert_eq!(answer["reason"], "bad_signature");

    // What was accepted was queued, each for its own tenant.
    let mut tenants = Vec::new();
    for _ in 0..3 {
        let seen = observer.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(seen.routing_key, "confluence.group.created");
        tenants.push(seen.body["tenant"]["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(tenants, ["acme", "beta", "acme"]);
    other.shutdown().await;
    one.stop().await;
}

/// A lifecycle token signs the request line, not the body that carries the shared secret:
/// whoever sees one (a proxy's log, a captured request) must not be able to install a secret of
/// their own under it (with its signature written another way too), nor uninstall the site
/// again after a re-install, in this process or another. Each token changes an installation
/// once; the same token and body again are answered as done and change nothing.
#[tokio::test]
async fn a_lifecycle_token_changes_an_installation_once() {
    let one = connect_app().await;
    let other = TestApp::start_roles(one.settings.clone(), None, gatehouse::app::Roles::INGRESS).await;
    let path = "/connect/installed";
    let token = lifecycle_token(path, CLIENT_KEY, BASE_URL, "test-kid");
    let authorization = [("authorization", format!("JWT {token}"))];
    let body = lifecycle_body("installed");
    assert_eq!(one.post(path, &body, &authorization).await.status(), 204);

    // The same token with a secret of its holder's choosing, through either process, and with
    // its signature padded (it still verifies).
    const CHOSEN: &str = "a-secret-the-token-holder-chose-0123";
    let mut forged: Value = serde_json::from_slice(&body).unwrap();
    forged["sharedSecret"] = json!(CHOSEN);
    let forged = forged.to_string().into_bytes();
    let padded = [("authorization", format!("JWT {token}=="))];
    for (app, authorization) in [(&one, &authorization), (&other, &authorization), (&one, &padded)] {
        let response = app.post(path, &forged, authorization).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.json::<Value>().await.unwrap()["reason"],
            "replayed_token"
        );
    }
    // Naming another site: refused as a replay, not recorded as a refused install.
    let elsewhere = lifecycle_body_for("installed", "https://attacker.atlassian.net/wiki", "cloud-evil");
    let response = other.post(path, &elsewhere, &authorization).await;
    assert_eq!(response.status(), 401);
    let refusals = gatehouse::audit::query::query(
        &one.store,
        &gatehouse::audit::AuditQuery {
            kinds: vec![gatehouse::audit::AuditKind::Refused],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(refusals.is_empty(), "{refusals:?}");
    // Its own body again (a retry whose answer was lost): done, nothing changed.
    assert_eq!(one.post(path, &body, &authorization).await.status(), 204);
    let kept = one.store.installation(CLIENT_KEY).await.unwrap().unwrap();
    assert_eq!(kept.shared_secret.expose(), SHARED_SECRET);
    assert_eq!(
        group_created(&other, CLIENT_KEY, SHARED_SECRET, "g-1").await.0,
        202
    );
    let (status, answer) = group_created(&other, CLIENT_KEY, CHOSEN, "g-2").await;
    assert_eq!((status, answer["reason"].as_str()), (401, Some("bad_signature")));

    // An uninstall's token cannot uninstall the site again once it is re-installed.
    let uninstall_path = "/connect/uninstalled";
    let uninstall = [(
        "authorization",
        format!(
            "JWT {}",
            lifecycle_token(uninstall_path, CLIENT_KEY, BASE_URL, "test-kid")
        ),
    )];
    let uninstall_body = lifecycle_body("uninstalled");
    assert_eq!(
        one.post(uninstall_path, &uninstall_body, &uninstall)
            .await
            .status(),
        204
    );
    assert!(one.store.installation(CLIENT_KEY).await.unwrap().is_none());
    install(&one).await;
    assert_eq!(
        other
            .post(uninstall_path, &uninstall_body, &uninstall)
            .await
            .status(),
        204
    );
    assert!(one.store.installation(CLIENT_KEY).await.unwrap().is_some());
    assert_eq!(group_created(&one, CLIENT_KEY, SHARED_SECRET, "g-3").await.0, 202);

    // Each process counts the replays it refused.
    for (app, refused) in [(&one, 2), (&other, 2)] {
        let metrics = app.metrics().await;
        assert!(
            metrics.contains(&format!(
                r#"gatehouse_verification_failures_total{{source="connect-lifecycle",reason="replayed_token"}} {refused}"#
            )),
            "{metrics}"
        );
    }
    other.shutdown().await;
    one.stop().await;
}
