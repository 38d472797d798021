//! Several tenants in one simulator, as a client sees them over HTTP: each request reaches its
//! own world (by cloud id, directory id, org id or credential), credentials work only in their
//! own world, and one tenant's rate limits, faults and state never touch another's. (The
//! simulator's own contract; the clients against it are in `atlassian`.)

use std::net::SocketAddr;

use base64::Engine;
use gatehouse_sim::{
    Behaviour, BurstPolicy, Fault, Seed, SeedApiToken, SeedGroup, SeedUser, SimAccountStatus, SimHandle,
    Simulator, StartError,
};
use serde_json::{Value, json};

/// The account both tenants have (same id, separate worlds).
const SHARED_ACCOUNT: &str = "acct-1";
const GROUP: &str = "g-1";

/// A tenant named `name` whose every identifier and credential carries the name, with one
/// account in one group.
fn seed(name: &str) -> Seed {
    Seed {
        users: vec![SeedUser::new(SHARED_ACCOUNT, "Ada").with_scim(format!("ada@{name}.example"), None)],
        groups: vec![SeedGroup::new(GROUP, "staff", vec![SHARED_ACCOUNT.to_owned()])],
        ..Seed::named(name)
    }
}

async fn two_tenants() -> SimHandle {
    Simulator::start_tenants(vec![
        (seed("a"), Behaviour::default()),
        (seed("b"), Behaviour::default()),
    ])
    .await
    .expect("two distinct tenants start")
}

