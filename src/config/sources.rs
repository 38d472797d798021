//! `[[sources]]`: the senders of webhooks, how each proves itself (its scheme and secrets), and
//! what each may cause; with the checks types alone cannot make.

use std::collections::HashSet;

use base64::Engine;
use chrono::{DateTime, Utc};
use handlers::{Authority, EventType, TypePattern};
use serde::{Deserialize, Serialize};

use super::Secret;
use super::checks::{check_secret_ids_and_ends, is_name};

/// The `source` of events gatehouse makes itself: no configured source may take these names
/// (policies' `sources` and dedupe namespaces would confuse them).
pub(super) const RESERVED_SOURCE_NAMES: [&str; 3] = handlers::RESERVED_SOURCES;

/// The shortest shared secret a hub-signature or url-token source accepts.
pub const MIN_SOURCE_SECRET_BYTES: usize = 16;

/// One sender of webhooks: `POST /webhooks/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// Appears in the URL, in envelopes (`source`) and in metrics.
    pub name: String,
    pub scheme: VerificationScheme,
    /// The routing-key prefix (`{kind}.{type}`, e.g. `confluence.user.removed`); defaults to the
    /// name.
    #[serde(default)]
    pub kind: Option<String>,
    /// Live secrets; several at once during a rotation. Not used by `connect-jwt`, whose secrets
    /// come from Connect installations.
    #[serde(default)]
    pub secrets: Vec<SourceSecret>,
    /// Allowed age (and clock skew) of a delivery's timestamp: the signed `webhook-timestamp`
    /// (standard-webhooks), or the payload's own `timestamp` (hub-signature, whose signature
    /// covers the body but carries no time of its own). Default: 300 s, and 3600 s for
    /// hub-signature, whose senders retry for up to about 30 minutes.
    #[serde(default)]
    pub tolerance_seconds: Option<u64>,
    /// `url-token`: the header carrying the token when it is not in the path.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// The event types this source may cause (`user.deactivated`, globs such as `user.*`,
    /// `other.*`, `*`). A delivery of any other type is refused (403). Default: what the scheme
    /// can produce (see [`SourceSettings::allowed_types`]).
    #[serde(default)]
    pub allow_types: Option<Vec<TypePattern>>,
    /// Verified deliveries of this source being queued at once; beyond this, 503 with
    /// `Retry-After`, so one noisy sender cannot take every slot of the ingress.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Verified deliveries a second (with a burst of one second's worth); beyond this, 429 with
    /// `Retry-After`. Unlimited when absent.
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    /// The tenant this source's events belong to (required when there are several; a
    /// `connect-jwt` source's events belong to the tenant of the installation that signed them,
    /// and this, when given, limits the source to that tenant's installations).
    #[serde(default)]
    pub tenant: Option<String>,
    /// `observation` (default): the sender reports Atlassian's state, checked against the
    /// current state before acting. `decision`: the sender decides (an HR system, an IdP), and is
    /// acted on whatever Atlassian shows now; its decisions are ordered by their own time.
    #[serde(default)]
    pub authority: Authority,
}

fn default_token_header() -> String {
    "x-gatehouse-token".to_owned()
}

fn default_max_in_flight() -> usize {
    256
}

impl SourceSettings {
    /// A source with the defaults for everything but its name, scheme and secrets.
    pub fn new(name: impl Into<String>, scheme: VerificationScheme, secrets: Vec<SourceSecret>) -> Self {
        SourceSettings {
            name: name.into(),
            scheme,
            kind: None,
            secrets,
            tolerance_seconds: None,
            token_header: default_token_header(),
            allow_types: None,
            max_in_flight: default_max_in_flight(),
            rate_per_second: None,
            tenant: None,
            authority: Authority::Observation,
        }
    }

    /// The routing-key prefix for this source's events.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or(&self.name)
    }

    /// The effective timestamp tolerance.
    pub fn tolerance_seconds(&self) -> u64 {
        self.tolerance_seconds.unwrap_or(match self.scheme {
            VerificationScheme::HubSignature => 3_600,
            _ => 300,
        })
    }

    /// May this source cause events of `event_type`?
    pub fn allows(&self, event_type: &EventType) -> bool {
        let name = event_type.as_str();
        match &self.allow_types {
            Some(patterns) => patterns.iter().any(|p| p.matches_name(&name)),
            // Fixed in code and each a valid pattern (a test parses them): not parsed per event.
            None => self
                .scheme
                .default_types()
                .iter()
                .any(|p| handlers::event::pattern_matches(p, &name)),
        }
    }

    /// The effective `allow_types`, as written in config.
    pub fn allowed_types(&self) -> Vec<String> {
        match &self.allow_types {
            Some(patterns) => patterns.iter().map(|p| p.to_string()).collect(),
            None => self
                .scheme
                .default_types()
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }
}

