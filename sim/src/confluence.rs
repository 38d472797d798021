//! Confluence Cloud REST: the v1 user and group endpoints (id-based, and the deprecated
//! name-based ones beside them) and v2 `users-bulk`. The router is mounted three times: on the
//! first tenant's site (`/wiki`), on any tenant's site (`/sites/{cloud_id}/wiki`) and on the
//! gateway (`/ex/confluence/{cloud_id}/wiki`); the handlers serve the world the gate chose.
//!
//! Group names are case-sensitive everywhere except the picker, which searches.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::confluence_error;
use crate::log::Seq;
use crate::paging::{QueryMap, cursor_page, offset_page};
use crate::tenant::SimTenant;
use crate::world::{Account, SimGroup, SimRefusal, World};
use crate::{SimShared, lock};

pub(crate) fn router() -> Router<Arc<SimShared>> {
    Router::new()
        .route("/rest/api/user", get(user))
        .route("/rest/api/user/memberof", get(member_of))
        .route("/rest/api/group", get(groups))
        .route("/rest/api/group/picker", get(picker))
        .route("/rest/api/group/by-id", get(group_by_id))
        .route("/rest/api/group/by-name", get(group_by_name))
        .route("/rest/api/group/{group}/membersByGroupId", get(members_by_id))
        .route("/rest/api/group/member", get(members_by_name_query))
        .route("/rest/api/group/{group}/member", get(members_by_name_path))
        .route(
            "/rest/api/group/userByGroupId",
            post(add_by_id).delete(remove_by_id),
        )
        .route("/rest/api/group/user", post(add_by_name).delete(remove_by_name))
        .route("/api/v2/users-bulk", post(users_bulk))
}

#[derive(Debug, Deserialize)]
struct GroupPath {
    group: String,
}

fn bad_request(message: impl AsRef<str>) -> Response {
    confluence_error(StatusCode::BAD_REQUEST, message.as_ref())
}

fn not_found(message: impl AsRef<str>) -> Response {
    confluence_error(StatusCode::NOT_FOUND, message.as_ref())
}

fn refusal(refusal: SimRefusal) -> Response {
    match refusal {
        SimRefusal::NotFound(m) => not_found(m),
        SimRefusal::Conflict(m) => confluence_error(StatusCode::CONFLICT, &m),
        SimRefusal::Invalid(m) => bad_request(m),
    }
}

fn required<'q>(query: &'q QueryMap, name: &str) -> Result<&'q str, Response> {
    query
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad_request(format!("{name} is required")))
}

/// The v1 user shape. A hidden email is `null`.
fn v1_user(account: &Account) -> Value {
    json!({
        "type": "known",
        "accountId": account.account_id,
        "accountType": account.account_type,
        "email": account.email,
        "publicName": account.display_name,
        "displayName": account.display_name,
        "isExternalCollaborator": false,
        "_links": {"self": format!("/wiki/rest/api/user?accountId={}", account.account_id)},
    })
}

fn v1_group(group: &SimGroup) -> Value {
    json!({
        "type": "group",
        "name": group.name,
        "id": group.id,
        "_links": {"self": format!("/wiki/rest/api/group/by-id?id={}", group.id)},
    })
}

fn page_response(page: Result<Value, String>) -> Response {
    match page {
        Ok(body) => Json(body).into_response(),
        Err(message) => bad_request(message),
    }
}

fn sorted_groups(world: &World, keep: impl Fn(&SimGroup) -> bool) -> Vec<&SimGroup> {
    let mut groups: Vec<&SimGroup> = world.groups.values().filter(|g| keep(g)).collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    groups
}

async fn user(Extension(tenant): Extension<Arc<SimTenant>>, Query(query): Query<QueryMap>) -> Response {
    let account_id = match required(&query, "accountId") {
        Ok(id) => id,
        Err(response) => return response,
    };
    match lock(&tenant.world).accounts.get(account_id) {
        Some(account) => Json(v1_user(account)).into_response(),
        None => not_found(format!("no user with accountId {account_id}")),
    }
}

