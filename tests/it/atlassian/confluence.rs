//! Confluence reads and changes: membership by group id (never the deprecated name-based
//! endpoints), case-sensitive names with near misses pointed out, null emails, the handlers'
//! port, and credentials that only work through the gateway.

use std::sync::Arc;

use gatehouse::atlassian::no_progress;
use gatehouse::config::{AuthSettings, Secret};
use gatehouse_sim::{Behaviour, Seed, SeedApiToken, SeedCredentials, Simulator};
use handlers::ports::{AccountStatus, ConfluenceDirectory, ErrorKind};

use super::{SimWorld, accounts, seed, settings_for};

fn engineering() -> Seed {
    let users = accounts("acc", 4);
    let ids: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    seed(
        users,
        vec![
            ("grp-eng", "Engineering", ids[..2].to_vec()),
            ("grp-users", "confluence-users", ids.clone()),
            ("grp-eng-lower", "engineering-alumni", vec![]),
        ],
    )
}

#[tokio::test]
async fn members_are_added_and_removed_by_group_id() {
    let world = SimWorld::start(engineering(), Behaviour::default(), |_| {}).await;
    let confluence = world.confluence();
    let receipt = confluence.add_member("grp-eng", "acc-0003").await.unwrap();
    assert_eq!(receipt.status, 201);
    assert!(
        receipt.request_id.is_some(),
        "changes carry Atlassian's request id"
    );
    assert!(
        world
            .state()
            .await
            .group("grp-eng")
            .unwrap()
            .members
            .contains("acc-0003")
    );
    // Adding again changes nothing and fails nothing.
    confluence.add_member("grp-eng", "acc-0003").await.unwrap();

    let removed = confluence.remove_member("grp-eng", "acc-0003").await.unwrap();
    assert_eq!(removed.status, 204);
    assert!(removed.request_id.is_some());
    // Removing a non-member is a success too.
    assert_eq!(
        confluence
            .remove_member("grp-eng", "acc-0003")
            .await
            .unwrap()
            .status,
        204
    );
    let state = world.state().await;
    assert!(!state.group("grp-eng").unwrap().members.contains("acc-0003"));
    assert_eq!(
        state.actions(),
        ["group_member_added", "group_member_removed"],
        "one event per actual change"
    );
    // Unknown group: permanent.
    let error = confluence.add_member("grp-nope", "acc-0001").await.unwrap_err();
    assert_eq!((error.kind(), error.status()), (ErrorKind::Permanent, Some(404)));
    let log = world.requests().await;
    assert!(
        log.iter().all(|r| !r.deprecated),
        "a deprecated endpoint was used"
    );
    assert!(log.iter().all(|r| r.path.ends_with("/userByGroupId")));
}

