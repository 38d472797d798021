//! The HTTP ingress: verify, dedupe, normalize and durably queue every webhook, then answer.
//!
//! Routes (the public surface; docs/configuration.md and docs/operations.md):
//! - `POST /webhooks/{source}` and `/webhooks/{source}/{event}`; for `url-token` sources also
//!   `/webhooks/{source}/t/{token}[/{event}]`;
//! - `POST /connect/installed`, `/connect/uninstalled`, `GET /connect/atlassian-connect.json`;
//! - `GET /healthz`, `/readyz`, `/metrics`;
//! - `GET /audit` when `[audit] api_token` is set (see `crate::audit::http`).
//!
//! Delivery routes are guarded (`guard`) by a global concurrency bound (excess load is shed with 503, not
//! queued in memory) and a request timeout; bodies are limited while they are read.

pub(crate) mod body;
mod body_view;
pub mod connect;
pub mod dedupe;
pub mod error;
pub(crate) mod guard;
mod health;
pub mod limits;
pub mod normalize;
pub mod verify;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::config::Settings;
use crate::queue::Queue;
use crate::store::Store;
use crate::telemetry::Metrics;

pub use error::IngressError;

/// What every ingress handler shares.
#[derive(Debug)]
pub struct IngressState {
    pub settings: Arc<Settings>,
    pub queue: Arc<dyn Queue>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub recent: dedupe::RecentKeys,
    pub installations: connect::Installations,
    pub install_keys: connect::InstallKeys,
    /// Each source's in-flight and rate budget.
    pub limits: limits::SourceLimits,
    /// Each configured source's `accepted` and `duplicate` counters, in `settings.sources` order.
    pub accepted_counters: Vec<webhook::AcceptedCounters>,
    /// The store's reachability for `/readyz`, probed at most once a second.
    pub readiness: health::ReadinessProbe,
    /// The path of `connect.base_url` (e.g. `/atlassian`), which `qsh` paths are relative to.
    pub base_path: String,
}

impl IngressState {
    /// `deliveries`: whether this process takes deliveries (the ingress role). A worker-only
    /// process serves health and metrics from the same state but no webhook, so its dedupe
    /// window holds a single key instead of reserving `ingress.dedupe_window_size` of them.
    pub fn new(
        settings: Arc<Settings>,
        queue: Arc<dyn Queue>,
        store: Store,
        metrics: Arc<Metrics>,
        deliveries: bool,
    ) -> Self {
        let base_path = settings
            .connect
            .base_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let window_keys = if deliveries {
            settings.ingress.dedupe_window_size
        } else {
            1
        };
        let recent = dedupe::RecentKeys::new(
            window_keys,
            Duration::from_secs(settings.ingress.dedupe_window_seconds),
        );
        metrics
            .dedupe_window_reserved_bytes
            .set(i64::try_from(recent.reserved_bytes()).unwrap_or(i64::MAX));
        IngressState {
            recent,
            installations: connect::Installations::new(store.clone()),
            limits: limits::SourceLimits::new(&settings.sources),
            accepted_counters: settings
                .sources
                .iter()
                .map(|source| webhook::AcceptedCounters::new(&source.name))
                .collect(),
            readiness: health::ReadinessProbe::default(),
            install_keys: connect::InstallKeys::new(&settings.connect.install_keys_url),
            base_path,
            settings,
            queue,
            store,
            metrics,
        }
    }
}

/// The HTTP router: health, readiness and metrics always; deliveries and Connect when this
/// process runs the ingress role.
pub fn router(state: Arc<IngressState>, deliveries_enabled: bool) -> Router {
    let server = &state.settings.server;
    let guarded = guard::GuardLayer::new(
        server.max_concurrent_requests,
        Duration::from_secs(server.request_timeout_seconds),
    );
    let deliveries = Router::new()
        .route("/webhooks/{source}", post(webhook::receive))
        .route("/webhooks/{source}/{event}", post(webhook::receive))
        .route("/webhooks/{source}/t/{token}", post(webhook::receive))
        .route("/webhooks/{source}/t/{token}/{event}", post(webhook::receive))
        .route("/connect/installed", post(connect::installed))
        .route("/connect/uninstalled", post(connect::uninstalled))
        // One layer of both: each `Router::layer` wraps every route in a boxed service of its
        // own, which a delivery then passes through (about 1,150 instructions a layer).
        .layer(
            tower::ServiceBuilder::new()
                // Bodies are limited while they are read (see `webhook::read_body`).
                .layer(DefaultBodyLimit::disable())
                .layer(guarded),
        );
    let mut router = Router::new();
    if deliveries_enabled {
        router = router
            .merge(deliveries)
            .route("/connect/atlassian-connect.json", get(connect::descriptor));
    }
    router
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(state.clone())
        .merge(crate::audit::http::router(
            state.store.clone(),
            &state.settings.audit,
        ))
}
