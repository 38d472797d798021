//! Credentials for outbound calls: Basic (email + API token), static bearer tokens (SCIM
//! directory token, organization API key) and OAuth 2.0 (3LO) with rotating refresh tokens.
//!
//! OAuth rotation is the delicate one. Atlassian retires a refresh token as soon as it issues the
//! next, and reuse of a retired token after ten minutes revokes the whole grant. So:
//! - refreshing is single-flight: one refresh per process at a time (a mutex), and one per grant
//!   across processes (a lease in the store); concurrent callers wait and then use its result;
//! - the new refresh token is committed to the store *before* the access token is handed out, so
//!   a crash right after cannot leave gatehouse holding only the retired token;
//! - the refresh token used is always the one in the store, never a copy held in memory or the
//!   configured seed once it has been rotated;
//! - a refresh whose answer did not come (a reset, a timeout, an unreadable or 5xx answer) may
//!   have rotated the token all the same, the new one lost on the way: it is asked again at once,
//!   twice within seconds, with the same token, which Atlassian still honours within its
//!   10-minute reuse window (a retired token used *after* the window revokes the whole grant, so
//!   waiting for the next call, which may come later, is what must not be relied on); then the
//!   caller gets a transient error, and the next attempt uses the stored token;
//! - an access token Atlassian refuses (401) is replaced once, and again only a minute after: a
//!   replacement refused as well means the grant lost its access (the app was removed from the
//!   site, the authorizing user lost theirs), which new tokens do not cure, and replacing it on
//!   every call would rotate the refresh token on every call.
//!
//! Header values are marked sensitive, and every provider can [`Credentials::redact`] its secrets
//! out of any text, which the caller applies to every error message.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use handlers::ports::ErrorKind;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::error::ApiError;
use super::metrics::{AtlassianMetrics, OutcomeLabels};
use crate::config::Secret;
use crate::locking::lock;
use crate::store::{OAuthRotation, Store};

/// The operation label of token refreshes.
pub const TOKEN_ENDPOINT: &str = "POST /oauth/token";

/// Access tokens are renewed this long before they expire, so none expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// How long a process may hold the refresh lease (longer than a token request can take).
const LEASE: Duration = Duration::from_secs(30);
/// A refused access token is replaced at most this often: when the one that replaced it is
/// refused too, new tokens do not help (the grant lost its access to the site, not the token
/// its validity), and replacing it on every call would rotate the refresh token on every call.
const REPLACE_REFUSED_EVERY: Duration = Duration::from_secs(60);
/// The pauses before asking the token endpoint again when its answer did not come: seconds, well
/// within Atlassian's 10-minute reuse window. With calls that time out (`http.request_timeout_ms`,
/// 30 s by default) the three tries can outlast the refresh lease; another process may then
/// refresh with the same stored token meanwhile (also inside the reuse window), and this one's
/// rotation is refused as saved by another (`save_oauth_rotation`), not used.
const TOKEN_RETRY_PAUSES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// How often a process waiting on another's lease looks again.
const LEASE_POLL: Duration = Duration::from_millis(200);
/// An access token's lifetime when the token endpoint does not say (Atlassian's last an hour).
const DEFAULT_ACCESS_LIFETIME_SECONDS: i64 = 3600;
/// The longest an access token is believed to last, whatever the token endpoint says: far past
/// Atlassian's hour, and far below what `DateTime` arithmetic can hold (chrono panics on a
/// lifetime past about 9.2e15 s, and a date past year 262143 overflows).
const MAX_ACCESS_LIFETIME_SECONDS: i64 = 365 * 24 * 3600;

/// What authenticates requests to one API.
#[async_trait]
pub trait Credentials: Send + Sync + fmt::Debug {
    /// The `Authorization` header for the next request.
    async fn authorization(&self) -> Result<HeaderValue, ApiError>;

    /// The request made with `used` got 401. True when new credentials are worth one more try
    /// (an OAuth access token revoked before its time); false for static credentials.
    async fn rejected(&self, _used: &HeaderValue) -> bool {
        false
    }

