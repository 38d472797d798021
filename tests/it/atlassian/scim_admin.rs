//! SCIM provisioning and the organization APIs: a 409 on create finds the existing user, 404s
//! and conflicts are permanent, and deactivation (SCIM or user management) shows up where the
//! pollers and policies will look: Confluence v2 `accountStatus` and the org events-stream.

use std::sync::Arc;

use gatehouse::atlassian::{NewScimUser, no_progress};
use gatehouse_sim::{Behaviour, Seed, SeedScimGroup, SeedUser};
use handlers::ports::{AccountStatus, ErrorKind, ScimDirectory};

use super::{SimWorld, seed};

fn directory() -> Seed {
    let users = vec![
        SeedUser::new("acc-ada", "Ada")
            .with_email("ada@example.com")
            .with_scim("ada@example.com", Some("okta-ada")),
        SeedUser::new("acc-grace", "Grace").with_scim("grace@example.com", Some("okta-grace")),
        SeedUser::new("acc-alan", "Alan"),
    ];
    let mut seed = seed(users, vec![("grp-eng", "Engineering", vec![])]);
    seed.scim_groups = vec![
        SeedScimGroup {
            id: Some("scim-eng".into()),
            display_name: "Engineering".into(),
            members: vec![],
            confluence_group_id: Some("grp-eng".into()),
        },
        SeedScimGroup {
            id: Some("scim-ops".into()),
            display_name: "Ops \"on call\"".into(),
            members: vec!["acc-ada".into()],
            confluence_group_id: None,
        },
    ];
    seed
}

fn new_user(user_name: &str, external_id: Option<&str>) -> NewScimUser {
    NewScimUser {
        user_name: user_name.into(),
        external_id: external_id.map(str::to_owned),
        display_name: None,
        given_name: Some("New".into()),
        family_name: Some("Person".into()),
        email: Some(user_name.into()),
        active: true,
    }
}

#[tokio::test]
async fn creating_an_existing_user_finds_it_instead_of_failing() {
    let world = SimWorld::start(directory(), Behaviour::default(), |_| {}).await;
    let scim = world.scim();
    let created = scim
        .create_user(&new_user("new@example.com", Some("okta-new")))
        .await
        .unwrap();
    assert!(created.created);
    assert!(created.request_id.is_some());
    let account = created.user.atlassian_account_id.clone().unwrap();
    let state = world.state().await;
    assert_eq!(
        state.account(&account).unwrap().display_name.as_deref(),
        Some("New Person")
    );

    // Same userName, other case: SCIM says 409; the client returns the existing user.
    let again = scim
        .create_user(&new_user("NEW@example.com", None))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.user.id, created.user.id);
    let log = world.requests().await;
    assert_eq!(log.iter().filter(|r| r.method == "POST").count(), 2);
    assert_eq!(log.iter().filter(|r| r.status == Some(409)).count(), 1);
    assert_eq!(
        world.state().await.scim_users.len(),
        3,
        "nothing was created twice"
    );

    // A conflict with another user (the externalId belongs to Grace): permanent, with the SCIM
    // type, since retrying cannot fix the data.
    let error = scim
        .create_user(&new_user("someone@example.com", Some("okta-grace")))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert_eq!(error.status(), Some(409));
    assert_eq!(error.scim_type(), Some("uniqueness"));
}

#[tokio::test]
async fn unknown_users_are_404_and_permanent() {
    let world = SimWorld::start(directory(), Behaviour::default(), |_| {}).await;
    let scim = world.scim();
    assert_eq!(scim.user("no-such-id").await.unwrap(), None);
    let error = scim.set_active("no-such-id", false).await.unwrap_err();
    assert_eq!((error.kind(), error.status()), (ErrorKind::Permanent, Some(404)));
    assert_eq!(error.scim_type(), None);
    assert!(error.to_string().contains("User not found"), "{error}");
    let error = scim.add_group_member("no-such-group", "x").await.unwrap_err();
    assert_eq!((error.kind(), error.status()), (ErrorKind::Permanent, Some(404)));
    let error = world
        .admin()
        .lifecycle_disable("no-such-account", None)
        .await
        .unwrap_err();
    assert_eq!((error.kind(), error.status()), (ErrorKind::Permanent, Some(404)));
}

