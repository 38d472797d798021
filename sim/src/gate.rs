//! What stands in front of every simulated endpoint, in Atlassian's order: the request log, then
//! scripted faults (delays, error statuses), authentication, rate limits; and on the way out the
//! headers Atlassian adds (`X-ARequestId`, `X-RateLimit-*`, `Deprecation` on name-based
//! endpoints).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;

use crate::api::{Api, GATEWAY_PREFIX};
use crate::limits::{Headers, Verdict};
use crate::log::Seq;
use crate::policy::Fault;
use crate::{Shared, lock};

/// Routes Atlassian deprecated in favour of group-id ones; they still work here, flagged.
const DEPRECATED: &[&str] = &[
    "/rest/api/group/by-name",
    "/rest/api/group/member",
    "/rest/api/group/{group}/member",
    "/rest/api/group/user",
];

/// The outermost layer: logs every request, matched or not.
pub(crate) async fn record(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
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

/// Runs after routing, so it knows the route template.
pub(crate) async fn gate(
    State(shared): State<Arc<Shared>>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.as_str().to_owned();
    let api = Api::of_route(&route);
    let seq = request
        .extensions()
        .get::<Seq>()
        .copied()
        .unwrap_or(Seq(u64::MAX));
    shared.log.set_route(seq, &route);
    if api == Api::Control {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let method = request.method().as_str().to_owned();

    if let Some(fault) = take_fault(&shared, &method, &path) {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if let Some(status) = fault.status {
            return with_request_id(fault_response(api, &fault, status, request.headers()));
        }
    }

    let principal = match authenticate(&shared, api, &path, request.headers()) {
        Ok(principal) => principal,
        Err(response) => return with_request_id(response),
    };
    shared.log.set_principal(seq, principal);

    let endpoint = route.replacen(GATEWAY_PREFIX, "", 1);
    let limit_headers = if api == Api::OAuth {
        Headers::new()
    } else {
        // Policy before limits, always in this order (`set_policy` never holds both).
        let policy = lock(&shared.policy);
        let verdict = lock(&shared.limits).check(
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
    let mut response = next.run(request).await;
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

/// The first scripted fault matching this request, consuming one of its uses.
fn take_fault(shared: &Shared, method: &str, path: &str) -> Option<Fault> {
    let mut faults = lock(&shared.faults);
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

fn fault_response(api: Api, fault: &Fault, status: u16, request_headers: &HeaderMap) -> Response {
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

/// Checks the credentials for `api`; the principal's description, or the 401/404 to answer.
fn authenticate(shared: &Shared, api: Api, path: &str, headers: &HeaderMap) -> Result<String, Response> {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (scheme, credential) = authorization.split_once(' ').unwrap_or((authorization, ""));
    let world = lock(&shared.world);
    let unauthorized = |message: &str| Err(api.error(StatusCode::UNAUTHORIZED, message));
    match api {
        Api::ConfluenceSite | Api::ConfluenceGateway => {
            let gateway = api == Api::ConfluenceGateway;
            if gateway && segment(path, 3) != Some(world.cloud_id.as_str()) {
                return Err(api.error(StatusCode::NOT_FOUND, "no site with this cloud id"));
            }
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(credential.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                let (email, token) = decoded.split_once(':').unwrap_or(("", ""));
                let Some(known) = world
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
                match world.oauth.access_principal(credential.trim(), Instant::now()) {
                    Some(principal) => Ok(principal),
                    None => unauthorized("access token expired, revoked or unknown"),
                }
            } else {
                unauthorized("authentication required")
            }
        }
        Api::Scim => {
            if segment(path, 3) != Some(world.directory_id.as_str()) {
                return Err(api.error(StatusCode::NOT_FOUND, "no such directory"));
            }
            if scheme.eq_ignore_ascii_case("bearer") && credential.trim() == world.credentials.scim_token {
                Ok("scim-token".to_owned())
            } else {
                unauthorized("a valid SCIM directory token is required")
            }
        }
        Api::Admin => {
            if path.starts_with("/admin/") && segment(path, 4) != Some(world.org_id.as_str()) {
                return Err(api.error(StatusCode::NOT_FOUND, "no such organization"));
            }
            if scheme.eq_ignore_ascii_case("bearer") && credential.trim() == world.credentials.admin_api_key {
                Ok("admin-key".to_owned())
            } else {
                unauthorized("a valid organization API key is required")
            }
        }
        Api::OAuth | Api::Control => Ok("anonymous".to_owned()),
    }
}
