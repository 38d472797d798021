//! Catching what webhooks never send: the events-stream poller and the reconciler, against the
//! simulator, with no webhook at all.

mod org_events;
mod reconcile;

use gatehouse::config::Settings;

/// The simulator's events-stream, unthrottled for tests (Atlassian's own limit is 10 a minute,
/// which the poller keeps by default).
pub fn fast_events(settings: &mut Settings) {
    settings.poll.requests_per_window = 1_000;
    settings.poll.window_seconds = 1;
}
