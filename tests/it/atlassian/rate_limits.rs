//! Rate limits and failures: a 429 storm ends with every call done and no more requests than
//! the client's own limiter allows; a quota pauses the whole tenant; server errors and timeouts
//! are retried for idempotent calls only; every retry is counted.

use std::time::Duration;

use futures_util::future::join_all;
use gatehouse::atlassian::no_progress;
use gatehouse::config::EndpointRateLimit;
use gatehouse_sim::{Behaviour, BurstPolicy, Fault, LoggedRequest, QuotaPolicy};
use handlers::ports::ErrorKind;

use super::{SimWorld, accounts, seed};

const USER_ROUTE: &str = "/wiki/rest/api/user";

/// The most requests a token bucket of `rate`/s and `burst` lets through over the span of
/// `requests` (first to last arrival), with 25% slack for scheduling noise.
fn limiter_allows(requests: &[&LoggedRequest], rate: f64, burst: f64) -> f64 {
    let first = requests.iter().map(|r| r.at_ms).min().unwrap_or(0);
    let last = requests.iter().map(|r| r.at_ms).max().unwrap_or(0);
    let span = (last - first) as f64 / 1000.0;
    (burst + rate * span) * 1.25 + 1.0
}

async fn storm(retry_after_seconds: Option<u64>) {
    let users = accounts("acc", 40);
    let ids: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let world = SimWorld::start(
        seed(users, vec![]),
        Behaviour {
            burst: Some(BurstPolicy {
                capacity: 5,
                per_second: 10.0,
                retry_after_seconds,
                near_limit: false,
            }),
            ..Behaviour::default()
        },
        |s| {
            // Faster than the simulator allows, so the storm happens.
            s.rate_limit.endpoints.insert(
                "GET /rest/api/user".into(),
                EndpointRateLimit {
                    per_second: 25.0,
                    burst: 10,
                },
            );
            s.retry.base_delay_ms = 100;
            s.retry.max_delay_ms = 1_000;
        },
    )
    .await;
    let confluence = world.confluence();
    let results = join_all(ids.iter().map(|id| confluence.user(id))).await;
    for (id, result) in ids.iter().zip(&results) {
        let user = result.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(user.as_ref().map(|u| u.account_id.as_str()), Some(id.as_str()));
    }
    let log = world.requests().await;
    let calls: Vec<&LoggedRequest> = log.iter().filter(|r| r.path == USER_ROUTE).collect();
    let refused = calls.iter().filter(|r| r.status == Some(429)).count();
    assert!(refused > 0, "no storm happened");
    assert_eq!(
        calls.len(),
        40 + refused,
        "every request is a call or a refused try"
    );
    assert!(
        (calls.len() as f64) <= limiter_allows(&calls, 25.0, 10.0),
        "{} requests exceed the client's own limiter",
        calls.len()
    );
    // The first refusal paused the endpoint for every caller and halved the pace: only the
    // client's first burst (10, of which the simulator takes 5) can be refused.
    assert!(refused <= 10, "{refused} refusals for 40 calls");
    assert_eq!(
        world.metric("gatehouse_atlassian_retries_total", &["reason=\"rate_limited\""]) as usize,
        refused,
        "every retry is counted"
    );
    assert_eq!(
        world.metric("gatehouse_atlassian_requests_total", &["outcome=\"429\""]) as usize,
        refused
    );
}

#[tokio::test]
async fn a_429_storm_with_retry_after_completes_without_a_failed_call() {
    storm(Some(1)).await;
}

#[tokio::test]
async fn a_429_storm_without_retry_after_completes_on_backoff() {
    storm(None).await;
}