/// One secret of a source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSecret {
    /// Names the secret in logs, envelopes (`delivery.key_id`) and the audit trail; never the value.
    pub id: String,
    pub value: Secret,
    /// After this instant the secret verifies nothing (end of a rotation).
    #[serde(default)]
    pub not_after: Option<DateTime<Utc>>,
}

impl SourceSecret {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.not_after.is_none_or(|end| now <= end)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerificationScheme {
    ConnectJwt,
    HubSignature,
    StandardWebhooks,
    UrlToken,
}

impl VerificationScheme {
    /// The event types a sender using this scheme may cause unless its source says otherwise:
    /// admin webhooks name users and groups coming and going; a relay speaks gatehouse's whole
    /// vocabulary; a URL token proves so little that it may only cause `other.*` events. Connect
    /// is held to group changes and `other.*`: any Atlassian site that installs the app gets a
    /// valid secret, so user events from Connect must be allowed on purpose (and kept out of
    /// destructive policies with `[[policies]] sources`).
    pub fn default_types(self) -> &'static [&'static str] {
        match self {
            VerificationScheme::ConnectJwt => &["group.created", "group.removed", "other.*"],
            VerificationScheme::HubSignature => &[
                "user.created",
                "user.deactivated",
                "user.reactivated",
                "user.removed",
                "group.created",
                "group.removed",
                "other.*",
            ],
            VerificationScheme::StandardWebhooks => &["*"],
            VerificationScheme::UrlToken => &["other.*"],
        }
    }

    /// Whether the scheme's signature covers the request path (and so the `{event}` segment).
    pub fn signs_path(self) -> bool {
        self == VerificationScheme::ConnectJwt
    }

    pub fn envelope_scheme(self) -> handlers::Scheme {
        match self {
            VerificationScheme::ConnectJwt => handlers::Scheme::ConnectJwt,
            VerificationScheme::HubSignature => handlers::Scheme::HubSignature,
            VerificationScheme::StandardWebhooks => handlers::Scheme::StandardWebhooks,
            VerificationScheme::UrlToken => handlers::Scheme::UrlToken,
        }
    }
}

/// Decodes a Standard Webhooks signing key: `whsec_` followed by base64 (the prefix is optional,
/// as in the reference libraries).
pub fn standard_webhooks_key(value: &str) -> Result<Vec<u8>, String> {
    let encoded = value.strip_prefix("whsec_").unwrap_or(value);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "a Standard Webhooks secret is `whsec_` followed by base64".to_owned())?;
    if key.len() < 16 {
        return Err("a Standard Webhooks secret must decode to at least 16 bytes".to_owned());
    }
    Ok(key)
}

