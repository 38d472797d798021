//! Turning a verified delivery into an [`Envelope`]: which event it is, whom it is about, and the
//! key that identifies the fact across copies.
//!
//! Senders disagree on shape (atlassian.md §2), so the event name is taken, in order, from the
//! URL (`/webhooks/{source}/{event}`, the reliable way for Connect), a Standard Webhooks relay's
//! `type`, a Forge `eventType`, a Data Center `event`, and finally the entity key alone
//! (`other.user`). Whatever gatehouse cannot name becomes `other.<name>` and is still queued. The
//! payload is carried byte for byte.

use axum::http::HeaderMap;
use chrono::{DateTime, TimeZone, Utc};
use handlers::{Envelope, EventType, GroupRef};
use ring::digest;
use serde_json::Value;
use serde_json::value::RawValue;

use super::verify::{Verified, header};
use crate::config::SourceSettings;

/// A delivery id longer than this (or with odd characters) is replaced by its digest, so the key
/// fits an AMQP `message_id` and cannot smuggle anything into logs.
const MAX_KEY_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("{0}")]
    Invalid(String),
}

/// The dedupe key: the sender's delivery id where it gives one that is stable across retries,
/// else a digest of the source and the exact body.
pub fn dedupe_key(source: &str, headers: &HeaderMap, body: &[u8]) -> String {
    let delivery_id = header(headers, "x-atlassian-webhook-identifier")
        .or_else(|| header(headers, "webhook-id"))
        .or_else(|| header(headers, "svix-id"));
    match delivery_id {
        Some(id) if id.len() <= MAX_KEY_LEN && id.bytes().all(|b| b.is_ascii_graphic()) => id.to_owned(),
        Some(id) => format!("sha256:{}", sha256_hex(&[id.as_bytes()])),
        None => format!("sha256:{}", sha256_hex(&[source.as_bytes(), b"\n", body])),
    }
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    hex::encode(ctx.finish())
}

/// Builds the envelope for a verified delivery.
pub fn normalize(
    source: &SourceSettings,
    event_hint: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    verified: &Verified,
) -> Result<Envelope, NormalizeError> {
    let text =
        std::str::from_utf8(body).map_err(|e| NormalizeError::Invalid(format!("body is not UTF-8: {e}")))?;
    let raw = RawValue::from_string(text.to_owned()).map_err(NormalizeError::NotJson)?;
    let value: Value = serde_json::from_str(text).map_err(NormalizeError::NotJson)?;
    let object = value.as_object().ok_or(NormalizeError::NotAnObject)?;

    let relay = is_relay(object);
    let event_type = match event_hint {
        Some(hint) => from_event_name(hint),
        None => detect(object, relay)?,
    };
    let event_type = if event_type.is_internal() {
        EventType::other(&event_type.as_str())
    } else {
        event_type
    };
    let mut envelope = Envelope::new(
        event_type,
        source.name.clone(),
        source.scheme.envelope_scheme(),
        dedupe_key(&source.name, headers, body),
        raw,
    );
    if let Some(at) = occurred_at(object) {
        envelope.occurred_at = at;
    }
    // A relay's `data` is the subject; Atlassian payloads name it by entity key.
    let subject_source = if relay {
        object.get("data").and_then(Value::as_object).unwrap_or(object)
    } else {
        object
    };
    fill_subject(&mut envelope, subject_source);
    envelope.actor.account_id = str_field(object, "userAccountId")
        .or_else(|| {
            object
                .get("actor")
                .and_then(|a| a.get("account_id").or_else(|| a.get("accountId")))
                .and_then(Value::as_str)
        })
        .map(str::to_owned);
    envelope.tenant.client_key = verified.client_key.clone();
    envelope.tenant.cloud_id = verified
        .cloud_id
        .clone()
        .or_else(|| str_field(object, "cloudId").map(str::to_owned));
    envelope.delivery.id = header(headers, "x-atlassian-webhook-identifier")
        .or_else(|| header(headers, "webhook-id"))
        .or_else(|| header(headers, "svix-id"))
        .filter(|id| id.len() <= MAX_KEY_LEN)
        .map(str::to_owned);
    envelope.delivery.retry = header(headers, "x-atlassian-webhook-retry").and_then(|r| r.parse().ok());
    envelope.delivery.key_id = Some(verified.key_id.clone());
    Ok(envelope)
}

