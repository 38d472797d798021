//! The OAuth 2.0 (3LO) token endpoint, `POST /oauth/token`, answered from the grants of the world
//! owning the request's `client_id` (see `oauth_grants.rs` for the rotation rules).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::log::Seq;
use crate::oauth_grants::TokenRequest;
use crate::tenant::SimTenant;
use crate::{SimShared, lock};

/// The answer to a token request whose `client_id` no tenant knows (the gate answers it: there
/// is no world to count it in).
pub(crate) fn unknown_client() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "access_denied", "error_description": "Unauthorized"})),
    )
        .into_response()
}

/// The world is the one owning the request's `client_id` (the gate chose it).
pub(crate) async fn token(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Json(request): Json<TokenRequest>,
) -> Response {
    let (ttl, leeway) = {
        let policy = lock(&tenant.policy);
        (
            Duration::from_secs(policy.access_token_ttl_seconds),
            Duration::from_secs(policy.refresh_reuse_leeway_seconds),
        )
    };
    let result = lock(&tenant.world)
        .oauth
        .refresh(&request, ttl, leeway, Instant::now());
    match result {
        Ok((body, principal)) => {
            shared.log.set_principal(seq, principal);
            (StatusCode::OK, Json(body)).into_response()
        }
        Err((status, body, principal)) => {
            shared.log.set_principal(seq, principal);
            (status, Json(body)).into_response()
        }
    }
}
