//! The organization APIs: the events-stream (user deactivated, added to a group, … — Atlassian
//! has no webhook for these, so gatehouse polls) and user-management lifecycle
//! (`disable`/`enable` of managed accounts).
//!
//! The events-stream cursor is a position in the stream, not the end of a listing: it keeps
//! working past the last page, so a poller stores [`EventsPage::next`] and asks again later.
//! One call fetches one page ([`AdminClient::events_page`]); the poller decides the cadence.
//!
//! Action names (`user_deactivated`, …) are not confirmed by Atlassian: [`OrgEvent`] carries
//! the raw action and the raw event, and the poller maps actions through config.

use chrono::{DateTime, Utc};
use handlers::identifier::IdKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::error::ApiError;
use super::http::{ApiCaller, Call, CallBody, Endpoint, Receipt, Verb, checked_id, url_with};

/// Tried once per call: the poller counts every request against Atlassian's 10 a minute, and
/// comes back next round.
const EVENTS_STREAM: Endpoint =
    Endpoint::new(Verb::Get, "GET /admin/v1/orgs/{orgId}/events-stream", true).once();
/// Disabling a disabled account changes nothing.
const DISABLE: Endpoint = Endpoint::new(
    Verb::Post,
    "POST /users/{accountId}/manage/lifecycle/disable",
    true,
);
const ENABLE: Endpoint = Endpoint::new(
    Verb::Post,
    "POST /users/{accountId}/manage/lifecycle/enable",
    true,
);

/// This client's endpoints (held to `config::ATLASSIAN_ENDPOINT_LABELS` by a test).
#[cfg(test)]
pub(super) const ENDPOINTS: [Endpoint; 3] = [EVENTS_STREAM, DISABLE, ENABLE];

/// A position in the events-stream; opaque, to be stored and given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventsCursor(pub String);

impl EventsCursor {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Filters for a page of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Page size; Atlassian caps it.
    pub limit: Option<u32>,
}

/// Something an event is about (`users`, `groups`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventContext {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub attributes: Value,
}

/// One organization event.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgEvent {
    pub id: String,
    /// e.g. `user_deactivated` (unconfirmed names: map them in config).
    pub action: String,
    pub time: Option<DateTime<Utc>>,
    pub actor_id: Option<String>,
    pub context: Vec<EventContext>,
    /// The event as Atlassian sent it, for the envelope's payload.
    pub raw: Value,
}

impl OrgEvent {
    /// The first context item of a kind, e.g. `users` for the account the event is about.
    pub fn subject(&self, kind: &str) -> Option<&EventContext> {
        self.context.iter().find(|c| c.kind == kind)
    }
}

/// A page of events.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsPage {
    pub events: Vec<OrgEvent>,
    /// Events of the page that cannot be read as the documented shape. They are left out rather
    /// than failing the page: the cursor can only move past a whole page, so one unreadable
    /// event would otherwise hold back every later event of the stream, for good.
    pub skipped: Vec<SkippedEvent>,
    /// Where to continue; keeps working past the end (poll it later). `None` only when Atlassian
    /// sent no cursor at all.
    pub next: Option<EventsCursor>,
}

/// An event of a page that could not be read. Names it without repeating what it says (an
/// event's attributes name people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEvent {
    /// Its id, when it has one (a number is shown as one; cut to 64 characters).
    pub id: Option<String>,
    /// Where it was in the page (0 for the first).
    pub position: usize,
    /// What is wrong with it, with any string it quotes replaced by `"…"`.
    pub reason: String,
}

/// Longest piece of an unreadable event's id repeated in logs: a real id is a UUID; anything
/// longer is not one and need not be logged whole.
const MAX_SHOWN_ID: usize = 64;

