//! What stands in front of every simulated endpoint, in Atlassian's order: the request log, the
//! choice of the tenant whose world answers (see [`crate::tenant`]), then that tenant's scripted
//! faults (delays, error statuses), authentication, rate limits; and on the way out the headers
//! Atlassian adds (`X-ARequestId`, `X-RateLimit-*`, `Deprecation` on name-based endpoints).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;

use crate::api::{SimApi, endpoint};
use crate::behaviour::Fault;
use crate::limits::{Headers, Verdict};
use crate::log::Seq;
use crate::paging::QueryMap;
use crate::tenant::SimTenant;
use crate::{SimShared, lock};

/// The query parameter of `/_sim` calls naming the tenant they act on (by cloud id).
pub(crate) const TENANT_PARAMETER: &str = "tenant";

/// The largest OAuth token request read to find its `client_id` (real ones are a few hundred
/// bytes).
const TOKEN_REQUEST_LIMIT: usize = 64 * 1024;

/// Routes Atlassian deprecated in favour of group-id ones; they still work here, flagged.
const DEPRECATED: &[&str] = &[
    "/rest/api/group/by-name",
    "/rest/api/group/member",
    "/rest/api/group/{group}/member",
    "/rest/api/group/user",
];

/// The outermost layer: logs every request, matched or not.
pub(crate) async fn record(
    State(shared): State<Arc<SimShared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let seq = shared.log.begin(
        request.method().as_str(),
        request.uri().path(),
        request.uri().query(),
    );
    request.extensions_mut().insert(seq);
    let response = next.run(request).await;
    shared.log.finish(seq, response.status().as_u16());
    response
}

/// Runs after routing, so it knows the route template. Picks the request's world first: every
/// later step (faults, credentials, rate limits, the handler) is that world's.
pub(crate) async fn gate(
    State(shared): State<Arc<SimShared>>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.as_str().to_owned();
    let api = SimApi::of_route(&route);
    let seq = request
        .extensions()
        .get::<Seq>()
        .copied()
        .unwrap_or(Seq(u64::MAX));
    shared.log.set_route(seq, &route);
    if api == SimApi::Control {
        return control(&shared, request, next).await;
    }
    let path = request.uri().path().to_owned();
    let method = request.method().as_str().to_owned();

    let (mut request, tenant) = match select_tenant(&shared, seq, api, &path, request).await {
        Ok(selected) => selected,
        Err(response) => return with_request_id(response),
    };
    shared.log.set_cloud_id(seq, &tenant.cloud_id);

    // Faults match the path with its query, so a test can slow one page of a listing.
    let target = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.clone(),
    };
    let fault = take_fault(&tenant, &method, &target);
    if let Some(fault) = &fault {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if fault.reset {
            drop_connection();
        }
        if let Some(status) = fault.status {
            return with_request_id(fault_response(api, fault, status, request.headers()));
        }
    }

    let principal = match authenticate(&tenant, api, request.headers()) {
        Ok(principal) => principal,
        Err(response) => return with_request_id(response),
    };
    shared.log.set_principal(seq, principal);

    let endpoint = endpoint(&route);
    let limit_headers = if api == SimApi::OAuth {
        Headers::new()
    } else {
        // The behaviour before the limits, always in this order (`set_policy` never holds both).
        let policy = lock(&tenant.policy);
        let verdict = lock(&tenant.limits).check(
            &format!("{method} {endpoint}"),
            api.is_confluence(),
            &policy,
            Instant::now(),
        );
        match verdict {
            Verdict::Allowed(headers) => headers,
            Verdict::Refused(why, headers) => {
                shared.log.set_rate_limited(seq, why);
                let mut response = api.error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
                add_headers(response.headers_mut(), headers);
                return with_request_id(response);
            }
        }
    };

    let deprecated = api.is_confluence() && DEPRECATED.iter().any(|d| endpoint.ends_with(d));
    if deprecated {
        shared.log.set_deprecated(seq);
    }
    request.extensions_mut().insert(tenant);
    let mut response = next.run(request).await;
    if fault.is_some_and(|fault| fault.lose_answer) {
        drop_connection();
    }
    add_headers(response.headers_mut(), limit_headers);
    if deprecated {
        add_headers(
            response.headers_mut(),
            vec![
                ("deprecation", "true".to_owned()),
                (
                    "warning",
                    "299 - \"name-based group endpoints are deprecated; use the group id\"".to_owned(),
                ),
            ],
        );
    }
    with_request_id(response)
}