async fn member_of(Extension(tenant): Extension<Arc<SimTenant>>, Query(query): Query<QueryMap>) -> Response {
    let account_id = match required(&query, "accountId") {
        Ok(id) => id.to_owned(),
        Err(response) => return response,
    };
    let items: Vec<Value> = {
        let world = lock(&tenant.world);
        if !world.accounts.contains_key(&account_id) {
            return not_found(format!("no user with accountId {account_id}"));
        }
        sorted_groups(&world, |g| g.members.contains(&account_id))
            .into_iter()
            .map(v1_group)
            .collect()
    };
    page_response(offset_page(
        &tenant,
        items,
        &query,
        "/rest/api/user/memberof",
        &[("accountId", &account_id)],
    ))
}

async fn groups(Extension(tenant): Extension<Arc<SimTenant>>, Query(query): Query<QueryMap>) -> Response {
    let items: Vec<Value> = sorted_groups(&lock(&tenant.world), |_| true)
        .into_iter()
        .map(v1_group)
        .collect();
    page_response(offset_page(&tenant, items, &query, "/rest/api/group", &[]))
}

/// Searches names case-insensitively (it is a search box), unlike every other endpoint.
async fn picker(Extension(tenant): Extension<Arc<SimTenant>>, Query(query): Query<QueryMap>) -> Response {
    let needle = match required(&query, "query") {
        Ok(q) => q.to_lowercase(),
        Err(response) => return response,
    };
    let items: Vec<Value> = sorted_groups(&lock(&tenant.world), |g| g.name.to_lowercase().contains(&needle))
        .into_iter()
        .map(v1_group)
        .collect();
    page_response(offset_page(
        &tenant,
        items,
        &query,
        "/rest/api/group/picker",
        &[("query", &needle)],
    ))
}

async fn group_by_id(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Query(query): Query<QueryMap>,
) -> Response {
    let id = match required(&query, "id") {
        Ok(id) => id,
        Err(response) => return response,
    };
    match lock(&tenant.world).groups.get(id) {
        Some(group) => Json(v1_group(group)).into_response(),
        None => not_found(format!("no group with id {id}")),
    }
}

/// Deprecated; exact, case-sensitive name.
async fn group_by_name(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Query(query): Query<QueryMap>,
) -> Response {
    let name = match required(&query, "name") {
        Ok(name) => name,
        Err(response) => return response,
    };
    match lock(&tenant.world).groups.values().find(|g| g.name == name) {
        Some(group) => Json(v1_group(group)).into_response(),
        None => not_found(format!("no group named {name}")),
    }
}

fn member_page(tenant: &SimTenant, group: Option<SimGroup>, query: &QueryMap, path: &str) -> Response {
    let Some(group) = group else {
        return not_found("group not found");
    };
    let items: Vec<Value> = {
        let world = lock(&tenant.world);
        group
            .members
            .iter()
            .filter_map(|id| world.accounts.get(id))
            .map(v1_user)
            .collect()
    };
    page_response(offset_page(tenant, items, query, path, &[]))
}

async fn members_by_id(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Path(path): Path<GroupPath>,
    Query(query): Query<QueryMap>,
) -> Response {
    let group = lock(&tenant.world).groups.get(&path.group).cloned();
    let link = format!("/rest/api/group/{}/membersByGroupId", path.group);
    member_page(&tenant, group, &query, &link)
}

fn group_named(tenant: &SimTenant, name: &str) -> Option<SimGroup> {
    lock(&tenant.world)
        .groups
        .values()
        .find(|g| g.name == name)
        .cloned()
}

/// Deprecated: `/group/member?name=`.
async fn members_by_name_query(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Query(query): Query<QueryMap>,
) -> Response {
    let name = match required(&query, "name") {
        Ok(name) => name.to_owned(),
        Err(response) => return response,
    };
    let group = group_named(&tenant, &name);
    member_page(&tenant, group, &query, "/rest/api/group/member")
}

