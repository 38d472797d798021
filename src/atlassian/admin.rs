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
    /// What is wrong with it, in words of our own: never a value the event holds.
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

/// Reads an event, leniently where a field only adds detail: a time in another format is read
/// as well as it can be (or left out: the envelope then takes the time it was read), an actor
/// or a context item about something else whose id cannot be read is left out, and a numeric
/// one is read as text. An event is unreadable only when what it means cannot be read: its id,
/// its action, or the user it is about (a `users` item without an id as text): acting on a
/// deactivation about nobody, or the wrong event, would be worse than skipping it, which is
/// counted and logged.
fn parse_event(raw: Value) -> Result<OrgEvent, String> {
    let id = match raw.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err("its id is not a string".to_owned()),
        None => return Err("it has no id".to_owned()),
    };
    let attributes = match raw.get("attributes") {
        Some(Value::Object(attributes)) => attributes,
        None | Some(Value::Null) => return Err("it has no attributes".to_owned()),
        Some(_) => return Err("its attributes are not an object".to_owned()),
    };
    let action = match attributes.get("action") {
        Some(Value::String(action)) => action.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err("its action is not a string".to_owned()),
    };
    let time = attributes
        .get("time")
        .and_then(Value::as_str)
        .and_then(event_time);
    let actor_id = attributes
        .get("actor")
        .and_then(|actor| actor.get("id"))
        .and_then(id_text);
    let context = match attributes.get("context") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut context = Vec::with_capacity(items.len());
            for item in items {
                let kind = item.get("type").and_then(Value::as_str);
                // The user an event is about must be named as Atlassian names accounts, by
                // text: a number is none (an account id is too long to be one).
                let id = match (kind, item.get("id")) {
                    (Some("users"), Some(Value::String(id))) => Some(id.clone()),
                    (Some("users"), _) => {
                        return Err("a `users` context item has no id that is text".to_owned());
                    }
                    (_, Some(id)) => id_text(id),
                    (_, None) => None,
                };
                if let (Some(kind), Some(id)) = (kind, id) {
                    context.push(EventContext {
                        kind: kind.to_owned(),
                        id,
                        attributes: item.get("attributes").cloned().unwrap_or(Value::Null),
                    });
                }
            }
            context
        }
        Some(_) => return Err("its context is not a list".to_owned()),
    };
    Ok(OrgEvent {
        id,
        action,
        time,
        actor_id,
        context,
        raw,
    })
}

/// An id given as text or as a number.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// An event's time: RFC 3339, or the `+0000` offset other Atlassian APIs write.
fn event_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// An event's id as a log line may show it, when it has one.
fn shown_id(raw: &Value) -> Option<String> {
    raw.get("id")
        .and_then(id_text)
        .map(|id| id.chars().take(MAX_SHOWN_ID).collect())
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
            // A user named by a number.
            serde_json::json!({"id": "e-num", "attributes": {"action": "user_deactivated",
                "context": [{"type": "users", "id": 12345}]}}),
            // An action that is not text.
            serde_json::json!({"id": "e-action", "attributes": {"action": 7}}),
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
        assert_eq!(ids(broken[6].clone()), None);
        let long = "x".repeat(1_000);
        assert_eq!(
            ids(serde_json::json!({"id": long})).map(|id| id.len()),
            Some(MAX_SHOWN_ID)
        );
    }

    /// What only adds detail does not cost the event: it is read without it.
    #[test]
    fn an_event_is_read_without_the_details_it_cannot_read() {
        let event = parse_event(serde_json::json!({
            "id": "e-1",
            "attributes": {
                "action": "user_deactivated", "time": "15/12/2022 00:35",
                "actor": {"id": {"nested": true}},
                "context": [
                    {"type": "users", "id": "acc-1"},
                    {"type": "groups", "id": 12345},
                    {"type": "groups", "attributes": {"name": "no id"}},
                    {"id": "no-type"},
                ],
            }
        }))
        .unwrap();
        assert_eq!(event.time, None);
        assert_eq!(event.actor_id, None);
        assert_eq!(event.subject("users").map(|u| u.id.as_str()), Some("acc-1"));
        assert_eq!(event.subject("groups").map(|g| g.id.as_str()), Some("12345"));
        assert_eq!(event.context.len(), 2);
        let other_offset = parse_event(serde_json::json!({
            "id": "e-2",
            "attributes": {"action": "user_deactivated", "time": "2022-12-15T00:35:15.890+0000",
                "actor": {"id": 99}}
        }))
        .unwrap();
        assert_eq!(
            other_offset.time.map(|t| t.to_rfc3339()),
            Some("2022-12-15T00:35:15.890+00:00".to_owned())
        );
        assert_eq!(other_offset.actor_id.as_deref(), Some("99"));
    }
}
