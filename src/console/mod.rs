//! The operator console: `/console`, server-rendered pages for the people who run gatehouse.
//!
//! Pending approvals (approve, reject with a reason), the audit trail (filtered, each record
//! expandable, with the chain's verification), dead letters (show, replay), sources and their
//! secrets' expiry, each tenant's last reconciler run, and the queue's depth. Off unless
//! `[console] enabled = true` (no route at all: 404).
//!
//! Security, in one place so it can be reviewed at once:
//! - every page but the sign-in page and the stylesheet needs a signed-in operator
//!   (`session`); a `viewer` decides nothing, an `approver` decides approvals, an `admin` also
//!   replays dead letters (`auth` checks the role on every action, 403 otherwise);
//! - sessions are 256-bit random ids in an `HttpOnly; Secure; SameSite=Strict; Path=/console`
//!   cookie, kept hashed in the store, with an expiry;
//! - every form carries a per-session CSRF token (`csrf`), checked in constant time before
//!   anything is done (403 otherwise);
//! - every answer carries a strict Content-Security-Policy (no script, no inline style), `nosniff`,
//!   `no-referrer`, `no-store`, and cannot be framed;
//! - decisions go through the one path the CLI uses (`reactions::approvals`), attributed to
//!   `console:{operator}` in the audit trail.

mod auth;
mod csrf;
mod error;
mod pages;
mod session;
mod templates;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::ingress::guard::GuardLayer;
use crate::queue::Queue;
use crate::store::Store;

pub use auth::hash_password;
pub use error::ConsoleError;

/// The Content-Security-Policy of every console answer: nothing but the console's own
/// stylesheet and images, forms only to itself, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the console's handlers share.
pub struct ConsoleState {
    pub(crate) settings: Arc<Settings>,
    pub(crate) store: Store,
    pub(crate) audit: AuditLog,
    pub(crate) queue: Arc<dyn Queue>,
    /// What a decision sends to Slack (the plan's message replaced).
    pub(crate) outbox: crate::outbound::Outbox,
    pub(crate) sign_ins: auth::SignInGuard,
    pub(crate) chain_badge: pages::audit::ChainBadgeCache,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("operators", &self.settings.console.operators.len())
            .finish_non_exhaustive()
    }
}

/// The `/console` routes; empty (every path 404) unless the console is enabled. Merge it into
/// the HTTP router; requests must carry their peer address (`ConnectInfo`) for the proxy check.
pub fn router(settings: Arc<Settings>, store: Store, audit: AuditLog, queue: Arc<dyn Queue>) -> Router {
    if !settings.console.enabled {
        return Router::new();
    }
    // Every form is answered within `server.request_timeout_seconds` (408 after), reading of
    // its body included: the sign-in form is open to anyone, and a body announced and never
    // sent would otherwise hold its connection for ever. Pages (GET) read no body and are not
    // bounded: the audit page checks the whole chain, which on a long trail takes longer. The
    // console has places of its own, so a flood of deliveries does not lock operators out, nor
    // the reverse.
    let bound = GuardLayer::new(
        settings.server.max_concurrent_requests,
        Duration::from_secs(settings.server.request_timeout_seconds),
    );
    let state = Arc::new(ConsoleState {
        sign_ins: auth::SignInGuard::new(&settings.console),
        chain_badge: pages::audit::ChainBadgeCache::default(),
        outbox: crate::outbound::Outbox::from_settings(&settings),
        settings,
        store,
        audit,
        queue,
    });
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let warm = state.clone();
        runtime.spawn(async move { warm.sign_ins.warm_up().await });
    }
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/console.css", get(stylesheet))
        .route(
            "/sign-in",
            get(pages::sign_in::form).merge(post(pages::sign_in::submit).layer(bound.clone())),
        )
        .route("/sign-out", post(pages::sign_in::sign_out).layer(bound.clone()))
        .route("/approvals", get(pages::approvals::list))
        .route(
            "/approvals/{id}/approve",
            post(pages::approvals::approve).layer(bound.clone()),
        )
        .route(
            "/approvals/{id}/reject",
            post(pages::approvals::reject).layer(bound.clone()),
        )
        .route("/audit", get(pages::audit::list))
        .route("/dead-letters", get(pages::dead_letters::list))
        .route("/dead-letters/{id}", get(pages::dead_letters::show))
        .route(
            "/dead-letters/{id}/replay",
            post(pages::dead_letters::replay).layer(bound),
        )
        .route("/status", get(pages::status::show))
        // Only under /console: every other path keeps the ingress's own answers.
        .fallback(not_found);
    Router::new()
        .nest("/console", pages)
        .route("/console/", get(pages::home))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn not_found() -> ConsoleError {
    ConsoleError::NotFound("no such page".to_owned())
}

/// The console's one stylesheet (a file, so the CSP can forbid inline styles).
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("templates/console.css"),
    )
        .into_response()
}

/// Adds the headers every console answer carries (errors and redirects included).
async fn security_headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
