//! One Atlassian tenant (`[[tenants]]`, or the legacy single `[atlassian]` section, which is the
//! tenant `default`): which site and organization it is, where gatehouse reaches it, with which
//! credentials, and how politely (rate limits, retries, timeouts).
//!
//! The site (`confluence_base_url`'s host, `cloud_id`, `connect_client_key`) is also what binds
//! Connect installations to the tenant: an install from a site no tenant names is refused.
//!
//! Each API is optional and switched on by its credentials: Confluence by `auth`, SCIM by
//! `scim_base_url` + `scim_token`, the organization APIs (events-stream, user management) by
//! `admin_api_key`. Every base URL is configurable so tests and demos point gatehouse at
//! `gatehouse-sim`.
//!
//! Scoped API tokens and OAuth only work through the gateway
//! (`https://api.atlassian.com/ex/confluence/{cloudId}/wiki`): on the site URL they get 401. So
//! when `auth` names a `cloud_id`, the Confluence base is derived from `gateway_base_url`, and an
//! explicit site URL alongside it is refused.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Secret;
use super::checks::{Ending, check_credentialed_url, ending};

const ATLASSIAN_API: &str = "https://api.atlassian.com";

/// The name of the tenant a legacy `[atlassian]` section (or a config with none) stands for.
pub use handlers::DEFAULT_TENANT;

fn default_api_base_url() -> String {
    ATLASSIAN_API.to_owned()
}

/// One tenant: a `[[tenants]]` entry, or the `[atlassian]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtlassianSettings {
    /// Names the tenant in envelopes, audit records, metrics, CLI `--tenant` and everything kept
    /// per tenant. Required in `[[tenants]]`; `[atlassian]` is the tenant `default`.
    #[serde(default, alias = "tenant")]
    pub name: Option<String>,
    /// The site's cloud id: Connect installs and events claiming it bind to this tenant (and,
    /// with OAuth or a scoped token, it must equal `auth.cloud_id`, which it defaults to).
    #[serde(default)]
    pub cloud_id: Option<String>,
    /// The Connect `clientKey` of the site's installation, when known: only that installation
    /// is accepted for this tenant (a re-install under another key is refused).
    #[serde(default)]
    pub connect_client_key: Option<String>,
    /// The Confluence site, e.g. `https://example.atlassian.net/wiki` (Basic auth with an
    /// unscoped token). Leave it out when `auth` names a `cloud_id`.
    #[serde(default)]
    pub confluence_base_url: Option<String>,
    /// The gateway that OAuth and scoped tokens go through.
    #[serde(default = "default_api_base_url")]
    pub gateway_base_url: String,
    /// `https://api.atlassian.com/scim/directory/{directoryId}`.
    #[serde(default)]
    pub scim_base_url: Option<String>,
    /// Root of the organization APIs (events-stream, user management).
    #[serde(default = "default_api_base_url")]
    pub admin_base_url: String,
    /// The organization whose events-stream is read.
    #[serde(default)]
    pub org_id: Option<String>,
    /// How gatehouse authenticates to Confluence.
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    /// The SCIM directory's bearer token.
    #[serde(default)]
    pub scim_token: Option<Secret>,
    /// When the SCIM token expires (Atlassian sends no reminder).
    #[serde(default)]
    pub scim_token_expires_at: Option<DateTime<Utc>>,
    /// The organization API key (`read:events:admin`, user management).
    #[serde(default)]
    pub admin_api_key: Option<Secret>,
    #[serde(default)]
    pub admin_api_key_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub retry: RetrySettings,
    #[serde(default)]
    pub rate_limit: RateLimitSettings,
}

impl AtlassianSettings {
    /// Every secret in this section (for scrubbing them from anything recorded).
    pub fn secrets(&self) -> Vec<Secret> {
        let mut secrets: Vec<Secret> = self
            .scim_token
            .iter()
            .chain(self.admin_api_key.iter())
            .cloned()
            .collect();
        match &self.auth {
            Some(AuthSettings::Basic { token, .. }) => secrets.push(token.clone()),
            Some(AuthSettings::Oauth {
                client_secret,
                refresh_token,
                ..
            }) => {
                secrets.push(client_secret.clone());
                secrets.push(refresh_token.clone());
            }
            None => {}
        }
        secrets
    }
}

