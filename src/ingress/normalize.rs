//! Turning a verified delivery into an [`Envelope`]: which event it is, whom it is about, and the
//! key that identifies the fact across copies.
//!
//! **Only signed bytes decide the event.** Senders disagree on shape (docs/atlassian.md), so the
//! body's own type is read, in order, from a Standard Webhooks relay's `type`, a Forge
//! `eventType`, a Data Center `event` or Jira `webhookEvent`, and finally the entity key alone
//! (`other.user`). Where the scheme does not sign the URL (hub-signature, standard-webhooks,
//! url-token), an `{event}` path segment is only a filter: a body whose own type disagrees is
//! refused ([`NormalizeError::EventMismatch`]), so a captured `user_created` cannot be replayed
//! as `user_removed`. Connect signs the request line (`qsh`) and names its events by URL only, so
//! there the URL decides. Whatever gatehouse cannot name becomes `other.<name>` and is still
//! queued; types only gatehouse publishes are never believed from outside.
//!
//! **Dedupe keys** are `{source}:{id}`: the signed `webhook-id` for Standard Webhooks (an unsigned
//! header never overrides it), the digest of the signed body for hub-signature (its delivery id
//! header is unsigned, and a replay with a fresh one must still be a duplicate), and the
//! `X-Atlassian-Webhook-Identifier` header otherwise (or the body's digest when there is none),
//! which Atlassian keeps unique per site only: for Connect the key also names the installation
//! (`{source}:{client key}:{id}`), so one site cannot claim another's ids.
//!
//! **Bounded work.** The body is read in one pass (`ingress::body_view`) that checks all of it
//! is JSON, refuses nesting deeper than [`MAX_DEPTH`] without recursing, and keeps the fields
//! read as raw slices of the text (no `serde_json::Value` tree): a 1 MiB body costs one pass and
//! little else. The payload is carried byte for byte, written into the message straight from
//! the body.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName};
use chrono::{DateTime, TimeZone, Utc};
use handlers::identifier::{self, BadIdentifier, IdKind};
use handlers::{Envelope, EventType, GroupRef, source_dedupe_key};
use ring::digest;
use serde_json::value::RawValue;

use super::body_view::{Raw, Top, ViewError, unquote};
use super::verify::{Verified, header};
use crate::config::{SourceSettings, VerificationScheme};

/// A delivery id longer than this (or with odd characters) is replaced by its digest, so the key
/// fits an AMQP `message_id` and cannot smuggle anything into logs.
const MAX_KEY_LEN: usize = 128;

// Headers read from every delivery, named once (see `verify::header`).
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const SVIX_ID: HeaderName = HeaderName::from_static("svix-id");
const ATLASSIAN_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-atlassian-webhook-identifier");
const ATLASSIAN_WEBHOOK_RETRY: HeaderName = HeaderName::from_static("x-atlassian-webhook-retry");

/// Numeric timestamps below this are seconds, above it milliseconds (1e11 ms is March 1973;
/// 1e11 s is the year 5138).
const SECONDS_OR_MILLIS: i64 = 100_000_000_000;

/// The deepest nesting of arrays and objects accepted. Atlassian's payloads nest three or four
/// levels; the limit keeps any parser from recursing on a hostile body.
pub const MAX_DEPTH: usize = 32;
const _: () = assert!(MAX_DEPTH <= super::body_view::MAX_NESTING);

#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("body nests arrays and objects deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error(
        "the URL names {url} but the signed body is {body}: this source's scheme does not sign the URL, so the body decides; nothing was queued"
    )]
    EventMismatch { url: EventType, body: EventType },
    #[error("{0}")]
    BadIdentifier(#[from] BadIdentifier),
}

/// A normalized delivery.
#[derive(Debug)]
pub struct Normalized<'a> {
    /// Everything but the payload, whose place holds `null` until the message is written
    /// ([`crate::queue::OutgoingMessage::from_delivery`]): the body was checked to be JSON in
    /// full by the parse that read its fields, and is carried from `payload` as it is.
    pub envelope: Envelope,
    /// The payload: the body, byte for byte, without the whitespace around the JSON value.
    pub payload: &'a str,
    /// The payload's own timestamp, when it has one (replay checks use it).
    pub payload_time: Option<DateTime<Utc>>,
}