/// A control call acts on the tenant its `?tenant={cloudId}` names, the first one without it.
async fn control(shared: &SimShared, mut request: Request, next: Next) -> Response {
    let named = Query::<QueryMap>::try_from_uri(request.uri())
        .ok()
        .and_then(|Query(query)| query.get(TENANT_PARAMETER).cloned());
    let tenant = match named {
        None => shared.tenants.first(),
        Some(cloud_id) => match shared.tenants.by_cloud_id(&cloud_id) {
            Some(tenant) => tenant,
            None => return SimApi::Control.error(StatusCode::NOT_FOUND, "no tenant with this cloud id"),
        },
    };
    request.extensions_mut().insert(tenant.clone());
    next.run(request).await
}

/// The world a request is for: named by its path (cloud id, directory id, org id), the first
/// tenant on `/wiki`, or, where the path names none, the one whose credential it presents (the
/// admin API key on user management, the OAuth `client_id` on the token endpoint). Unknown: the
/// 404 or 401 Atlassian would answer.
async fn select_tenant(
    shared: &SimShared,
    seq: Seq,
    api: SimApi,
    path: &str,
    request: Request,
) -> Result<(Request, Arc<SimTenant>), Response> {
    let tenants = &shared.tenants;
    let not_found = |message: &str| api.error(StatusCode::NOT_FOUND, message);
    let tenant = match api {
        SimApi::ConfluenceSite if path.starts_with("/wiki/") => tenants.first(),
        SimApi::ConfluenceSite | SimApi::ConfluenceGateway => {
            // `/sites/{cloud_id}/wiki/...` or `/ex/confluence/{cloud_id}/wiki/...`.
            let position = if api == SimApi::ConfluenceSite { 2 } else { 3 };
            segment(path, position)
                .and_then(|id| tenants.by_cloud_id(id))
                .ok_or_else(|| not_found("no site with this cloud id"))?
        }
        SimApi::Scim => segment(path, 3)
            .and_then(|id| tenants.by_directory_id(id))
            .ok_or_else(|| not_found("no such directory"))?,
        SimApi::Admin if path.starts_with("/admin/") => segment(path, 4)
            .and_then(|id| tenants.by_org_id(id))
            .ok_or_else(|| not_found("no such organization"))?,
        SimApi::Admin => {
            let (scheme, credential) = credentials(request.headers());
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| tenants.by_admin_api_key(credential))
                .flatten()
                .ok_or_else(|| {
                    api.error(
                        StatusCode::UNAUTHORIZED,
                        "a valid organization API key is required",
                    )
                })?
        }
        SimApi::OAuth => return select_by_oauth_client(shared, seq, request).await,
        SimApi::Control => tenants.first(),
    };
    Ok((request, tenant.clone()))
}

/// The tenant owning the token request's `client_id`. The body is read here and put back for the
/// handler; an unknown client gets the token endpoint's own 401.
async fn select_by_oauth_client(
    shared: &SimShared,
    seq: Seq,
    request: Request,
) -> Result<(Request, Arc<SimTenant>), Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, TOKEN_REQUEST_LIMIT)
        .await
        .map_err(|_| {
            SimApi::OAuth.error(
                StatusCode::BAD_REQUEST,
                "the token request's body could not be read (at most 64 KiB)",
            )
        })?;
    let client_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|request| request.get("client_id")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    match shared.tenants.by_oauth_client(&client_id) {
        Some(tenant) => Ok((Request::from_parts(parts, Body::from(body)), tenant.clone())),
        None => {
            shared
                .log
                .set_principal(seq, format!("refresh:{client_id}:bad-client"));
            Err(crate::oauth::unknown_client())
        }
    }
}

fn add_headers(headers: &mut HeaderMap, extra: Headers) {
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

fn with_request_id(mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&ulid::Ulid::generate().to_string().to_lowercase()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-arequestid"), value);
    }
    response
}