#[derive(Debug, Deserialize)]
pub(crate) struct ApiPage {
    #[serde(default)]
    pub(crate) data: Vec<Value>,
    #[serde(default)]
    pub(crate) meta: ApiMeta,
    #[serde(default)]
    links: ApiLinks,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ApiMeta {
    #[serde(default)]
    pub(crate) next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ApiLinks {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiAttributes {
    #[serde(default)]
    action: String,
    #[serde(default)]
    time: Option<DateTime<Utc>>,
    #[serde(default)]
    actor: Option<ApiActor>,
    #[serde(default)]
    context: Vec<EventContext>,
}

#[derive(Debug, Deserialize)]
struct ApiActor {
    #[serde(default)]
    id: Option<String>,
}

fn parse_event(raw: Value) -> Result<OrgEvent, String> {
    let id = match raw.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err("its id is not a string".to_owned()),
        None => return Err("it has no id".to_owned()),
    };
    let attributes: ApiAttributes =
        serde_json::from_value(raw.get("attributes").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("its attributes: {}", without_strings(&e.to_string())))?;
    Ok(OrgEvent {
        id,
        action: attributes.action,
        time: attributes.time,
        actor_id: attributes.actor.and_then(|a| a.id),
        context: attributes.context,
        raw,
    })
}

/// `text` with every double-quoted string in it replaced by `"…"`: serde quotes the value it
/// did not expect (`invalid type: string "ann@example.com", expected …`), and what an event
/// holds may name a person, which a log line about it must not.
fn without_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"…\"");
        // Serde writes strings as Rust debug strings: a quote inside one is escaped.
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
    out
}

/// An event's id as a log line may show it, when it has one.
fn shown_id(raw: &Value) -> Option<String> {
    match raw.get("id") {
        Some(Value::String(id)) => Some(id.chars().take(MAX_SHOWN_ID).collect()),
        Some(Value::Number(id)) => Some(id.to_string()),
        _ => None,
    }
}

/// The events and the cursor of a page as Atlassian sent it. Each event is read on its own: one
/// that cannot be read is set aside in [`EventsPage::skipped`], and the others and the cursor
/// are kept.
pub(crate) fn events_page_from(page: ApiPage) -> EventsPage {
    let mut events = Vec::with_capacity(page.data.len());
    let mut skipped = Vec::new();
    for (position, raw) in page.data.into_iter().enumerate() {
        let id = shown_id(&raw);
        match parse_event(raw) {
            Ok(event) => events.push(event),
            Err(reason) => skipped.push(SkippedEvent { id, position, reason }),
        }
    }
    let next = page
        .meta
        .next
        .or_else(|| page.links.next.as_deref().and_then(super::pagination::cursor_of))
        .map(EventsCursor);
    EventsPage {
        events,
        skipped,
        next,
    }
}

/// Organization API calls; cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminClient {
    caller: ApiCaller,
    /// `https://api.atlassian.com` (or the simulator).
    base: Url,
    org_id: Option<String>,
}

impl AdminClient {
    pub fn new(caller: ApiCaller, base: Url, org_id: Option<String>) -> Self {
        AdminClient { caller, base, org_id }
    }

    /// One page of organization events after `cursor` (from the start of the retained stream
    /// when `None`).
    pub async fn events_page(
        &self,
        cursor: Option<&EventsCursor>,
        query: &EventsQuery,
    ) -> Result<EventsPage, ApiError> {
        let org_id = self.org_id.as_deref().ok_or_else(|| {
            ApiError::invalid(
                EVENTS_STREAM.label,
                "atlassian.org_id is not set: no events-stream to read",
            )
        })?;
        let mut call = Call::new(
            EVENTS_STREAM,
            url_with(&self.base, &["admin", "v1", "orgs", org_id, "events-stream"]),
        );
        if let Some(cursor) = cursor {
            call = call.query("cursor", cursor.as_str());
        }
        if let Some(from) = query.from {
            call = call.query("from", from.timestamp_millis().to_string());
        }
        if let Some(to) = query.to {
            call = call.query("to", to.timestamp_millis().to_string());
        }
        if let Some(limit) = query.limit {
            call = call.query("limit", limit.to_string());
        }
        // Only an unreadable envelope fails the page; an unreadable event is skipped (see
        // `EventsPage::skipped`).
        let page: ApiPage = self.caller.send(&call).await?.json(EVENTS_STREAM.label)?;
        Ok(events_page_from(page))
    }

    /// Deactivates a managed account (every product, organization-wide). `message` is shown to
    /// the user by Atlassian.
    pub async fn lifecycle_disable(
        &self,
        account_id: &str,
        message: Option<&str>,
    ) -> Result<Receipt, ApiError> {
        let account_id = checked_id(DISABLE, IdKind::Account, account_id)?;
        let url = url_with(
            &self.base,
            &["users", account_id, "manage", "lifecycle", "disable"],
        );
        let mut call = Call::new(DISABLE, url);
        if let Some(message) = message {
            call = call.body(CallBody::Json(json!({ "message": message })));
        }
        Ok(Receipt::from(&self.caller.send(&call).await?))
    }

