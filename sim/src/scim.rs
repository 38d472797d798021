//! SCIM 2.0 under `/scim/directory/{directory_id}` (the directory picks the tenant): users (find by a single `eq` filter on
//! `userName` or `externalId`, create, get, `PATCH active`) and groups (find by `displayName`,
//! `PATCH members`). Errors carry a *string* `status` and a `scimType`; a duplicate create is 409
//! `uniqueness`; `Operations` is case-sensitive (`operations` is refused, as a well-known client
//! learned).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{scim_error, scim_json};
use crate::log::Seq;
use crate::paging::{QueryMap, scim_page};
use crate::seed::{SeedScimIdentity, SeedUser, SimAccountStatus};
use crate::tenant::SimTenant;
use crate::world::{SimRefusal, SimScimGroup, SimScimUser, World};
use crate::{SimShared, lock};

const EXTENSION: &str = "urn:scim:schemas:extension:atlassian-external:1.0";

pub(crate) fn router() -> Router<Arc<SimShared>> {
    Router::new()
        .route("/Users", get(list_users).post(create_user))
        .route("/Users/{id}", get(get_user).patch(patch_user).delete(delete_user))
        .route("/Groups", get(list_groups))
        .route("/Groups/{id}", get(get_group).patch(patch_group))
}

#[derive(Debug, Deserialize)]
struct IdPath {
    id: String,
    directory_id: String,
}

/// One page of a SCIM `ListResponse`, as `query` asks.
fn scim_list(tenant: &SimTenant, items: Vec<Value>, query: &QueryMap) -> Response {
    match scim_page(tenant, items, query) {
        Ok(body) => scim_json(StatusCode::OK, body),
        Err(message) => scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &message),
    }
}

fn refusal(refusal: SimRefusal) -> Response {
    match refusal {
        SimRefusal::NotFound(m) => scim_error(StatusCode::NOT_FOUND, None, &m),
        SimRefusal::Conflict(m) => scim_error(StatusCode::CONFLICT, Some("uniqueness"), &m),
        SimRefusal::Invalid(m) => scim_error(StatusCode::BAD_REQUEST, Some("invalidValue"), &m),
    }
}

fn user_json(user: &SimScimUser, directory: &str) -> Value {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", EXTENSION],
        "id": user.id,
        "userName": user.user_name,
        "active": user.active,
        "displayName": user.display_name,
        "emails": user.email.as_ref().map(|e| vec![json!({"value": e, "type": "work", "primary": true})]).unwrap_or_default(),
        EXTENSION: {"atlassianAccountId": user.account_id},
        "meta": {"resourceType": "User", "location": format!("/scim/directory/{directory}/Users/{}", user.id)},
    });
    if let Some(external_id) = &user.external_id {
        body["externalId"] = json!(external_id);
    }
    body
}

fn group_json(group: &SimScimGroup, world: &World) -> Value {
    let members: Vec<Value> = group
        .members
        .iter()
        .map(|id| json!({"value": id, "display": world.scim_users.get(id).map(|u| u.user_name.clone())}))
        .collect();
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:SimGroup"],
        "id": group.id,
        "displayName": group.display_name,
        "members": members,
        "meta": {"resourceType": "SimGroup", "location": format!("/scim/directory/{}/Groups/{}", world.directory_id, group.id)},
    })
}

/// `attr eq "value"`, the only filter Atlassian supports.
fn parse_filter(filter: &str) -> Option<(String, String)> {
    let (attribute, rest) = filter.trim().split_once(' ')?;
    let (operator, value) = rest.trim_start().split_once(' ')?;
    if !operator.eq_ignore_ascii_case("eq") {
        return None;
    }
    let quoted = value.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mut unescaped = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => unescaped.push(chars.next()?),
            '"' => return None,
            c => unescaped.push(c),
        }
    }
    Some((attribute.to_owned(), unescaped))
}

fn invalid_filter() -> Response {
    scim_error(
        StatusCode::BAD_REQUEST,
        Some("invalidFilter"),
        "only a single `eq` filter on userName or externalId (users) or displayName (groups) is supported",
    )
}

async fn list_users(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Path(path): Path<std::collections::HashMap<String, String>>,
    Query(query): Query<QueryMap>,
) -> Response {
    let directory = path.get("directory_id").cloned().unwrap_or_default();
    let items: Vec<Value> = {
        let world = lock(&tenant.world);
        let matches: Box<dyn Fn(&SimScimUser) -> bool> = match query.get("filter") {
            None => Box::new(|_| true),
            Some(filter) => match parse_filter(filter) {
                Some((attribute, value)) if attribute.eq_ignore_ascii_case("userName") => {
                    Box::new(move |u| u.user_name.eq_ignore_ascii_case(&value))
                }
                Some((attribute, value)) if attribute.eq_ignore_ascii_case("externalId") => {
                    Box::new(move |u| u.external_id.as_deref() == Some(value.as_str()))
                }
                _ => return invalid_filter(),
            },
        };
        world
            .scim_users
            .values()
            .filter(|u| matches(u))
            .map(|u| user_json(u, &directory))
            .collect()
    };
    scim_list(&tenant, items, &query)
}