/// Deprecated: `/group/{groupName}/member`.
async fn members_by_name_path(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Path(path): Path<GroupPath>,
    Query(query): Query<QueryMap>,
) -> Response {
    let group = group_named(&tenant, &path.group);
    let link = format!("/rest/api/group/{}/member", path.group);
    member_page(&tenant, group, &query, &link)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountBody {
    account_id: String,
}

/// Adds (201) or removes (204, also when the account was not a member) a membership.
fn change_membership(
    shared: &SimShared,
    tenant: &SimTenant,
    seq: Seq,
    group_id: &str,
    account_id: &str,
    add: bool,
) -> Response {
    let actor = shared.log.actor(seq, "confluence");
    let mut world = lock(&tenant.world);
    let (changed, done) = if add {
        (
            world.add_member(group_id, account_id, &actor),
            StatusCode::CREATED,
        )
    } else {
        (
            world.remove_member(group_id, account_id, &actor),
            StatusCode::NO_CONTENT,
        )
    };
    match changed {
        Ok(_) => done.into_response(),
        Err(r) => refusal(r),
    }
}

async fn add_by_id(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Query(query): Query<QueryMap>,
    Json(body): Json<AccountBody>,
) -> Response {
    match required(&query, "groupId") {
        Ok(group_id) => change_membership(&shared, &tenant, seq, group_id, &body.account_id, true),
        Err(response) => response,
    }
}

/// 204 also when the account was not a member.
async fn remove_by_id(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Query(query): Query<QueryMap>,
) -> Response {
    let (group_id, account_id) = match (required(&query, "groupId"), required(&query, "accountId")) {
        (Ok(g), Ok(a)) => (g, a),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    change_membership(&shared, &tenant, seq, group_id, account_id, false)
}

/// Deprecated: `POST /group/user?name=`.
async fn add_by_name(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Query(query): Query<QueryMap>,
    Json(body): Json<AccountBody>,
) -> Response {
    let name = match required(&query, "name") {
        Ok(name) => name,
        Err(response) => return response,
    };
    let Some(group) = group_named(&tenant, name) else {
        return not_found(format!("no group named {name}"));
    };
    change_membership(&shared, &tenant, seq, &group.id, &body.account_id, true)
}

/// Deprecated: `DELETE /group/user?name=&accountId=`.
async fn remove_by_name(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Query(query): Query<QueryMap>,
) -> Response {
    let (name, account_id) = match (required(&query, "name"), required(&query, "accountId")) {
        (Ok(n), Ok(a)) => (n, a),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    let Some(group) = group_named(&tenant, name) else {
        return not_found(format!("no group named {name}"));
    };
    change_membership(&shared, &tenant, seq, &group.id, account_id, false)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkBody {
    #[serde(default)]
    account_ids: Vec<String>,
}

fn v2_error(status: StatusCode, title: &str) -> Response {
    (
        status,
        Json(json!({"errors": [{"status": status.as_u16(), "code": "INVALID_REQUEST_PARAMETER", "title": title, "detail": null}]})),
    )
        .into_response()
}

/// `POST /api/v2/users-bulk`: 1 to 100 account ids; unknown ones are left out; cursor-paged.
async fn users_bulk(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Query(query): Query<QueryMap>,
    Json(body): Json<BulkBody>,
) -> Response {
    if body.account_ids.is_empty() || body.account_ids.len() > 100 {
        return v2_error(StatusCode::BAD_REQUEST, "accountIds must hold 1 to 100 ids");
    }
    let items: Vec<Value> = {
        let world = lock(&tenant.world);
        body.account_ids
            .iter()
            .filter_map(|id| world.accounts.get(id))
            .map(|a| {
                json!({
                    "accountId": a.account_id,
                    "accountType": a.account_type,
                    "accountStatus": a.status,
                    "displayName": a.display_name,
                    "publicName": a.display_name,
                    "email": a.email,
                    "timeZone": null,
                    "isExternalCollaborator": false,
                })
            })
            .collect()
    };
    match cursor_page(&tenant, items, &query, "/wiki/api/v2/users-bulk") {
        Ok((body, link)) => {
            let mut response = Json(body).into_response();
            if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
                response.headers_mut().insert(axum::http::header::LINK, link);
            }
            response
        }
        Err(message) => v2_error(StatusCode::BAD_REQUEST, &message),
    }
}