#[tokio::test]
async fn group_names_are_exact_and_near_misses_are_found() {
    let world = SimWorld::start(engineering(), Behaviour::default(), |_| {}).await;
    let confluence = world.confluence();
    let exact = confluence.group_named("Engineering").await.unwrap().unwrap();
    assert_eq!(exact.id, "grp-eng");
    assert_eq!(confluence.group_named("engineering").await.unwrap(), None);
    assert_eq!(confluence.group_named("Engineer").await.unwrap(), None);
    let near: Vec<String> = confluence
        .groups_named_like("ENGINEERING")
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(near, ["Engineering"]);
    assert!(
        confluence
            .groups_named_like("Engineering")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(world.requests().await.iter().all(|r| !r.deprecated));
}

#[tokio::test]
async fn the_port_reads_complete_and_null_emails_are_fine() {
    let world = SimWorld::start(engineering(), Behaviour::default(), |_| {}).await;
    let port: Arc<dyn ConfluenceDirectory> = Arc::new(world.confluence().clone());
    let members = port.members_of("grp-users").await.unwrap();
    assert_eq!(members.len(), 4);
    assert_eq!(members.iter().filter(|u| u.email.is_none()).count(), 2);
    let groups = port.groups_of("acc-0000").await.unwrap();
    assert_eq!(
        groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["Engineering", "confluence-users"]
    );
    assert_eq!(
        port.group_by_name("confluence-users")
            .await
            .unwrap()
            .map(|g| g.id),
        Some("grp-users".to_owned())
    );
    assert_eq!(
        port.account_status("acc-0001").await.unwrap(),
        Some(AccountStatus::Active)
    );
    assert_eq!(port.account_status("nobody").await.unwrap(), None);
    let error = port.members_of("grp-nope").await.unwrap_err();
    assert_eq!((error.kind, error.status), (ErrorKind::Permanent, Some(404)));
    let user = world.confluence().user("acc-0000").await.unwrap().unwrap();
    assert_eq!(user.email, None);
    assert_eq!(user.display_name.as_deref(), Some("User 0"));
}

#[tokio::test]
async fn scoped_tokens_work_through_the_gateway_only() {
    let sim = Simulator::start(
        Seed {
            credentials: SeedCredentials {
                api_tokens: vec![SeedApiToken {
                    email: "bot@example.com".into(),
                    token: "scoped-token-value".into(),
                    scoped: true,
                }],
                ..SeedCredentials::default()
            },
            ..engineering()
        },
        Behaviour::default(),
    )
    .await
    .unwrap();
    let mut on_site = settings_for(&sim);
    on_site.auth = Some(AuthSettings::Basic {
        email: "bot@example.com".into(),
        token: Secret::new("scoped-token-value"),
        cloud_id: None,
        token_expires_at: None,
    });
    let mut through_gateway = on_site.clone();
    through_gateway.confluence_base_url = None;
    through_gateway.auth = Some(AuthSettings::Basic {
        email: "bot@example.com".into(),
        token: Secret::new("scoped-token-value"),
        cloud_id: Some(sim.cloud_id()),
        token_expires_at: None,
    });
    let site_world = SimWorld::with_settings(sim, on_site, None).await;
    let error = site_world.confluence().user("acc-0000").await.unwrap_err();
    assert_eq!((error.kind(), error.status()), (ErrorKind::Permanent, Some(401)));
    assert!(error.message().contains("scoped"), "{error}");

    let gateway = super::detached_clients(&through_gateway, None);
    let confluence = gateway.confluence().unwrap();
    assert!(confluence.user("acc-0000").await.unwrap().is_some());
    assert_eq!(
        confluence
            .group_members("grp-users", &no_progress)
            .await
            .unwrap()
            .len(),
        4
    );
    let log = site_world.requests().await;
    assert!(
        log.iter()
            .skip(1)
            .all(|r| r.path.starts_with("/ex/confluence/sim-cloud/wiki/")),
        "{log:?}"
    );
}

/// `..`, `/`, tabs and the like in an id are refused before any URL is built (a URL library
/// would normalize `grp/../x` into a request about another resource), and nothing is sent.
#[tokio::test]
async fn identifiers_are_checked_before_they_reach_a_url() {
    let world = SimWorld::start(engineering(), Behaviour::default(), |_| {}).await;
    world.clear_requests().await;
    let confluence = world.confluence();
    for (group, account) in [
        ("..", "acc-0001"),
        ("grp-eng/../grp-users", "acc-0001"),
        ("grp-eng", "acc-0001\t"),
        ("grp-eng", "../acc-0001"),
        (".", "acc-0001"),
        ("grp-eng", "acc%2F0001"),
    ] {
        if group != "grp-eng" {
            assert!(confluence.group_members(group, &no_progress).await.is_err());
        }
        let error = confluence.remove_member(group, account).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
        assert!(error.message().contains("is not a valid identifier"), "{error}");
    }
    assert!(world.admin().lifecycle_disable("acc/../x", None).await.is_err());
    assert!(world.scim().set_active("..", false).await.is_err());
    assert!(world.scim().add_group_member("sg\t1", "u-1").await.is_err());
    assert!(
        world.requests().await.is_empty(),
        "nothing may be sent for a malformed id"
    );
    let state = world.state().await;
    assert_eq!(
        state.group("grp-users").unwrap().members.len(),
        4,
        "nothing changed"
    );
}