/// Confluence credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthSettings {
    /// An API token: `Authorization: Basic base64(email:token)`.
    Basic {
        email: String,
        token: Secret,
        /// Set for a *scoped* API token: calls then go through the gateway for this site.
        #[serde(default)]
        cloud_id: Option<String>,
        /// API tokens expire after at most a year, silently.
        #[serde(default)]
        token_expires_at: Option<DateTime<Utc>>,
    },
    /// OAuth 2.0 (3LO) with rotating refresh tokens. The configured refresh token seeds the
    /// store; after the first rotation the store holds the live one.
    Oauth {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        #[serde(default = "default_token_url")]
        token_url: String,
        cloud_id: String,
    },
}

fn default_token_url() -> String {
    "https://auth.atlassian.com/oauth/token".to_owned()
}

impl AuthSettings {
    /// The site's cloud id when calls must go through the gateway.
    pub fn gateway_cloud_id(&self) -> Option<&str> {
        match self {
            AuthSettings::Basic { cloud_id, .. } => cloud_id.as_deref(),
            AuthSettings::Oauth { cloud_id, .. } => Some(cloud_id),
        }
    }
}

/// HTTP client timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub connect_timeout_ms: u64,
    /// A whole request, body included; a slower one is a (retryable) timeout.
    pub request_timeout_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// Retries of one call (the worker's own retries come on top, for transient failures).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Tries per call, the first included.
    pub max_attempts: u32,
    /// Backoff: `min(base·2^n, max)·U(0.7, 1.3)`, or `Retry-After` when longer.
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// The longest a call waits, in total, for rate-limit pauses (a quota reset can be an hour
    /// away) and for the `Retry-After` of a 5xx, 408 or 425 (maintenance can ask for an hour);
    /// a wait beyond what is left of it fails the call as transient at once, and the worker
    /// retries later.
    pub max_wait_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 6,
            base_delay_ms: 2_000,
            max_delay_ms: 30_000,
            max_wait_ms: 120_000,
        }
    }
}

/// gatehouse's own pace, per tenant, endpoint and method, kept below Atlassian's burst limits
/// (about 100 GET/POST and 50 PUT/DELETE per second per endpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Requests per second for the whole tenant, every endpoint of every API together (shared
    /// among gatehouse processes, each taking 1/N). Unset: no budget until Atlassian's 429s
    /// teach one.
    pub tenant_per_second: Option<f64>,
    /// Requests the tenant budget allows at once before its pace applies.
    pub tenant_burst: u32,
    /// GET (and read-only POST) requests per second per endpoint.
    pub reads_per_second: f64,
    /// Writes per second per endpoint.
    pub writes_per_second: f64,
    /// Requests allowed at once before the pace applies.
    pub burst: u32,
    /// Per-endpoint overrides, keyed by the endpoint label (`GET /rest/api/user`, see
    /// docs/atlassian.md). The events-stream has a built-in 10 per minute.
    pub endpoints: BTreeMap<String, EndpointRateLimit>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            tenant_per_second: None,
            tenant_burst: 10,
            reads_per_second: 20.0,
            writes_per_second: 10.0,
            burst: 10,
            endpoints: BTreeMap::new(),
        }
    }
}

