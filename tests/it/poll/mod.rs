//! Catching what webhooks never send: the events-stream poller and the reconciler, against the
//! simulator, with no webhook at all.

mod org_events;
mod reconcile;

use gatehouse::config::{AtlassianSettings, EndpointRateLimit};

/// The simulator's events-stream, unthrottled for tests (Atlassian's own limit is 10 a minute,
/// which the client keeps by default).
pub fn fast_events(atlassian: &mut AtlassianSettings) {
    atlassian.rate_limit.endpoints.insert(
        "GET /admin/v1/orgs/{orgId}/events-stream".to_owned(),
        EndpointRateLimit {
            per_second: 100.0,
            burst: 100,
        },
    );
}
