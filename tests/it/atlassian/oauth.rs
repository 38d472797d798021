//! OAuth 2.0 with rotating refresh tokens against the simulator's token endpoint, which revokes
//! the whole grant when a retired refresh token is reused (the leeway is set to zero here, so any
//! reuse at all is caught).

use futures_util::future::join_all;
use gatehouse::atlassian::no_progress;
use gatehouse::config::{AuthSettings, Secret, SensitiveUrl, StoreSettings};
use gatehouse::store::Store;
use gatehouse_sim::{Behaviour, Fault, Simulator};
use handlers::ports::ErrorKind;

use super::{SimWorld, accounts, detached_clients, oauth_settings_for, seed};
use crate::helpers::TempDir;

fn strict() -> Behaviour {
    Behaviour {
        refresh_reuse_leeway_seconds: 0,
        ..Behaviour::default()
    }
}

async fn store(dir: &TempDir) -> Store {
    Store::connect(&StoreSettings {
        url: SensitiveUrl::new(format!("sqlite://{}/gatehouse.db", dir.0.display())),
        max_connections: 4,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await
    .unwrap()
}

fn group_seed() -> gatehouse_sim::Seed {
    let users = accounts("acc", 7);
    let ids = users.iter().map(|u| u.account_id.clone()).collect();
    seed(users, vec![("g", "g", ids)])
}

#[tokio::test]
async fn twenty_concurrent_callers_refresh_once() {
    let dir = TempDir::new();
    let store = store(&dir).await;
    let sim = Simulator::start(group_seed(), strict()).await.unwrap();
    let settings = oauth_settings_for(&sim);
    let world = SimWorld::with_settings(sim, settings, Some(store.clone())).await;
    let confluence = world.confluence();
    let results = join_all((0..20).map(|_| confluence.group_members("g", &no_progress))).await;
    for result in results {
        assert_eq!(result.unwrap().len(), 7);
    }
    let oauth = world.state().await.oauth;
    assert_eq!(oauth.refreshes, 1, "{oauth:?}");
    assert_eq!(oauth.reuse_within_leeway, 0);
    assert_eq!(oauth.families_revoked, 0);
    // The new refresh token was kept, and it is the live one.
    let grant = store.oauth_grant("sim-client@sim-cloud").await.unwrap().unwrap();
    assert_eq!(
        Some(grant.refresh_token.expose()),
        oauth.latest_refresh_tokens.get("sim-client").map(String::as_str)
    );
    // Every Confluence call went through the gateway with the one access token.
    let log = world.requests().await;
    let api_calls: Vec<_> = log
        .iter()
        .filter(|r| r.path.starts_with("/ex/confluence/"))
        .collect();
    assert_eq!(api_calls.len(), 20);
    assert!(
        api_calls
            .iter()
            .all(|r| r.principal.as_deref() == Some("oauth:sim-client:access-1")),
        "{api_calls:?}"
    );
    assert_eq!(
        world.metric("gatehouse_atlassian_token_refreshes_total", &["outcome=\"ok\""]),
        1.0
    );
}

#[tokio::test]
async fn a_chain_of_rotations_never_reuses_a_token() {
    let dir = TempDir::new();
    let store = store(&dir).await;
    // Access tokens that are never fresh enough to keep: every call refreshes.
    let sim = Simulator::start(
        group_seed(),
        Behaviour {
            access_token_ttl_seconds: 1,
            ..strict()
        },
    )
    .await
    .unwrap();
    let settings = oauth_settings_for(&sim);
    let world = SimWorld::with_settings(sim, settings, Some(store)).await;
    for _ in 0..5 {
        assert!(world.confluence().user("acc-0001").await.unwrap().is_some());
    }
    let oauth = world.state().await.oauth;
    assert_eq!(oauth.refreshes, 5);
    assert_eq!((oauth.reuse_within_leeway, oauth.families_revoked), (0, 0));
    let used: Vec<String> = world
        .requests()
        .await
        .iter()
        .filter(|r| r.path == "/oauth/token")
        .map(|r| r.principal.clone().unwrap())
        .collect();
    assert_eq!(
        used,
        (0..5)
            .map(|n| format!("refresh:sim-client:rt-{n}"))
            .collect::<Vec<_>>(),
        "each refresh used the token the previous one returned"
    );
}

#[tokio::test]
async fn a_revoked_access_token_is_replaced_once_and_the_call_goes_through() {
    let dir = TempDir::new();
    let store = store(&dir).await;
    let sim = Simulator::start(group_seed(), strict()).await.unwrap();
    let settings = oauth_settings_for(&sim);
    let world = SimWorld::with_settings(sim, settings, Some(store)).await;
    world.confluence().user("acc-0001").await.unwrap();
    world.fault(Fault::status("/ex/confluence/", 401, 1)).await;
    assert!(world.confluence().user("acc-0002").await.unwrap().is_some());
    let oauth = world.state().await.oauth;
    assert_eq!(oauth.refreshes, 2);
    assert_eq!((oauth.reuse_within_leeway, oauth.families_revoked), (0, 0));
    assert_eq!(
        world.metric("gatehouse_atlassian_retries_total", &["reason=\"unauthorized\""]),
        1.0
    );
    // The replacement refused too, within a minute: new tokens do not help (the grant lost its
    // access, not the token its validity), so the call fails with its 401 at once and the
    // refresh token is not rotated again, on this call or the next ones.
    world.fault(Fault::status("/ex/confluence/", 401, 3)).await;
    for _ in 0..3 {
        let error = world.confluence().user("acc-0002").await.unwrap_err();
        assert_eq!((error.kind(), error.status()), (ErrorKind::Permanent, Some(401)));
    }
    assert_eq!(world.state().await.oauth.refreshes, 2);
    // Once access is back, the kept token works.
    assert!(world.confluence().user("acc-0002").await.unwrap().is_some());
    assert_eq!(world.state().await.oauth.refreshes, 2);
}

/// A token answer lost on its way back (Atlassian rotated the token; gatehouse never saw the new
/// one) is asked for again at once with the same token, inside Atlassian's reuse window: the call
/// goes through and the grant lives on. Before, the next refresh came with the next call, which
/// could be past the window, where Atlassian revokes the whole grant.
#[tokio::test]
async fn a_token_answer_lost_on_the_way_back_is_asked_for_again_within_the_reuse_window() {
    let dir = TempDir::new();
    let store = store(&dir).await;
    // Atlassian's own leeway (ten minutes), not the strict zero of the other tests.
    let sim = Simulator::start(group_seed(), Behaviour::default())
        .await
        .unwrap();
    let settings = oauth_settings_for(&sim);
    let world = SimWorld::with_settings(sim, settings, Some(store.clone())).await;
    world.fault(Fault::lose_answer("/oauth/token", 1)).await;
    assert!(world.confluence().user("acc-0001").await.unwrap().is_some());
    let oauth = world.state().await.oauth;
    assert_eq!(
        (oauth.refreshes, oauth.reuse_within_leeway, oauth.families_revoked),
        (2, 1, 0),
        "the lost rotation, then the retired token used again within the window: {oauth:?}"
    );
    let grant = store.oauth_grant("sim-client@sim-cloud").await.unwrap().unwrap();
    assert_eq!(
        Some(grant.refresh_token.expose()),
        oauth.latest_refresh_tokens.get("sim-client").map(String::as_str),
        "the store keeps the live refresh token"
    );
}

#[tokio::test]
async fn a_restarted_process_and_a_second_process_use_the_stored_grant() {
    let dir = TempDir::new();
    let store = store(&dir).await;
    let sim = Simulator::start(group_seed(), strict()).await.unwrap();
    let settings = oauth_settings_for(&sim);
    let first = SimWorld::with_settings(sim, settings.clone(), Some(store.clone())).await;
    first.confluence().user("acc-0001").await.unwrap();
    // Two more processes on the same store, started together: the configured (now retired)
    // refresh token is never sent again, and nobody refreshes while the stored access token is
    // good.
    let build = || detached_clients(&settings, Some(store.clone()));
    let (second, third) = (build(), build());
    let calls = (0..10).map(|i| {
        let client = if i % 2 == 0 { &second } else { &third };
        async move { client.confluence().unwrap().user("acc-0002").await }
    });
    for result in join_all(calls).await {
        assert!(result.unwrap().is_some());
    }
    let oauth = first.state().await.oauth;
    assert_eq!(oauth.refreshes, 1, "{oauth:?}");
    assert_eq!(oauth.families_revoked, 0);
}

#[tokio::test]
async fn processes_that_must_refresh_together_refresh_once() {
    let dir = TempDir::new();
    let store = store(&dir).await;
    let sim = Simulator::start(group_seed(), strict()).await.unwrap();
    let settings = oauth_settings_for(&sim);
    let world = SimWorld::with_settings(sim, settings.clone(), Some(store.clone())).await;
    let others: Vec<_> = (0..3)
        .map(|_| detached_clients(&settings, Some(store.clone())))
        .collect();
    let calls = (0..12).map(|i| {
        let client = &others[i % 3];
        async move { client.confluence().unwrap().user("acc-0003").await }
    });
    for result in join_all(calls).await {
        assert!(result.unwrap().is_some());
    }
    let oauth = world.state().await.oauth;
    assert_eq!(oauth.refreshes, 1, "{oauth:?}");
    assert_eq!((oauth.reuse_within_leeway, oauth.families_revoked), (0, 0));
}

#[tokio::test]
async fn a_refused_refresh_token_is_a_permanent_error_and_a_new_one_in_config_wins() {
    let dir = TempDir::new();
    let store = store(&dir).await;
    let sim = Simulator::start(group_seed(), strict()).await.unwrap();
    let mut settings = oauth_settings_for(&sim);
    if let Some(AuthSettings::Oauth { refresh_token, .. }) = &mut settings.auth {
        *refresh_token = Secret::new("not-a-refresh-token-of-this-grant");
    }
    let world = SimWorld::with_settings(sim, settings.clone(), Some(store.clone())).await;
    let error = world.confluence().user("acc-0001").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(error.message().contains("authorize gatehouse again"), "{error}");
    assert!(!error.to_string().contains("not-a-refresh-token"), "{error}");
    assert_eq!(
        world.metric(
            "gatehouse_atlassian_token_refreshes_total",
            &["outcome=\"rejected\""]
        ),
        1.0
    );
    // The operator authorizes again and puts the new refresh token in config: it replaces the
    // stored one.
    if let Some(AuthSettings::Oauth { refresh_token, .. }) = &mut settings.auth {
        *refresh_token = Secret::new("sim-refresh-0");
    }
    let clients = detached_clients(&settings, Some(store));
    assert!(
        clients
            .confluence()
            .unwrap()
            .user("acc-0001")
            .await
            .unwrap()
            .is_some()
    );
}
