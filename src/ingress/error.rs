//! The ingress's one error type, and the status each error answers with.
//!
//! The mapping is public surface (docs/operations.md): senders retry only on 5xx/429/408/409/425, so our
//! own trouble (broker, store, a key server) is always a 5xx and never a 4xx, and a 4xx always
//! means the request itself is wrong.

use crate::http_error::error_body;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::verify::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("unknown source")]
    UnknownSource,
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("verification failed: {0}")]
    Unauthorized(VerifyError),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("request timed out")]
    Timeout,
    /// A verified delivery this source may not cause, or whose content is refused on purpose
    /// (`event_mismatch`, `type_not_allowed`, `invalid_identifier`, `too_deep`). `reason` is a
    /// metric label; `detail` says what to fix.
    #[error("{detail}")]
    Refused {
        status: StatusCode,
        reason: &'static str,
        detail: String,
    },
    /// The source is over its `rate_per_second`.
    #[error("source over its rate limit")]
    RateLimited { retry_after: std::time::Duration },
    /// The source has `max_in_flight` deliveries being queued already.
    #[error("source has too many deliveries in flight")]
    SourceBusy,
}

impl IngressError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngressError::UnknownSource => StatusCode::NOT_FOUND,
            IngressError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngressError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IngressError::Malformed(_) => StatusCode::BAD_REQUEST,
            IngressError::Unavailable(_) | IngressError::SourceBusy => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::Timeout => StatusCode::REQUEST_TIMEOUT,
            IngressError::Refused { status, .. } => *status,
            IngressError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `outcome` label of the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            IngressError::UnknownSource => "unknown_source",
            IngressError::UnsupportedMediaType => "unsupported_media_type",
            IngressError::PayloadTooLarge { .. } => "too_large",
            IngressError::Unauthorized(_) => "unauthorized",
            IngressError::Malformed(_) => "malformed",
            IngressError::Unavailable(_) => "unavailable",
            IngressError::Timeout => "timeout",
            IngressError::Refused { reason, .. } => reason,
            IngressError::RateLimited { .. } => "rate_limited",
            IngressError::SourceBusy => "source_busy",
        }
    }
}

impl From<VerifyError> for IngressError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Unavailable(why) => IngressError::Unavailable(why),
            other => IngressError::Unauthorized(other),
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            // The reason code helps a legitimate sender fix its signing; the secret-bearing
            // details never leave the process.
            IngressError::Unauthorized(why) => error_body("unauthorized", why.reason(), None),
            // Internal detail (broker or store messages) stays in the logs.
            IngressError::Unavailable(_) => error_body("unavailable", "retry later", None),
            IngressError::Refused { reason, detail, .. } => error_body("refused", reason, Some(detail)),
            other => error_body(other.outcome(), &other.to_string(), None),
        };
        let retry_after = match &self {
            IngressError::RateLimited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            IngressError::SourceBusy => Some(1),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(5),
            _ => None,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}