/// JSON's whitespace, which is not part of the value it surrounds.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// A field's text when it is a non-empty string, borrowed unless it holds escapes. `raw` is a
/// token the body reader has checked.
fn text(raw: Raw<'_>) -> Option<Cow<'_, str>> {
    let json = raw.filter(|json| json.starts_with('"'))?;
    let value = unquote(json, json.contains('\\'))?;
    (!value.is_empty()).then_some(value)
}

fn is_object(raw: Raw<'_>) -> bool {
    raw.is_some_and(|r| r.starts_with('{'))
}

/// The fields of `text` (a body, or a relay's `data`), or why it cannot be read.
fn read_view(text: &str) -> Result<Top<'_>, NormalizeError> {
    Top::read(text, MAX_DEPTH).map_err(|error| explain(text, error))
}

/// Why [`Top::read`] refused `text`, named as precisely as the separate checks name it: the
/// depth scan first, then serde_json's message (which says where the body stops being JSON).
fn explain(text: &str, error: ViewError) -> NormalizeError {
    use serde::de::Error as _;
    if nests_deeper_than(text.as_bytes(), MAX_DEPTH) {
        return NormalizeError::TooDeep;
    }
    match error {
        ViewError::Duplicate(name) => {
            return NormalizeError::NotJson(serde_json::Error::custom(format!("duplicate field `{name}`")));
        }
        ViewError::KeyNotText => {
            return NormalizeError::NotJson(serde_json::Error::custom(
                "a field name holds an unpaired UTF-16 surrogate escape",
            ));
        }
        ViewError::Invalid | ViewError::TooDeep => {}
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Err(error) => NormalizeError::NotJson(error),
        Ok(_) if !text.trim_start_matches(JSON_WHITESPACE).starts_with('{') => NormalizeError::NotAnObject,
        // The reader refused what serde_json accepts: refused all the same (the tests hold the
        // two to the same answers).
        Ok(_) => NormalizeError::NotJson(serde_json::Error::custom("the body could not be read")),
    }
}

/// True when `body` nests arrays or objects deeper than `max`. One pass, no allocation; strings
/// (and escaped quotes in them) are skipped by jumping from one `"` or `\\` to the next, so a
/// body that is mostly text costs a few vector compares per 16 bytes, not a branch per byte.
pub fn nests_deeper_than(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => match string_end(body, i + 1) {
                Some(after) => {
                    i = after;
                    continue;
                }
                // Unterminated: nothing after it nests; the parser refuses the body.
                None => return false,
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// The index just past the `"` closing the string whose text starts at `from`, if it is closed.
fn string_end(body: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', body.get(from..)?)?;
        if body[at] == b'"' {
            return Some(at + 1);
        }
        // An escape: whatever follows the backslash is part of the string.
        from = at + 2;
    }
}

pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    prefixed_sha256_hex("", parts)
}