    /// `text` with every secret this provider knows replaced by `***`.
    fn redact(&self, text: &str) -> String;
}

fn sensitive(value: &str) -> Result<HeaderValue, ApiError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        ApiError::invalid(
            "credentials",
            "a credential contains characters an HTTP header cannot carry",
        )
    })?;
    header.set_sensitive(true);
    Ok(header)
}

fn redact_all<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        // Very short values would blank out ordinary words; no real token is that short.
        if secret.len() >= 6 {
            text = text.replace(secret, "***");
        }
    }
    text
}

/// A fixed `Authorization` header: Basic auth with an API token, or a static bearer token (SCIM
/// directory token, organization API key).
pub struct StaticCredentials {
    kind: &'static str,
    header: HeaderValue,
    /// Everything that must never show in an error: the token, and its Basic encoding.
    secrets: Vec<Secret>,
}

impl StaticCredentials {
    pub fn basic(email: &str, token: &Secret) -> Result<Self, ApiError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{}", token.expose()));
        Ok(StaticCredentials {
            kind: "basic",
            header: sensitive(&format!("Basic {encoded}"))?,
            secrets: vec![token.clone(), Secret::new(encoded)],
        })
    }

    pub fn bearer(token: &Secret) -> Result<Self, ApiError> {
        Ok(StaticCredentials {
            kind: "bearer",
            header: sensitive(&format!("Bearer {}", token.expose()))?,
            secrets: vec![token.clone()],
        })
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("kind", &self.kind)
            .field("secrets", &self.secrets)
            .finish()
    }
}

#[async_trait]
impl Credentials for StaticCredentials {
    async fn authorization(&self) -> Result<HeaderValue, ApiError> {
        Ok(self.header.clone())
    }

    fn redact(&self, text: &str) -> String {
        redact_all(text, self.secrets.iter().map(Secret::expose))
    }
}

/// Where an OAuth app gets its tokens.
#[derive(Debug, Clone)]
pub struct OAuthClientConfig {
    pub client_id: String,
    pub client_secret: Secret,
    /// The refresh token from config: seeds the store, used only until the first rotation.
    pub initial_refresh_token: Secret,
    pub token_url: String,
    pub cloud_id: String,
}

#[derive(Clone)]
struct AccessToken {
    header: HeaderValue,
    value: Secret,
    expires_at: DateTime<Utc>,
}

/// When an access token the token endpoint says lasts `expires_in` seconds ends, counted from
/// `now`: at most a year later; `now` itself for zero, a negative lifetime or one that is not a
/// number of seconds, so such a token counts as expired and the next call refreshes it. Never
/// panics, whatever Atlassian (or a proxy) sends.
fn access_expiry(now: DateTime<Utc>, expires_in: Option<&serde_json::Number>) -> DateTime<Utc> {
    let seconds = match expires_in {
        None => DEFAULT_ACCESS_LIFETIME_SECONDS,
        // Saturating: a float cast clamps to i64's range (and is exact for whole seconds).
        Some(number) => number.as_f64().map_or(0, |s| s as i64),
    }
    .clamp(0, MAX_ACCESS_LIFETIME_SECONDS);
    chrono::Duration::try_seconds(seconds)
        .and_then(|lifetime| now.checked_add_signed(lifetime))
        .unwrap_or(now)
}

/// Whether an access token ending at `expires_at` is still good to send at `now`.
fn fresh(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    expires_at - now > chrono::Duration::from_std(EXPIRY_MARGIN).unwrap_or_default()
}

/// An OAuth 2.0 grant, refreshed single-flight with rotation persisted in the store.
pub struct OAuthSession {
    config: OAuthClientConfig,
    grant_key: String,
    seed_fingerprint: String,
    store: Store,
    http: reqwest::Client,
    metrics: AtlassianMetrics,
    current: Mutex<Option<AccessToken>>,
    /// An access token Atlassian refused before its expiry: never adopted again from the store.
    refused: Mutex<Option<Secret>>,
    /// When a refused access token was last replaced ([`REPLACE_REFUSED_EVERY`]).
    replaced_refused: Mutex<Option<std::time::Instant>>,
    /// Recent token values, for redaction.
    seen: Mutex<Vec<Secret>>,
    refresh_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for OAuthSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthSession")
            .field("grant", &self.grant_key)
            .field("token_url", &self.config.token_url)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's answer. No `Debug`: it holds tokens.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Any JSON number: a negative or huge one is read (and bounded, see [`access_expiry`])
    /// rather than making the answer unreadable, which would lose a refresh token Atlassian has
    /// already rotated.
    #[serde(default)]
    expires_in: Option<serde_json::Number>,
    #[serde(default)]
    refresh_token: Option<String>,
}

