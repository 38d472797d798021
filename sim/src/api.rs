//! Which simulated API a route belongs to, and how that API spells its errors: Confluence v1
//! (`statusCode`, `message`), SCIM (`schemas`, string `status`, `scimType`, `detail`), the admin
//! APIs (`code`, `message`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A family of routes sharing authentication and error format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SimApi {
    /// `/wiki/...` on the first tenant's site, `/sites/{cloudId}/wiki/...` on any tenant's.
    ConfluenceSite,
    /// `/ex/confluence/{cloudId}/wiki/...` on the gateway.
    ConfluenceGateway,
    Scim,
    /// Org events-stream and user management.
    Admin,
    OAuth,
    /// `/_sim/...`: the simulator's own control endpoints.
    Control,
}

/// The gateway prefix of Confluence routes.
pub(crate) const GATEWAY_PREFIX: &str = "/ex/confluence/{cloud_id}";

/// The prefix of a named tenant's site routes (a stand-in for `https://{site}.atlassian.net`).
pub(crate) const SITE_PREFIX: &str = "/sites/{cloud_id}";

/// The endpoint a route template stands for, whichever way it was reached: site, named site or
/// gateway all give `/wiki/...`, so they share rate-limit buckets as on Atlassian.
pub(crate) fn endpoint(route: &str) -> &str {
    route
        .strip_prefix(GATEWAY_PREFIX)
        .or_else(|| route.strip_prefix(SITE_PREFIX))
        .unwrap_or(route)
}

impl SimApi {
    pub fn of_route(route: &str) -> SimApi {
        if route.starts_with("/wiki/") || route.starts_with("/sites/") {
            SimApi::ConfluenceSite
        } else if route.starts_with("/ex/confluence/") {
            SimApi::ConfluenceGateway
        } else if route.starts_with("/scim/") {
            SimApi::Scim
        } else if route.starts_with("/admin/") || route.starts_with("/users/") {
            SimApi::Admin
        } else if route.starts_with("/oauth/") {
            SimApi::OAuth
        } else {
            SimApi::Control
        }
    }

    pub fn is_confluence(self) -> bool {
        matches!(self, SimApi::ConfluenceSite | SimApi::ConfluenceGateway)
    }

    /// An error answer in this API's format.
    pub fn error(self, status: StatusCode, message: &str) -> Response {
        match self {
            SimApi::ConfluenceSite | SimApi::ConfluenceGateway => confluence_error(status, message),
            SimApi::Scim => scim_error(status, None, message),
            SimApi::Admin | SimApi::OAuth | SimApi::Control => {
                (status, Json(json!({"code": status.as_u16(), "message": message}))).into_response()
            }
        }
    }
}

pub(crate) fn confluence_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "statusCode": status.as_u16(),
            "data": {"authorized": status != StatusCode::UNAUTHORIZED, "valid": true, "errors": [], "successful": false},
            "message": message,
        })),
    )
        .into_response()
}

/// A SCIM error: `status` is a string, as RFC 7644 says and Atlassian does.
pub(crate) fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(scim_type) = scim_type {
        body["scimType"] = json!(scim_type);
    }
    scim_json(status, body)
}

/// A SCIM answer, with SCIM's own content type.
pub(crate) fn scim_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/scim+json"),
    );
    response
}