/// One endpoint's pace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl AtlassianSettings {
    /// Settings with this Confluence auth, no base URL of its own, and every other key at its
    /// default (tests and tools fill in the rest).
    pub fn new(auth: Option<AuthSettings>) -> Self {
        AtlassianSettings {
            name: None,
            cloud_id: None,
            connect_client_key: None,
            confluence_base_url: None,
            gateway_base_url: default_api_base_url(),
            scim_base_url: None,
            admin_base_url: default_api_base_url(),
            org_id: None,
            auth,
            scim_token: None,
            scim_token_expires_at: None,
            admin_api_key: None,
            admin_api_key_expires_at: None,
            http: HttpSettings::default(),
            retry: RetrySettings::default(),
            rate_limit: RateLimitSettings::default(),
        }
    }

    /// The Confluence base URL (`…/wiki`) calls use: the gateway one when the auth names a cloud
    /// id, else `confluence_base_url`.
    pub fn confluence_base(&self) -> Option<String> {
        match self.auth.as_ref()?.gateway_cloud_id() {
            Some(cloud_id) => Some(format!(
                "{}/ex/confluence/{cloud_id}/wiki",
                self.gateway_base_url.trim_end_matches('/')
            )),
            None => self
                .confluence_base_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
        }
    }

    /// The tenant's name (see [`AtlassianSettings::name`]).
    pub fn tenant_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| DEFAULT_TENANT.to_owned())
    }

    /// The site's cloud id: `cloud_id`, else the one the auth goes through the gateway with.
    pub fn site_cloud_id(&self) -> Option<&str> {
        self.cloud_id
            .as_deref()
            .or_else(|| self.auth.as_ref().and_then(AuthSettings::gateway_cloud_id))
    }

    /// Whether the organization's events-stream can be read (`org_id` and `admin_api_key`).
    pub fn polls_org_events(&self) -> bool {
        self.org_id.is_some() && self.admin_api_key.is_some()
    }

    /// Whether SCIM is configured (`scim_base_url` and `scim_token`).
    pub fn scim_reachable(&self) -> bool {
        self.scim_base_url.is_some() && self.scim_token.is_some()
    }

    /// The site's host (`example.atlassian.net`), from `confluence_base_url`.
    pub fn site_host(&self) -> Option<String> {
        self.confluence_base_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    }

    /// Every credential expiry date configured, by the metric label and the config key naming it
    /// (relative to the tenant's table).
    pub fn token_expiries(&self) -> Vec<(&'static str, &'static str, DateTime<Utc>)> {
        let mut expiries = Vec::new();
        if let Some(AuthSettings::Basic {
            token_expires_at: Some(at),
            ..
        }) = &self.auth
        {
            expiries.push(("api_token", "auth.token_expires_at", *at));
        }
        if let Some(at) = self.scim_token_expires_at {
            expiries.push(("scim_token", "scim_token_expires_at", at));
        }
        if let Some(at) = self.admin_api_key_expires_at {
            expiries.push(("admin_api_key", "admin_api_key_expires_at", at));
        }
        expiries
    }
}

fn check_id(key: &str, value: &str, error: &mut impl FnMut(String, String)) {
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !valid {
        error(
            key.to_owned(),
            "must be non-empty: letters, digits, `-`, `_`, `.`, `:`".to_owned(),
        );
    }
}

/// Every Atlassian endpoint gatehouse calls, by the label `rate_limit.endpoints` names it with
/// (and metrics and logs show). A test in `atlassian` holds this list to the clients' own.
/// Kept here, not taken from the clients, so the configuration imports nothing above it.
pub const ENDPOINT_LABELS: [&str; 17] = [
    "GET /admin/v1/orgs/{orgId}/events-stream",
    "POST /users/{accountId}/manage/lifecycle/disable",
    "POST /users/{accountId}/manage/lifecycle/enable",
    "GET /rest/api/user",
    "GET /rest/api/user/memberof",
    "GET /rest/api/group",
    "GET /rest/api/group/picker",
    "GET /rest/api/group/{groupId}/membersByGroupId",
    "POST /rest/api/group/userByGroupId",
    "DELETE /rest/api/group/userByGroupId",
    "POST /api/v2/users-bulk",
    "GET /Users",
    "POST /Users",
    "GET /Users/{id}",
    "PATCH /Users/{id}",
    "GET /Groups",
    "PATCH /Groups/{id}",
];