fn fingerprint(token: &Secret) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.expose().as_bytes(),
    ))
}

impl OAuthSession {
    pub fn new(
        config: OAuthClientConfig,
        store: Store,
        http: reqwest::Client,
        metrics: AtlassianMetrics,
    ) -> Self {
        OAuthSession {
            grant_key: format!("{}@{}", config.client_id, config.cloud_id),
            seed_fingerprint: fingerprint(&config.initial_refresh_token),
            config,
            store,
            http,
            metrics,
            current: Mutex::new(None),
            refused: Mutex::new(None),
            replaced_refused: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn remember(&self, secret: &Secret) {
        let mut seen = lock(&self.seen);
        if !seen.iter().any(|s| s == secret) {
            seen.push(secret.clone());
            // Enough for the tokens in flight; older ones are long retired.
            if seen.len() > 8 {
                seen.remove(0);
            }
        }
    }

    fn usable(&self, now: DateTime<Utc>) -> Option<HeaderValue> {
        lock(&self.current)
            .as_ref()
            .filter(|t| fresh(t.expires_at, now))
            .map(|t| t.header.clone())
    }

    fn adopt(&self, value: Secret, expires_at: DateTime<Utc>) -> Result<HeaderValue, ApiError> {
        let header = sensitive(&format!("Bearer {}", value.expose()))?;
        self.remember(&value);
        *lock(&self.current) = Some(AccessToken {
            header: header.clone(),
            value,
            expires_at,
        });
        Ok(header)
    }

    fn store_error(&self, error: crate::store::StoreError) -> ApiError {
        ApiError::credentials(
            TOKEN_ENDPOINT,
            ErrorKind::Transient,
            format!("cannot keep the OAuth refresh token in the store: {error}"),
        )
    }

    /// Refreshes (or adopts another process's refresh). Caller holds `refresh_lock`.
    async fn refresh(&self) -> Result<HeaderValue, ApiError> {
        let deadline = Utc::now() + chrono::Duration::from_std(LEASE * 2).unwrap_or_default();
        loop {
            let now = Utc::now();
            let grant = self
                .store
                .seed_oauth_grant(
                    &self.grant_key,
                    &self.config.initial_refresh_token,
                    &self.seed_fingerprint,
                )
                .await
                .map_err(|e| self.store_error(e))?;
            self.remember(&grant.refresh_token);
            // Another process may have refreshed already: use its access token.
            if let (Some(access), Some(expires_at)) = (&grant.access_token, grant.access_expires_at) {
                let refused = lock(&self.refused).as_ref() == Some(access);
                if fresh(expires_at, now) && !refused {
                    return self.adopt(access.clone(), expires_at);
                }
            }
            let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
            let claimed = self
                .store
                .claim_oauth_refresh(&self.grant_key, grant.generation, now, lease_until)
                .await
                .map_err(|e| self.store_error(e))?;
            if !claimed {
                if now > deadline {
                    return Err(ApiError::credentials(
                        TOKEN_ENDPOINT,
                        ErrorKind::Transient,
                        "another gatehouse process is refreshing the OAuth token and has not finished",
                    ));
                }
                tokio::time::sleep(LEASE_POLL).await;
                continue;
            }
            let answer = self
                .call_token_endpoint_until_answered(&grant.refresh_token)
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    let _ = self
                        .store
                        .release_oauth_refresh(&self.grant_key, grant.generation)
                        .await;
                    return Err(error);
                }
            };
            let access = Secret::new(answer.access_token);
            self.remember(&access);
            // No refresh token in the answer means Atlassian did not rotate: keep the old one.
            let refresh = answer
                .refresh_token
                .map(Secret::new)
                .unwrap_or_else(|| grant.refresh_token.clone());
            self.remember(&refresh);
            let expires_at = access_expiry(Utc::now(), answer.expires_in.as_ref());
            let rotation = OAuthRotation {
                refresh_token: &refresh,
                access_token: &access,
                access_expires_at: expires_at,
            };
            let saved = self
                .store
                .save_oauth_rotation(&self.grant_key, grant.generation, &rotation)
                .await
                .map_err(|e| self.store_error(e))?;
            if !saved {
                // Our lease expired and another process rotated meanwhile. Ours is then the
                // newest token of the family, but the store no longer knows it: refuse to use
                // it, so the stored chain stays the one truth.
                return Err(ApiError::credentials(
                    TOKEN_ENDPOINT,
                    ErrorKind::Transient,
                    "the OAuth grant was rotated by another process during this refresh",
                ));
            }
            *lock(&self.refused) = None;
            return self.adopt(access, expires_at);
        }
    }

