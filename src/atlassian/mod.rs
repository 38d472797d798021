//! Atlassian Cloud clients: Confluence REST (v1 groups, v2 users), SCIM 2.0, the organization
//! events-stream and user-management lifecycle, all through one `ApiCaller` that respects the real
//! API's rules.
//!
//! What every call gets, whichever client makes it ([`http`]):
//! - credentials: Basic API token, bearer tokens, or OAuth 2.0 with rotating refresh tokens,
//!   refreshed single-flight and persisted before use ([`auth`]);
//! - one rate budget per tenant that every call draws from (shared among processes,
//!   [`shares`]), and a bucket per (tenant, endpoint, method) on top, that pause on 429 for
//!   exactly `Retry-After` (jittered backoff without it), slow the tenant when 429s come from
//!   several endpoints, pause the whole tenant on a quota reason, and slow down when Atlassian
//!   says the limit is near ([`limiter`], [`retry`]);
//! - retries only where safe (429 always; 5xx and timeouts only for idempotent calls), each
//!   counted in metrics ([`metrics`]);
//! - errors classified transient or permanent, never holding a credential ([`error`]);
//! - answers read up to a bound ([`bounded_read`]);
//! - Atlassian's request id on every change ([`http::Receipt`]), for the audit trail.
//!
//! Listings are complete: Confluence v1 offsets, v2 cursors and SCIM indexes are three distinct
//! pager types that cannot be mixed ([`pagination`]). Handlers read through the ports of the
//! `handlers` crate, implemented here ([`directory`]); the reactions' executor calls the write methods
//! directly. [`AtlassianClients::build`] makes all of them from `[atlassian]`.

pub mod admin;
pub mod auth;
pub mod bounded_read;
pub mod clients;
pub mod confluence;
pub mod directory;
pub mod error;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod pagination;
pub mod retry;
pub mod scim;
pub mod shares;

pub use admin::{AdminClient, EventContext, EventsCursor, EventsPage, EventsQuery, OrgEvent, SkippedEvent};
pub use clients::{AtlassianClients, ClientDeps};
pub use confluence::{ConfluenceClient, UserStatus};
pub use error::ApiError;
pub use http::Receipt;
pub use metrics::AtlassianMetrics;
pub use pagination::{PageProgress, no_progress};
pub use retry::Jitter;
pub use scim::{NewScimUser, ScimClient, ScimCreated};

#[cfg(test)]
mod tests {
    /// `rate_limit.endpoints` is checked against the config's list of labels: it must be
    /// exactly the endpoints the clients call.
    #[test]
    fn the_configs_endpoint_labels_are_the_clients() {
        let mut called: Vec<&str> = super::admin::ENDPOINTS
            .iter()
            .chain(&super::confluence::ENDPOINTS)
            .chain(&super::scim::ENDPOINTS)
            .map(|endpoint| endpoint.label)
            .collect();
        called.sort_unstable();
        let mut listed = crate::config::ATLASSIAN_ENDPOINT_LABELS.to_vec();
        listed.sort_unstable();
        assert_eq!(called, listed);
    }
}