async fn get_user(Extension(tenant): Extension<Arc<SimTenant>>, Path(path): Path<IdPath>) -> Response {
    match lock(&tenant.world).scim_users.get(&path.id) {
        Some(user) => scim_json(StatusCode::OK, user_json(user, &path.directory_id)),
        None => scim_error(StatusCode::NOT_FOUND, None, "User not found"),
    }
}

/// Deletes a SCIM user (and its group memberships); the Atlassian account stays, as it does when
/// an identity provider deletes a user from the directory.
async fn delete_user(Extension(tenant): Extension<Arc<SimTenant>>, Path(path): Path<IdPath>) -> Response {
    let mut world = lock(&tenant.world);
    if world.scim_users.remove(&path.id).is_none() {
        return scim_error(StatusCode::NOT_FOUND, None, "User not found");
    }
    for group in world.scim_groups.values_mut() {
        group.members.remove(&path.id);
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewUser {
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    emails: Vec<Value>,
}

async fn create_user(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Path(path): Path<std::collections::HashMap<String, String>>,
    Json(body): Json<NewUser>,
) -> Response {
    if body.user_name.trim().is_empty() {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "userName is required",
        );
    }
    let directory = path.get("directory_id").cloned().unwrap_or_default();
    let actor = shared.log.actor(seq, "scim");
    let mut world = lock(&tenant.world);
    if world.scim_user_by_user_name(&body.user_name).is_some() {
        return scim_error(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            "A user with this userName already exists",
        );
    }
    if let Some(external_id) = &body.external_id
        && world
            .scim_users
            .values()
            .any(|u| u.external_id.as_deref() == Some(external_id.as_str()))
    {
        return scim_error(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            "A user with this externalId already exists",
        );
    }
    let email = body
        .emails
        .iter()
        .find(|e| e["primary"].as_bool() == Some(true))
        .or_else(|| body.emails.first())
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned);
    let display_name = body.display_name.clone().or_else(|| {
        let name = body.name.as_ref()?;
        name["formatted"].as_str().map(str::to_owned).or_else(|| {
            let given = name["givenName"].as_str().unwrap_or("");
            let family = name["familyName"].as_str().unwrap_or("");
            let joined = format!("{given} {family}").trim().to_owned();
            (!joined.is_empty()).then_some(joined)
        })
    });
    let active = body.active.unwrap_or(true);
    let account_id = format!("557058:{}", ulid::Ulid::generate().to_string().to_lowercase());
    let scim_id = world.generate_id("scim");
    let user = SeedUser {
        account_id: account_id.clone(),
        display_name,
        email: email.or_else(|| Some(body.user_name.clone())),
        account_type: "atlassian".to_owned(),
        status: if active {
            SimAccountStatus::Active
        } else {
            SimAccountStatus::Inactive
        },
        scim: Some(SeedScimIdentity {
            id: Some(scim_id.clone()),
            user_name: body.user_name.clone(),
            external_id: body.external_id.clone(),
            active: Some(active),
        }),
    };
    if let Err(error) = world.insert_user(user) {
        return scim_error(StatusCode::CONFLICT, Some("uniqueness"), &error.to_string());
    }
    world.emit("user_created", &actor, Some(&account_id), None);
    let Some(created) = world.scim_users.get(&scim_id) else {
        return scim_error(StatusCode::INTERNAL_SERVER_ERROR, None, "user vanished");
    };
    let mut response = scim_json(StatusCode::CREATED, user_json(created, &directory));
    if let Ok(location) = HeaderValue::from_str(&format!("/scim/directory/{directory}/Users/{scim_id}")) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, location);
    }
    response
}

/// The PATCH operations, insisting on the exact key `Operations`.
fn operations(body: &Value) -> Result<&Vec<Value>, Response> {
    match body.get("Operations").and_then(Value::as_array) {
        Some(ops) => Ok(ops),
        None => Err(scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "PatchOp requires `Operations` (case-sensitive)",
        )),
    }
}

/// `true`, `false`, or the strings some IdPs send instead.
fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