    /// [`Self::call_token_endpoint`], asked again after each of [`TOKEN_RETRY_PAUSES`] while the
    /// failure is transient (see the module docs); a refusal is not asked again.
    async fn call_token_endpoint_until_answered(
        &self,
        refresh_token: &Secret,
    ) -> Result<TokenAnswer, ApiError> {
        let mut pauses = TOKEN_RETRY_PAUSES.iter();
        loop {
            match self.call_token_endpoint(refresh_token).await {
                Err(error) if error.kind() == ErrorKind::Transient => {
                    let Some(pause) = pauses.next() else {
                        return Err(error);
                    };
                    tracing::warn!(
                        grant = %self.grant_key,
                        %error,
                        "the OAuth token endpoint did not answer; asking again with the same refresh token while Atlassian's reuse window lasts"
                    );
                    tokio::time::sleep(*pause).await;
                }
                answered => return answered,
            }
        }
    }

    async fn call_token_endpoint(&self, refresh_token: &Secret) -> Result<TokenAnswer, ApiError> {
        let body = serde_json::json!({
            "grant_type": "refresh_token",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret.expose(),
            "refresh_token": refresh_token.expose(),
        });
        let outcome = |outcome: &'static str| {
            self.metrics
                .token_refreshes
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        };
        let answer = async {
            let response = self.http.post(&self.config.token_url).json(&body).send().await?;
            let status = response.status().as_u16();
            // A token answer is a few hundred bytes.
            let body = super::bounded_read::read_bounded(response, 1024 * 1024).await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let (status, bytes) = match answer.await {
            Ok(answer) => answer,
            Err(error) => {
                outcome("failed");
                return Err(ApiError::transport(TOKEN_ENDPOINT, &error).redacted(|t| self.redact(t)));
            }
        };
        let Some(bytes) = bytes else {
            outcome("failed");
            return Err(ApiError::unreadable(TOKEN_ENDPOINT, "a token answer over 1 MiB"));
        };
        if (200..300).contains(&status) {
            outcome("ok");
            return serde_json::from_slice(&bytes).map_err(|_| {
                ApiError::unreadable(TOKEN_ENDPOINT, "the token endpoint's answer has no access_token")
            });
        }
        let error =
            ApiError::from_answer(TOKEN_ENDPOINT, status, &bytes, None, None).redacted(|t| self.redact(t));
        if matches!(status, 400 | 401 | 403) {
            outcome("rejected");
            tracing::error!(
                grant = %self.grant_key,
                status,
                "Atlassian refused the OAuth refresh token: authorize gatehouse again and set atlassian.auth.refresh_token"
            );
            return Err(ApiError::credentials(
                TOKEN_ENDPOINT,
                ErrorKind::Permanent,
                format!(
                    "the OAuth refresh was refused ({}); authorize gatehouse again and set atlassian.auth.refresh_token",
                    error.message()
                ),
            ));
        }
        outcome("failed");
        Err(error)
    }
}