/// The Standard Webhooks convention: `{"type": "...", "timestamp": ..., "data": {...}}`.
fn is_relay(object: &serde_json::Map<String, Value>) -> bool {
    object.get("type").is_some_and(Value::is_string) && object.get("data").is_some_and(Value::is_object)
}

fn detect(object: &serde_json::Map<String, Value>, relay: bool) -> Result<EventType, NormalizeError> {
    if relay {
        let name = str_field(object, "type").unwrap_or_default();
        // A relay speaks gatehouse's vocabulary; a name outside it is kept as `other.*` rather
        // than refused, so a newer relay does not lose events on an older gatehouse.
        return Ok(name.parse().unwrap_or_else(|_| EventType::other(name)));
    }
    if let Some(forge) = str_field(object, "eventType") {
        return Ok(from_forge(forge));
    }
    if let Some(name) = str_field(object, "event").or_else(|| str_field(object, "webhookEvent")) {
        return Ok(from_event_name(name));
    }
    for entity in ["user", "group"] {
        if object.get(entity).is_some_and(Value::is_object) {
            return Ok(EventType::other(entity));
        }
    }
    Ok(EventType::other("unknown"))
}

/// Connect / Data Center event names (`user_deactivated`), and gatehouse's own dotted names.
pub fn from_event_name(name: &str) -> EventType {
    if let Ok(known) = name.parse::<EventType>() {
        return known;
    }
    match name {
        "user_created" => EventType::UserCreated,
        "user_deactivated" => EventType::UserDeactivated,
        "user_reactivated" => EventType::UserReactivated,
        "user_removed" | "user_deleted" => EventType::UserRemoved,
        "group_created" => EventType::GroupCreated,
        "group_removed" | "group_deleted" => EventType::GroupRemoved,
        other => EventType::other(other),
    }
}

/// Forge names: `avi:confluence:created:user` and friends.
fn from_forge(name: &str) -> EventType {
    let parts: Vec<&str> = name.split(':').collect();
    match parts.as_slice() {
        [_, _, "created", "user"] => EventType::UserCreated,
        [_, _, "deactivated", "user"] => EventType::UserDeactivated,
        [_, _, "reactivated", "user"] => EventType::UserReactivated,
        [_, _, "deleted" | "removed", "user"] => EventType::UserRemoved,
        [_, _, "created", "group"] => EventType::GroupCreated,
        [_, _, "deleted" | "removed", "group"] => EventType::GroupRemoved,
        [_, _, verb, entity] => EventType::other(&format!("{verb}_{entity}")),
        _ => EventType::other(name),
    }
}

