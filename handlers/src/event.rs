//! The event model: the [`Envelope`] every queued message carries, and the types inside it.
//!
//! The envelope is public surface: downstream automations consume it from the exchange, so its
//! field names and the spelling of [`EventType`] are stable. It is deliberately independent of how
//! an event arrived (Connect, Forge, Data Center, a relay, a poll): normalization happens at the
//! edge, and everything inward works on these types only.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use ulid::Ulid;

/// What happened, in gatehouse's own vocabulary.
///
/// Anything gatehouse does not understand becomes [`EventType::Other`] and is still queued, so a
/// new Atlassian event is never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    UserCreated,
    UserDeactivated,
    UserReactivated,
    UserRemoved,
    UserProvisionRequested,
    GroupCreated,
    GroupRemoved,
    GroupMemberAdded,
    GroupMemberRemoved,
    /// Published by gatehouse itself when a policy finds access that must not be.
    PolicyViolation,
    /// Published by gatehouse itself when a person approved a pending plan: the worker performs
    /// exactly that plan.
    ApprovalGranted,
    /// `other.<name>`: the sanitized original name, kept so subscribers can still route on it.
    Other(String),
}

/// The envelope types that are not `other.*`, with their wire names.
const KNOWN_TYPES: &[(&str, EventType)] = &[
    ("user.created", EventType::UserCreated),
    ("user.deactivated", EventType::UserDeactivated),
    ("user.reactivated", EventType::UserReactivated),
    ("user.removed", EventType::UserRemoved),
    ("user.provision_requested", EventType::UserProvisionRequested),
    ("group.created", EventType::GroupCreated),
    ("group.removed", EventType::GroupRemoved),
    ("group.member_added", EventType::GroupMemberAdded),
    ("group.member_removed", EventType::GroupMemberRemoved),
    ("policy.violation", EventType::PolicyViolation),
    ("approval.granted", EventType::ApprovalGranted),
];

impl EventType {
    /// The type whose wire name is `name` (`user.removed`, `other.<name>`), if it is one. Unlike
    /// `parse`, it makes no error to throw away for a name that is not one: the ingress asks
    /// this of an Atlassian name (`user_deactivated`) on every delivery before mapping it.
    pub fn from_wire_name(name: &str) -> Option<EventType> {
        if let Some((_, t)) = KNOWN_TYPES.iter().find(|(known, _)| *known == name) {
            return Some(t.clone());
        }
        // `other.<name>` only as `other` would write it: the name already sanitized.
        let rest = name.strip_prefix("other.").filter(|rest| !rest.is_empty())?;
        let other = EventType::other(rest);
        matches!(&other, EventType::Other(cleaned) if cleaned == rest).then_some(other)
    }

    /// An `other.<name>` type for a name gatehouse does not map.
    ///
    /// The name becomes part of an AMQP routing key, so it is reduced to lowercase ASCII letters,
    /// digits, `_` and `-`; everything else (including `.`, which would add routing-key words)
    /// becomes `_`. An empty name becomes `unknown`.
    pub fn other(name: &str) -> Self {
        let cleaned: String = name
            .trim()
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '_' | '-' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '_',
            })
            .take(100)
            .collect();
        if cleaned.is_empty() {
            EventType::Other("unknown".to_owned())
        } else {
            EventType::Other(cleaned)
        }
    }

    /// The wire name, e.g. `user.deactivated` or `other.page_created`.
    pub fn as_str(&self) -> Cow<'static, str> {
        match self {
            EventType::Other(name) => Cow::Owned(format!("other.{name}")),
            known => KNOWN_TYPES
                .iter()
                .find(|(_, t)| t == known)
                .map(|(name, _)| Cow::Borrowed(*name))
                .unwrap_or(Cow::Borrowed("other.unknown")),
        }
    }

    /// Types only gatehouse itself publishes: a webhook or relay naming one is not believed (it
    /// could approve a plan or forge a violation notice) and is kept as `other.*`.
    pub fn is_internal(&self) -> bool {
        matches!(self, EventType::PolicyViolation | EventType::ApprovalGranted)
    }

    /// Every type gatehouse understands (not `other.*`), for validation and documentation.
    pub fn known() -> impl Iterator<Item = &'static str> {
        KNOWN_TYPES.iter().map(|(name, _)| *name)
    }
}

