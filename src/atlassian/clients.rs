//! Building the clients from `[atlassian]`: one HTTP connection pool and one rate limiter shared
//! by all, one `ApiCaller` per API with its own credentials.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::admin::AdminClient;
use super::auth::{Credentials, OAuthClientConfig, OAuthSession, StaticCredentials};
use super::confluence::ConfluenceClient;
use super::error::ApiError;
use super::http::{Api, ApiCaller, RetryPolicy, SharedSetup, base_url};
use super::limiter::RateLimiter;
use super::metrics::AtlassianMetrics;
use super::retry::{Jitter, RetryBackoff};
use super::scim::ScimClient;
use crate::config::{AtlassianSettings, AuthSettings};
use crate::store::Store;

/// What the clients need besides settings.
#[derive(Clone)]
pub struct ClientDeps {
    /// Where rotated OAuth refresh tokens live; required with OAuth.
    pub store: Option<Store>,
    pub metrics: AtlassianMetrics,
    /// The backoff's random source; `fastrand` when `None` (tests pin it).
    pub jitter: Option<Jitter>,
    /// Cancelled when the process begins to stop: a call waiting to try again (a rate-limit
    /// pause, a server's `Retry-After`, a backoff) gives up at once, as transient, instead of
    /// holding the shutdown for the rest of its wait. Never cancelled unless set.
    pub stopping: CancellationToken,
}

impl std::fmt::Debug for ClientDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientDeps")
            .field("store", &self.store)
            .field("jitter", &self.jitter.as_ref().map(|_| "custom"))
            .field("stopping", &self.stopping.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl ClientDeps {
    pub fn new(store: Option<Store>, metrics: AtlassianMetrics) -> Self {
        ClientDeps {
            store,
            metrics,
            jitter: None,
            stopping: CancellationToken::new(),
        }
    }

    /// The same, with calls that stop waiting to retry once `stopping` is cancelled.
    pub fn stopping_with(mut self, stopping: CancellationToken) -> Self {
        self.stopping = stopping;
        self
    }
}

/// The configured Atlassian clients; an API without credentials in config is `None`.
#[derive(Debug, Clone)]
pub struct AtlassianClients {
    pub confluence: Option<ConfluenceClient>,
    pub scim: Option<ScimClient>,
    pub admin: Option<AdminClient>,
    /// The pace they all keep, the tenant whose budget it is, and their metrics.
    limiter: Arc<RateLimiter>,
    site: Arc<str>,
    metrics: super::metrics::AtlassianMetrics,
}

fn not_configured(what: &'static str, keys: &str) -> ApiError {
    ApiError::invalid(what, format!("not configured: set {keys} in [atlassian]"))
}

impl AtlassianClients {
    pub fn build(settings: &AtlassianSettings, deps: ClientDeps) -> Result<Self, ApiError> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.http.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.http.request_timeout_ms))
            // Atlassian's APIs do not redirect; following one could carry credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::invalid("http client", format!("cannot build the HTTP client: {e}")))?;
        let limiter = Arc::new(RateLimiter::new(settings.rate_limit.clone()));
        let mut backoff = RetryBackoff::new(
            Duration::from_millis(settings.retry.base_delay_ms),
            Duration::from_millis(settings.retry.max_delay_ms),
        );
        if let Some(jitter) = deps.jitter.clone() {
            backoff = backoff.with_jitter(jitter);
        }
        let retry = RetryPolicy {
            max_attempts: settings.retry.max_attempts.max(1),
            backoff,
            max_wait: Duration::from_millis(settings.retry.max_wait_ms),
        };
        let tenant = settings.tenant_name();
        let shared = SharedSetup {
            http: http.clone(),
            limiter: limiter.clone(),
            retry,
            metrics: deps.metrics.clone(),
            stopping: deps.stopping.clone(),
        };
        let caller =
            |api: Api, credentials: Arc<dyn Credentials>| ApiCaller::new(api, &tenant, credentials, &shared);
        deps.metrics.observe_token_expiry(settings);

        let confluence = match (&settings.auth, settings.confluence_base()) {
            (Some(auth), Some(base)) => {
                let credentials: Arc<dyn Credentials> = match auth {
                    AuthSettings::Basic { email, token, .. } => {
                        Arc::new(StaticCredentials::basic(email, token)?)
                    }
                    AuthSettings::Oauth {
                        client_id,
                        client_secret,
                        refresh_token,
                        token_url,
                        cloud_id,
                    } => {
                        let store = deps.store.clone().ok_or_else(|| {
                            ApiError::invalid(
                                "atlassian.auth",
                                "OAuth needs the store, where rotated refresh tokens are kept",
                            )
                        })?;
                        let config = OAuthClientConfig {
                            client_id: client_id.clone(),
                            client_secret: client_secret.clone(),
                            initial_refresh_token: refresh_token.clone(),
                            token_url: token_url.clone(),
                            cloud_id: cloud_id.clone(),
                        };
                        Arc::new(OAuthSession::new(
                            config,
                            store,
                            http.clone(),
                            deps.metrics.clone(),
                        ))
                    }
                };
                let base = base_url("atlassian.confluence_base_url", &base)?;
                Some(ConfluenceClient::new(caller(Api::Confluence, credentials), base))
            }
            _ => None,
        };
        let scim = match (&settings.scim_base_url, &settings.scim_token) {
            (Some(url), Some(token)) => {
                let base = base_url("atlassian.scim_base_url", url)?;
                Some(ScimClient::new(
                    caller(Api::Scim, Arc::new(StaticCredentials::bearer(token)?)),
                    base,
                ))
            }
            _ => None,
        };
        let admin = match &settings.admin_api_key {
            Some(key) => {
                let base = base_url("atlassian.admin_base_url", &settings.admin_base_url)?;
                Some(AdminClient::new(
                    caller(Api::Admin, Arc::new(StaticCredentials::bearer(key)?)),
                    base,
                    settings.org_id.clone(),
                ))
            }
            None => None,
        };
        Ok(AtlassianClients {
            confluence,
            scim,
            admin,
            limiter,
            site: Arc::from(tenant),
            metrics: deps.metrics.clone(),
        })
    }

    /// Keeps this process's share of the tenant's rate budget (see [`super::shares`]) until
    /// `stop`.
    pub async fn keep_share(&self, store: Store, stop: tokio_util::sync::CancellationToken) {
        super::shares::keep_share(
            self.limiter.clone(),
            self.metrics.clone(),
            store,
            self.site.clone(),
            stop,
        )
        .await;
    }

    /// The Confluence client, or an error naming the missing config.
    pub fn confluence(&self) -> Result<&ConfluenceClient, ApiError> {
        self.confluence
            .as_ref()
            .ok_or_else(|| not_configured("confluence", "auth (and confluence_base_url or auth.cloud_id)"))
    }

    pub fn scim(&self) -> Result<&ScimClient, ApiError> {
        self.scim
            .as_ref()
            .ok_or_else(|| not_configured("scim", "scim_base_url and scim_token"))
    }

    pub fn admin(&self) -> Result<&AdminClient, ApiError> {
        self.admin
            .as_ref()
            .ok_or_else(|| not_configured("admin", "admin_api_key (and org_id for events)"))
    }
}