/// `prefix` followed by the lowercase hex SHA-256 of `parts`, in one string.
fn prefixed_sha256_hex(prefix: &str, parts: &[&[u8]]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    // By table, not `hex::encode` (a char iterator collected): this runs on every delivery.
    let mut text = String::with_capacity(prefix.len() + 64);
    text.push_str(prefix);
    for byte in ctx.finish().as_ref() {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// The id that identifies a delivery's fact within its source, per the scheme's guarantees.
fn delivery_id(scheme: VerificationScheme, headers: &HeaderMap) -> Option<&str> {
    match scheme {
        // Signed: part of what the signature covers.
        VerificationScheme::StandardWebhooks => {
            header(headers, WEBHOOK_ID).or_else(|| header(headers, SVIX_ID))
        }
        // The body is signed and the header is not: the body's digest is the key.
        VerificationScheme::HubSignature => None,
        VerificationScheme::ConnectJwt | VerificationScheme::UrlToken => {
            header(headers, ATLASSIAN_WEBHOOK_ID)
        }
    }
}

/// The dedupe key of a verified delivery (see the module docs).
pub fn dedupe_key(source: &SourceSettings, headers: &HeaderMap, body: &[u8], verified: &Verified) -> String {
    // The body's own digest, not its HMAC (which the verifier has at hand): the HMAC depends on
    // which of the source's secrets signed it, so a body re-signed during a rotation, and every
    // key the worker stored before, would no longer match.
    let local = match delivery_id(source.scheme, headers) {
        Some(id) if id.len() <= MAX_KEY_LEN && id.bytes().all(|b| b.is_ascii_graphic()) => Cow::Borrowed(id),
        Some(id) => Cow::Owned(prefixed_sha256_hex("sha256:", &[id.as_bytes()])),
        None => Cow::Owned(prefixed_sha256_hex("sha256:", &[body])),
    };
    match &verified.client_key {
        // The installation's client key (verified: the token's issuer), kept short and plain.
        Some(client_key) => {
            let site = if client_key.len() <= 64 && client_key.bytes().all(|b| b.is_ascii_graphic()) {
                client_key.clone()
            } else {
                sha256_hex(&[client_key.as_bytes()])
            };
            source_dedupe_key(&source.name, &format!("{site}:{local}"))
        }
        None => source_dedupe_key(&source.name, &local),
    }
}

/// Builds the envelope for a verified delivery. `event_hint` is the URL's `{event}` segment.
pub fn normalize<'a>(
    source: &SourceSettings,
    event_hint: Option<&str>,
    headers: &HeaderMap,
    body: &'a [u8],
    verified: Verified,
) -> Result<Normalized<'a>, NormalizeError> {
    let text_body = std::str::from_utf8(body).map_err(|_| NormalizeError::NotUtf8)?;
    // One pass checks the whole body is JSON (so it is carried without a second check) and
    // finds the fields read below.
    let mut top = read_view(text_body)?;

    let relay = text(top.kind).is_some() && is_object(top.data);
    let from_body = body_type(&top, relay);
    let event_type = match event_hint {
        Some(hint) if source.scheme.signs_path() => from_event_name(hint),
        Some(hint) => {
            let url = from_event_name(hint);
            if url != from_body {
                return Err(NormalizeError::EventMismatch { url, body: from_body });
            }
            from_body
        }
        None => from_body,
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
        dedupe_key(source, headers, body, &verified),
        RawValue::NULL.to_owned(),
    );
    envelope.authority = source.authority;
    let payload_time = occurred_at(&top);
    if let Some(at) = payload_time {
        envelope.occurred_at = at;
    }
    // A relay's `data` names the subject; Atlassian payloads name it at the top.
    if relay {
        fill_subject(&mut envelope, &mut read_view(top.data.unwrap_or_default())?)?;
    } else {
        fill_subject(&mut envelope, &mut top)?;
    }
    let actor = match text(top.user_account_id) {
        Some(id) => Some(id),
        None => {
            let actor = top.actor.take().unwrap_or_default();
            text(actor.account_id).or_else(|| text(actor.account_id_camel))
        }
    };
    // Who did it is informational (never trusted for a decision unless signed): a malformed
    // actor is dropped rather than costing the whole delivery.
    envelope.actor.account_id = actor.and_then(|id| match identifier::check(IdKind::Account, &id) {
        Ok(id) => Some(id.to_owned()),
        Err(error) => {
            tracing::warn!(%error, "actor dropped from the event");
            None
        }
    });
    // Moved, not copied: what verification proved is the envelope's from here on.
    envelope.tenant.name = verified.tenant;
    envelope.tenant.client_key = verified.client_key;
    envelope.tenant.cloud_id = verified
        .cloud_id
        .or_else(|| text(top.cloud_id).map(Cow::into_owned));
    envelope.delivery.id = delivery_id(source.scheme, headers)
        .or_else(|| header(headers, ATLASSIAN_WEBHOOK_ID))
        .filter(|id| id.len() <= MAX_KEY_LEN && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned);
    envelope.delivery.retry = header(headers, ATLASSIAN_WEBHOOK_RETRY).and_then(|r| r.parse().ok());
    envelope.delivery.key_id = Some(verified.key_id);
    Ok(Normalized {
        envelope,
        payload: text_body.trim_matches(JSON_WHITESPACE),
        payload_time,
    })
}

