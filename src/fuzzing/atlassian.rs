//! Targets for what Atlassian answers: SCIM and Confluence listings and users, events-stream
//! pages, error bodies, and the headers that pace and page the calls (`Retry-After`,
//! `X-RateLimit-*`, `Link`). Each body goes through [`Reply::json`] into the very types the
//! clients read, then through the pagers that decide what to ask next.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use handlers::ports::{Group, ScimGroup, ScimUser, User};

use super::{fields, text};
use crate::atlassian::admin::{self, ApiPage};
use crate::atlassian::confluence::{ApiGroup, ApiUser, parse_status};
use crate::atlassian::error::ApiError;
use crate::atlassian::http::Reply;
use crate::atlassian::limiter::{LimitKey, LimiterState, RateLimitSignals};
use crate::atlassian::pagination::{
    CursorPage, CursorPager, IndexPage, IndexPager, OffsetPage, OffsetPager, cursor_of, next_link,
};
use crate::atlassian::retry::{RetryBackoff, parse_retry_after};
use crate::atlassian::scim::{ApiScimGroup, ApiScimUser};
use crate::config::RateLimitSettings;
use crate::poll::mapping::ActionMap;

/// A successful answer with `body`.
fn reply(body: &[u8]) -> Reply {
    Reply {
        status: 200,
        headers: HeaderMap::new(),
        body: Bytes::copy_from_slice(body),
        request_id: None,
    }
}

/// A SCIM `ListResponse` of users and of groups, and a single user, as the SCIM client reads them.
pub fn scim_response(data: &[u8]) {
    let reply = reply(data);
    if let Ok(page) = reply.json::<IndexPage<ApiScimUser>>("GET /Users") {
        let returned = page.resources.len();
        let next = IndexPager {
            start_index: 1,
            count: 100,
        }
        .next(returned, page.total_results);
        if let Some(next) = next {
            assert!(next.start_index > 1 && returned > 0);
        }
        let _users: Vec<ScimUser> = page.resources.into_iter().map(ScimUser::from).collect();
    }
    if let Ok(page) = reply.json::<IndexPage<ApiScimGroup>>("GET /Groups") {
        let _groups: Vec<ScimGroup> = page.resources.into_iter().map(ScimGroup::from).collect();
    }
    if let Ok(user) = reply.json::<ApiScimUser>("GET /Users/{id}") {
        let _ = ScimUser::from(user);
    }
    error_body(data);
}

/// Confluence v1 pages of users and groups, a v2 (cursor) page of users with their status, and
/// a single user.
pub fn confluence_response(data: &[u8]) {
    let reply = reply(data);
    if let Ok(page) = reply.json::<OffsetPage<ApiUser>>("GET /rest/api/group/{groupId}/membersByGroupId") {
        let asked = OffsetPager { start: 0, limit: 200 };
        if let Some(next) = asked.next(page.results.len(), page.limit, page.links.next.is_some()) {
            assert_eq!(next.start, page.results.len() as u64);
        }
        for user in page.results.into_iter().map(User::from) {
            // Hidden emails (null or blank) are never kept.
            assert!(user.email.as_deref().is_none_or(|e| !e.trim().is_empty()));
        }
    }
    if let Ok(page) = reply.json::<OffsetPage<ApiGroup>>("GET /rest/api/group") {
        let _groups: Vec<Group> = page.results.into_iter().map(Group::from).collect();
    }
    if let Ok(page) = reply.json::<CursorPage<ApiUser>>("POST /api/v2/users-bulk") {
        let mut pager = CursorPager::default();
        if let Ok(true) = pager.advance(None, page.links.next.as_deref()) {
            assert!(pager.cursor().is_some_and(|c| !c.is_empty()));
            // The same cursor twice is refused, never followed.
            assert!(pager.advance(None, page.links.next.as_deref()).is_err());
        }
        for user in page.results {
            let _ = parse_status(user.account_status.as_deref());
            let _ = User::from(user);
        }
    }
    if let Ok(user) = reply.json::<ApiUser>("GET /rest/api/user") {
        let _ = User::from(user);
    }
    error_body(data);
}