/// Checks one tenant, whose keys start with `prefix` (`atlassian`, `tenants[1]`); called by the
/// config's validation.
pub(super) fn validate(
    prefix: &str,
    settings: &AtlassianSettings,
    now: DateTime<Utc>,
    error: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
) {
    check_credentialed_url(
        &format!("{prefix}.gateway_base_url"),
        &settings.gateway_base_url,
        error,
    );
    check_credentialed_url(
        &format!("{prefix}.admin_base_url"),
        &settings.admin_base_url,
        error,
    );
    if let Some(url) = &settings.confluence_base_url {
        check_credentialed_url(&format!("{prefix}.confluence_base_url"), url, error);
    }
    match &settings.auth {
        None => {
            if settings.confluence_base_url.is_some() {
                error(
                    format!("{prefix}.auth"),
                    "required to call Confluence (basic or oauth)".into(),
                );
            }
        }
        Some(auth) => {
            match auth {
                AuthSettings::Basic { email, .. } => {
                    if !email.contains('@') {
                        error(
                            format!("{prefix}.auth.email"),
                            "must be the email of the account that owns the API token".into(),
                        );
                    }
                }
                AuthSettings::Oauth {
                    client_id, token_url, ..
                } => {
                    if client_id.trim().is_empty() {
                        error(format!("{prefix}.auth.client_id"), "must not be empty".into());
                    }
                    check_credentialed_url(&format!("{prefix}.auth.token_url"), token_url, error);
                }
            }
            match auth.gateway_cloud_id() {
                Some(cloud_id) => {
                    check_id(&format!("{prefix}.auth.cloud_id"), cloud_id, error);
                    if settings.confluence_base_url.is_some() {
                        error(
                            format!("{prefix}.confluence_base_url"),
                            "remove it: with a cloud_id (OAuth, scoped token) Confluence is reached through \
                             gateway_base_url/ex/confluence/{cloud_id}; a site URL answers 401"
                                .into(),
                        );
                    }
                }
                None if settings.confluence_base_url.is_none() => error(
                    format!("{prefix}.confluence_base_url"),
                    "required with a basic token (e.g. https://example.atlassian.net/wiki), or set \
                     atlassian.auth.cloud_id for a scoped token"
                        .into(),
                ),
                None => {}
            }
        }
    }
    match (&settings.scim_base_url, &settings.scim_token) {
        (Some(url), Some(_)) => check_credentialed_url(&format!("{prefix}.scim_base_url"), url, error),
        (Some(_), None) => error(
            format!("{prefix}.scim_token"),
            "required when scim_base_url is set".into(),
        ),
        (None, Some(_)) => error(
            format!("{prefix}.scim_base_url"),
            "required when scim_token is set".into(),
        ),
        (None, None) => {}
    }
    if let Some(org_id) = &settings.org_id {
        check_id(&format!("{prefix}.org_id"), org_id, error);
    } else if settings.admin_api_key.is_some() {
        warn(
            format!("{prefix}.org_id"),
            "not set: the organization events-stream cannot be read (user management still works)".into(),
        );
    }
    if let Some(cloud_id) = &settings.cloud_id {
        check_id(&format!("{prefix}.cloud_id"), cloud_id, error);
        if let Some(auth_cloud_id) = settings.auth.as_ref().and_then(AuthSettings::gateway_cloud_id)
            && auth_cloud_id != cloud_id
        {
            error(
                format!("{prefix}.cloud_id"),
                format!("`{cloud_id}` differs from auth.cloud_id `{auth_cloud_id}`: one tenant is one site"),
            );
        }
    }
    if let Some(client_key) = &settings.connect_client_key
        && client_key.trim().is_empty()
    {
        error(format!("{prefix}.connect_client_key"), "must not be empty".into());
    }

    let retry = &settings.retry;
    if retry.max_attempts == 0 {
        error(
            format!("{prefix}.retry.max_attempts"),
            "must be at least 1".into(),
        );
    }
    if retry.base_delay_ms == 0 || retry.base_delay_ms > retry.max_delay_ms {
        error(
            format!("{prefix}.retry.base_delay_ms"),
            "must be greater than 0 and at most max_delay_ms".into(),
        );
    }
    if settings.http.request_timeout_ms == 0 {
        error(
            format!("{prefix}.http.request_timeout_ms"),
            "must be greater than 0".into(),
        );
    }
    if settings.http.connect_timeout_ms == 0 {
        error(
            format!("{prefix}.http.connect_timeout_ms"),
            "must be greater than 0".into(),
        );
    }
    let limits = &settings.rate_limit;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(limits.reads_per_second) {
        error(
            format!("{prefix}.rate_limit.reads_per_second"),
            "must be greater than 0".into(),
        );
    }
    if !positive(limits.writes_per_second) {
        error(
            format!("{prefix}.rate_limit.writes_per_second"),
            "must be greater than 0".into(),
        );
    }
    if limits.burst == 0 {
        error(format!("{prefix}.rate_limit.burst"), "must be at least 1".into());
    }
    if let Some(rate) = limits.tenant_per_second
        && !(0.01..=100_000.0).contains(&rate)
    {
        error(
            format!("{prefix}.rate_limit.tenant_per_second"),
            "must be between 0.01 and 100000".into(),
        );
    }
    if limits.tenant_burst == 0 {
        error(
            format!("{prefix}.rate_limit.tenant_burst"),
            "must be at least 1".into(),
        );
    }
    for (endpoint, limit) in &limits.endpoints {
        let key = format!("{prefix}.rate_limit.endpoints.\"{endpoint}\"");
        if !positive(limit.per_second) || limit.burst == 0 {
            error(
                key,
                "per_second must be greater than 0 and burst at least 1".into(),
            );
        } else if !ENDPOINT_LABELS.contains(&endpoint.as_str()) {
            // A typo would leave the limit unapplied without a word.
            error(
                key,
                format!(
                    "names no endpoint gatehouse calls; one of: {}",
                    ENDPOINT_LABELS.join(", ")
                ),
            );
        }
    }

    for (_, key, at) in settings.token_expiries() {
        let key = format!("{prefix}.{key}");
        match ending(at, now) {
            Some(Ending::Past) => warn(
                key,
                format!("expired at {at}: calls with it fail with 401 until it is replaced"),
            ),
            Some(Ending::Soon) => warn(key, format!("expires at {at}: create a new one and rotate it in")),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AuthSettings, ConfigErrors, ConfigWarning, Settings};

    const ENV: &[(&str, &str)] = &[];

    fn load(text: &str) -> Result<(Settings, Vec<ConfigWarning>), ConfigErrors> {
        // Secrets resolve from the process environment; PATH is always there and never empty.
        Settings::from_toml(text, ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn error_keys(text: &str) -> Vec<String> {
        load(text).unwrap_err().0.into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn basic_auth_on_a_site() {
        let (settings, warnings) = load(
            r#"
            [atlassian]
            confluence_base_url = "https://example.atlassian.net/wiki/"
            scim_base_url = "https://api.atlassian.com/scim/directory/d-1"
            scim_token = "env:PATH"
            admin_api_key = "env:PATH"
            org_id = "org-1"
            auth = { kind = "basic", email = "bot@example.com", token = "env:PATH" }
            [atlassian.rate_limit.endpoints]
            "GET /rest/api/group" = { per_second = 2.0, burst = 2 }
            "#,
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let atlassian = settings.atlassian.as_ref().unwrap();
        assert_eq!(
            atlassian.confluence_base().as_deref(),
            Some("https://example.atlassian.net/wiki")
        );
        assert_eq!(atlassian.tenant_name(), "default");
        assert_eq!(atlassian.site_host().as_deref(), Some("example.atlassian.net"));
        assert_eq!(settings.tenant_names(), ["default"]);
        assert!(settings.tenant_note().is_some_and(|n| n.contains("`default`")));
        let rendered = settings.to_redacted_toml();
        assert!(rendered.contains("token = \"env:PATH\""), "{rendered}");
        assert!(!rendered.contains(&std::env::var("PATH").unwrap()), "{rendered}");
    }

    #[test]
    fn oauth_and_scoped_tokens_go_through_the_gateway() {
        let (settings, _) = load(
            r#"
            [atlassian]
            gateway_base_url = "http://127.0.0.1:9/"
            auth = { kind = "oauth", client_id = "c", client_secret = "env:PATH", refresh_token = "env:PATH", cloud_id = "cloud-1" }
            "#,
        )
        .unwrap();
        let atlassian = settings.atlassian.unwrap();
        assert_eq!(
            atlassian.confluence_base().as_deref(),
            Some("http://127.0.0.1:9/ex/confluence/cloud-1/wiki")
        );
        assert_eq!(atlassian.tenant_name(), "default");
        assert_eq!(atlassian.site_cloud_id(), Some("cloud-1"));
        assert!(matches!(
            atlassian.auth,
            Some(AuthSettings::Oauth { ref token_url, .. }) if token_url == "https://auth.atlassian.com/oauth/token"
        ));
        // A site URL next to a scoped token is the 401 trap.
        assert_eq!(
            error_keys(
                r#"
                [atlassian]
                confluence_base_url = "https://example.atlassian.net/wiki"
                auth = { kind = "basic", email = "bot@example.com", token = "env:PATH", cloud_id = "cloud-1" }
                "#
            ),
            ["atlassian.confluence_base_url"]
        );
    }

    /// Every Atlassian URL carries a credential: plain http is refused unless it stays on this
    /// machine (a local simulator), where `127.0.0.1`, `[::1]` and `localhost` are accepted.
    #[test]
    fn credentials_never_travel_over_plain_http_off_this_machine() {
        let keys = error_keys(
            r#"
            [atlassian]
            confluence_base_url = "http://example.atlassian.net/wiki"
            auth = { kind = "basic", email = "bot@example.com", token = "env:PATH" }
            scim_base_url = "http://api.atlassian.com/scim/directory/d"
            scim_token = "env:PATH"
            admin_base_url = "http://api.atlassian.com"
            "#,
        );
        assert_eq!(
            keys,
            [
                "atlassian.admin_base_url",
                "atlassian.confluence_base_url",
                "atlassian.scim_base_url"
            ]
        );
        let keys = error_keys(
            r#"
            [atlassian]
            auth = { kind = "oauth", client_id = "c", client_secret = "env:PATH", refresh_token = "env:PATH", cloud_id = "cloud-1", token_url = "http://auth.example.com/oauth/token" }
            "#,
        );
        assert_eq!(keys, ["atlassian.auth.token_url"]);
        for local in [
            "http://127.0.0.1:8081/wiki",
            "http://[::1]:8081/wiki",
            "http://localhost:8081/wiki",
        ] {
            let config = format!(
                "[atlassian]\nconfluence_base_url = \"{local}\"\nauth = {{ kind = \"basic\", email = \"bot@example.com\", token = \"env:PATH\" }}"
            );
            assert!(load(&config).is_ok(), "{local}");
        }
    }

    #[test]
    fn errors_name_atlassian_keys() {
        let keys = error_keys(
            r#"
            [atlassian]
            confluence_base_url = "not a url"
            auth = { kind = "basic", email = "bot", token = "env:PATH" }
            scim_base_url = "https://api.atlassian.com/scim/directory/d"
            [atlassian.retry]
            max_attempts = 0
            [atlassian.rate_limit]
            burst = 0
            [atlassian.rate_limit.endpoints]
            "GET /wiki/rest/api/group" = { per_second = 2.0, burst = 2 }
            "#,
        );
        for key in [
            "atlassian.confluence_base_url",
            "atlassian.auth.email",
            "atlassian.scim_token",
            "atlassian.retry.max_attempts",
            "atlassian.rate_limit.burst",
            // A label with a typo (the site's `/wiki` prefix) would limit nothing.
            "atlassian.rate_limit.endpoints.\"GET /wiki/rest/api/group\"",
        ] {
            assert!(keys.contains(&key.to_owned()), "{key} missing from {keys:?}");
        }
        assert_eq!(
            error_keys(
                "[atlassian]\nauth = { kind = \"basic\", email = \"a@b\", token = \"env:GH_SURELY_UNSET\" }"
            ),
            ["atlassian.auth.token"]
        );
        assert_eq!(
            error_keys("[atlassian]\nauth = { kind = \"basic\", email = \"a@b.c\", token = \"env:PATH\" }"),
            ["atlassian.confluence_base_url"]
        );
        // A typo inside `auth` is an error, not a silently ignored key.
        let typo = load(
            "[atlassian]\nconfluence_base_url = \"https://x.atlassian.net/wiki\"\n\
             auth = { kind = \"basic\", email = \"a@b.c\", token = \"env:PATH\", token_expire_at = \"2027-01-01T00:00:00Z\" }",
        )
        .unwrap_err();
        assert_eq!(typo.0[0].key, "atlassian.auth");
        assert!(typo.to_string().contains("token_expire_at"), "{typo}");
    }

    #[test]
    fn expiring_tokens_are_warned_about() {
        let soon = (chrono::Utc::now() + chrono::Duration::days(10)).to_rfc3339();
        let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
        let later = (chrono::Utc::now() + chrono::Duration::days(200)).to_rfc3339();
        let (_, warnings) = load(&format!(
            r#"
            [atlassian]
            confluence_base_url = "https://example.atlassian.net/wiki"
            auth = {{ kind = "basic", email = "bot@example.com", token = "env:PATH", token_expires_at = "{soon}" }}
            scim_base_url = "https://api.atlassian.com/scim/directory/d"
            scim_token = "env:PATH"
            scim_token_expires_at = "{past}"
            admin_api_key = "env:PATH"
            admin_api_key_expires_at = "{later}"
            org_id = "o"
            "#
        ))
        .unwrap();
        let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "atlassian.auth.token_expires_at",
                "atlassian.scim_token_expires_at"
            ]
        );
        assert!(warnings[0].message.contains("expires at"), "{warnings:?}");
        assert!(warnings[1].message.contains("expired"), "{warnings:?}");
    }

    #[test]
    fn the_production_example_section_is_valid() {
        // Secrets there point at files and variables this machine lacks: point them all at PATH.
        let text = include_str!("../../config/production.example.toml");
        let mut patched = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("\"env:").into_iter().chain(rest.find("\"file:")).min() {
            patched.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find('"').map_or(after.len(), |e| e + 1);
            patched.push_str("\"env:PATH\"");
            rest = &after[end..];
        }
        patched.push_str(rest);
        let keys = match load(&patched) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|e| e.key).collect(),
        };
        // Only the store key, the Standard Webhooks secrets and the Slack bot token, which PATH
        // is not the shape of, are refused: the file parsed, and both tenants validated clean.
        assert_eq!(
            keys,
            [
                "store.encryption_key",
                "sources[2].secrets[0].value",
                "sources[4].secrets[0].value",
                "outbound[0].secrets[0].value",
                "approvals.slack.bot_token"
            ]
        );
        // Without those, the file loads as two tenants, with Slack approvals and an endpoint.
        let usable = patched
            .replace("encryption_key = \"env:PATH\"", "")
            .replace("secrets = [{ id = \"okta-relay\", value = \"env:PATH\" }]", "")
            .replace("secrets = [{ id = \"sandbox-relay\", value = \"env:PATH\" }]", "")
            .replace(
                "{ id = \"soar-2026-12\", value = \"env:PATH\" }",
                "{ id = \"soar-2026-12\", value = \"SOAR_KEY\" }",
            )
            .replace("bot_token = \"env:PATH\"", "bot_token = \"SLACK_TOKEN\"");
        // Those two, of the right shape, from files of this test's own.
        let dir = std::env::temp_dir().join(format!("gh-production-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, token) = (dir.join("soar"), dir.join("slack"));
        std::fs::write(&key, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        std::fs::write(&token, "xoxb-1-2-3").unwrap();
        let usable = usable
            .replace("SOAR_KEY", &format!("file:{}", key.display()))
            .replace("SLACK_TOKEN", &format!("file:{}", token.display()));
        let loaded = load(&usable);
        let _ = std::fs::remove_dir_all(&dir);
        let (settings, _) = loaded.unwrap();
        assert_eq!(settings.tenant_names(), ["prod", "sandbox"]);
        assert_eq!(settings.outbound[0].name, "soar");
        assert!(settings.approvals.slack.is_some());
    }
}
