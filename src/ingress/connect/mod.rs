//! Atlassian Connect: the app descriptor, and the lifecycle callbacks that hand gatehouse each
//! site's shared secret.
//!
//! `installed` and `uninstalled` are signed RS256 by Atlassian ("signed install"): the token's
//! `kid` names a public key served at `connect.install_keys_url/{kid}`, its `aud` must be our base
//! URL, its `qsh` must match the callback, and its `iss` must be the `clientKey` in the body. A
//! re-install of a site we already know may instead be signed HS256 with the current shared
//! secret (the pre-2021 flow), which is accepted too. Secrets are stored, never logged.
//!
//! Neither token covers the body, which carries the shared secret: each lifecycle token changes
//! an installation once, with the body it came with (spent in the store with the change,
//! `Store::apply_lifecycle`; the same body again is answered as done and changes nothing), so
//! one seen in a log cannot install a secret of its holder's choosing before it expires.
//!
//! The descriptor is public, so any Atlassian site can install the app and would receive a
//! valid shared secret. Installs (and uninstalls) are therefore accepted only from sites a
//! configured tenant names (`Settings::bind_site`): any other gets 403 with the reason, a
//! warning in the log and a `refused` record in the audit trail, and no secret is stored.

mod install_keys;
mod installations;
mod ttl_cache;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::IngressState;
use super::body::{is_json, read_body};
use super::error::IngressError;
use super::verify::{RequestParts, VerifyError, connect_jwt, jwt};
use crate::audit::{ActionRef, AuditKind, AuditLog, NewRecord, Outcome};
use crate::config::{Secret, Site};
use crate::store::{Installation, LifecycleApplied, LifecycleChange, SpentToken};
use crate::telemetry::metrics::{SourceOutcome, SourceReason};

pub use install_keys::InstallKeys;
pub use installations::Installations;

/// The metric label for lifecycle callbacks.
const LIFECYCLE: &str = "connect-lifecycle";

/// The lifecycle payload fields gatehouse uses (Atlassian sends more).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LifecyclePayload {
    pub(crate) client_key: String,
    #[serde(default)]
    pub(crate) shared_secret: Option<String>,
    #[serde(default)]
    pub(crate) base_url: Option<String>,
    #[serde(default)]
    pub(crate) cloud_id: Option<String>,
}

impl std::fmt::Debug for LifecyclePayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecyclePayload")
            .field("client_key", &self.client_key)
            .finish_non_exhaustive()
    }
}

pub async fn installed(
    State(state): State<Arc<IngressState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    lifecycle(state, Lifecycle::Installed, method, uri, headers, body).await
}

pub async fn uninstalled(
    State(state): State<Arc<IngressState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    lifecycle(state, Lifecycle::Uninstalled, method, uri, headers, body).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Installed,
    Uninstalled,
}

async fn lifecycle(
    state: Arc<IngressState>,
    kind: Lifecycle,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = handle_lifecycle(&state, kind, &method, &uri, &headers, body).await;
    let outcome = match &result {
        Ok(()) => "accepted",
        Err(e) => e.outcome(),
    };
    state
        .metrics
        .ingress_requests
        .get_or_create(&SourceOutcome {
            source: LIFECYCLE.to_owned(),
            outcome,
        })
        .inc();
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            if let IngressError::Unauthorized(why) = &error {
                state
                    .metrics
                    .verification_failures
                    .get_or_create(&SourceReason {
                        source: LIFECYCLE.to_owned(),
                        reason: why.reason(),
                    })
                    .inc();
                tracing::warn!(lifecycle = ?kind, reason = why.reason(), detail = %why, "Connect lifecycle callback refused");
            } else {
                tracing::warn!(lifecycle = ?kind, error = %error, "Connect lifecycle callback failed");
            }
            error.into_response()
        }
    }
}

