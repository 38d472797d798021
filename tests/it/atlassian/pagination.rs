//! Listings are complete at every page boundary, in all three styles, and the styles are never
//! mixed (the simulator, like Atlassian, truncates silently when they are).

use std::collections::BTreeSet;

use gatehouse::atlassian::no_progress;
use gatehouse_sim::{Behaviour, SeedUser};
use serde_json::json;

use super::{SimWorld, accounts, seed, to_route};

const PAGE: usize = 5;

/// Sizes around the page size: 0, 1, page-1, page, page+1, and a few pages.
const SIZES: [usize; 7] = [0, 1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 3 * PAGE + 2];

fn small_pages() -> Behaviour {
    Behaviour {
        v1_max_limit: PAGE as u32,
        v2_max_limit: PAGE as u32,
        scim_max_count: PAGE as u32,
        events_max_limit: PAGE as u32,
        ..Behaviour::default()
    }
}

fn ids(users: &[SeedUser]) -> BTreeSet<String> {
    users.iter().map(|u| u.account_id.clone()).collect()
}

#[tokio::test]
async fn v1_members_are_complete_at_every_boundary() {
    let users = accounts("acc", 20);
    let groups: Vec<(String, String, Vec<String>)> = SIZES
        .iter()
        .map(|&n| {
            (
                format!("g-{n}"),
                format!("group of {n}"),
                users[..n].iter().map(|u| u.account_id.clone()).collect(),
            )
        })
        .collect();
    let world = SimWorld::start(
        seed(
            users.clone(),
            groups
                .iter()
                .map(|(id, name, m)| (id.as_str(), name.as_str(), m.clone()))
                .collect(),
        ),
        small_pages(),
        |_| {},
    )
    .await;
    for &n in &SIZES {
        world.clear_requests().await;
        let members = world
            .confluence()
            .group_members(&format!("g-{n}"), &no_progress)
            .await
            .unwrap();
        let got: BTreeSet<String> = members.iter().map(|u| u.account_id.clone()).collect();
        assert_eq!(got, ids(&users[..n]), "group of {n}");
        assert_eq!(members.len(), n, "no duplicates in a group of {n}");
        // Hidden emails come back as None, never as "".
        assert!(members.iter().all(|u| u.email.as_deref() != Some("")));
        // One request per page, plus at most one to find the end.
        let pages = world.requests().await.len();
        assert!(pages <= n / PAGE + 2, "{pages} requests for {n} members");
    }
    let log = world.requests().await;
    assert!(log.iter().all(|r| r.query_param("cursor").is_none()));
}

