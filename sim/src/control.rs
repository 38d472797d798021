//! The simulator's own endpoints under `/_sim` (no authentication): read the state and the
//! request log, change the policy, script faults, and change the world directly as an
//! administrator would in Atlassian's UI (so tests can create drift for gatehouse to find).
//!
//! | Method and path | Body | Effect |
//! |---|---|---|
//! | `GET /_sim/state` | | [`StateSnapshot`](crate::StateSnapshot) |
//! | `GET /_sim/requests`, `DELETE /_sim/requests` | | the request log; clear it |
//! | `GET /_sim/policy`, `PUT /_sim/policy` | [`Policy`] | replaces it, resets rate-limit buckets |
//! | `POST /_sim/faults`, `DELETE /_sim/faults` | a [`Fault`] or a list | adds; clears all |
//! | `POST /_sim/accounts` | a seed user | adds an account (and its SCIM identity) |
//! | `PUT /_sim/accounts/{account_id}/status` | `{"status": "inactive"}` | sets it (emits the event) |
//! | `POST /_sim/groups` | `{"name", "id"?}` | creates a Confluence group |
//! | `PUT`/`DELETE /_sim/groups/{group_id}/members/{account_id}` | | adds/removes a membership |
//! | `POST /_sim/events` | `{"action", "account_id"?, "group_id"?}` | appends an org event |

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::limits::Limits;
use crate::policy::{Fault, Policy};
use crate::seed::{AccountStatus, SeedUser};
use crate::world::Refusal;
use crate::{Shared, lock};

/// Who the events of direct changes name as their actor.
const ADMIN_UI: &str = "admin-ui";

pub(crate) fn router() -> Router<Arc<Shared>> {
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
}

fn refused(refusal: Refusal) -> Response {
    let (status, message) = match refusal {
        Refusal::NotFound(m) => (StatusCode::NOT_FOUND, m),
        Refusal::Conflict(m) => (StatusCode::CONFLICT, m),
        Refusal::Invalid(m) => (StatusCode::BAD_REQUEST, m),
    };
    (status, Json(json!({"message": message}))).into_response()
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    Json(lock(&shared.world).snapshot()).into_response()
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.log.entries()).into_response()
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.log.clear();
    StatusCode::NO_CONTENT
}

async fn get_policy(State(shared): State<Arc<Shared>>) -> Response {
    Json(lock(&shared.policy).clone()).into_response()
}

async fn set_policy(State(shared): State<Arc<Shared>>, Json(policy): Json<Policy>) -> StatusCode {
    shared.set_policy(policy);
    StatusCode::NO_CONTENT
}

impl Shared {
    /// Replaces the policy and starts rate limiting afresh.
    pub(crate) fn set_policy(&self, policy: Policy) {
        *lock(&self.policy) = policy;
        *lock(&self.limits) = Limits::default();
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Fault),
    Many(Vec<Fault>),
}

async fn add_faults(State(shared): State<Arc<Shared>>, Json(faults): Json<OneOrMany>) -> StatusCode {
    let faults = match faults {
        OneOrMany::One(fault) => vec![fault],
        OneOrMany::Many(faults) => faults,
    };
    lock(&shared.faults).extend(faults);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.faults).clear();
    StatusCode::NO_CONTENT
}

async fn add_account(State(shared): State<Arc<Shared>>, Json(user): Json<SeedUser>) -> Response {
    match lock(&shared.world).insert_user(user) {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(error) => (StatusCode::CONFLICT, Json(json!({"message": error.to_string()}))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    status: AccountStatus,
}

async fn set_status(
    State(shared): State<Arc<Shared>>,
    Path(account_id): Path<String>,
    Json(body): Json<StatusBody>,
) -> Response {
    match lock(&shared.world).set_account_status(&account_id, body.status, ADMIN_UI) {
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

async fn create_group(State(shared): State<Arc<Shared>>, Json(body): Json<NewGroup>) -> Response {
    match lock(&shared.world).create_group(body.id, &body.name, ADMIN_UI) {
        Ok(group) => (StatusCode::CREATED, Json(group)).into_response(),
        Err(r) => refused(r),
    }
}

async fn add_member(
    State(shared): State<Arc<Shared>>,
    Path((group_id, account_id)): Path<(String, String)>,
) -> Response {
    match lock(&shared.world).add_member(&group_id, &account_id, ADMIN_UI) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => refused(r),
    }
}

async fn remove_member(
    State(shared): State<Arc<Shared>>,
    Path((group_id, account_id)): Path<(String, String)>,
) -> Response {
    match lock(&shared.world).remove_member(&group_id, &account_id, ADMIN_UI) {
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

async fn append_event(State(shared): State<Arc<Shared>>, Json(body): Json<NewEvent>) -> Response {
    let mut world = lock(&shared.world);
    let group = match &body.group_id {
        None => None,
        Some(id) => match world.groups.get(id) {
            Some(group) => Some((group.id.clone(), group.name.clone())),
            None => return refused(Refusal::NotFound(format!("group {id} does not exist"))),
        },
    };
    world.emit(&body.action, ADMIN_UI, body.account_id.as_deref(), group);
    StatusCode::CREATED.into_response()
}