async fn handle_lifecycle(
    state: &IngressState,
    kind: Lifecycle,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), IngressError> {
    let base_url = state
        .settings
        .connect
        .base_url
        .as_deref()
        .ok_or(IngressError::Unauthorized(VerifyError::Missing(
            "connect.base_url in config",
        )))?;
    if !is_json(headers) {
        return Err(IngressError::UnsupportedMediaType);
    }
    let body = read_body(body, headers, state.settings.server.max_body_bytes).await?;
    let request = RequestParts {
        method,
        path: uri.path(),
        query: uri.query(),
        headers,
        body: &body,
    };
    let token = connect_jwt::token(&request).ok_or(VerifyError::Missing("Authorization: JWT header"))?;
    let decoded = jwt::decode(&token)?;
    let issuer = decoded
        .claims
        .iss
        .clone()
        .ok_or(VerifyError::Missing("iss claim"))?;
    let signed_by_atlassian = decoded.header.alg == "RS256";
    match decoded.header.alg.as_str() {
        "RS256" => {
            let kid = decoded
                .header
                .kid
                .as_deref()
                .ok_or(VerifyError::Missing("kid header"))?;
            // The cheap checks first: a token that could not pass them never costs a key fetch.
            let audience_ok = decoded
                .claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(base_url));
            if !audience_ok {
                return Err(VerifyError::WrongAudience.into());
            }
            decoded.check_time(chrono::Utc::now(), state.settings.connect.jwt_leeway_seconds)?;
            let key = state.install_keys.key(kid).await?;
            decoded.verify_rs256(&key)?;
            connect_jwt::check_qsh(&decoded.claims, &request, &state.base_path)?;
        }
        "HS256" => {
            // Only a site we already know can sign with its shared secret: the very check its
            // webhooks pass (installation, signature, time, qsh).
            connect_jwt::verify(
                &state.installations,
                state.settings.connect.jwt_leeway_seconds,
                &state.base_path,
                &request,
                chrono::Utc::now(),
            )
            .await?;
        }
        other => return Err(VerifyError::WrongAlgorithm(other.to_owned()).into()),
    }

    // A token seen before with another body is refused before the body is read (a replay naming
    // another site must not become a refused install in the audit trail). Best effort against a
    // replay racing the first use: `apply_lifecycle` decides for good.
    let fingerprint = decoded.fingerprint();
    let body_digest = super::normalize::sha256_hex(&[&body]);
    let spent_with = state
        .store
        .spent_lifecycle_token(&fingerprint)
        .await
        .map_err(|e| IngressError::Unavailable(e.to_string()))?;
    if spent_with.is_some_and(|spent_with| spent_with != body_digest) {
        return Err(VerifyError::Replayed.into());
    }
    let payload: LifecyclePayload = serde_json::from_slice(&body)
        .map_err(|e| IngressError::Malformed(format!("lifecycle payload: {e}")))?;
    if payload.client_key != issuer {
        return Err(VerifyError::IssuerMismatch.into());
    }
    let site = Site {
        base_url: payload.base_url.as_deref().unwrap_or_default(),
        cloud_id: payload.cloud_id.as_deref(),
        client_key: &payload.client_key,
    };
    let tenant = match state.settings.bind_site(site) {
        Ok(tenant) => tenant,
        Err(why) => return Err(refuse(state, kind, site, why).await),
    };
    // A known installation stays with its tenant: a re-install (signed with its current secret,
    // whose token does not cover the body) must not move it to another tenant's site. One that
    // binds to no tenant (stored before sites were bound, or its tenant removed) is bound by
    // Atlassian's word alone: its own secret, which was never a tenant's, cannot make it one.
    if let Some(known) = state
        .installations
        .get(&payload.client_key)
        .await
        .map_err(|e| IngressError::Unavailable(e.to_string()))?
    {
        let before = state.settings.bind_site(Site {
            base_url: &known.base_url,
            cloud_id: known.cloud_id.as_deref(),
            client_key: &known.client_key,
        });
        let why = match before {
            Ok(before) if before != tenant => Some(format!(
                "installation {} is tenant `{before}`'s; a re-install cannot move it to tenant `{tenant}`",
                payload.client_key
            )),
            Ok(_) => None,
            Err(_) if signed_by_atlassian => None,
            Err(_) => Some(format!(
                "installation {} is bound to no tenant; only an install signed by Atlassian (RS256) \
                 may bind it to tenant `{tenant}`, not one signed with its own shared secret",
                payload.client_key
            )),
        };
        if let Some(why) = why {
            return Err(refuse(state, kind, site, why).await);
        }
    }
    let installation = match kind {
        Lifecycle::Installed => {
            let shared_secret = payload
                .shared_secret
                .filter(|s| !s.is_empty())
                .ok_or_else(|| IngressError::Malformed("installed payload has no sharedSecret".to_owned()))?;
            Some(Installation {
                client_key: payload.client_key.clone(),
                shared_secret: Secret::new(shared_secret),
                base_url: site.base_url.to_owned(),
                cloud_id: payload.cloud_id.clone(),
                installed_at: chrono::Utc::now(),
            })
        }
        Lifecycle::Uninstalled => None,
    };
    let change = match &installation {
        Some(installation) => LifecycleChange::Install(installation),
        None => LifecycleChange::Uninstall {
            client_key: &payload.client_key,
        },
    };
    // Accepted until `exp + leeway` has passed by whole seconds (`check_time`).
    let expires_at = decoded
        .accepted_until(state.settings.connect.jwt_leeway_seconds)?
        .saturating_add(1);
    let token = SpentToken {
        sha256: &fingerprint,
        body_sha256: &body_digest,
        expires_at: chrono::DateTime::from_timestamp(expires_at, 0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
    };
    let applied = state
        .installations
        .apply(token, change)
        .await
        .map_err(|e| IngressError::Unavailable(e.to_string()))?;
    match applied {
        LifecycleApplied::Installed => {
            tracing::info!(%tenant, client_key = %payload.client_key, site = %site.base_url, "Connect app installed");
        }
        LifecycleApplied::Uninstalled { existed } => {
            tracing::info!(%tenant, client_key = %payload.client_key, existed, "Connect app uninstalled");
        }
        LifecycleApplied::AlreadyApplied => {
            tracing::info!(%tenant, client_key = %payload.client_key, "Connect lifecycle callback received again with its token and body; already applied");
        }
        LifecycleApplied::TokenAlreadySpent => return Err(VerifyError::Replayed.into()),
    }
    Ok(())
}