    /// Reactivates a managed account.
    pub async fn lifecycle_enable(&self, account_id: &str) -> Result<Receipt, ApiError> {
        let account_id = checked_id(ENABLE, IdKind::Account, account_id)?;
        let url = url_with(
            &self.base,
            &["users", account_id, "manage", "lifecycle", "enable"],
        );
        Ok(Receipt::from(&self.caller.send(&Call::new(ENABLE, url)).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_from_the_documented_shape() {
        let raw = serde_json::json!({
            "id": "e-1", "type": "events",
            "attributes": {
                "time": "2022-12-15T00:35:15.890Z", "action": "user_deactivated",
                "actor": {"id": "admin-1", "name": "Admin", "email": null},
                "context": [{"type": "users", "id": "acc-1", "attributes": {"email": null}}],
                "location": {"ip": "1.2.3.4"}
            },
            "message": {"content": "x", "format": "simple"}
        });
        let event = parse_event(raw.clone()).unwrap();
        assert_eq!(event.action, "user_deactivated");
        assert_eq!(event.actor_id.as_deref(), Some("admin-1"));
        assert_eq!(event.subject("users").map(|c| c.id.as_str()), Some("acc-1"));
        assert!(event.time.is_some());
        assert_eq!(event.raw, raw);
        assert!(parse_event(serde_json::json!({"attributes": {}})).is_err());
    }

    fn good(id: &str, account: &str) -> Value {
        serde_json::json!({
            "id": id, "type": "events",
            "attributes": {
                "time": "2022-12-15T00:35:15.890Z", "action": "user_deactivated",
                "context": [{"type": "users", "id": account}]
            }
        })
    }

    /// Each way an event can be unreadable costs that event only: the page's other events and
    /// its cursor are kept, and the skipped event is named without what it says.
    #[test]
    fn an_unreadable_event_is_skipped_and_the_rest_of_the_page_kept() {
        let broken = [
            // A context item without an id.
            serde_json::json!({"id": "e-ctx", "attributes": {"action": "user_deactivated",
                "context": [{"type": "users", "attributes": {"email": "ann@example.com"}}]}}),
            // A numeric id.
            serde_json::json!({"id": 42, "attributes": {"action": "user_deactivated"}}),
            // A time in another format.
            serde_json::json!({"id": "e-time", "attributes": {"action": "user_deactivated",
                "time": "15/12/2022 00:35"}}),
            // No attributes at all.
            serde_json::json!({"id": "e-bare", "type": "events"}),
            // A context that is not a list: serde's message quotes the string it found.
            serde_json::json!({"id": "e-email", "attributes": {"context": "ann@example.com"}}),
            // Not an event.
            serde_json::json!("ann@example.com"),
        ];
        for (n, bad) in broken.iter().enumerate() {
            let page: ApiPage = serde_json::from_value(serde_json::json!({
                "data": [good("e-1", "acc-1"), bad, good("e-2", "acc-2")],
                "meta": {"next": "c-2"},
            }))
            .unwrap();
            let page = events_page_from(page);
            let read: Vec<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(read, ["e-1", "e-2"], "case {n}");
            assert_eq!(page.next, Some(EventsCursor("c-2".into())), "case {n}");
            assert_eq!(page.skipped.len(), 1, "case {n}");
            let skipped = &page.skipped[0];
            assert_eq!(skipped.position, 1, "case {n}");
            assert!(!skipped.reason.is_empty(), "case {n}");
            assert!(!skipped.reason.contains("ann@"), "case {n}: {}", skipped.reason);
        }
        let ids = |bad: Value| {
            let page: ApiPage = serde_json::from_value(serde_json::json!({"data": [bad]})).unwrap();
            events_page_from(page).skipped[0].id.clone()
        };
        assert_eq!(ids(broken[0].clone()).as_deref(), Some("e-ctx"));
        assert_eq!(ids(broken[1].clone()).as_deref(), Some("42"));
        assert_eq!(ids(broken[5].clone()), None);
        let long = "x".repeat(1_000);
        assert_eq!(
            ids(serde_json::json!({"id": long})).map(|id| id.len()),
            Some(MAX_SHOWN_ID)
        );
    }

    #[test]
    fn quoted_strings_are_left_out_of_reasons() {
        assert_eq!(
            without_strings(r#"invalid type: string "ann@example.com", expected a sequence"#),
            r#"invalid type: string "…", expected a sequence"#
        );
        assert_eq!(
            without_strings(r#"string "a \"quoted\" b" and "c""#),
            r#"string "…" and "…""#
        );
        assert_eq!(without_strings("missing field `id`"), "missing field `id`");
    }
}
