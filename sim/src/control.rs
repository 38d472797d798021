//! The simulator's own endpoints under `/_sim` (no authentication): read the state and the
//! request log, change the policy, script faults, and change the world directly as an
//! administrator would in Atlassian's UI (so tests can create drift for gatehouse to find).
//!
//! Every call acts on the first tenant, or on the one `?tenant={cloudId}` names (an unknown one
//! answers 404). The request log is one for all tenants: `GET`/`DELETE /_sim/requests` read and
//! clear all of it, or with `?tenant=` only the calls that tenant's world served.
//!
//! | Method and path | Body | Effect |
//! |---|---|---|
//! | `GET /_sim/state` | | [`StateSnapshot`](crate::StateSnapshot) |
//! | `GET /_sim/requests`, `DELETE /_sim/requests` | | the request log; clear it (see above) |
//! | `GET /_sim/policy`, `PUT /_sim/policy` | [`Behaviour`] | replaces it, resets rate-limit buckets |
//! | `POST /_sim/faults`, `DELETE /_sim/faults` | a [`Fault`] or a list | adds; clears all |
//! | `POST /_sim/accounts` | a seed user | adds an account (and its SCIM identity) |
//! | `PUT /_sim/accounts/{account_id}/status` | `{"status": "inactive"}` | sets it (emits the event) |
//! | `POST /_sim/groups` | `{"name", "id"?}` | creates a Confluence group |
//! | `PUT`/`DELETE /_sim/groups/{group_id}/members/{account_id}` | | adds/removes a membership |
//! | `POST /_sim/events` | `{"action", "account_id"?, "group_id"?}` | appends an org event |
//! | `POST /_sim/events/raw` | any JSON | appends an org event served exactly as given (a malformed one, say) |

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::behaviour::{Behaviour, Fault};
use crate::gate::TENANT_PARAMETER;
use crate::paging::QueryMap;
use crate::seed::{SeedUser, SimAccountStatus};
use crate::tenant::SimTenant;
use crate::world::SimRefusal;
use crate::{SimShared, lock};

/// Who the events of direct changes name as their actor.
const ADMIN_UI: &str = "admin-ui";

pub(crate) fn router() -> Router<Arc<SimShared>> {
    Router::new()
        .route("/_sim/state", get(state))
        .route("/_sim/requests", get(requests).delete(clear_requests))
        .route("/_sim/policy", get(get_policy).put(set_policy))
        .route("/_sim/faults", post(add_faults).delete(clear_faults))
        .route("/_sim/accounts", post(add_account))
        .route("/_sim/accounts/{account_id}/status", put(set_status))
        .route("/_sim/groups", post(create_group))
        .route(
            "/_sim/groups/{group_id}/members/{account_id}",
            put(add_member).delete(remove_member),
        )
        .route("/_sim/events", post(append_event))
        .route("/_sim/events/raw", post(append_raw_event))
}

fn refused(refusal: SimRefusal) -> Response {
    let (status, message) = match refusal {
        SimRefusal::NotFound(m) => (StatusCode::NOT_FOUND, m),
        SimRefusal::Conflict(m) => (StatusCode::CONFLICT, m),
        SimRefusal::Invalid(m) => (StatusCode::BAD_REQUEST, m),
    };
    (status, Json(json!({"message": message}))).into_response()
}

async fn state(Extension(tenant): Extension<Arc<SimTenant>>) -> Response {
    Json(lock(&tenant.world).snapshot()).into_response()
}

/// The whole log, or with `?tenant=` only the calls that tenant's world served.
async fn requests(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Query(query): Query<QueryMap>,
) -> Response {
    let mut entries = shared.log.entries();
    if query.contains_key(TENANT_PARAMETER) {
        entries.retain(|r| r.cloud_id.as_deref() == Some(tenant.cloud_id.as_str()));
    }
    Json(entries).into_response()
}

/// Clears the whole log, or with `?tenant=` only that tenant's calls.
async fn clear_requests(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Query(query): Query<QueryMap>,
) -> StatusCode {
    if query.contains_key(TENANT_PARAMETER) {
        shared.log.clear_tenant(&tenant.cloud_id);
    } else {
        shared.log.clear();
    }
    StatusCode::NO_CONTENT
}

async fn get_policy(Extension(tenant): Extension<Arc<SimTenant>>) -> Response {
    Json(lock(&tenant.policy).clone()).into_response()
}

async fn set_policy(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Json(policy): Json<Behaviour>,
) -> StatusCode {
    tenant.set_policy(policy);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrManyIds {
    One(Fault),
    Many(Vec<Fault>),
}

async fn add_faults(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Json(faults): Json<OneOrManyIds>,
) -> StatusCode {
    let faults = match faults {
        OneOrManyIds::One(fault) => vec![fault],
        OneOrManyIds::Many(faults) => faults,
    };
    lock(&tenant.faults).extend(faults);
    StatusCode::NO_CONTENT
}

async fn clear_faults(Extension(tenant): Extension<Arc<SimTenant>>) -> StatusCode {
    lock(&tenant.faults).clear();
    StatusCode::NO_CONTENT
}

async fn add_account(Extension(tenant): Extension<Arc<SimTenant>>, Json(user): Json<SeedUser>) -> Response {
    match lock(&tenant.world).insert_user(user) {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(error) => (StatusCode::CONFLICT, Json(json!({"message": error.to_string()}))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    status: SimAccountStatus,
}

async fn set_status(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Path(account_id): Path<String>,
    Json(body): Json<StatusBody>,
) -> Response {
    match lock(&tenant.world).set_account_status(&account_id, body.status, ADMIN_UI) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => refused(r),
    }
}

#[derive(Debug, Deserialize)]
struct NewGroup {
    name: String,
    #[serde(default)]
    id: Option<String>,
}

async fn create_group(Extension(tenant): Extension<Arc<SimTenant>>, Json(body): Json<NewGroup>) -> Response {
    match lock(&tenant.world).create_group(body.id, &body.name, ADMIN_UI) {
        Ok(group) => (StatusCode::CREATED, Json(group)).into_response(),
        Err(r) => refused(r),
    }
}

async fn add_member(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Path((group_id, account_id)): Path<(String, String)>,
) -> Response {
    match lock(&tenant.world).add_member(&group_id, &account_id, ADMIN_UI) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => refused(r),
    }
}

async fn remove_member(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Path((group_id, account_id)): Path<(String, String)>,
) -> Response {
    match lock(&tenant.world).remove_member(&group_id, &account_id, ADMIN_UI) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => refused(r),
    }
}

#[derive(Debug, Deserialize)]
struct NewEvent {
    action: String,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
}

async fn append_event(Extension(tenant): Extension<Arc<SimTenant>>, Json(body): Json<NewEvent>) -> Response {
    let mut world = lock(&tenant.world);
    let group = match &body.group_id {
        None => None,
        Some(id) => match world.groups.get(id) {
            Some(group) => Some((group.id.clone(), group.name.clone())),
            None => return refused(SimRefusal::NotFound(format!("group {id} does not exist"))),
        },
    };
    world.emit(&body.action, ADMIN_UI, body.account_id.as_deref(), group);
    StatusCode::CREATED.into_response()
}

/// Any JSON, served as the next event of the stream: how tests reproduce an event Atlassian's
/// documented shape does not cover.
async fn append_raw_event(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Json(raw): Json<serde_json::Value>,
) -> StatusCode {
    lock(&tenant.world).emit_raw(raw);
    StatusCode::CREATED
}
