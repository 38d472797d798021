//! The one shape of every error answer gatehouse's HTTP routes give (webhooks, Connect lifecycle
//! and descriptor, `GET /audit`): `{"error": code, "reason": text}`, plus `"detail"` where the
//! code and reason alone would not say what to fix. `error` is a short snake_case word from a
//! closed set, so clients can branch on it; `reason` is for people.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The body of an error answer.
pub fn error_body(error: &str, reason: &str, detail: Option<&str>) -> Value {
    match detail {
        Some(detail) => json!({"error": error, "reason": reason, "detail": detail}),
        None => json!({"error": error, "reason": reason}),
    }
}

/// An error answer with `status`.
pub fn error_response(status: StatusCode, error: &str, reason: &str) -> Response {
    (status, Json(error_body(error, reason, None))).into_response()
}

/// The answer for a path no route serves (axum's own is an empty 404).
pub async fn no_such_route() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The answer for a route asked with a method it does not take (axum's own is an empty 405).
pub async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take this method",
    )
}