/// A pattern over event types, as `[[sources]] allow_types` writes it: an exact type
/// (`user.deactivated`), or a glob where `*` stands for any run of characters (`user.*`,
/// `other.*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TypePattern(String);

/// A type pattern that cannot match anything gatehouse knows (a typo would silently allow or
/// refuse nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` matches no event type (known: {known}, other.<name>; `*` matches any characters)", known = EventType::known().collect::<Vec<_>>().join(", "))]
pub struct BadTypePattern(pub String);

impl TypePattern {
    /// Does `event_type` (by its wire name) match?
    pub fn matches(&self, event_type: &EventType) -> bool {
        self.matches_name(&event_type.as_str())
    }

    /// Does the type named `name` (its wire name, worked out once by a caller trying several
    /// patterns) match?
    pub fn matches_name(&self, name: &str) -> bool {
        pattern_matches(&self.0, name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TypePattern {
    type Error = BadTypePattern;

    fn try_from(pattern: String) -> Result<Self, Self::Error> {
        let well_formed = !pattern.is_empty()
            && pattern
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-*".contains(&b));
        let candidate = TypePattern(pattern);
        // It must match a known type, or some `other.*` name.
        let useful = EventType::known()
            .filter_map(|name| name.parse().ok())
            .chain([EventType::other("x"), EventType::other("unknown")])
            .any(|t| candidate.matches(&t))
            || candidate
                .0
                .strip_prefix("other.")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('.'));
        if well_formed && useful {
            Ok(candidate)
        } else {
            Err(BadTypePattern(candidate.0))
        }
    }
}

impl From<TypePattern> for String {
    fn from(pattern: TypePattern) -> Self {
        pattern.0
    }
}

impl FromStr for TypePattern {
    type Err = BadTypePattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TypePattern::try_from(s.to_owned())
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Does `pattern`, written as a [`TypePattern`] is, match the type named `name`? For patterns
/// fixed in code (a scheme's defaults), which need no validation and so no parsing per use.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    glob_matches(pattern.as_bytes(), name.as_bytes())
}

/// `*` matches any run of bytes; everything else matches itself. Iterative with one backtrack
/// point, so no pattern can make it slow.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// A string that is neither a known type nor a well-formed `other.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}` (expected one of {known}, or other.<name>)", known = EventType::known().collect::<Vec<_>>().join(", "))]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::from_wire_name(s).ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How an event reached gatehouse (and so how much of it was proven).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Atlassian Connect webhook, HS256 JWT with a query-string hash.
    ConnectJwt,
    /// `X-Hub-Signature: sha256=…` over the raw body.
    HubSignature,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks,
    /// A secret token in the URL or a header, for senders that cannot sign.
    UrlToken,
    /// Read from the organization events stream by gatehouse's poller.
    Poll,
    /// Found by gatehouse's reconciler comparing real state.
    Reconcile,
    /// Produced by gatehouse itself (e.g. a policy violation notice).
    Internal,
}

impl Scheme {
    /// Whether what the payload says (its actor, its type, its timestamp) is covered by a
    /// signature or comes from gatehouse or Atlassian's own API. Connect's JWT signs the request
    /// line (`qsh`), not the body; a URL token signs nothing.
    pub fn signs_payload(self) -> bool {
        match self {
            Scheme::HubSignature | Scheme::StandardWebhooks => true,
            Scheme::Poll | Scheme::Reconcile | Scheme::Internal => true,
            Scheme::ConnectJwt | Scheme::UrlToken => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::ConnectJwt => "connect-jwt",
            Scheme::HubSignature => "hub-signature",
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::UrlToken => "url-token",
            Scheme::Poll => "poll",
            Scheme::Reconcile => "reconcile",
            Scheme::Internal => "internal",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much an event says about what should happen.
///
/// An **observation** reports Atlassian's state (a webhook, a poll, the reconciler): it can be
/// stale or reordered, so what it implies is checked against the current state first, and a newer
/// state wins. A **decision** was made elsewhere (HR or the IdP says this person leaves today):
/// it is acted on whatever Atlassian shows now; decisions about one account are ordered by their
/// own signed time, and an older one never undoes a newer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authority {
    #[default]
    Observation,
    Decision,
}

impl Authority {
    pub fn as_str(self) -> &'static str {
        match self {
            Authority::Observation => "observation",
            Authority::Decision => "decision",
        }
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tenant of an envelope written before tenants were (and of a deployment that configures
/// only the legacy `[atlassian]` section).
pub const DEFAULT_TENANT: &str = "default";

/// Which Atlassian tenant the event is about.
///
/// `name` is the configured tenant the event is bound to, set by gatehouse from how the event
/// arrived (the source, the Connect installation, the poller), never from the body: it decides
/// whose clients and policies act. The ids are what the sender said, for the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
}

/// A group as events name it: by id where the sender gives one, by (case-sensitive) name otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl GroupRef {
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.name.is_none()
    }
}

/// Whom or what the event is about.
///
/// `email` is informational only: Atlassian hides it for many accounts, so nothing may key on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
}

/// Who caused the event, where the sender says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// Facts about the delivery itself rather than the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFacts {
    /// The sender's delivery id (`X-Atlassian-Webhook-Identifier`, `webhook-id`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The sender's retry counter (`X-Atlassian-Webhook-Retry`), absent on a first try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
    /// Which configured secret (or Connect installation) verified the delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// The `source` of events the organization events-stream poller queues.
pub const ORG_EVENTS_SOURCE: &str = "org-events";
/// The `source` of the reconciler's findings.
pub const RECONCILE_SOURCE: &str = "reconcile";
/// The `source` of events gatehouse publishes itself (approvals, violation notices).
pub const OWN_SOURCE: &str = "gatehouse";
/// Source names gatehouse's own events carry, which no configured source may take.
pub const RESERVED_SOURCES: [&str; 3] = [ORG_EVENTS_SOURCE, RECONCILE_SOURCE, OWN_SOURCE];

/// The dedupe key of a delivery from `source`: its id is only unique within that sender.
pub fn source_dedupe_key(source: &str, id: &str) -> String {
    // Joined by hand, not through `format!`'s machinery: this runs for every delivery.
    let mut key = String::with_capacity(source.len() + 1 + id.len());
    key.push_str(source);
    key.push(':');
    key.push_str(id);
    key
}

/// The dedupe key of a fact gatehouse found or made itself (`org-events`, `reconcile`,
/// `approval`, `violation`): in a namespace no sender reaches (source names cannot start with
/// `@`).
pub fn internal_dedupe_key(namespace: &str, id: &str) -> String {
    format!("@{namespace}:{id}")
}

/// The message on `gatehouse.events`: one fact, normalized, with the original payload untouched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Ulid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The configured source name the event came through (`poll`/`reconcile` for gatehouse's own).
    pub source: String,
    pub scheme: Scheme,
    /// Whether the event reports Atlassian's state or a decision made elsewhere (the source's
    /// `authority`); absent in older envelopes, which were all observations.
    #[serde(default)]
    pub authority: Authority,
    #[serde(serialize_with = "rfc3339")]
    pub occurred_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub received_at: DateTime<Utc>,
    /// Identifies the fact, not the delivery: two copies of one fact share it, so the worker acts
    /// once. Keys of delivered events are `{source}:{id}` ([`source_dedupe_key`]); gatehouse's
    /// own (polls, reconciliation, approvals, notices) start with `@` ([`internal_dedupe_key`]),
    /// which no source name can, so no sender can claim or collide with them.
    pub dedupe_key: String,
    #[serde(default)]
    pub tenant: Tenant,
    #[serde(default)]
    pub subject: Subject,
    #[serde(default)]
    pub actor: Actor,
    #[serde(default)]
    pub delivery: DeliveryFacts,
    /// The sender's JSON exactly as received (byte for byte), so nothing normalization dropped is
    /// lost to subscribers.
    pub payload: Box<RawValue>,
}

