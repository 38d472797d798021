//! `[connect]`: the Atlassian Connect app gatehouse presents (only needed for `connect-jwt`
//! sources), and its checks.

use serde::{Deserialize, Serialize};

use super::VerificationScheme;
use super::checks::{check_url, is_name};

/// The Atlassian Connect app gatehouse presents (only needed for `connect-jwt` sources).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectSettings {
    /// The app key in the descriptor; unique across Atlassian Marketplace.
    pub key: String,
    pub name: String,
    pub description: String,
    /// The public URL Atlassian reaches gatehouse at. The descriptor's `baseUrl`, the `aud` of
    /// lifecycle tokens, and the root that `qsh` paths are relative to.
    pub base_url: Option<String>,
    /// The `connect-jwt` source webhooks are delivered to (`/webhooks/{source}/{event}`).
    pub source: Option<String>,
    /// Where Atlassian publishes the RS256 keys that sign lifecycle callbacks (`{url}/{kid}`).
    pub install_keys_url: String,
    /// Connect webhook events to subscribe to, e.g. `user_created`, `group_removed`.
    pub webhooks: Vec<String>,
    /// Connect scopes requested in the descriptor.
    pub scopes: Vec<String>,
    /// Allowed clock skew for `exp`/`iat`.
    pub jwt_leeway_seconds: u64,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings {
            key: "gatehouse".to_owned(),
            name: "gatehouse".to_owned(),
            description: "Reacts to identity events with audited follow-up actions".to_owned(),
            base_url: None,
            source: None,
            install_keys_url: "https://connect-install-keys.atlassian.com".to_owned(),
            webhooks: [
                "user_created",
                "user_deactivated",
                "user_reactivated",
                "user_removed",
                "group_created",
                "group_removed",
            ]
            .map(str::to_owned)
            .to_vec(),
            scopes: vec!["READ".to_owned()],
            jwt_leeway_seconds: 30,
        }
    }
}

/// Checks `[connect]` against the `connect-jwt` sources.
pub(super) fn validate(settings: &super::Settings, error: &mut impl FnMut(String, String)) {
    let connect_sources: Vec<&str> = settings
        .sources
        .iter()
        .filter(|s| s.scheme == VerificationScheme::ConnectJwt)
        .map(|s| s.name.as_str())
        .collect();
    let connect = &settings.connect;
    if !connect_sources.is_empty() {
        match &connect.base_url {
            None => error(
                "connect.base_url".into(),
                "required when a connect-jwt source is configured (the URL Atlassian reaches gatehouse at)"
                    .into(),
            ),
            Some(url) => check_url("connect.base_url", url, error),
        }
        match &connect.source {
            Some(name) if !connect_sources.contains(&name.as_str()) => error(
                "connect.source".into(),
                format!(
                    "`{name}` is not a connect-jwt source (have: {})",
                    connect_sources.join(", ")
                ),
            ),
            None if connect_sources.len() > 1 => error(
                "connect.source".into(),
                format!(
                    "several connect-jwt sources ({}); name the one webhooks go to",
                    connect_sources.join(", ")
                ),
            ),
            _ => {}
        }
    } else if let Some(name) = &connect.source {
        error(
            "connect.source".into(),
            format!("`{name}` is not a connect-jwt source"),
        );
    }
    if url::Url::parse(&connect.install_keys_url).is_err() {
        error("connect.install_keys_url".into(), "is not a URL".into());
    }
    for (i, event) in connect.webhooks.iter().enumerate() {
        if !is_name(event, &['_', ':']) {
            error(
                format!("connect.webhooks[{i}]"),
                format!("`{event}` is not an event name"),
            );
        }
    }
}