#[async_trait]
impl Credentials for OAuthSession {
    async fn authorization(&self) -> Result<HeaderValue, ApiError> {
        if let Some(header) = self.usable(Utc::now()) {
            return Ok(header);
        }
        let _single_flight = self.refresh_lock.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(header) = self.usable(Utc::now()) {
            return Ok(header);
        }
        self.refresh().await
    }

    async fn rejected(&self, used: &HeaderValue) -> bool {
        let _single_flight = self.refresh_lock.lock().await;
        let mut current = lock(&self.current);
        if current.as_ref().is_none_or(|t| t.header != used) {
            // Someone already replaced it: try the new one.
            return true;
        }
        let mut replaced = lock(&self.replaced_refused);
        if replaced.is_some_and(|at| at.elapsed() < REPLACE_REFUSED_EVERY) {
            // The last replacement is refused as well: the call fails with its 401 and the
            // token is kept (see `REPLACE_REFUSED_EVERY`).
            return false;
        }
        if let Some(token) = current.take() {
            *lock(&self.refused) = Some(token.value);
        }
        *replaced = Some(std::time::Instant::now());
        true
    }

    fn redact(&self, text: &str) -> String {
        let seen = lock(&self.seen);
        redact_all(
            text,
            seen.iter().map(Secret::expose).chain([
                self.config.client_secret.expose(),
                self.config.initial_refresh_token.expose(),
            ]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lifetime a token endpoint answer gives, read as the session reads it.
    fn lifetime(expires_in: &str) -> chrono::Duration {
        let now = Utc::now();
        let answer: TokenAnswer =
            serde_json::from_str(&format!(r#"{{"access_token": "a", "expires_in": {expires_in}}}"#)).unwrap();
        access_expiry(now, answer.expires_in.as_ref()) - now
    }

    #[test]
    fn token_lifetimes_are_bounded_and_never_panic() {
        let year = chrono::Duration::days(365);
        assert_eq!(lifetime("3600"), chrono::Duration::hours(1));
        assert_eq!(lifetime("3600.0"), chrono::Duration::hours(1));
        assert_eq!(lifetime("null"), chrono::Duration::hours(1));
        // Huge: a year at most (chrono panicked past ~9.2e15 s, the date overflowed past ~8e12 s).
        for huge in [
            u64::MAX.to_string(),
            i64::MAX.to_string(),
            "9300000000000000".to_owned(),
            "8000000000000".to_owned(),
            "1e300".to_owned(),
        ] {
            assert_eq!(lifetime(&huge), year, "{huge}");
        }
        // Zero or negative: expired now, refreshed before the next use.
        let min = i64::MIN.to_string();
        for expired in ["0", "-1", "-3600", min.as_str(), "-1e300"] {
            assert_eq!(lifetime(expired), chrono::Duration::zero(), "{expired}");
            let now = Utc::now();
            assert!(!fresh(now + lifetime(expired), now), "{expired}");
        }
        // Absent: Atlassian's hour.
        let answer: TokenAnswer = serde_json::from_str(r#"{"access_token": "a"}"#).unwrap();
        let now = Utc::now();
        assert_eq!(
            access_expiry(now, answer.expires_in.as_ref()) - now,
            chrono::Duration::hours(1)
        );
    }

    #[tokio::test]
    async fn basic_auth_is_sensitive_and_redactable() {
        let auth = StaticCredentials::basic("bot@example.com", &Secret::new("api-token-123")).unwrap();
        let header = auth.authorization().await.unwrap();
        assert!(header.is_sensitive());
        assert_eq!(
            header.to_str().unwrap(),
            "Basic Ym90QGV4YW1wbGUuY29tOmFwaS10b2tlbi0xMjM="
        );
        let debug = format!("{auth:?}");
        assert!(!debug.contains("api-token-123"), "{debug}");
        assert_eq!(
            auth.redact("echo: Basic Ym90QGV4YW1wbGUuY29tOmFwaS10b2tlbi0xMjM= and api-token-123"),
            "echo: Basic *** and ***"
        );
        assert!(!auth.rejected(&header).await);
    }
}