/// Writes a time exactly as chrono's own `Serialize` does (RFC 3339 with `Z`, and as many
/// fractional digits as the time needs), but formatted once into a string: chrono's impl goes
/// through serde_json's character-by-character `collect_str` adapter, about 2,000 instructions a
/// time on the ingress's hot path. A test holds the two to the same text.
fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339_text(at))
}

fn rfc3339_text(at: &DateTime<Utc>) -> String {
    let mut text = Vec::with_capacity(30);
    push_rfc3339(&mut text, at);
    // ASCII (or chrono's own text): nothing is lost.
    String::from_utf8_lossy(&text).into_owned()
}

/// Appends `at` as chrono's `to_rfc3339_opts(AutoSi, true)` writes it, filled in place (chrono's
/// formatter costs about 750 instructions a time; this, less than half). Years outside 0..=9999
/// and leap seconds, which chrono writes in its own ways, are left to chrono.
fn push_rfc3339(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    // UTC's own fields: no offset to apply (the `DateTime` accessors add a zero one each time).
    let (date, time) = (at.naive_utc().date(), at.naive_utc().time());
    let nanos = time.nanosecond();
    let year = date.year();
    let (Ok(year @ 0..=9999), false) = (u32::try_from(year), nanos >= 1_000_000_000) else {
        out.extend_from_slice(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true).as_bytes());
        return;
    };
    // `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` at most, filled in place with constant divisions.
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |from: usize, width: usize, mut value: u32| {
        for slot in text[from..from + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, date.month());
    put(8, 2, date.day());
    put(11, 2, time.hour());
    put(14, 2, time.minute());
    put(17, 2, time.second());
    // As many fractional digits as the time needs, in steps of three (chrono's `AutoSi`).
    let end = if nanos == 0 {
        19
    } else if nanos % 1_000_000 == 0 {
        put(20, 3, nanos / 1_000_000);
        23
    } else if nanos % 1_000 == 0 {
        put(20, 6, nanos / 1_000);
        26
    } else {
        put(20, 9, nanos);
        29
    };
    out.extend_from_slice(&text[..end]);
    out.push(b'Z');
}