/// Refuses a lifecycle callback from a site no tenant names: recorded in the audit trail (503
/// when it cannot be, so Atlassian tries again and the refusal is not lost), then 403.
async fn refuse(state: &IngressState, kind: Lifecycle, site: Site<'_>, why: String) -> IngressError {
    let what = match kind {
        Lifecycle::Installed => "connect.install",
        Lifecycle::Uninstalled => "connect.uninstall",
    };
    let host = url::Url::parse(site.base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown-site".to_owned());
    let mut record = NewRecord::new(ulid::Ulid::generate(), AuditKind::Refused);
    record.action = Some(ActionRef {
        action_type: what.to_owned(),
        target: format!("site:{host}/client:{}", site.client_key),
        org_wide: false,
    });
    record.outcome = Outcome {
        status: "refused".to_owned(),
        http_status: Some(403),
        error: Some(why.clone()),
    };
    let audit = AuditLog::from_settings(state.store.clone(), &state.settings);
    if let Err(error) = audit.append(record).await {
        return IngressError::Unavailable(format!("cannot record the refused {what}: {error}"));
    }
    tracing::warn!(site = %host, client_key = %site.client_key, reason = %why, "Connect {what} refused: the site is not a configured tenant");
    IngressError::Refused {
        status: StatusCode::FORBIDDEN,
        reason: "site_not_a_tenant",
        detail: why,
    }
}

/// `GET /connect/atlassian-connect.json`: the descriptor, generated from config.
pub async fn descriptor(State(state): State<Arc<IngressState>>) -> Response {
    let connect = &state.settings.connect;
    let Some(base_url) = connect.base_url.as_deref() else {
        return crate::http_error::error_response(
            StatusCode::NOT_FOUND,
            "not_configured",
            "set connect.base_url to serve a descriptor",
        );
    };
    let source = connect.source.clone().or_else(|| {
        state
            .settings
            .sources
            .iter()
            .find(|s| s.scheme == crate::config::VerificationScheme::ConnectJwt)
            .map(|s| s.name.clone())
    });
    let webhooks: Vec<serde_json::Value> = match &source {
        Some(source) => connect
            .webhooks
            .iter()
            .map(|event| json!({"event": event, "url": format!("/webhooks/{source}/{event}")}))
            .collect(),
        None => Vec::new(),
    };
    Json(json!({
        "key": connect.key,
        "name": connect.name,
        "description": connect.description,
        "baseUrl": base_url.trim_end_matches('/'),
        "vendor": {"name": "gatehouse", "url": base_url},
        "authentication": {"type": "jwt"},
        "apiMigrations": {"signed-install": true},
        "lifecycle": {"installed": "/connect/installed", "uninstalled": "/connect/uninstalled"},
        "scopes": connect.scopes,
        "modules": {"webhooks": webhooks},
    }))
    .into_response()
}