#[tokio::test]
async fn finding_by_user_name_external_id_and_display_name() {
    let world = SimWorld::start(directory(), Behaviour::default(), |_| {}).await;
    let port: Arc<dyn ScimDirectory> = Arc::new(world.scim().clone());
    let ada = port.user_by_user_name("Ada@Example.com").await.unwrap().unwrap();
    assert_eq!(ada.atlassian_account_id.as_deref(), Some("acc-ada"));
    assert!(ada.active);
    assert_eq!(
        port.user_by_external_id("okta-grace")
            .await
            .unwrap()
            .map(|u| u.user_name),
        Some("grace@example.com".to_owned())
    );
    assert_eq!(port.user_by_external_id("OKTA-GRACE").await.unwrap(), None);
    assert_eq!(port.user_by_user_name("nobody@example.com").await.unwrap(), None);
    // A display name with quotes survives the filter's escaping.
    assert_eq!(
        port.group_by_display_name("Ops \"on call\"")
            .await
            .unwrap()
            .map(|g| g.id),
        Some("scim-ops".to_owned())
    );
    assert_eq!(world.scim().users(&no_progress).await.unwrap().len(), 2);
    assert_eq!(world.scim().groups(&no_progress).await.unwrap().len(), 2);
}

#[tokio::test]
async fn deactivation_shows_in_confluence_and_in_the_event_stream() {
    let world = SimWorld::start(directory(), Behaviour::default(), |_| {}).await;
    let scim = world.scim();
    let grace = scim
        .user_by_user_name("grace@example.com")
        .await
        .unwrap()
        .unwrap();
    let receipt = scim.set_active(&grace.id, false).await.unwrap();
    assert!(receipt.request_id.is_some());
    assert!(!scim.user(&grace.id).await.unwrap().unwrap().active);
    assert_eq!(
        world.confluence().status_of("acc-grace").await.unwrap(),
        Some(AccountStatus::Inactive)
    );
    // Idempotent: a second deactivation changes nothing and emits nothing.
    scim.set_active(&grace.id, false).await.unwrap();

    let admin = world.admin();
    admin
        .lifecycle_disable("acc-alan", Some("Left the company"))
        .await
        .unwrap();
    assert_eq!(
        world.confluence().status_of("acc-alan").await.unwrap(),
        Some(AccountStatus::Inactive)
    );
    admin.lifecycle_enable("acc-alan").await.unwrap();
    assert_eq!(
        world.confluence().status_of("acc-alan").await.unwrap(),
        Some(AccountStatus::Active)
    );

    let page = admin.events_page(None, &Default::default()).await.unwrap();
    let seen: Vec<(String, String)> = page
        .events
        .iter()
        .map(|e| (e.action.clone(), e.subject("users").unwrap().id.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("user_deactivated".to_owned(), "acc-grace".to_owned()),
            ("user_deactivated".to_owned(), "acc-alan".to_owned()),
            ("user_reactivated".to_owned(), "acc-alan".to_owned()),
        ]
    );
    assert!(page.next.is_some());
    // Memberships stay after deactivation, on Atlassian as here: removing them is policy's job.
}

#[tokio::test]
async fn scim_group_membership_is_mirrored_to_the_synced_confluence_group() {
    let world = SimWorld::start(directory(), Behaviour::default(), |_| {}).await;
    let scim = world.scim();
    let ada = scim.user_by_user_name("ada@example.com").await.unwrap().unwrap();
    let group = scim.group_by_display_name("Engineering").await.unwrap().unwrap();
    scim.add_group_member(&group.id, &ada.id).await.unwrap();
    scim.add_group_member(&group.id, &ada.id).await.unwrap();
    let state = world.state().await;
    assert!(
        state
            .scim_groups
            .iter()
            .any(|g| g.id == "scim-eng" && g.members.contains(&ada.id))
    );
    assert!(state.group("grp-eng").unwrap().members.contains("acc-ada"));
    scim.remove_group_member(&group.id, &ada.id).await.unwrap();
    scim.remove_group_member(&group.id, &ada.id).await.unwrap();
    let state = world.state().await;
    assert!(!state.group("grp-eng").unwrap().members.contains("acc-ada"));
    assert_eq!(state.actions(), ["group_member_added", "group_member_removed"]);
}