async fn patch_user(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Path(path): Path<IdPath>,
    Json(body): Json<Value>,
) -> Response {
    let ops = match operations(&body) {
        Ok(ops) => ops,
        Err(response) => return response,
    };
    let actor = shared.log.actor(seq, "scim");
    let mut world = lock(&tenant.world);
    if !world.scim_users.contains_key(&path.id) {
        return scim_error(StatusCode::NOT_FOUND, None, "User not found");
    }
    for op in ops {
        let kind = op["op"].as_str().unwrap_or("").to_ascii_lowercase();
        if kind != "replace" && kind != "add" {
            return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "unsupported op");
        }
        let changes: Vec<(String, Value)> = match op.get("path").and_then(Value::as_str) {
            Some(path) => vec![(path.to_owned(), op["value"].clone())],
            None => match op["value"].as_object() {
                Some(object) => object.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                None => {
                    return scim_error(
                        StatusCode::BAD_REQUEST,
                        Some("invalidValue"),
                        "value must be an object",
                    );
                }
            },
        };
        for (attribute, value) in changes {
            match attribute.as_str() {
                "active" => {
                    let Some(active) = as_bool(&value) else {
                        return scim_error(
                            StatusCode::BAD_REQUEST,
                            Some("invalidValue"),
                            "active must be a boolean",
                        );
                    };
                    if let Err(r) = world.set_scim_active(&path.id, active, &actor) {
                        return refusal(r);
                    }
                }
                "displayName" => {
                    if let Some(user) = world.scim_users.get_mut(&path.id) {
                        user.display_name = value.as_str().map(str::to_owned);
                    }
                }
                other => {
                    return scim_error(
                        StatusCode::BAD_REQUEST,
                        Some("invalidPath"),
                        &format!("path {other} is not supported"),
                    );
                }
            }
        }
    }
    match world.scim_users.get(&path.id) {
        Some(user) => scim_json(StatusCode::OK, user_json(user, &path.directory_id)),
        None => scim_error(StatusCode::NOT_FOUND, None, "User not found"),
    }
}

async fn list_groups(
    Extension(tenant): Extension<Arc<SimTenant>>,
    Query(query): Query<QueryMap>,
) -> Response {
    let items: Vec<Value> = {
        let world = lock(&tenant.world);
        let wanted = match query.get("filter") {
            None => None,
            Some(filter) => match parse_filter(filter) {
                Some((attribute, value)) if attribute.eq_ignore_ascii_case("displayName") => Some(value),
                _ => return invalid_filter(),
            },
        };
        world
            .scim_groups
            .values()
            .filter(|g| {
                wanted
                    .as_deref()
                    .is_none_or(|w| g.display_name.eq_ignore_ascii_case(w))
            })
            .map(|g| group_json(g, &world))
            .collect()
    };
    scim_list(&tenant, items, &query)
}

async fn get_group(Extension(tenant): Extension<Arc<SimTenant>>, Path(path): Path<IdPath>) -> Response {
    let world = lock(&tenant.world);
    match world.scim_groups.get(&path.id) {
        Some(group) => scim_json(StatusCode::OK, group_json(group, &world)),
        None => scim_error(StatusCode::NOT_FOUND, None, "SimGroup not found"),
    }
}

/// `members[value eq "id"]` → `id`.
fn member_filter(path: &str) -> Option<String> {
    let inner = path.strip_prefix("members[")?.strip_suffix(']')?;
    parse_filter(inner)
        .filter(|(attribute, _)| attribute == "value")
        .map(|(_, value)| value)
}

async fn patch_group(
    State(shared): State<Arc<SimShared>>,
    Extension(tenant): Extension<Arc<SimTenant>>,
    Extension(seq): Extension<Seq>,
    Path(path): Path<IdPath>,
    Json(body): Json<Value>,
) -> Response {
    let ops = match operations(&body) {
        Ok(ops) => ops,
        Err(response) => return response,
    };
    let actor = shared.log.actor(seq, "scim");
    let mut world = lock(&tenant.world);
    if !world.scim_groups.contains_key(&path.id) {
        return scim_error(StatusCode::NOT_FOUND, None, "SimGroup not found");
    }
    for op in ops {
        let kind = op["op"].as_str().unwrap_or("").to_ascii_lowercase();
        let op_path = op["path"].as_str().unwrap_or("");
        let listed = || -> Vec<String> {
            op["value"]
                .as_array()
                .map(|members| {
                    members
                        .iter()
                        .filter_map(|m| m["value"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (add, members) = match (kind.as_str(), op_path) {
            ("add", "members") => (true, listed()),
            ("remove", "members") => (false, listed()),
            ("remove", filtered) => match member_filter(filtered) {
                Some(id) => (false, vec![id]),
                None => {
                    return scim_error(StatusCode::BAD_REQUEST, Some("invalidPath"), "unsupported path");
                }
            },
            _ => return scim_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "unsupported op"),
        };
        for member in members {
            if let Err(r) = world.scim_group_member(&path.id, &member, add, &actor) {
                return refusal(r);
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_with_escapes() {
        assert_eq!(
            parse_filter(r#"userName eq "a@b.c""#),
            Some(("userName".into(), "a@b.c".into()))
        );
        assert_eq!(
            parse_filter(r#"displayName eq "say \"hi\"""#),
            Some(("displayName".into(), "say \"hi\"".into()))
        );
        assert_eq!(parse_filter(r#"userName co "a""#), None);
        assert_eq!(parse_filter(r#"userName eq "a" or userName eq "b""#), None);
        assert_eq!(member_filter(r#"members[value eq "u-1"]"#), Some("u-1".into()));
    }
}