#[tokio::test]
async fn v1_listings_survive_a_changing_page_size() {
    let users = accounts("acc", 23);
    let all: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let group_ids: Vec<String> = (0..13).map(|i| format!("grp-{i:02}")).collect();
    let mut groups = vec![("big", "big", all.clone())];
    for id in &group_ids {
        groups.push((id.as_str(), id.as_str(), vec![all[0].clone()]));
    }
    let world = SimWorld::start(
        seed(users.clone(), groups),
        Behaviour {
            page_size_cycle: vec![3, 5, 2, 4, 1],
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let members = world
        .confluence()
        .group_members("big", &no_progress)
        .await
        .unwrap();
    assert_eq!(members.len(), 23);
    assert_eq!(
        members
            .iter()
            .map(|u| u.account_id.clone())
            .collect::<BTreeSet<_>>(),
        ids(&users)
    );

    let groups_of_first = world
        .confluence()
        .member_groups(&all[0], &no_progress)
        .await
        .unwrap();
    assert_eq!(groups_of_first.len(), 14);
    let every_group = world.confluence().groups(&no_progress).await.unwrap();
    assert_eq!(every_group.len(), 14);
    // The server lowered the page size under the client's feet; the offsets followed `size`.
    let starts: Vec<u64> = to_route(&world.requests().await, "/membersByGroupId")
        .iter()
        .map(|r| r.query_param("start").unwrap().parse().unwrap())
        .collect();
    assert_eq!(&starts[..4], &[0, 3, 8, 10]);
}

#[tokio::test]
async fn v1_group_listings_are_complete_at_every_boundary() {
    for &n in &SIZES {
        let users = accounts("acc", 1);
        let member = users[0].account_id.clone();
        let ids: Vec<String> = (0..n).map(|i| format!("g{i:03}")).collect();
        let world = SimWorld::start(
            seed(
                users,
                ids.iter()
                    .map(|id| (id.as_str(), id.as_str(), vec![member.clone()]))
                    .collect(),
            ),
            small_pages(),
            |_| {},
        )
        .await;
        let groups = world.confluence().groups(&no_progress).await.unwrap();
        assert_eq!(groups.len(), n);
        let mine = world
            .confluence()
            .member_groups(&member, &no_progress)
            .await
            .unwrap();
        assert_eq!(
            mine.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
            ids,
            "memberof for {n}"
        );
    }
}

#[tokio::test]
async fn v2_users_bulk_is_complete_at_every_boundary_and_in_chunks() {
    let users = accounts("acc", 160);
    let world = SimWorld::start(seed(users.clone(), vec![]), small_pages(), |_| {}).await;
    for &n in &SIZES {
        let wanted: Vec<String> = users[..n].iter().map(|u| u.account_id.clone()).collect();
        let found = world.confluence().users_bulk(&wanted).await.unwrap();
        assert_eq!(
            found
                .iter()
                .map(|u| u.user.account_id.clone())
                .collect::<Vec<_>>(),
            wanted,
            "bulk of {n}"
        );
    }
    // More than the 100 ids one request takes, plus unknown ids (left out).
    let mut wanted: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    wanted.push("nobody".into());
    let found = world.confluence().users_bulk(&wanted).await.unwrap();
    assert_eq!(found.len(), 160);
    let log = world.requests().await;
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|r| r.query_param("start").is_none()),
        "v2 was sent a start"
    );
    assert!(log.iter().all(|r| r.status == Some(200)));
}

#[tokio::test]
async fn v2_survives_a_changing_page_size() {
    let users = accounts("acc", 37);
    let world = SimWorld::start(
        seed(users.clone(), vec![]),
        Behaviour {
            page_size_cycle: vec![7, 2, 11, 1],
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let wanted: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let found = world.confluence().users_bulk(&wanted).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|u| u.user.account_id.clone())
            .collect::<Vec<_>>(),
        wanted
    );
}

#[tokio::test]
async fn scim_listings_are_complete_at_every_boundary() {
    for &n in &SIZES {
        let users: Vec<SeedUser> = accounts("acc", n)
            .into_iter()
            .enumerate()
            .map(|(i, u)| u.with_scim(format!("user{i}@example.com"), None))
            .collect();
        let world = SimWorld::start(seed(users, vec![]), small_pages(), |_| {}).await;
        let listed = world.scim().users(&no_progress).await.unwrap();
        assert_eq!(listed.len(), n);
        assert_eq!(
            listed.iter().map(|u| u.id.clone()).collect::<BTreeSet<_>>().len(),
            n,
            "duplicates in {n}"
        );
        let starts: Vec<String> = world
            .requests()
            .await
            .iter()
            .map(|r| r.query_param("startIndex").unwrap().to_owned())
            .collect();
        assert_eq!(starts.first().map(String::as_str), Some("1"), "1-based");
    }
}

