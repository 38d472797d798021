//! `GET /audit`: SIEMs pull the trail over HTTP, page by page.
//!
//! Off unless `[audit] api_token` is set (no route at all: 404). With it, every request must carry
//! `Authorization: Bearer <token>`; the comparison is constant-time (on SHA-256 digests, so not
//! even the length leaks). Query parameters, all optional:
//! `account_id`, `tenant`, `event_id`, `kind` (comma-separated), `since`, `until` (RFC 3339, a
//! date, or an age such as `24h`; parsed as `gatehouse audit query` parses them), `after_seq`,
//! `limit` (default `audit.page_size`, at most `audit.max_page_size`), `format` = `json`
//! (default) | `jsonl` | `ocsf`.
//!
//! `json` and `ocsf` answer `{"records": [...], "next_after_seq": N|null}`; `jsonl` answers one
//! record per line. All three put the cursor in the `x-next-after-seq` header when there may be
//! more: pass it back as `after_seq`. Paging by `seq` never skips nor repeats a record while
//! the trail grows.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::ocsf::to_ocsf;
use super::query::{AuditFilters, AuditQuery, page};
use crate::config::AuditSettings;
use crate::store::Store;

struct ApiState {
    store: Store,
    token_digest: [u8; 32],
    page_size: usize,
    max_page_size: usize,
}

/// The `/audit` route, with its state; empty (every path 404) when no token is configured.
/// Merge it into the ingress router.
pub fn router(store: Store, settings: &AuditSettings) -> Router {
    let Some(token) = &settings.api_token else {
        return Router::new();
    };
    let state = Arc::new(ApiState {
        store,
        token_digest: digest(token.expose().as_bytes()),
        page_size: settings.page_size,
        max_page_size: settings.max_page_size,
    });
    Router::new().route("/audit", get(list)).with_state(state)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    account_id: Option<String>,
    tenant: Option<String>,
    event_id: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
    format: Option<String>,
}

fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(digest(token.trim().as_bytes()).ct_eq(&state.token_digest))
}

/// An error answer in gatehouse's one shape; the code follows from the status.
fn problem(status: StatusCode, reason: impl AsRef<str>) -> Response {
    let error = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    };
    crate::http_error::error_response(status, error, reason.as_ref())
}

async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !authorized(&state, &headers) {
        let mut response = problem(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let query = match to_query(&params, state.page_size, state.max_page_size) {
        Ok(query) => query,
        Err(message) => return problem(StatusCode::BAD_REQUEST, message),
    };
    let format = params.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "jsonl" | "ocsf") {
        return problem(StatusCode::BAD_REQUEST, "format must be json, jsonl or ocsf");
    }
    let page = match page(&state.store, &query).await {
        Ok(page) => page,
        Err(error) => {
            tracing::warn!(%error, "GET /audit: cannot read the audit store");
            return problem(StatusCode::SERVICE_UNAVAILABLE, "audit store unavailable");
        }
    };
    let mut response = match format {
        "jsonl" => {
            let mut body = String::new();
            for record in &page.records {
                match serde_json::to_string(record) {
                    Ok(line) => {
                        body.push_str(&line);
                        body.push('\n');
                    }
                    Err(error) => return problem(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
                }
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        "ocsf" => {
            let events: Vec<serde_json::Value> = page.records.iter().map(to_ocsf).collect();
            axum::Json(json!({"records": events, "next_after_seq": page.next_after_seq})).into_response()
        }
        _ => axum::Json(json!({"records": page.records, "next_after_seq": page.next_after_seq}))
            .into_response(),
    };
    if let Some(next) = page.next_after_seq
        && let Ok(value) = HeaderValue::from_str(&next.to_string())
    {
        response.headers_mut().insert("x-next-after-seq", value);
    }
    // Records name people: no cache between here and the reader keeps a copy.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn to_query(params: &Params, page_size: usize, max_page_size: usize) -> Result<AuditQuery, String> {
    AuditFilters {
        account_id: params.account_id.as_deref(),
        tenant: params.tenant.as_deref(),
        event_id: params.event_id.as_deref(),
        kinds: params
            .kind
            .as_deref()
            .map(|k| k.split(',').collect())
            .unwrap_or_default(),
        since: params.since.as_deref(),
        until: params.until.as_deref(),
        after_seq: params.after_seq,
        limit: params.limit.unwrap_or(page_size).clamp(1, max_page_size),
    }
    .parse()
}
