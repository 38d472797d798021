//! Targets for the payload normalizers: a verified delivery's body turned into an envelope
//! (src/ingress/normalize.rs), and a Connect lifecycle payload bound to a tenant's site
//! (src/ingress/connect).

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use handlers::identifier::{self, IdKind};
use handlers::{Envelope, EventType};

use super::{fields, text};
use crate::config::{Settings, Site, SourceSettings, VerificationScheme};
use crate::ingress::connect::LifecyclePayload;
use crate::ingress::normalize::{self, MAX_DEPTH, NormalizeError};
use crate::ingress::verify::Verified;
use crate::queue::OutgoingMessage;

fn source(scheme: VerificationScheme) -> &'static SourceSettings {
    static SOURCES: OnceLock<Vec<SourceSettings>> = OnceLock::new();
    let sources = SOURCES.get_or_init(|| {
        ["connect-jwt", "hub-signature", "standard-webhooks", "url-token"]
            .into_iter()
            .filter_map(|scheme| {
                serde_json::from_value(
                    serde_json::json!({"name": format!("fuzz-{scheme}"), "scheme": scheme}),
                )
                .ok()
            })
            .collect()
    });
    match sources.iter().find(|s| s.scheme == scheme) {
        Some(source) => source,
        None => panic!("a source of every scheme deserializes"),
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &[u8]) {
    if !value.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(value)
    {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// `scheme letter and URL event \n delivery id \n retry count \n Connect client key \n body`, the
/// scheme letter one of `c` (Connect), `h` (hub-signature), `s` (Standard Webhooks), anything
/// else url-token; an empty URL event is none.
pub fn normalize(data: &[u8]) {
    let [route, delivery_id, retry, client_key, body] = fields::<5>(data);
    let (scheme, hint) = match route.split_first() {
        Some((b'c', hint)) => (VerificationScheme::ConnectJwt, hint),
        Some((b'h', hint)) => (VerificationScheme::HubSignature, hint),
        Some((b's', hint)) => (VerificationScheme::StandardWebhooks, hint),
        Some((_, hint)) => (VerificationScheme::UrlToken, hint),
        None => (VerificationScheme::UrlToken, route),
    };
    let hint = (!hint.is_empty()).then(|| text(hint));
    let source = source(scheme);
    let mut headers = HeaderMap::new();
    insert(&mut headers, "webhook-id", delivery_id);
    insert(&mut headers, "x-atlassian-webhook-identifier", delivery_id);
    insert(&mut headers, "x-atlassian-webhook-retry", retry);
    let verified = Verified {
        client_key: (scheme == VerificationScheme::ConnectJwt).then(|| text(client_key)),
        tenant: Some("fuzz".into()),
        ..Verified::by_secret("fuzz-secret")
    };
    if let Some(hint) = &hint {
        let _ = normalize::from_event_name(hint);
    }
    let result = normalize::normalize(source, hint.as_deref(), &headers, body, verified.clone());
    if std::str::from_utf8(body).is_ok() && normalize::nests_deeper_than(body, MAX_DEPTH) {
        assert!(matches!(result, Err(NormalizeError::TooDeep)), "{result:?}");
    }
    let Ok(normalized) = result else {
        return;
    };
    let envelope = &normalized.envelope;
    // Types only gatehouse publishes are not believed.
    assert!(!envelope.event_type.is_internal(), "{}", envelope.event_type);
    assert_eq!(
        envelope.dedupe_key,
        normalize::dedupe_key(source, &headers, body, &verified)
    );
    if let Some(account) = &envelope.subject.account_id {
        assert!(identifier::check(IdKind::Account, account).is_ok(), "{account:?}");
    }
    if let Some(id) = &envelope.delivery.id {
        assert!(
            id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()),
            "{id:?}"
        );
    }
    // Normalizing is deterministic.
    match normalize::normalize(source, hint.as_deref(), &headers, body, verified) {
        Ok(again) => {
            assert_eq!(again.envelope.event_type, envelope.event_type);
            assert_eq!(again.envelope.dedupe_key, envelope.dedupe_key);
            assert_eq!(again.envelope.subject.account_id, envelope.subject.account_id);
        }
        Err(error) => panic!("a second normalization failed: {error}"),
    }
    // The envelope survives the queue: written as published, read back, written again, the same
    // bytes; its payload is the body byte for byte (the JSON value: whitespace around it is not
    // part of it). The body is not parsed a second time on its way into the message, so a body
    // the field parse let through that is not JSON after all would show here.
    let bytes = OutgoingMessage::from_delivery(envelope, normalized.payload, "fuzz").body;
    match serde_json::from_slice::<Envelope>(&bytes) {
        Ok(back) => {
            assert_eq!(serde_json::to_vec(&back).unwrap_or_default(), bytes);
            assert_eq!(back.event_type, envelope.event_type);
            assert_eq!(back.payload.get().as_bytes(), body.trim_ascii());
        }
        Err(error) => panic!("an envelope did not read back: {error}"),
    }
    // A URL event that the body contradicts is refused where the scheme does not sign the URL.
    if let Some(hint) = &hint
        && !scheme.signs_path()
    {
        let url = normalize::from_event_name(hint);
        let url = if url.is_internal() {
            EventType::other(&url.as_str())
        } else {
            url
        };
        assert_eq!(url, envelope.event_type);
    }
}

/// Two tenants, one known by its site's host, one by its cloud id.
fn tenants() -> Option<&'static Settings> {
    static SETTINGS: OnceLock<Option<Settings>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            let config = r#"
[[tenants]]
name = "acme"
confluence_base_url = "https://acme.atlassian.net/wiki"
auth = { kind = "basic", email = "bot@acme.example", token = "env:PATH" }

[[tenants]]
name = "globex"
gateway_base_url = "https://api.atlassian.com"
auth = { kind = "basic", email = "bot@globex.example", token = "env:PATH", cloud_id = "globex-cloud" }
"#;
            Settings::from_toml(config, std::iter::empty())
                .ok()
                .map(|(settings, _)| settings)
        })
        .as_ref()
}

/// The body of an `installed` / `uninstalled` callback: parsed as gatehouse parses it, then its
/// site bound to a tenant (or refused).
pub fn connect_lifecycle(data: &[u8]) {
    let Ok(payload) = serde_json::from_slice::<LifecyclePayload>(data) else {
        return;
    };
    let Some(settings) = tenants() else {
        panic!("the fuzz tenants' config is valid");
    };
    let site = Site {
        base_url: payload.base_url.as_deref().unwrap_or_default(),
        cloud_id: payload.cloud_id.as_deref(),
        client_key: &payload.client_key,
    };
    if let Ok(tenant) = settings.bind_site(site) {
        assert!(tenant == "acme" || tenant == "globex", "{tenant}");
        // Binding is deterministic.
        assert_eq!(settings.bind_site(site), Ok(tenant));
    }
}