#[tokio::test]
async fn a_quota_reason_pauses_the_whole_tenant_until_the_reset() {
    let users = accounts("acc", 1);
    let id = users[0].account_id.clone();
    let world = SimWorld::start(
        seed(users, vec![("g", "g", vec![id.clone()])]),
        Behaviour {
            quota: Some(QuotaPolicy {
                requests: 6,
                window_ms: 1_500,
                reason: "confluence-quota-tenant-based".into(),
                retry_after: false,
            }),
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    // Two workers on two different endpoints of the same tenant.
    let confluence = world.confluence();
    let users_task = async {
        for _ in 0..8 {
            confluence.user(&id).await.unwrap();
        }
    };
    let groups_task = async {
        for _ in 0..8 {
            confluence.member_groups(&id, &no_progress).await.unwrap();
        }
    };
    tokio::join!(users_task, groups_task);
    let log = world.requests().await;
    let refused: Vec<&LoggedRequest> = log
        .iter()
        .filter(|r| r.rate_limited.as_deref() == Some("quota"))
        .collect();
    assert!(!refused.is_empty(), "the quota was never hit");
    // 16 calls need three quota windows, so two exhaustions; at each, at most the two calls in
    // flight are refused. A pause of one endpoint only (or a backoff shorter than the reset)
    // would keep the other endpoint hammering the closed quota.
    assert!(refused.len() <= 4, "{} quota refusals", refused.len());
    assert_eq!(log.len(), 16 + refused.len());
    assert_eq!(
        world.metric(
            "gatehouse_atlassian_rate_limit_pauses_total",
            &["scope=\"tenant\""]
        ) as usize,
        refused.len()
    );
    // The SCIM tenant is not Confluence's: unaffected.
    assert_eq!(
        world.metric("gatehouse_atlassian_rate_limit_pauses_total", &["api=\"scim\""]),
        0.0
    );
}

#[tokio::test]
async fn a_pause_longer_than_the_budget_fails_fast_as_transient() {
    let users = accounts("acc", 1);
    let id = users[0].account_id.clone();
    let world = SimWorld::start(seed(users, vec![]), Behaviour::default(), |s| {
        s.retry.max_wait_ms = 300;
    })
    .await;
    world
        .fault(Fault {
            rate_limit_reason: Some("confluence-quota-global-based".into()),
            reset_after_ms: Some(3_600_000),
            ..Fault::status(USER_ROUTE, 429, 1)
        })
        .await;
    let error = world.confluence().user(&id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert!(
        error.retry_after().unwrap() > Duration::from_secs(3000),
        "{error}"
    );
    // The tenant is paused: another endpoint fails at once without reaching Atlassian.
    let before = world.requests().await.len();
    let error = world
        .confluence()
        .member_groups(&id, &no_progress)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(
        world.requests().await.len(),
        before,
        "a request was sent during the pause"
    );
    assert_eq!(world.metric("gatehouse_atlassian_paused_calls_total", &[]), 2.0);
}

#[tokio::test]
async fn near_limit_answers_slow_the_client_down() {
    let users = accounts("acc", 1);
    let id = users[0].account_id.clone();
    let world = SimWorld::start(
        seed(users, vec![]),
        Behaviour {
            burst: Some(BurstPolicy {
                capacity: 10,
                per_second: 50.0,
                retry_after_seconds: Some(1),
                near_limit: true,
            }),
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    for _ in 0..20 {
        world.confluence().user(&id).await.unwrap();
    }
    assert!(world.metric("gatehouse_atlassian_slowdowns_total", &[]) > 0.0);
}

/// A connection dropped without an answer is a transport error: transient, retried like a 5xx.
#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let users = accounts("acc", 3);
    let members: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let world = SimWorld::start(
        seed(users, vec![("g", "g", members)]),
        Behaviour::default(),
        |s| {
            s.retry.max_attempts = 4;
        },
    )
    .await;
    world
        .fault(Fault::reset("/membersByGroupId", 2).method("GET"))
        .await;
    let members = world.confluence().group_members("g", &no_progress).await.unwrap();
    assert_eq!(members.len(), 3);
    let requests = world.requests().await;
    assert_eq!(requests.len(), 3, "two dropped, then the page");
    assert!(requests[..2].iter().all(|r| r.status.is_none()), "{requests:?}");

    // Dropped every time: the call gives up, transient, after max_attempts.
    world.clear_requests().await;
    world.fault(Fault::reset(USER_ROUTE, 10)).await;
    let error = world.confluence().user("acc-0001").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert_eq!(world.requests().await.len(), 4);
}

#[tokio::test]
async fn server_errors_are_retried_for_idempotent_calls_only() {
    let users = accounts("acc", 12);
    let members: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let world = SimWorld::start(
        seed(users, vec![("g", "g", members)]),
        Behaviour::default(),
        |s| {
            s.retry.max_attempts = 4;
        },
    )
    .await;
    world
        .fault(Fault::status("/membersByGroupId", 503, 2).method("GET"))
        .await;
    let members = world.confluence().group_members("g", &no_progress).await.unwrap();
    assert_eq!(members.len(), 12);
    assert_eq!(world.requests().await.len(), 3, "two 503s, then the page");
    assert_eq!(
        world.metric("gatehouse_atlassian_retries_total", &["reason=\"server_error\""]),
        2.0
    );

    // A create is not idempotent: a 500 is not retried by the client (the worker will retry,
    // and find the user through the 409).
    world.clear_requests().await;
    world.fault(Fault::status("/Users", 500, 1).method("POST")).await;
    let new = gatehouse::atlassian::NewScimUser {
        user_name: "new@example.com".into(),
        external_id: None,
        display_name: Some("New".into()),
        given_name: None,
        family_name: None,
        email: Some("new@example.com".into()),
        active: true,
    };
    let error = world.scim().create_user(&new).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(error.status(), Some(500));
    assert_eq!(world.requests().await.len(), 1);
    assert!(world.scim().create_user(&new).await.unwrap().created);

    // Persistent trouble: the call gives up after max_attempts, transient.
    world.clear_requests().await;
    world.fault(Fault::status(USER_ROUTE, 502, 10)).await;
    let error = world.confluence().user("acc-0001").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(world.requests().await.len(), 4);
}

/// Atlassian in maintenance answers 503 with `Retry-After: 3600`: the call does not sleep for an
/// hour (holding its worker); the wait is past its budget (`retry.max_wait_ms`), so it fails at
/// once as transient, carrying the wait asked for, and the worker's retry ladder takes over. A
/// `Retry-After` within the budget is still waited out and retried.
#[tokio::test]
async fn a_5xx_retry_after_longer_than_the_budget_fails_fast_as_transient() {
    let users = accounts("acc", 1);
    let id = users[0].account_id.clone();
    let world = SimWorld::start(seed(users, vec![]), Behaviour::default(), |s| {
        s.retry.max_attempts = 4;
        s.retry.max_wait_ms = 5_000;
    })
    .await;
    world
        .fault(Fault {
            retry_after_seconds: Some(3600),
            ..Fault::status(USER_ROUTE, 503, 10)
        })
        .await;
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(30), world.confluence().user(&id)).await;
    let error = answer
        .expect("the call waited out Retry-After: 3600")
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert_eq!(error.status(), Some(503));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(world.requests().await.len(), 1, "retried within the call");
    // The endpoint is paused as Atlassian asked: the worker's later retries fail here, transient,
    // without sending anything.
    let paused = world.confluence().user(&id).await.unwrap_err();
    assert_eq!(paused.kind(), ErrorKind::Transient, "{paused}");
    assert!(
        paused
            .retry_after()
            .is_some_and(|wait| wait > Duration::from_secs(3000)),
        "{paused:?}"
    );
    assert_eq!(world.requests().await.len(), 1, "nothing sent while paused");

    // A short `Retry-After` fits in the budget: waited out, then retried.
    let users = accounts("acc", 1);
    let id = users[0].account_id.clone();
    let world = SimWorld::start(seed(users, vec![]), Behaviour::default(), |s| {
        s.retry.max_attempts = 4;
        s.retry.max_wait_ms = 5_000;
    })
    .await;
    world
        .fault(Fault {
            retry_after_seconds: Some(1),
            ..Fault::status(USER_ROUTE, 503, 1)
        })
        .await;
    let started = std::time::Instant::now();
    world.confluence().user(&id).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert_eq!(world.requests().await.len(), 2, "a 503, then the user");
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let users = accounts("acc", 1);
    let id = users[0].account_id.clone();
    let world = SimWorld::start(seed(users, vec![]), Behaviour::default(), |s| {
        s.http.request_timeout_ms = 300;
    })
    .await;
    world.fault(Fault::delay(USER_ROUTE, 3_000, 1)).await;
    let user = world.confluence().user(&id).await.unwrap();
    assert!(user.is_some());
    let log = world.requests().await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].status, None, "the first try was abandoned");
    assert_eq!(log[1].status, Some(200));
    assert_eq!(
        world.metric("gatehouse_atlassian_retries_total", &["reason=\"timeout\""]),
        1.0
    );
}

#[tokio::test]
async fn client_errors_are_permanent_and_not_retried() {
    let users = accounts("acc", 1);
    let world = SimWorld::start(
        seed(users, vec![("g", "g", vec![])]),
        Behaviour::default(),
        |_| {},
    )
    .await;
    world.fault(Fault::status("/membersByGroupId", 403, 1)).await;
    let error = world
        .confluence()
        .group_members("g", &no_progress)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert_eq!(error.status(), Some(403));
    assert!(error.request_id().is_some(), "{error:?}");
    assert_eq!(world.requests().await.len(), 1);
    // An unknown group: 404, permanent, tried once.
    let error = world
        .confluence()
        .group_members("no-such-group", &no_progress)
        .await
        .unwrap_err();
    assert_eq!((error.kind(), error.status()), (ErrorKind::Permanent, Some(404)));
    assert_eq!(world.requests().await.len(), 2);
    // An unknown account is not an error for a lookup.
    assert_eq!(world.confluence().user("nobody").await.unwrap(), None);
    assert_eq!(world.metric("gatehouse_atlassian_retries_total", &[]), 0.0);
}

/// A tenant that allows R requests a second in all, every endpoint together: with
/// `tenant_per_second = R`, gatehouse's calls to several endpoints at once stay within it (counted
/// in every one-second window of what the simulator saw), with almost no 429s.
#[tokio::test]
async fn one_tenant_budget_holds_across_endpoints() {
    let users = accounts("acc", 30);
    let ids: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let groups = vec![("g-1", "team-1", ids.clone()), ("g-2", "team-2", ids.clone())];
    let world = SimWorld::start(
        seed(users, groups),
        Behaviour {
            tenant: Some(BurstPolicy {
                capacity: 3,
                per_second: 10.0,
                retry_after_seconds: Some(1),
                near_limit: false,
            }),
            ..Behaviour::default()
        },
        |s| {
            s.rate_limit.tenant_per_second = Some(10.0);
            s.rate_limit.tenant_burst = 3;
            // Each endpoint on its own would go far faster.
            s.rate_limit.reads_per_second = 50.0;
            s.rate_limit.writes_per_second = 50.0;
        },
    )
    .await;
    let confluence = world.confluence();
    // Reads of one endpoint, and removals on another, all at once.
    let reads = join_all(ids.iter().map(|id| confluence.user(id)));
    let removals = join_all(ids.iter().map(|id| confluence.remove_member("g-1", id)));
    let (reads, removals) = tokio::join!(reads, removals);
    assert!(reads.iter().all(Result::is_ok));
    assert!(removals.iter().all(Result::is_ok));
    let log = world.requests().await;
    let answered = log.iter().filter(|r| r.status.is_some_and(|s| s < 400)).count();
    assert_eq!(answered, 60);
    // Everything the simulator received, refused or not: a bucket of 10/s with 3 at once sends
    // at most 13 in any second; a little slack for the two clocks.
    let sent: Vec<i64> = log.iter().map(|r| r.at_ms).collect();
    for (i, first) in sent.iter().enumerate() {
        let within = sent[i..].iter().take_while(|t| **t < first + 1_000).count();
        assert!(within <= 15, "{within} requests in one second from {first}");
    }
    let refused = log.iter().filter(|r| r.status == Some(429)).count();
    assert!(refused <= 5, "{refused} refusals with the tenant's budget known");
}

/// Without a configured budget, the 429s themselves teach it: calls from several endpoints all
/// complete, and the refusals stay few (each round of them slows the whole tenant).
#[tokio::test]
async fn a_tenant_budget_is_learned_from_429s() {
    let users = accounts("acc", 30);
    let ids: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let groups = vec![("g-1", "team-1", ids.clone())];
    let world = SimWorld::start(
        seed(users, groups),
        Behaviour {
            tenant: Some(BurstPolicy {
                capacity: 3,
                per_second: 10.0,
                retry_after_seconds: None,
                near_limit: false,
            }),
            ..Behaviour::default()
        },
        |s| {
            s.rate_limit.reads_per_second = 50.0;
            s.rate_limit.writes_per_second = 50.0;
            s.rate_limit.burst = 5;
            s.retry.base_delay_ms = 200;
        },
    )
    .await;
    let confluence = world.confluence();
    let reads = join_all(ids.iter().map(|id| confluence.user(id)));
    let removals = join_all(ids.iter().map(|id| confluence.remove_member("g-1", id)));
    let (reads, removals) = tokio::join!(reads, removals);
    assert!(reads.iter().all(Result::is_ok));
    assert!(removals.iter().all(Result::is_ok));
    let log = world.requests().await;
    let refused = log.iter().filter(|r| r.status == Some(429)).count();
    // Paced only per endpoint (100 a second together), the 60 calls against 10 a second would
    // be refused again and again; the learned budget keeps it to the first round or two.
    assert!(refused <= 20, "{refused} refusals for 60 calls");
    assert!(
        world.metric(
            "gatehouse_atlassian_rate_limit_pauses_total",
            &["scope=\"tenant_budget\""]
        ) >= 1.0,
        "the tenant was slowed as a whole"
    );
}