/// A page of the organization events-stream, read as the poller reads it.
pub fn events_stream_response(data: &[u8]) {
    let Ok(page) = reply(data).json::<ApiPage>("GET /admin/v1/orgs/{orgId}/events-stream") else {
        return;
    };
    let meta_next = page.meta.next.clone();
    let total = page.data.len();
    let events = admin::events_page_from(page);
    // Every event is either read or skipped: none is lost silently.
    assert_eq!(events.events.len() + events.skipped.len(), total);
    if let Some(next) = meta_next {
        assert_eq!(events.next.as_ref().map(|c| c.as_str()), Some(next.as_str()));
    }
    let actions = ActionMap::new(&Default::default());
    for event in &events.events {
        let _ = actions.type_for(&event.action);
        let _ = event.subject("users");
        let _ = event.subject("groups");
    }
}

/// An error answer's body, classified as the clients classify it.
fn error_body(body: &[u8]) {
    for status in [400, 401, 404, 409, 429, 500] {
        let error = ApiError::from_answer("GET /fuzz", status, body, None, None);
        assert_eq!(error.status(), Some(status));
        let _ = error.kind();
        let _ = error.is_transient();
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &[u8]) {
    if !value.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(value)
    {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// `Retry-After \n X-RateLimit-Reset \n RateLimit-Reason \n X-RateLimit-Remaining \n Link \n
/// status \n body`: an answer's rate-limit headers applied to a limiter as the caller applies
/// them, its `Link` header followed as a pager follows it, its body read as an error.
pub fn answer_headers_and_errors(data: &[u8]) {
    let [retry_after, reset, reason, remaining, link, status, body] = fields::<7>(data);
    let mut headers = HeaderMap::new();
    insert(&mut headers, "retry-after", retry_after);
    insert(&mut headers, "x-ratelimit-reset", reset);
    insert(&mut headers, "ratelimit-reason", reason);
    insert(&mut headers, "x-ratelimit-remaining", remaining);
    insert(&mut headers, "x-ratelimit-limit", b"100");
    insert(&mut headers, "link", link);
    let now = Utc.timestamp_opt(1_790_000_000, 0).single().unwrap_or_default();
    let _ = parse_retry_after(&text(retry_after), now);
    let signals = RateLimitSignals::from_headers(&headers, now);

    // What the caller does with a 429 and with a success (src/atlassian/http.rs).
    let mut limiter = LimiterState::new(RateLimitSettings::default());
    let key = LimitKey {
        site: Arc::from("fuzz"),
        tenant: Arc::from("fuzz:confluence"),
        endpoint: "GET /rest/api/user",
        read: true,
    };
    let backoff =
        RetryBackoff::new(Duration::from_secs(1), Duration::from_secs(60)).with_jitter(Arc::new(|| 0.5));
    let delay = backoff.delay(1, signals.retry_after);
    let instant = tokio::time::Instant::now();
    if signals.is_quota() {
        let pause = signals
            .reset_in
            .map(|reset| reset + Duration::from_millis(100))
            .unwrap_or(delay)
            .max(delay);
        limiter.pause_tenant(&key.tenant, instant + pause);
    } else {
        let _ = limiter.refused(&key, instant, signals.retry_after, delay);
    }
    let _ = limiter.observe(&key, &signals, instant);
    let _ = limiter.try_acquire(&key, instant);

    let link = text(link);
    if let Some(target) = next_link(&link) {
        assert!(link.contains(target));
        let _ = cursor_of(target);
    }
    let mut pager = CursorPager::default();
    let _ = pager.advance(Some(&link), None);

    let status = std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(500);
    let error = ApiError::from_answer("GET /fuzz", status, body, None, signals.retry_after);
    assert!(
        error.message().chars().count() <= 1_000,
        "{}",
        error.message().len()
    );
}
