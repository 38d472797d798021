//! `[store]`: the SQL store and the key that seals the credentials it keeps, with its checks.

use serde::{Deserialize, Serialize};

use super::{Secret, SensitiveUrl, VerificationScheme};

/// The SQL store: installations, dedupe claims, cursors, approvals and the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://…`. Shown with its password
    /// hidden.
    pub url: SensitiveUrl,
    pub max_connections: u32,
    /// Seals the credentials the store keeps (Connect shared secrets, OAuth tokens) with
    /// AES-256-GCM: base64 of 32 random bytes (`openssl rand -base64 32`), as a secret reference.
    pub encryption_key: Option<Secret>,
    /// Keys `encryption_key` replaced, while `gatehouse store seal` reseals what they sealed:
    /// values sealed under one of them still open (new ones are always sealed with
    /// `encryption_key`). Drop them once the command reports nothing left to reseal.
    pub retired_encryption_keys: Vec<Secret>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: SensitiveUrl::new("sqlite://data/gatehouse.db"),
            max_connections: 8,
            encryption_key: None,
            retired_encryption_keys: Vec::new(),
        }
    }
}

/// Checks `[store]`; warns when credentials would be kept in clear.
pub(super) fn validate(
    settings: &super::Settings,
    error: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
) {
    let store_url = settings.store.url.expose();
    if !(store_url.starts_with("sqlite:")
        || store_url.starts_with("postgres://")
        || store_url.starts_with("postgresql://"))
    {
        error(
            "store.url".into(),
            "must start with sqlite:, postgres:// or postgresql://".into(),
        );
    }
    if settings.store.max_connections == 0 {
        error("store.max_connections".into(), "must be at least 1".into());
    }
    let current = settings
        .store
        .encryption_key
        .as_ref()
        .and_then(|key| super::EncryptionKey::parse(key).ok());
    let mut retired_seen = Vec::new();
    for (i, retired) in settings.store.retired_encryption_keys.iter().enumerate() {
        let key = format!("store.retired_encryption_keys[{i}]");
        match super::EncryptionKey::parse(retired) {
            Err(message) => error(key, message),
            Ok(_) if settings.store.encryption_key.is_none() => error(
                key,
                "a retired key is only read alongside the key that replaced it: set the new one as \
                 store.encryption_key"
                    .into(),
            ),
            Ok(parsed) if current.as_ref().is_some_and(|c| c.bytes() == parsed.bytes()) => error(
                key,
                "is store.encryption_key itself: a key cannot retire while it seals".into(),
            ),
            Ok(parsed) if retired_seen.contains(parsed.bytes()) => error(key, "is listed twice".into()),
            Ok(parsed) => retired_seen.push(*parsed.bytes()),
        }
    }
    match &settings.store.encryption_key {
        Some(key) => {
            if let Err(message) = super::EncryptionKey::parse(key) {
                error("store.encryption_key".into(), message);
            }
        }
        None => {
            let keeps_credentials = settings
                .sources
                .iter()
                .any(|s| s.scheme == VerificationScheme::ConnectJwt)
                || settings
                    .tenant_configs()
                    .iter()
                    .any(|(_, a)| matches!(a.auth, Some(crate::config::AuthSettings::Oauth { .. })));
            if keeps_credentials {
                warn(
                    "store.encryption_key".into(),
                    "not set: Connect shared secrets and OAuth tokens are stored in clear in the store"
                        .into(),
                );
            }
        }
    }
}