/// The type the body itself names (see the module docs for the order).
fn body_type(top: &Top<'_>, relay: bool) -> EventType {
    if relay && let Some(name) = text(top.kind) {
        // A relay speaks gatehouse's vocabulary; a name outside it is kept as `other.*` rather
        // than refused, so a newer relay does not lose events on an older gatehouse.
        return name.parse().unwrap_or_else(|_| EventType::other(&name));
    }
    if let Some(forge) = text(top.forge_event) {
        return from_forge(&forge);
    }
    if let Some(name) = text(top.event).or_else(|| text(top.webhook_event)) {
        return from_event_name(&name);
    }
    // Otherwise only the entity key says what it is about.
    if top.user.is_some() {
        return EventType::other("user");
    }
    if top.group.is_some() {
        return EventType::other("group");
    }
    EventType::other("unknown")
}

/// Connect / Data Center event names (`user_deactivated`), and gatehouse's own dotted names.
pub fn from_event_name(name: &str) -> EventType {
    if let Some(known) = EventType::from_wire_name(name) {
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

fn occurred_at(top: &Top<'_>) -> Option<DateTime<Utc>> {
    let raw = top.timestamp.or(top.event_created_date)?;
    match text(Some(raw)) {
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        // Connect and Jira: epoch milliseconds. A number too small to be milliseconds since 1973
        // is a sender counting seconds. (`unsigned_abs`: `i64::MIN.abs()` overflows, a panic
        // in debug builds; found by fuzzing.)
        None => raw.parse::<i64>().ok().and_then(|n| {
            if n.unsigned_abs() < SECONDS_OR_MILLIS.unsigned_abs() {
                Utc.timestamp_opt(n, 0).single()
            } else {
                Utc.timestamp_millis_opt(n).single()
            }
        }),
    }
}

fn fill_subject(envelope: &mut Envelope, subject: &mut Top<'_>) -> Result<(), NormalizeError> {
    let user = subject.user.take().unwrap_or_default();
    let account_id = text(user.account_id_camel)
        .or_else(|| text(user.account_id))
        .or_else(|| text(subject.account_id))
        .or_else(|| text(subject.account_id_camel));
    envelope.subject.account_id = account_id
        .map(|id| identifier::check(IdKind::Account, &id).map(str::to_owned))
        .transpose()?;
    envelope.subject.email = text(user.email)
        .or_else(|| text(subject.email))
        .map(Cow::into_owned);
    if let Some(group) = subject.group.take() {
        let group = GroupRef {
            id: text(group.id)
                .or_else(|| text(group.group_id))
                .map(|id| identifier::check(IdKind::Group, &id).map(str::to_owned))
                .transpose()?,
            name: text(group.name).map(Cow::into_owned),
        };
        if !group.is_empty() {
            envelope.subject.group = Some(group);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use handlers::Scheme;

    use super::*;

    fn source(scheme: VerificationScheme) -> SourceSettings {
        SourceSettings::new("confluence", scheme, vec![])
    }

    #[test]
    fn a_field_text_is_borrowed_as_it_is_or_decoded_from_its_escapes() {
        let read = |json: &str| text(Some(json)).map(|t| (matches!(t, Cow::Borrowed(_)), t.into_owned()));
        assert_eq!(read(r#""Ada Lovelace""#), Some((true, "Ada Lovelace".to_owned())));
        assert_eq!(read(r#""Zoë 名前""#), Some((true, "Zoë 名前".to_owned())));
        assert_eq!(
            read(r#""say \"hi\"\n""#),
            Some((false, "say \"hi\"\n".to_owned()))
        );
        assert_eq!(read(r#""a\/b""#), Some((false, "a/b".to_owned())));
        assert_eq!(read(r#""\u00e9""#), Some((false, "é".to_owned())));
        assert_eq!(read(r#""""#), None, "an empty string is no text");
        for not_text in ["null", "42", "{\"a\":1}", "[\"a\"]", "true"] {
            assert_eq!(read(not_text), None, "{not_text}");
        }
    }

    fn run_as(
        scheme: VerificationScheme,
        hint: Option<&str>,
        body: &str,
    ) -> Result<Envelope, NormalizeError> {
        normalize(
            &source(scheme),
            hint,
            &HeaderMap::new(),
            body.as_bytes(),
            Verified::by_secret("k1"),
        )
        .map(|n| published(&n))
    }

    /// The envelope as a worker reads it off the queue, payload and all.
    fn published(normalized: &Normalized<'_>) -> Envelope {
        let message =
            crate::queue::OutgoingMessage::from_delivery(&normalized.envelope, normalized.payload, "src");
        serde_json::from_slice(&message.body).unwrap()
    }

    fn run(hint: Option<&str>, body: &str) -> Envelope {
        run_as(VerificationScheme::ConnectJwt, hint, body).unwrap()
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
        assert_eq!(e.scheme, Scheme::ConnectJwt);
        assert_eq!(e.delivery.key_id.as_deref(), Some("k1"));
        assert_eq!(e.payload.get(), body);
        assert!(e.dedupe_key.starts_with("confluence:sha256:"), "{}", e.dedupe_key);
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
        let jira = run(
            None,
            r#"{"webhookEvent":"user_deleted","user":{"accountId":"a1"}}"#,
        );
        assert_eq!(jira.event_type, EventType::UserRemoved);
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
        // Escaped strings are read too; non-strings are not names.
        let escaped = run(
            None,
            r#"{"event":"user\u005fcreated","timestamp":"soon","user":{"accountId":7}}"#,
        );
        assert_eq!(escaped.event_type, EventType::UserCreated);
        assert_eq!(escaped.subject.account_id, None);
    }

    #[test]
    fn only_signed_bytes_decide_the_event() {
        let dc_created = r#"{"event":"user_created","timestamp":1,"user":{"accountId":"a1"}}"#;
        for scheme in [
            VerificationScheme::HubSignature,
            VerificationScheme::StandardWebhooks,
            VerificationScheme::UrlToken,
        ] {
            let error = run_as(scheme, Some("user_removed"), dc_created).unwrap_err();
            assert!(
                matches!(&error, NormalizeError::EventMismatch { url, body }
                    if *url == EventType::UserRemoved && *body == EventType::UserCreated),
                "{error}"
            );
            // The URL may repeat what the body says, in either spelling.
            for hint in ["user_created", "user.created"] {
                assert_eq!(
                    run_as(scheme, Some(hint), dc_created).unwrap().event_type,
                    EventType::UserCreated
                );
            }
            // A body that names no type cannot borrow one from the unsigned URL.
            assert!(matches!(
                run_as(scheme, Some("user_removed"), r#"{"user":{"accountId":"a1"}}"#),
                Err(NormalizeError::EventMismatch { .. })
            ));
        }
        // Connect signs the URL (qsh), and its bodies carry no type: the URL decides.
        assert_eq!(
            run(Some("user_removed"), r#"{"user":{"accountId":"a1"}}"#).event_type,
            EventType::UserRemoved
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
    fn dedupe_keys_are_per_source_and_from_signed_ids() {
        let mut headers = HeaderMap::new();
        headers.insert("x-atlassian-webhook-identifier", "abc-123".parse().unwrap());
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        let key = |scheme, name: &str, headers: &HeaderMap, body: &[u8]| {
            let mut source = source(scheme);
            source.name = name.to_owned();
            dedupe_key(&source, headers, body, &Verified::by_secret("k"))
        };
        // Standard Webhooks: the signed webhook-id, never the unsigned Atlassian header.
        assert_eq!(
            key(VerificationScheme::StandardWebhooks, "relay", &headers, b"{}"),
            "relay:msg_1"
        );
        // hub-signature: the signed body's digest, whatever the unsigned header says.
        let hub = key(VerificationScheme::HubSignature, "admin", &headers, b"{}");
        assert_eq!(hub, format!("admin:sha256:{}", sha256_hex(&[b"{}"])));
        let mut other_id = headers.clone();
        other_id.insert("x-atlassian-webhook-identifier", "zzz".parse().unwrap());
        assert_eq!(
            hub,
            key(VerificationScheme::HubSignature, "admin", &other_id, b"{}")
        );
        // Connect: the delivery id, namespaced by source.
        assert_eq!(
            key(VerificationScheme::ConnectJwt, "a", &headers, b"{}"),
            "a:abc-123"
        );
        assert_ne!(
            key(VerificationScheme::ConnectJwt, "a", &headers, b"{}"),
            key(VerificationScheme::ConnectJwt, "b", &headers, b"{}")
        );
        headers.insert("x-atlassian-webhook-identifier", "x".repeat(300).parse().unwrap());
        assert!(key(VerificationScheme::ConnectJwt, "a", &headers, b"{}").starts_with("a:sha256:"));
        // Connect: each installation has its own ids.
        let mut site = Verified::by_secret("site-1");
        site.client_key = Some("site-1".into());
        headers.insert("x-atlassian-webhook-identifier", "abc-123".parse().unwrap());
        let connect = SourceSettings::new("c", VerificationScheme::ConnectJwt, vec![]);
        assert_eq!(dedupe_key(&connect, &headers, b"{}", &site), "c:site-1:abc-123");
    }

    #[test]
    fn refuses_non_objects_deep_nesting_and_bad_identifiers() {
        let refuse = |body: &str| run_as(VerificationScheme::HubSignature, None, body).unwrap_err();
        assert!(matches!(refuse("[1]"), NormalizeError::NotAnObject));
        assert!(matches!(refuse("{"), NormalizeError::NotJson(_)));
        assert!(matches!(
            refuse("{\"type\":1,\"type\":2}"),
            NormalizeError::NotJson(_)
        ));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(matches!(refuse(&deep), NormalizeError::TooDeep));
        let shallow = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(run_as(VerificationScheme::HubSignature, None, &shallow).is_ok());
        // Brackets inside strings do not count.
        let in_string = format!("{{\"a\":\"{}\\\"\"}}", "[".repeat(100));
        assert!(!nests_deeper_than(in_string.as_bytes(), 2), "{in_string}");
        for bad in [
            r#"{"user":{"accountId":"../admin"}}"#,
            r#"{"group":{"id":"a/b"}}"#,
        ] {
            assert!(matches!(refuse(bad), NormalizeError::BadIdentifier(_)), "{bad}");
        }
        // A malformed actor is dropped, not the delivery.
        let e = run_as(
            VerificationScheme::HubSignature,
            None,
            r#"{"userAccountId":"x y","user":{"accountId":"a1"}}"#,
        )
        .unwrap();
        assert_eq!(
            (e.actor.account_id, e.subject.account_id.as_deref()),
            (None, Some("a1"))
        );
    }

    #[test]
    fn numeric_timestamps_in_seconds_or_milliseconds() {
        for (timestamp, expected) in [("1718000000000", 1_718_000_000), ("1718000000", 1_718_000_000)] {
            let body = format!(r#"{{"event":"user_created","timestamp":{timestamp}}}"#);
            let e = run_as(VerificationScheme::HubSignature, None, &body).unwrap();
            assert_eq!(e.occurred_at.timestamp(), expected, "{timestamp}");
        }
    }

    /// Found by fuzzing (fuzz/corpus/normalize/regression-timestamp-i64-min).
    #[test]
    fn the_most_negative_timestamp_is_no_time_not_an_overflow() {
        let body = r#"{"event":"user_created","timestamp":-9223372036854775808}"#;
        let e = run_as(VerificationScheme::HubSignature, None, body).unwrap();
        assert!(e.occurred_at <= Utc::now());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Pieces of JSON bodies as senders write them, recombined into near-valid bodies.
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\\",
            "\\\"",
            "\\u0000",
            "\\ud800",
            "null",
            "1",
            "-1e400",
            "1718000000000",
            "\"type\"",
            "\"data\"",
            "\"event\"",
            "\"eventType\"",
            "\"user\"",
            "\"group\"",
            "\"accountId\"",
            "\"account_id\"",
            "\"timestamp\"",
            "\"user.created\"",
            "\"user_removed\"",
            "\"avi:c:created:user\"",
            "\"2026-12-01T10:00:00Z\"",
            "\"a1\"",
            "\"../x\"",
            "é",
            "😀",
            " ",
            "\n",
        ];

        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..128),
                any::<String>().prop_map(String::into_bytes),
                prop::collection::vec(prop::sample::select(PIECES), 0..40)
                    .prop_map(|pieces| pieces.concat().into_bytes()),
            ]
        }

        fn scheme() -> impl Strategy<Value = VerificationScheme> {
            prop::sample::select(vec![
                VerificationScheme::ConnectJwt,
                VerificationScheme::HubSignature,
                VerificationScheme::StandardWebhooks,
                VerificationScheme::UrlToken,
            ])
        }

        proptest! {
            /// Whatever a verified sender sends: an envelope or an error, never a panic; the
            /// payload is kept byte for byte; the key is in the source's namespace; no internal
            /// type; any id that came through is well-formed.
            #[test]
            fn any_body_normalizes_or_is_refused(
                body in body(),
                scheme in scheme(),
                hint in prop::option::of("[a-z_.]{0,20}"),
            ) {
                let source = SourceSettings::new("src", scheme, vec![]);
                let normalized = normalize(&source, hint.as_deref(), &HeaderMap::new(), &body, Verified::by_secret("k"));
                if let Ok(normalized) = normalized {
                    let e = published(&normalized);
                    prop_assert_eq!(e.payload.get().as_bytes(), &body[..]);
                    prop_assert!(e.dedupe_key.starts_with("src:"));
                    prop_assert!(!e.event_type.is_internal());
                    for id in [&e.subject.account_id, &e.actor.account_id].into_iter().flatten() {
                        prop_assert!(identifier::check(IdKind::Account, id).is_ok());
                    }
                }
            }

            /// The depth scan agrees with a parser's view of nesting.
            #[test]
            fn the_depth_scan_counts_what_a_parser_nests(depth in 0usize..80, noise in "[a-z\\[\\]{}\"]{0,8}") {
                let text = format!(
                    "{{\"s\":{},\"a\":{}1{}}}",
                    serde_json::to_string(&noise).unwrap(),
                    "[".repeat(depth),
                    "]".repeat(depth)
                );
                prop_assert_eq!(nests_deeper_than(text.as_bytes(), MAX_DEPTH), depth + 1 > MAX_DEPTH);
            }

            /// The jumping scan agrees with a byte-by-byte one on any bytes, well-formed or not
            /// (unterminated strings, escapes at the very end, stray quotes).
            #[test]
            fn the_depth_scan_agrees_with_a_byte_by_byte_scan(body in proptest::collection::vec(proptest::sample::select(b"\"\\{}[]a".to_vec()), 0..64), max in 0usize..6) {
                prop_assert_eq!(nests_deeper_than(&body, max), byte_by_byte(&body, max));
            }
        }
    }

    /// The scan as it was first written: one branch per byte.
    fn byte_by_byte(body: &[u8], max: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in body {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    #[test]
    fn digests_are_lowercase_hex() {
        assert_eq!(
            sha256_hex(&[b"a", b"bc"]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_large_flat_body_is_read_without_building_it() {
        let numbers: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
        let body = format!(
            r#"{{"event":"user_created","user":{{"accountId":"a1"}},"noise":[{}]}}"#,
            numbers.join(",")
        );
        let e = run_as(VerificationScheme::HubSignature, None, &body).unwrap();
        assert_eq!(e.event_type, EventType::UserCreated);
        assert_eq!(e.payload.get().len(), body.len());
    }
}