impl Envelope {
    /// Writes the envelope as JSON: the same bytes as its `Serialize` (a test holds the two
    /// together for arbitrary envelopes), written by hand because this runs for every delivery
    /// and serde_json's escaping, a byte at a time, was a tenth of the ingress's own work
    /// (see [`crate::json_text`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_with_payload(self.payload.get(), out);
    }

    /// [`write_json`](Self::write_json) with `payload` written in place of the envelope's own:
    /// JSON text the caller has already parsed in full. The ingress checks a delivery's body once,
    /// in the pass that reads its fields; building a `RawValue` would check (and copy) it a second
    /// time, the largest single cost of a delivery after its signature.
    pub fn write_with_payload(&self, payload: &str, out: &mut Vec<u8>) {
        use crate::json_text::{ObjectWriter, push_u64};
        out.reserve(payload.len() + 1024);
        let mut envelope = ObjectWriter::begin(out);
        let mut id = [0; ulid::ULID_LEN];
        envelope.string("id", self.id.array_to_str(&mut id));
        envelope.string("type", &self.event_type.as_str());
        envelope.string("source", &self.source);
        envelope.string("scheme", self.scheme.as_str());
        envelope.string("authority", self.authority.as_str());
        for (name, at) in [
            ("occurred_at", &self.occurred_at),
            ("received_at", &self.received_at),
        ] {
            // A time never needs escaping: written between quotes as it is.
            let out = envelope.field(name);
            out.push(b'"');
            push_rfc3339(out, at);
            out.push(b'"');
        }
        envelope.string("dedupe_key", &self.dedupe_key);

        let mut tenant = ObjectWriter::begin(envelope.field("tenant"));
        tenant.optional_string("name", self.tenant.name.as_deref());
        tenant.optional_string("cloud_id", self.tenant.cloud_id.as_deref());
        tenant.optional_string("client_key", self.tenant.client_key.as_deref());
        tenant.optional_string("org_id", self.tenant.org_id.as_deref());
        tenant.end();

        let mut subject = ObjectWriter::begin(envelope.field("subject"));
        subject.optional_string("account_id", self.subject.account_id.as_deref());
        subject.optional_string("email", self.subject.email.as_deref());
        if let Some(group) = &self.subject.group {
            let mut group_object = ObjectWriter::begin(subject.field("group"));
            group_object.optional_string("id", group.id.as_deref());
            group_object.optional_string("name", group.name.as_deref());
            group_object.end();
        }
        subject.end();

        let mut actor = ObjectWriter::begin(envelope.field("actor"));
        actor.optional_string("account_id", self.actor.account_id.as_deref());
        actor.end();

        let mut delivery = ObjectWriter::begin(envelope.field("delivery"));
        delivery.optional_string("id", self.delivery.id.as_deref());
        if let Some(retry) = self.delivery.retry {
            push_u64(delivery.field("retry"), u64::from(retry));
        }
        delivery.optional_string("key_id", self.delivery.key_id.as_deref());
        delivery.end();

        envelope.field("payload").extend_from_slice(payload.as_bytes());
        envelope.end();
    }

    /// The configured tenant the event is bound to ([`DEFAULT_TENANT`] for envelopes from before
    /// tenants).
    pub fn tenant_name(&self) -> &str {
        self.tenant.name.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    /// A new envelope received now, with a fresh id; the caller fills in what it knows.
    pub fn new(
        event_type: EventType,
        source: impl Into<String>,
        scheme: Scheme,
        dedupe_key: impl Into<String>,
        payload: Box<RawValue>,
    ) -> Self {
        let now = Utc::now();
        Envelope {
            id: Ulid::generate(),
            event_type,
            source: source.into(),
            scheme,
            authority: Authority::Observation,
            occurred_at: now,
            received_at: now,
            dedupe_key: dedupe_key.into(),
            tenant: Tenant::default(),
            subject: Subject::default(),
            actor: Actor::default(),
            delivery: DeliveryFacts::default(),
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written with another payload, the envelope is the same JSON as one built with that payload.
    #[test]
    fn an_envelope_is_written_with_the_payload_given() {
        let body = r#"{"user":{"accountId":"5b10","name":"\u00e9\"}"},"list":[1,2,{"a":null}]}"#;
        let mut envelope = Envelope::new(
            EventType::UserRemoved,
            "jira",
            Scheme::HubSignature,
            "jira:sha256:00",
            RawValue::from_string(body.to_owned()).unwrap(),
        );
        envelope.subject.account_id = Some("5b10".into());
        let expected = serde_json::to_vec(&envelope).unwrap();
        envelope.payload = RawValue::NULL.to_owned();
        let mut out = b"kept".to_vec();
        envelope.write_with_payload(body, &mut out);
        assert_eq!(&out[..4], b"kept");
        assert_eq!(&out[4..], &expected[..]);
        let back: Envelope = serde_json::from_slice(&out[4..]).unwrap();
        assert_eq!(back.payload.get(), body);
    }

    /// The envelope's times are written as chrono itself writes them, to the character, so the
    /// faster path changes nothing a subscriber sees.
    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        let base = Utc.with_ymd_and_hms(2026, 12, 3, 16, 4, 11).unwrap();
        let nanos = [
            0,
            1,
            7_000,
            120_000,
            123_000_000,
            123_456_000,
            123_456_789,
            999_999_999,
        ];
        let mut times: Vec<DateTime<Utc>> = nanos
            .iter()
            .map(|n| base + chrono::Duration::nanoseconds(*n))
            .collect();
        times.push(Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap());
        times.push(Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap());
        times.push(Utc::now());
        // What chrono writes its own way: years beyond four digits or before year 0, and a
        // leap second.
        times.push(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap());
        times.push(Utc.with_ymd_and_hms(-1, 6, 30, 12, 0, 0).unwrap());
        times.push(Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap());
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .unwrap();
        times.push(Utc.from_utc_datetime(&leap));
        // And a spread of ordinary times, every fraction length.
        for step in 0..2_000i64 {
            let seconds = step * 7_919_993_i64 % 253_402_300_799;
            let nanos = step * 104_729 * 7_919 % 1_000_000_000;
            let rounded = [1_000_000_000, 1_000_000, 1_000, 100, 1][step as usize % 5];
            times.push(
                Utc.timestamp_opt(seconds, (nanos / rounded * rounded) as u32)
                    .unwrap(),
            );
        }
        for at in times {
            let mut ours = Vec::new();
            rfc3339(&at, &mut serde_json::Serializer::new(&mut ours)).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&at).unwrap()
            );
        }
    }

    #[test]
    fn known_types_round_trip() {
        for name in EventType::known() {
            let parsed: EventType = name.parse().unwrap();
            assert_eq!(parsed.as_str(), name);
        }
    }

    #[test]
    fn other_names_are_sanitized_for_routing_keys() {
        assert_eq!(EventType::other("page_created").as_str(), "other.page_created");
        assert_eq!(
            EventType::other("Avi:Confluence.Created#x").as_str(),
            "other.avi_confluence_created_x"
        );
        assert_eq!(EventType::other("  ").as_str(), "other.unknown");
        assert!("other.a.b".parse::<EventType>().is_err());
        assert!("user.exploded".parse::<EventType>().is_err());
        assert_eq!(
            "user_deactivated".parse::<EventType>(),
            Err(UnknownEventType("user_deactivated".to_owned())),
            "parse names what it could not read"
        );
        for not_a_wire_name in ["user_deactivated", "other.", "other.A", "other.a.b", ""] {
            assert_eq!(
                EventType::from_wire_name(not_a_wire_name),
                None,
                "{not_a_wire_name}"
            );
        }
        assert_eq!(
            EventType::from_wire_name("user.removed"),
            Some(EventType::UserRemoved)
        );
        assert_eq!(
            "other.page_created".parse::<EventType>().unwrap(),
            EventType::other("page_created")
        );
    }

    #[test]
    fn type_patterns() {
        let p = |s: &str| s.parse::<TypePattern>();
        let user = p("user.*").unwrap();
        assert!(user.matches(&EventType::UserDeactivated));
        assert!(!user.matches(&EventType::GroupCreated));
        assert!(!user.matches(&EventType::other("user_x")));
        let other = p("other.*").unwrap();
        assert!(other.matches(&EventType::other("page_created")));
        assert!(!other.matches(&EventType::UserCreated));
        assert!(p("*").unwrap().matches(&EventType::GroupMemberAdded));
        assert!(
            p("user.deactivated")
                .unwrap()
                .matches(&EventType::UserDeactivated)
        );
        assert!(p("*.removed").unwrap().matches(&EventType::GroupRemoved));
        assert!(
            p("other.page_*")
                .unwrap()
                .matches(&EventType::other("page_created"))
        );
        for bad in ["", "usr.*", "User.*", "user.exploded", "user deactivated"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(glob_matches(b"a*b*c", b"aXbYc"));
        assert!(!glob_matches(b"a*b*c", b"aXbY"));
        assert!(glob_matches(&[b'*'; 40], &[b'a'; 1000]));
    }

    #[test]
    fn envelope_keeps_the_payload_byte_for_byte() {
        let raw = r#"{"b":1.50,"a":  [1,2], "big": 123456789012345678901234567890}"#;
        let payload = RawValue::from_string(raw.to_owned()).unwrap();
        let envelope = Envelope::new(
            EventType::UserRemoved,
            "confluence",
            Scheme::HubSignature,
            "k",
            payload,
        );
        let json = serde_json::to_string(&envelope).unwrap();
        assert!(json.contains(raw), "{json}");
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back.payload.get(), raw);
        assert_eq!(back.event_type, EventType::UserRemoved);
        assert_eq!(back.scheme, Scheme::HubSignature);
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// Arbitrary Unicode, arbitrary bytes, or names close to real ones.
        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..160)
                    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                "[ a-zA-Z0-9_.:#-]{0,120}",
                prop::sample::select(EventType::known().collect::<Vec<_>>()).prop_map(str::to_owned),
            ]
        }

        /// Short texts that need escaping, and any text at all.
        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z0-9:_@.-]{0,40}",
                "[a-z \"\\\\\\x00-\\x1f\u{7f}\u{e9}]{0,24}",
                any::<String>(),
            ]
        }

        fn maybe_text() -> impl Strategy<Value = Option<String>> {
            proptest::option::of(text())
        }

        fn event_type() -> impl Strategy<Value = EventType> {
            prop_oneof![
                prop::sample::select(EventType::known().collect::<Vec<_>>())
                    .prop_map(|name| name.parse::<EventType>().unwrap()),
                name().prop_map(|name| EventType::other(&name)),
                any::<String>().prop_map(EventType::Other),
            ]
        }

        fn time() -> impl Strategy<Value = DateTime<Utc>> {
            (0i64..4_102_444_800, 0u32..1_000_000_000)
                .prop_map(|(seconds, nanos)| DateTime::from_timestamp(seconds, nanos).unwrap())
        }

        fn envelope() -> impl Strategy<Value = Envelope> {
            let head = (
                any::<u128>(),
                event_type(),
                text(),
                prop::sample::select(vec![
                    Scheme::ConnectJwt,
                    Scheme::HubSignature,
                    Scheme::StandardWebhooks,
                    Scheme::UrlToken,
                    Scheme::Poll,
                    Scheme::Reconcile,
                    Scheme::Internal,
                ]),
                prop::sample::select(vec![Authority::Observation, Authority::Decision]),
                time(),
                time(),
                text(),
            );
            let tenant = (maybe_text(), maybe_text(), maybe_text(), maybe_text()).prop_map(
                |(name, cloud_id, client_key, org_id)| Tenant {
                    name,
                    cloud_id,
                    client_key,
                    org_id,
                },
            );
            let subject = (
                maybe_text(),
                maybe_text(),
                proptest::option::of(
                    (maybe_text(), maybe_text()).prop_map(|(id, name)| GroupRef { id, name }),
                ),
            )
                .prop_map(|(account_id, email, group)| Subject {
                    account_id,
                    email,
                    group,
                });
            let delivery = (maybe_text(), proptest::option::of(any::<u32>()), maybe_text())
                .prop_map(|(id, retry, key_id)| DeliveryFacts { id, retry, key_id });
            let payload = prop::sample::select(vec![
                "{}",
                "null",
                r#"{"user":{"accountId":"5b10","name":"\u00e9\"}"},"list":[1,2.5e3,{"a":null}]}"#,
                " [ true , false ] ",
            ]);
            (head, tenant, subject, maybe_text(), delivery, payload).prop_map(
                |(
                    (id, event_type, source, scheme, authority, occurred_at, received_at, dedupe_key),
                    tenant,
                    subject,
                    actor,
                    delivery,
                    payload,
                )| Envelope {
                    id: Ulid(id),
                    event_type,
                    source,
                    scheme,
                    authority,
                    occurred_at,
                    received_at,
                    dedupe_key,
                    tenant,
                    subject,
                    actor: Actor { account_id: actor },
                    delivery,
                    payload: RawValue::from_string(payload.to_owned()).unwrap(),
                },
            )
        }

        proptest! {
            /// The hand-written JSON is the derived `Serialize`'s, byte for byte: a field added
            /// to the envelope and not to the writer fails here.
            #[test]
            fn envelopes_are_written_as_serialize_writes_them(envelope in envelope()) {
                let mut out = Vec::new();
                envelope.write_json(&mut out);
                prop_assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&envelope).unwrap()
                );
            }

            #[test]
            fn other_names_are_routing_words_that_parse_back(name in name()) {
                let event_type = EventType::other(&name);
                let EventType::Other(cleaned) = &event_type else {
                    return Err(TestCaseError::fail("not an other.* type"));
                };
                prop_assert!(!cleaned.is_empty() && cleaned.chars().count() <= 100, "{:?}", cleaned);
                prop_assert!(
                    cleaned.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
                    "{:?}",
                    cleaned
                );
                let wire = event_type.as_str();
                prop_assert_eq!(wire.strip_prefix("other."), Some(cleaned.as_str()));
                prop_assert_eq!(wire.parse::<EventType>(), Ok(event_type.clone()));
                prop_assert_eq!(EventType::other(cleaned), event_type.clone());
                let json = serde_json::to_string(&event_type).unwrap();
                prop_assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), event_type);
            }

            #[test]
            fn parsing_arbitrary_text_never_panics(text in name()) {
                if let Ok(event_type) = text.parse::<EventType>() {
                    prop_assert_eq!(event_type.as_str(), text.as_str());
                }
            }
        }
    }
}