fn occurred_at(object: &serde_json::Map<String, Value>) -> Option<DateTime<Utc>> {
    let candidate = object
        .get("timestamp")
        .or_else(|| object.get("eventCreatedDate"))?;
    match candidate {
        // Connect: epoch milliseconds.
        Value::Number(n) => n.as_i64().and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}

fn fill_subject(envelope: &mut Envelope, object: &serde_json::Map<String, Value>) {
    let user = object.get("user").and_then(Value::as_object);
    let account_id = user
        .and_then(|u| str_field(u, "accountId").or_else(|| str_field(u, "account_id")))
        .or_else(|| str_field(object, "account_id"))
        .or_else(|| str_field(object, "accountId"));
    let email = user
        .and_then(|u| str_field(u, "email"))
        .or_else(|| str_field(object, "email"));
    envelope.subject.account_id = account_id.map(str::to_owned);
    envelope.subject.email = email.map(str::to_owned);
    if let Some(group) = object.get("group").and_then(Value::as_object) {
        let group = GroupRef {
            id: str_field(group, "id")
                .or_else(|| str_field(group, "groupId"))
                .map(str::to_owned),
            name: str_field(group, "name").map(str::to_owned),
        };
        if !group.is_empty() {
            envelope.subject.group = Some(group);
        }
    }
}

fn str_field<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use handlers::Scheme;

    use super::*;
    use crate::config::VerificationScheme;

    fn source() -> SourceSettings {
        SourceSettings {
            name: "confluence".into(),
            scheme: VerificationScheme::HubSignature,
            kind: None,
            secrets: vec![],
            tolerance_seconds: 300,
            token_header: "x".into(),
        }
    }

    fn run(hint: Option<&str>, body: &str) -> Envelope {
        normalize(
            &source(),
            hint,
            &HeaderMap::new(),
            body.as_bytes(),
            &Verified::by_secret("k1"),
        )
        .unwrap()
    }

    #[test]
    fn connect_user_event_by_url() {
        let body = r#"{"timestamp":1718000000000,"userAccountId":"admin-1","user":{"accountId":"5b10","accountType":"atlassian","displayName":"Ann","email":null}}"#;
        let e = run(Some("user_deactivated"), body);
        assert_eq!(e.event_type, EventType::UserDeactivated);
        assert_eq!(e.subject.account_id.as_deref(), Some("5b10"));
        assert_eq!(e.subject.email, None);
        assert_eq!(e.actor.account_id.as_deref(), Some("admin-1"));
        assert_eq!(e.occurred_at.timestamp_millis(), 1_718_000_000_000);
        assert_eq!(e.scheme, Scheme::HubSignature);
        assert_eq!(e.delivery.key_id.as_deref(), Some("k1"));
        assert_eq!(e.payload.get(), body);
        assert!(e.dedupe_key.starts_with("sha256:"));
    }

    #[test]
    fn forge_data_center_relay_and_unknown() {
        let forge = run(
            None,
            r#"{"eventType":"avi:confluence:deleted:group","eventCreatedDate":"2021-01-20T06:29:21.970Z","group":{"id":"ab1a","name":"example-group"}}"#,
        );
        assert_eq!(forge.event_type, EventType::GroupRemoved);
        assert_eq!(
            forge.subject.group,
            Some(GroupRef {
                id: Some("ab1a".into()),
                name: Some("example-group".into())
            })
        );
        let dc = run(
            None,
            r#"{"event":"user_created","timestamp":1,"user":{"userKey":"k"}}"#,
        );
        assert_eq!(dc.event_type, EventType::UserCreated);
        let relay = run(
            None,
            r#"{"type":"user.deactivated","timestamp":"2026-11-29T10:00:00Z","data":{"account_id":"acc-9","email":"a@b.c"}}"#,
        );
        assert_eq!(relay.event_type, EventType::UserDeactivated);
        assert_eq!(relay.subject.account_id.as_deref(), Some("acc-9"));
        assert_eq!(relay.occurred_at.to_rfc3339(), "2026-11-29T10:00:00+00:00");
        assert_eq!(
            run(None, r#"{"page":{"id":1}}"#).event_type,
            EventType::other("unknown")
        );
        assert_eq!(
            run(None, r#"{"user":{"accountId":"x"}}"#).event_type,
            EventType::other("user")
        );
        assert_eq!(
            run(Some("page_created"), "{}").event_type,
            EventType::other("page_created")
        );
    }

    #[test]
    fn a_sender_cannot_name_a_type_only_gatehouse_publishes() {
        let approval = run(
            None,
            r#"{"type":"approval.granted","timestamp":1,"data":{"approval_id":"01J"}}"#,
        );
        assert_eq!(approval.event_type.as_str(), "other.approval_granted");
        assert_eq!(
            run(Some("policy.violation"), "{}").event_type.as_str(),
            "other.policy_violation"
        );
    }

    #[test]
    fn refuses_non_objects_and_bounds_keys() {
        assert!(
            normalize(
                &source(),
                None,
                &HeaderMap::new(),
                b"[1]",
                &Verified::by_secret("k")
            )
            .is_err()
        );
        assert!(
            normalize(
                &source(),
                None,
                &HeaderMap::new(),
                b"{",
                &Verified::by_secret("k")
            )
            .is_err()
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-atlassian-webhook-identifier", "x".repeat(300).parse().unwrap());
        assert!(dedupe_key("s", &headers, b"{}").starts_with("sha256:"));
        headers.insert("x-atlassian-webhook-identifier", "abc-123".parse().unwrap());
        assert_eq!(dedupe_key("s", &headers, b"{}"), "abc-123");
        assert_ne!(
            dedupe_key("a", &HeaderMap::new(), b"{}"),
            dedupe_key("b", &HeaderMap::new(), b"{}")
        );
    }
}