/// `Authorization` for tenant `name`'s API token.
fn basic(name: &str) -> String {
    let pair = format!("bot@{name}.example:{name}-api-token");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// One request; the status and the body as JSON (`Null` when empty or not JSON).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = crate::helpers::http().request(method, format!("http://{addr}{path}"));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("the simulator answers");
    let status = answer.status().as_u16();
    let text = answer.text().await.expect("an answer's body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn members_of(sim: &SimHandle, cloud_id: &str) -> Vec<String> {
    let state = sim.tenant(cloud_id).expect("tenant").state();
    state
        .group(GROUP)
        .expect("group")
        .members
        .iter()
        .cloned()
        .collect()
}

fn remove_path(cloud_id: &str) -> String {
    format!(
        "/ex/confluence/{cloud_id}/wiki/rest/api/group/userByGroupId?groupId={GROUP}&accountId={SHARED_ACCOUNT}"
    )
}

fn groups_path(cloud_id: &str) -> String {
    format!("/ex/confluence/{cloud_id}/wiki/rest/api/group")
}

#[tokio::test]
async fn views_describe_each_tenant() {
    let sim = two_tenants().await;
    assert_eq!(sim.tenant_count(), 2);
    let a = sim.tenant_at(0).expect("first");
    let b = sim.tenant("b-cloud").expect("by cloud id");
    assert_eq!((a.cloud_id(), a.org_id()), ("a-cloud", "a-org"));
    assert_eq!((b.cloud_id(), b.org_id()), ("b-cloud", "b-org"));
    assert_eq!(b.site_base_url(), sim.url("/sites/b-cloud/wiki"));
    assert_eq!(b.scim_base_url(), sim.url("/scim/directory/b-directory"));
    assert!(sim.tenant_at(2).is_none());
    assert!(sim.tenant("c-cloud").is_none());
    // The one-tenant API is the first tenant's.
    assert_eq!(sim.cloud_id(), "a-cloud");
    assert_eq!(sim.org_id(), "a-org");
    assert_eq!(sim.scim_base_url(), a.scim_base_url());
    assert_eq!(sim.site_base_url(), sim.url("/wiki"));
}

#[tokio::test]
async fn a_group_removal_through_a_changes_only_a() {
    let sim = two_tenants().await;
    let (status, _) = call(
        sim.addr(),
        "DELETE",
        &remove_path("a-cloud"),
        Some(basic("a")),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(members_of(&sim, "a-cloud").is_empty());
    assert_eq!(members_of(&sim, "b-cloud"), vec![SHARED_ACCOUNT.to_owned()]);
    let b_state = sim.tenant("b-cloud").expect("b").state();
    assert!(b_state.events.is_empty(), "{:?}", b_state.actions());
    assert_eq!(
        sim.tenant("a-cloud").expect("a").state().actions(),
        vec!["group_member_removed"]
    );
}

#[tokio::test]
async fn credentials_work_only_in_their_own_world() {
    let sim = two_tenants().await;
    let addr = sim.addr();
    // A's token on B's cloud id, on the gateway and on B's site.
    let (status, body) = call(addr, "GET", &groups_path("b-cloud"), Some(basic("a")), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["statusCode"], 401);
    let (status, _) = call(
        addr,
        "GET",
        "/sites/b-cloud/wiki/rest/api/group",
        Some(basic("a")),
        None,
    )
    .await;
    assert_eq!(status, 401);
    // B's own token works on both.
    let (status, _) = call(addr, "GET", &groups_path("b-cloud"), Some(basic("b")), None).await;
    assert_eq!(status, 200);
    let (status, body) = call(
        addr,
        "GET",
        "/sites/b-cloud/wiki/rest/api/group",
        Some(basic("b")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["id"], GROUP);
    // `/wiki` is the first tenant's site.
    let (status, _) = call(addr, "GET", "/wiki/rest/api/group", Some(basic("a")), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(addr, "GET", "/wiki/rest/api/group", Some(basic("b")), None).await;
    assert_eq!(status, 401);
    // SCIM: B's directory with A's token.
    let scim = "/scim/directory/b-directory/Users";
    let (status, body) = call(addr, "GET", scim, Some(bearer("a-scim-token")), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], "401");
    let (status, _) = call(addr, "GET", scim, Some(bearer("b-scim-token")), None).await;
    assert_eq!(status, 200);
    // The events-stream: B's org with A's key.
    let events = "/admin/v1/orgs/b-org/events-stream";
    let (status, _) = call(addr, "GET", events, Some(bearer("a-admin-key")), None).await;
    assert_eq!(status, 401);
    let (status, _) = call(addr, "GET", events, Some(bearer("b-admin-key")), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_throttled_tenant_leaves_the_other_alone() {
    let sim = two_tenants().await;
    let a = sim.tenant("a-cloud").expect("a");
    a.set_policy(Behaviour {
        tenant: Some(BurstPolicy {
            capacity: 1,
            per_second: 1.0,
            retry_after_seconds: Some(1),
            near_limit: true,
        }),
        ..Behaviour::default()
    });
    assert_eq!(a.policy().tenant.map(|t| t.capacity), Some(1));
    assert_eq!(sim.tenant("b-cloud").expect("b").policy(), Behaviour::default());
    let mut a_statuses = Vec::new();
    let mut b_statuses = Vec::new();
    for _ in 0..5 {
        a_statuses.push(
            call(sim.addr(), "GET", &groups_path("a-cloud"), Some(basic("a")), None)
                .await
                .0,
        );
        b_statuses.push(
            call(sim.addr(), "GET", &groups_path("b-cloud"), Some(basic("b")), None)
                .await
                .0,
        );
    }
    assert!(a_statuses.contains(&429), "{a_statuses:?}");
    assert_eq!(b_statuses, vec![200; 5]);
    let refused = a.requests();
    assert!(
        refused
            .iter()
            .any(|r| r.status == Some(429) && r.rate_limited.as_deref() == Some("tenant"))
    );
}

#[tokio::test]
async fn the_policy_and_state_of_another_tenant_over_http() {
    let sim = two_tenants().await;
    let addr = sim.addr();
    let throttled = json!({"tenant": {"capacity": 1, "per_second": 0.01}});
    let (status, _) = call(addr, "PUT", "/_sim/policy?tenant=b-cloud", None, Some(throttled)).await;
    assert_eq!(status, 204);
    assert_eq!(
        sim.tenant("b-cloud")
            .expect("b")
            .policy()
            .tenant
            .map(|t| t.capacity),
        Some(1)
    );
    assert_eq!(sim.tenant("a-cloud").expect("a").policy(), Behaviour::default());
    let (status, body) = call(addr, "GET", "/_sim/policy?tenant=b-cloud", None, None).await;
    assert_eq!((status, body["tenant"]["capacity"].clone()), (200, json!(1)));
    let (_, body) = call(addr, "GET", "/_sim/policy", None, None).await;
    assert_eq!(body["tenant"], Value::Null);

    let (status, _) = call(
        addr,
        "PUT",
        &format!("/_sim/accounts/{SHARED_ACCOUNT}/status?tenant=b-cloud"),
        None,
        Some(json!({"status": "inactive"})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = call(addr, "GET", "/_sim/state?tenant=b-cloud", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["accounts"][0]["status"], "inactive");
    let (_, body) = call(addr, "GET", "/_sim/state", None, None).await;
    assert_eq!(body["accounts"][0]["status"], "active");
    let (status, _) = call(addr, "GET", "/_sim/state?tenant=nowhere", None, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn user_management_acts_in_the_world_of_the_key() {
    let sim = two_tenants().await;
    let disable = format!("/users/{SHARED_ACCOUNT}/manage/lifecycle/disable");
    let (status, _) = call(sim.addr(), "POST", &disable, Some(bearer("a-admin-key")), None).await;
    assert_eq!(status, 204);
    let status_in = |cloud_id: &str| {
        sim.tenant(cloud_id)
            .expect("tenant")
            .state()
            .account(SHARED_ACCOUNT)
            .map(|a| a.status)
    };
    assert_eq!(status_in("a-cloud"), Some(SimAccountStatus::Inactive));
    assert_eq!(status_in("b-cloud"), Some(SimAccountStatus::Active));
    let (status, _) = call(sim.addr(), "POST", &disable, Some(bearer("no-such-key")), None).await;
    assert_eq!(status, 401);
    let logged = sim.requests();
    assert_eq!(logged[0].cloud_id.as_deref(), Some("a-cloud"));
    assert_eq!(logged[1].cloud_id, None);
}

#[tokio::test]
async fn oauth_refreshes_in_the_world_of_the_client() {
    let sim = two_tenants().await;
    let refresh = json!({
        "grant_type": "refresh_token",
        "client_id": "b-client",
        "client_secret": "b-secret",
        "refresh_token": "b-refresh-0",
    });
    let (status, body) = call(sim.addr(), "POST", "/oauth/token", None, Some(refresh)).await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().expect("an access token").to_owned();
    assert_eq!(sim.tenant("b-cloud").expect("b").state().oauth.refreshes, 1);
    assert_eq!(sim.tenant("a-cloud").expect("a").state().oauth.refreshes, 0);
    let (status, _) = call(
        sim.addr(),
        "GET",
        &groups_path("b-cloud"),
        Some(bearer(&access)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        sim.addr(),
        "GET",
        &groups_path("a-cloud"),
        Some(bearer(&access)),
        None,
    )
    .await;
    assert_eq!(status, 401);

    let unknown = json!({"grant_type": "refresh_token", "client_id": "c-client", "client_secret": "x", "refresh_token": "y"});
    let (status, body) = call(sim.addr(), "POST", "/oauth/token", None, Some(unknown)).await;
    assert_eq!((status, body["error"].clone()), (401, json!("access_denied")));
}

#[tokio::test]
async fn unknown_ids_are_404_in_each_apis_format_and_match_no_world() {
    let sim = two_tenants().await;
    let addr = sim.addr();
    let (status, body) = call(addr, "GET", &groups_path("c-cloud"), Some(basic("a")), None).await;
    assert_eq!((status, body["statusCode"].clone()), (404, json!(404)));
    let (status, _) = call(
        addr,
        "GET",
        "/sites/c-cloud/wiki/rest/api/group",
        Some(basic("a")),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = call(
        addr,
        "GET",
        "/scim/directory/c-directory/Users",
        Some(bearer("a-scim-token")),
        None,
    )
    .await;
    assert_eq!((status, body["status"].clone()), (404, json!("404")));
    let (status, _) = call(
        addr,
        "GET",
        "/admin/v1/orgs/c-org/events-stream",
        Some(bearer("a-admin-key")),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let logged = sim.requests();
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().all(|r| r.cloud_id.is_none()), "{logged:?}");
}

#[tokio::test]
async fn each_view_shows_only_its_worlds_requests() {
    let sim = two_tenants().await;
    let addr = sim.addr();
    call(addr, "GET", &groups_path("a-cloud"), Some(basic("a")), None).await;
    call(addr, "GET", &groups_path("b-cloud"), Some(basic("b")), None).await;
    call(
        addr,
        "GET",
        "/scim/directory/b-directory/Groups",
        Some(bearer("b-scim-token")),
        None,
    )
    .await;
    call(addr, "GET", "/_sim/state?tenant=b-cloud", None, None).await;
    let a = sim.tenant("a-cloud").expect("a");
    let b = sim.tenant("b-cloud").expect("b");
    assert_eq!(a.requests().len(), 1);
    assert!(a.requests().iter().all(|r| r.path.contains("a-cloud")));
    let b_paths: Vec<String> = b.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        b_paths,
        vec![
            "/ex/confluence/b-cloud/wiki/rest/api/group".to_owned(),
            "/scim/directory/b-directory/Groups".to_owned(),
        ]
    );
    // The handle's log is every world's API calls; control calls are in no world.
    assert_eq!(sim.requests().len(), 3);
    let (_, log) = call(addr, "GET", "/_sim/requests?tenant=b-cloud", None, None).await;
    assert_eq!(log.as_array().map(Vec::len), Some(2));
    let (status, _) = call(addr, "DELETE", "/_sim/requests?tenant=b-cloud", None, None).await;
    assert_eq!(status, 204);
    assert!(b.requests().is_empty());
    assert_eq!(a.requests().len(), 1);
    sim.clear_requests();
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn faults_are_scripted_per_tenant() {
    let sim = two_tenants().await;
    let a = sim.tenant("a-cloud").expect("a");
    a.add_fault(Fault::status("/rest/api/group", 503, 10));
    let (status, _) = call(sim.addr(), "GET", &groups_path("a-cloud"), Some(basic("a")), None).await;
    assert_eq!(status, 503);
    let (status, _) = call(sim.addr(), "GET", &groups_path("b-cloud"), Some(basic("b")), None).await;
    assert_eq!(status, 200);
    a.clear_faults();
    let (status, _) = call(sim.addr(), "GET", &groups_path("a-cloud"), Some(basic("a")), None).await;
    assert_eq!(status, 200);
    // Over HTTP, for the second tenant.
    let fault = json!({"path_contains": "/Users", "status": 500, "times": 1});
    let (status, _) = call(
        sim.addr(),
        "POST",
        "/_sim/faults?tenant=b-cloud",
        None,
        Some(fault),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        sim.addr(),
        "GET",
        "/scim/directory/a-directory/Users",
        Some(bearer("a-scim-token")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        sim.addr(),
        "GET",
        "/scim/directory/b-directory/Users",
        Some(bearer("b-scim-token")),
        None,
    )
    .await;
    assert_eq!(status, 500);
}

/// The `what` of a refused start, or a description of why it was not refused so.
async fn refusal(tenants: Vec<(Seed, Behaviour)>) -> Result<&'static str, String> {
    match Simulator::start_tenants(tenants).await {
        Err(StartError::DuplicateTenantKey { what, first, second }) => {
            assert_eq!((first, second), (0, 1));
            Ok(what)
        }
        Err(other) => Err(other.to_string()),
        Ok(_) => Err("started".to_owned()),
    }
}

#[tokio::test]
async fn start_refuses_tenants_sharing_an_id_or_a_credential() {
    assert!(matches!(
        Simulator::start_tenants(Vec::new()).await,
        Err(StartError::NoTenants)
    ));
    let pair = |change: fn(&mut Seed)| {
        let mut b = seed("b");
        change(&mut b);
        vec![(seed("a"), Behaviour::default()), (b, Behaviour::default())]
    };
    assert_eq!(
        refusal(pair(|b| b.cloud_id = "a-cloud".into())).await,
        Ok("cloud id")
    );
    assert_eq!(refusal(pair(|b| b.org_id = "a-org".into())).await, Ok("org id"));
    assert_eq!(
        refusal(pair(|b| b.directory_id = "a-directory".into())).await,
        Ok("directory id")
    );
    assert_eq!(
        refusal(pair(|b| b.credentials.api_tokens[0].token = "a-api-token".into())).await,
        Ok("API token")
    );
    assert_eq!(
        refusal(pair(|b| b.credentials.scim_token = "a-scim-token".into())).await,
        Ok("SCIM token")
    );
    assert_eq!(
        refusal(pair(|b| b.credentials.admin_api_key = "a-admin-key".into())).await,
        Ok("admin API key")
    );
    assert_eq!(
        refusal(pair(
            |b| b.credentials.oauth_clients[0].client_id = "a-client".into()
        ))
        .await,
        Ok("OAuth client id")
    );
    // Two default seeds are the same tenant twice.
    assert!(
        refusal(vec![(Seed::default(), Behaviour::default()); 2])
            .await
            .is_ok()
    );
    // One tenant may list a token twice (two emails): it is still that tenant's alone.
    let mut a = seed("a");
    a.credentials.api_tokens.push(SeedApiToken {
        email: "other@a.example".into(),
        token: "a-api-token".into(),
        scoped: true,
    });
    let sim = Simulator::start_tenants(vec![(a, Behaviour::default()), (seed("b"), Behaviour::default())])
        .await
        .expect("a token listed twice by one tenant");
    // Scoped tokens keep their rules on a named site: the gateway only.
    let scoped = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("other@a.example:a-api-token")
    );
    let (status, _) = call(
        sim.addr(),
        "GET",
        "/sites/a-cloud/wiki/rest/api/group",
        Some(scoped.clone()),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(sim.addr(), "GET", &groups_path("a-cloud"), Some(scoped), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn one_tenant_start_is_unchanged() {
    let sim = Simulator::start(seed("a"), Behaviour::default())
        .await
        .expect("starts");
    assert_eq!(sim.tenant_count(), 1);
    let (status, _) = call(sim.addr(), "GET", "/wiki/rest/api/group", Some(basic("a")), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        sim.addr(),
        "GET",
        "/sites/a-cloud/wiki/rest/api/group",
        Some(basic("a")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.cloud_id.as_deref() == Some("a-cloud"))
    );
    sim.stop().await;
}