#[tokio::test]
async fn the_events_cursor_walks_the_stream_and_keeps_working_past_the_end() {
    let users = accounts("acc", 1);
    let world = SimWorld::start(seed(users, vec![]), small_pages(), |_| {}).await;
    let admin = world.admin();
    for i in 0..12 {
        let status = world
            .control(
                reqwest::Method::POST,
                "/_sim/events",
                Some(json!({"action": format!("test_{i}"), "account_id": "acc-0000"})),
            )
            .await;
        assert_eq!(status, 201);
    }
    let mut cursor = None;
    let mut actions = Vec::new();
    loop {
        let page = admin
            .events_page(cursor.as_ref(), &Default::default())
            .await
            .unwrap();
        let empty = page.events.is_empty();
        actions.extend(page.events.into_iter().map(|e| e.action));
        cursor = page.next;
        assert!(cursor.is_some(), "the stream always gives a cursor");
        if empty {
            break;
        }
    }
    assert_eq!(actions, (0..12).map(|i| format!("test_{i}")).collect::<Vec<_>>());
    // New events appear behind the stored cursor, and only they.
    for i in 12..15 {
        world
            .control(
                reqwest::Method::POST,
                "/_sim/events",
                Some(json!({"action": format!("test_{i}")})),
            )
            .await;
    }
    let page = admin
        .events_page(cursor.as_ref(), &Default::default())
        .await
        .unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["test_12", "test_13", "test_14"]
    );
    assert!(page.events[0].subject("users").is_none());
}

/// The quirk the pager types exist for is real in the simulator: a cursor sent to v1, or a
/// start sent to v2, silently truncates.
#[tokio::test]
async fn mixing_pagination_styles_truncates_silently() {
    let users = accounts("acc", 12);
    let members: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let world = SimWorld::start(
        seed(users, vec![("g", "g", members.clone())]),
        small_pages(),
        |_| {},
    )
    .await;
    let http = crate::helpers::http();
    let v1: serde_json::Value = http
        .get(
            world
                .sim
                .url("/wiki/rest/api/group/g/membersByGroupId?cursor=abc&limit=5"),
        )
        .basic_auth("bot@example.com", Some(super::API_TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["size"], 5);
    assert!(v1["_links"]["next"].is_null(), "{v1}");
    let v2 = http
        .post(world.sim.url("/wiki/api/v2/users-bulk?start=5&limit=5"))
        .basic_auth("bot@example.com", Some(super::API_TOKEN))
        .json(&json!({ "accountIds": members }))
        .send()
        .await
        .unwrap();
    assert!(v2.headers().get("link").is_none());
    let v2: serde_json::Value = v2.json().await.unwrap();
    assert_eq!(v2["results"].as_array().unwrap().len(), 5);
    assert!(v2["_links"]["next"].is_null(), "{v2}");
}

/// The directory can only be listed whole, by offset: a user deleted while it is read shifts the
/// later pages and hides another. A leaver looked up by account id while that happens is found
/// in a second listing, not reported as having no SCIM user (whose deactivation would be skipped).
#[tokio::test]
async fn a_user_hidden_by_a_shifting_scim_page_is_found_in_a_second_listing() {
    let users: Vec<SeedUser> = (1..=4)
        .map(|i| {
            let mut user = SeedUser::new(format!("acc-{i}"), format!("User {i}"));
            user.scim = Some(gatehouse_sim::SeedScimIdentity {
                id: Some(format!("s-{i}")),
                user_name: format!("user{i}@example.com"),
                external_id: None,
                active: None,
            });
            user
        })
        .collect();
    let behaviour = Behaviour {
        scim_max_count: 2,
        ..Behaviour::default()
    };
    let world = SimWorld::start(seed(users, vec![]), behaviour, |_| {}).await;
    world
        .fault(gatehouse_sim::Fault::delay("/Users?startIndex=3", 5_000, 1))
        .await;
    let scim = world.scim().clone();
    let lookup =
        tokio::spawn(async move { handlers::ports::ScimDirectory::user_by_account_id(&scim, "acc-3").await });
    crate::queue::eventually(
        std::time::Duration::from_secs(10),
        "the second page asked for",
        || async {
            world
                .requests()
                .await
                .iter()
                .any(|r| r.query_param("startIndex") == Some("3"))
        },
    )
    .await;
    // The first user leaves the directory while the second page waits: that page now starts
    // at acc-4, and acc-3 is on no page of this listing.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/Users/s-1", world.sim.scim_base_url()))
        .bearer_auth("sim-scim-token")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let found = lookup.await.unwrap().unwrap();
    assert_eq!(found.map(|u| u.id).as_deref(), Some("s-3"));
}