/// Checks every source (names, secrets, schemes, budgets).
pub(super) fn validate(
    settings: &super::Settings,
    now: DateTime<Utc>,
    error: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
) {
    let mut names = HashSet::new();
    for (i, source) in settings.sources.iter().enumerate() {
        let key = format!("sources[{i}]");
        if !is_name(&source.name, &['-', '_']) {
            error(
                format!("{key}.name"),
                format!("`{}` must be lowercase letters, digits, `-` and `_`", source.name),
            );
        } else if RESERVED_SOURCE_NAMES.contains(&source.name.as_str()) {
            error(
                format!("{key}.name"),
                format!(
                    "`{}` names gatehouse's own events ({}): choose another name",
                    source.name,
                    RESERVED_SOURCE_NAMES.join(", ")
                ),
            );
        } else if !names.insert(source.name.as_str()) {
            error(
                format!("{key}.name"),
                format!("`{}` is used by another source", source.name),
            );
        }
        if let Some(kind) = &source.kind
            && !is_name(kind, &['-', '_'])
        {
            error(
                format!("{key}.kind"),
                "must be lowercase letters, digits, `-` and `_`".into(),
            );
        }
        check_secret_ids_and_ends(&key, &source.secrets, ("source", "verifies"), now, error, warn);
        for (j, secret) in source.secrets.iter().enumerate() {
            let secret_key = format!("{key}.secrets[{j}]");
            if source.scheme == VerificationScheme::StandardWebhooks {
                if let Err(message) = standard_webhooks_key(secret.value.expose()) {
                    error(format!("{secret_key}.value"), message);
                }
            } else if secret.value.expose().len() < MIN_SOURCE_SECRET_BYTES {
                // A short shared secret can be guessed offline from one captured signature.
                error(
                    format!("{secret_key}.value"),
                    format!(
                        "secret `{}` is {} bytes; use at least {MIN_SOURCE_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                        secret.id,
                        secret.value.expose().len()
                    ),
                );
            }
        }
        match source.scheme {
            VerificationScheme::ConnectJwt => {
                if !source.secrets.is_empty() {
                    error(
                        format!("{key}.secrets"),
                        "connect-jwt sources take their secrets from Connect installations; remove `secrets`"
                            .into(),
                    );
                }
            }
            _ => {
                if !source.secrets.iter().any(|s| s.is_live(now)) {
                    warn(
                        format!("{key}.secrets"),
                        format!(
                            "source `{}` has no usable secret: it refuses every delivery",
                            source.name
                        ),
                    );
                }
            }
        }
        if source.scheme == VerificationScheme::ConnectJwt {
            let user_types: Vec<&str> = handlers::EventType::known()
                .filter(|t| t.starts_with("user."))
                .filter(|t| t.parse().is_ok_and(|t| source.allows(&t)))
                .collect();
            if !user_types.is_empty() {
                warn(
                    format!("{key}.allow_types"),
                    format!(
                        "allows {}: any Atlassian site that installs the app can send these; keep destructive policies to other sources (`[[policies]] sources`)",
                        user_types.join(", ")
                    ),
                );
            }
        }
        match (source.scheme, source.authority) {
            (VerificationScheme::ConnectJwt, handlers::Authority::Decision) => error(
                format!("{key}.authority"),
                "a connect-jwt source reports what Atlassian observed; it cannot be a decision source".into(),
            ),
            (VerificationScheme::UrlToken, handlers::Authority::Decision) => warn(
                format!("{key}.authority"),
                "decision on a url-token source: whoever holds the token decides who leaves, whatever Atlassian shows, dated as it likes; prefer standard-webhooks".into(),
            ),
            (VerificationScheme::HubSignature, handlers::Authority::Decision) => warn(
                format!("{key}.authority"),
                "decision on a hub-signature source: only a body with its own `timestamp` is accepted (decisions are ordered by it); prefer standard-webhooks, whose signed timestamp serves when the body has none".into(),
            ),
            _ => {}
        }
        if source.tolerance_seconds == Some(0) {
            error(
                format!("{key}.tolerance_seconds"),
                "must be greater than 0".into(),
            );
        }
        if source.max_in_flight == 0 {
            error(format!("{key}.max_in_flight"), "must be at least 1".into());
        }
        if let Some(rate) = source.rate_per_second
            && !(0.001..=1_000_000.0).contains(&rate)
        {
            error(
                format!("{key}.rate_per_second"),
                "must be between 0.001 and 1000000".into(),
            );
        }
        if source.scheme == VerificationScheme::UrlToken
            && axum::http::HeaderName::from_bytes(source.token_header.as_bytes()).is_err()
        {
            error(
                format!("{key}.token_header"),
                "is not a valid HTTP header name".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `allows` matches the defaults without parsing them, so each must be a valid pattern.
    #[test]
    fn every_default_type_is_a_valid_pattern() {
        for scheme in [
            VerificationScheme::ConnectJwt,
            VerificationScheme::HubSignature,
            VerificationScheme::StandardWebhooks,
            VerificationScheme::UrlToken,
        ] {
            for pattern in scheme.default_types() {
                assert!(pattern.parse::<TypePattern>().is_ok(), "{scheme:?}: {pattern}");
            }
        }
        let hub = SourceSettings::new("jira", VerificationScheme::HubSignature, vec![]);
        assert!(hub.allows(&EventType::UserDeactivated));
        assert!(hub.allows(&EventType::other("page_created")));
        assert!(!hub.allows(&EventType::GroupMemberAdded));
        let token = SourceSettings::new("hook", VerificationScheme::UrlToken, vec![]);
        assert!(!token.allows(&EventType::UserRemoved));
        assert!(token.allows(&EventType::other("anything")));
    }
}
