//! The console's pages, one module each; what they share: the page frame (who is signed in, the
//! navigation, the sign-out form) and small formatting helpers.

pub mod approvals;
pub mod audit;
pub mod dead_letters;
pub mod sign_in;
pub mod status;

use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ConsoleError;
use super::session::Operator;

/// `/console`: the approvals, or the sign-in page.
pub async fn home(operator: Operator) -> Response {
    operator.respond(Redirect::to("/console/approvals"))
}

/// What the frame of every signed-in page shows.
#[derive(Debug, Serialize)]
pub struct Frame {
    pub operator: String,
    pub role: &'static str,
    pub csrf: String,
    /// Which navigation entry is this page.
    pub active: &'static str,
    pub may_decide: bool,
    pub may_replay: bool,
}

impl Frame {
    pub fn new(operator: &Operator, active: &'static str) -> Self {
        Frame {
            operator: operator.name.clone(),
            role: operator.role.as_str(),
            csrf: super::csrf::token(operator.session_id()),
            active,
            may_decide: operator.role.may_decide_approvals(),
            may_replay: operator.role.may_replay_dead_letters(),
        }
    }
}

/// Renders `template` for `operator` (with the session cookie if the request began one).
pub fn page(
    operator: &Operator,
    template: &str,
    context: serde_json::Value,
) -> Result<Response, ConsoleError> {
    let html = super::templates::render(template, context)?;
    Ok(operator.respond(Html(html).into_response()))
}

/// `3d 4h`, `12m`, `40s`: how long ago (or how long until), for tables.
pub fn span(seconds: i64) -> String {
    let seconds = seconds.unsigned_abs();
    let (d, h, m) = (seconds / 86_400, seconds % 86_400 / 3_600, seconds % 3_600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{seconds}s")
    }
}

/// A time as the pages show it: UTC, to the second.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_read_naturally() {
        assert_eq!(super::span(40), "40s");
        assert_eq!(super::span(-125), "2m");
        assert_eq!(super::span(3 * 3_600 + 120), "3h 2m");
        assert_eq!(super::span(2 * 86_400 + 3_600), "2d 1h");
    }
}
