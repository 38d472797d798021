//! The organization APIs: `GET /admin/v1/orgs/{org_id}/events-stream` (cursor-paged, and the
//! cursor keeps working past the last page, so a poller polls it) and user management
//! `POST /users/{account_id}/manage/lifecycle/{disable|enable}`. The events-stream's world is
//! the one its org id names; user management's, the one whose admin API key is presented.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::SimApi;
use crate::log::Seq;
use crate::paging::{QueryMap, decode_cursor, encode_cursor, number};
use crate::seed::SimAccountStatus;
use crate::tenant::SimTenant;
use crate::world::SimRefusal;
use crate::{SimShared, lock};

pub(crate) fn router() -> Router<Arc<SimShared>> {
    Router::new()
        .route("/admin/v1/orgs/{org_id}/events-stream", get(events_stream))
        .route("/users/{account_id}/manage/lifecycle/disable", post(disable))
        .route("/users/{account_id}/manage/lifecycle/enable", post(enable))
}

fn bad_request(message: &str) -> Response {
    SimApi::Admin.error(StatusCode::BAD_REQUEST, message)
}

#[derive(Debug, Deserialize)]
struct OrgPath {
    org_id: String,
}

async fn events_stream(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Path(path): Path<OrgPath>,
    Query(query): Query<QueryMap>,
) -> Response {
    if query
        .get("sortOrder")
        .is_some_and(|o| !o.eq_ignore_ascii_case("asc"))
    {
        return bad_request("the simulator streams in ascending order only");
    }
    let position = match query.get("cursor") {
        None => 0,
        Some(cursor) => match decode_cursor(cursor) {
            Some(position) => position,
            None => return bad_request("invalid cursor"),
        },
    };
    let (from, to) = match (number(&query, "from"), number(&query, "to")) {
        (Ok(from), Ok(to)) => (from.map(|n| n as i64), to.map(|n| n as i64)),
        _ => return bad_request("from and to are epoch milliseconds"),
    };
    let max = lock(&tenant.policy).events_max_limit;
    let limit = match number(&query, "limit") {
        Ok(requested) => tenant.page_size(requested, max, max),
        Err(message) => return bad_request(&message),
    };
    let world = lock(&tenant.world);
    let mut data = Vec::new();
    // Where the next poll resumes: after the last event returned, or after everything scanned.
    let mut next = position;
    for event in world.events.iter().skip(position) {
        if data.len() == limit {
            break;
        }
        next = event.seq as usize + 1;
        let millis = event.time.timestamp_millis();
        if from.is_some_and(|f| millis < f) || to.is_some_and(|t| millis > t) {
            continue;
        }
        data.push(event.to_json(&world.accounts));
    }
    let cursor = encode_cursor(next);
    let link = format!("/admin/v1/orgs/{}/events-stream?cursor={cursor}", path.org_id);
    Json(json!({
        "data": data,
        "meta": {"next": cursor, "page_size": data.len()},
        "links": {"self": format!("/admin/v1/orgs/{}/events-stream", path.org_id), "next": link},
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct AccountPath {
    account_id: String,
}

fn set_status(
    shared: &SimShared,
    tenant: &SimTenant,
    seq: Seq,
    account_id: &str,
    status: SimAccountStatus,
) -> Response {
    let actor = shared.log.actor(seq, "admin");
    match lock(&tenant.world).set_account_status(account_id, status, &actor) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(SimRefusal::NotFound(message)) => SimApi::Admin.error(StatusCode::NOT_FOUND, &message),
        Err(SimRefusal::Conflict(message) | SimRefusal::Invalid(message)) => bad_request(&message),
    }
}

/// The body (`{"message": …}`) is optional and only shown to the user on Atlassian. The world
/// is the one whose admin API key the request presents (the gate chose it).
async fn disable(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Path(path): Path<AccountPath>,
    _message: axum::body::Bytes,
) -> Response {
    set_status(
        &shared,
        &tenant,
        seq,
        &path.account_id,
        SimAccountStatus::Inactive,
    )
}

async fn enable(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Path(path): Path<AccountPath>,
) -> Response {
    set_status(&shared, &tenant, seq, &path.account_id, SimAccountStatus::Active)
}
