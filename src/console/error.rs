//! The console's one error type: every failure of a console route becomes a page (or, for a
//! visitor who is not signed in, a redirect to the sign-in page), never a stack of details.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::audit::AuditError;
use crate::reactions::approvals::DecisionError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session (or an expired one): to the sign-in page.
    #[error("sign in first")]
    NotSignedIn,
    /// Signed in, but the role may not do this; or a form without a valid CSRF token.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request was understood but the thing is no longer in a state to do it.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooManyAttempts(String),
    /// Something below the console failed; the reason is logged, the page says little.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for ConsoleError {
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "console: the store failed");
        ConsoleError::Unavailable("the store cannot be read right now".to_owned())
    }
}

impl From<AuditError> for ConsoleError {
    fn from(error: AuditError) -> Self {
        tracing::warn!(%error, "console: the audit trail failed");
        ConsoleError::Unavailable("the audit trail cannot be read right now".to_owned())
    }
}

impl From<DecisionError> for ConsoleError {
    fn from(error: DecisionError) -> Self {
        match error {
            DecisionError::Unknown(_) => ConsoleError::NotFound(error.to_string()),
            DecisionError::AlreadyDecided { .. }
            | DecisionError::Expired { .. }
            | DecisionError::OtherTenant { .. } => ConsoleError::Conflict(error.to_string()),
            DecisionError::Store(_)
            | DecisionError::Audit(_)
            | DecisionError::Queue(_)
            | DecisionError::SlackUpdate(_) => {
                tracing::warn!(%error, "console: a decision failed");
                ConsoleError::Unavailable(error.to_string())
            }
        }
    }
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::NotSignedIn => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ConsoleError::NotSignedIn = self {
            return (
                status,
                [(header::LOCATION, HeaderValue::from_static("/console/sign-in"))],
            )
                .into_response();
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let page = super::templates::render(
            "error.html",
            serde_json::json!({ "title": title, "status": status.as_u16(), "message": self.to_string() }),
        );
        match page {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, self.to_string()).into_response(),
        }
    }
}