/// Ends the connection serving this request without an answer: unwinding out of the handler
/// ends the connection's task, which closes the socket mid-exchange, as a reset would.
/// `resume_unwind` skips the panic hook, so nothing is printed; the simulator's other
/// connections are served by other tasks and go on.
fn drop_connection() -> ! {
    std::panic::resume_unwind(Box::new("simulated connection reset"))
}

/// The first scripted fault matching this request, consuming one of its uses.
fn take_fault(tenant: &SimTenant, method: &str, path: &str) -> Option<Fault> {
    let mut faults = lock(&tenant.faults);
    let index = faults.iter().position(|f| {
        path.contains(&f.path_contains) && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
    })?;
    let fault = faults[index].clone();
    if let Some(times) = &mut faults[index].times {
        *times = times.saturating_sub(1);
        if *times == 0 {
            faults.remove(index);
        }
    }
    Some(fault)
}

fn fault_response(api: SimApi, fault: &Fault, status: u16, request_headers: &HeaderMap) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = if fault.echo_authorization {
        let authorization = request_headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        format!("scripted failure; request had Authorization: {authorization}")
    } else {
        "scripted failure".to_owned()
    };
    let mut response = api.error(status, &message);
    let mut headers = Headers::new();
    if let Some(seconds) = fault.retry_after_seconds {
        headers.push(("retry-after", seconds.to_string()));
    }
    if let Some(reason) = &fault.rate_limit_reason {
        headers.push(("ratelimit-reason", reason.clone()));
    }
    if let Some(ms) = fault.reset_after_ms {
        let reset = chrono::Utc::now() + Duration::from_millis(ms);
        headers.push(("x-ratelimit-reset", crate::limits::iso(reset)));
    }
    add_headers(response.headers_mut(), headers);
    response
}

/// The `n`th segment of a path (`/a/b` → 1: `a`).
fn segment(path: &str, n: usize) -> Option<&str> {
    path.split('/').nth(n)
}

/// The `Authorization` header's scheme and credential (empty when absent).
fn credentials(headers: &HeaderMap) -> (&str, &str) {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (scheme, credential) = authorization.split_once(' ').unwrap_or((authorization, ""));
    (scheme, credential.trim())
}

/// Checks the credentials for `api` against the world the route selected (another tenant's
/// credentials get 401, as on Atlassian); the principal's description, or the 401 to answer.
fn authenticate(tenant: &SimTenant, api: SimApi, headers: &HeaderMap) -> Result<String, Response> {
    let (scheme, credential) = credentials(headers);
    let unauthorized = |message: &str| Err(api.error(StatusCode::UNAUTHORIZED, message));
    match api {
        SimApi::ConfluenceSite | SimApi::ConfluenceGateway => {
            let gateway = api == SimApi::ConfluenceGateway;
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(credential)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                let (email, token) = decoded.split_once(':').unwrap_or(("", ""));
                let Some(known) = tenant
                    .credentials
                    .api_tokens
                    .iter()
                    .find(|t| t.email == email && t.token == token)
                else {
                    return unauthorized(
                        "Basic authentication with passwords is deprecated or the token is wrong",
                    );
                };
                if known.scoped && !gateway {
                    return unauthorized(
                        "scoped API tokens work only through api.atlassian.com/ex/confluence/{cloudId}",
                    );
                }
                Ok(format!("basic:{email}"))
            } else if scheme.eq_ignore_ascii_case("bearer") {
                if !gateway {
                    return unauthorized("OAuth access tokens work only through the gateway");
                }
                match lock(&tenant.world)
                    .oauth
                    .access_principal(credential, Instant::now())
                {
                    Some(principal) => Ok(principal),
                    None => unauthorized("access token expired, revoked or unknown"),
                }
            } else {
                unauthorized("authentication required")
            }
        }
        SimApi::Scim => {
            if scheme.eq_ignore_ascii_case("bearer") && credential == tenant.credentials.scim_token {
                Ok("scim-token".to_owned())
            } else {
                unauthorized("a valid SCIM directory token is required")
            }
        }
        SimApi::Admin => {
            if scheme.eq_ignore_ascii_case("bearer") && credential == tenant.credentials.admin_api_key {
                Ok("admin-key".to_owned())
            } else {
                unauthorized("a valid organization API key is required")
            }
        }
        SimApi::OAuth | SimApi::Control => Ok("anonymous".to_owned()),
    }
}
