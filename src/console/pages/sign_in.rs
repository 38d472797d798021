//! Signing in and out: the sign-in form (with its own double-submit token), the password check
//! with its lockout, and sign-out (which forgets the session in the store).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::super::csrf::{self, Form, SIGN_IN_COOKIE};
use super::super::session::{self, BY_PASSWORD, Operator, SESSION_COOKIE, cookie, id_hash};
use super::super::{ConsoleError, ConsoleState, templates};

/// How long a sign-in form stays good.
const FORM_SECONDS: u64 = 600;

fn form_page(status: StatusCode, message: Option<&str>, name: &str) -> Result<Response, ConsoleError> {
    let token = session::random_token(16)?;
    let html = templates::render(
        "sign_in.html",
        serde_json::json!({ "csrf": token, "message": message, "name": name }),
    )?;
    let mut response = (status, Html(html)).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie(SIGN_IN_COOKIE, &token, FORM_SECONDS));
    Ok(response)
}

/// `GET /console/sign-in`.
pub async fn form() -> Result<Response, ConsoleError> {
    form_page(StatusCode::OK, None, "")
}

/// `POST /console/sign-in`: name and password.
pub async fn submit(
    State(state): State<Arc<ConsoleState>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let form = Form::parse(&body);
    csrf::check_sign_in(&headers, &form)?;
    let name = form.get("name").unwrap_or_default().trim().to_owned();
    let password = form.get("password").unwrap_or_default().to_owned();
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if name.is_empty() || name.len() > 128 {
        return form_page(
            StatusCode::UNAUTHORIZED,
            Some("Enter your name and password."),
            "",
        );
    }
    let Some(attempt) = state.sign_ins.begin(&name) else {
        tracing::warn!(operator = ?name, ?peer, "console: sign-in refused, the name is locked after failed attempts");
        return Err(ConsoleError::TooManyAttempts(
            "too many failed sign-ins for this name: try again later".to_owned(),
        ));
    };
    let operator = state.settings.console.operator(&name);
    let Ok(verified) = state.sign_ins.verify(operator, password).await else {
        // Not counted against the name: nobody learned anything of its password.
        drop(attempt);
        tracing::warn!(operator = ?name, ?peer, "console: sign-in refused, too many sign-ins waiting for a password check");
        return Err(ConsoleError::TooManyAttempts(
            "too many sign-ins at once: try again in a moment".to_owned(),
        ));
    };
    // Verified only against an operator's own hash (never the decoy's).
    let operator = match operator {
        Some(operator) if verified => operator,
        _ => {
            let locked = attempt.failed();
            tracing::warn!(operator = ?name, ?peer, known = operator.is_some(), locked, "console: failed sign-in");
            return form_page(StatusCode::UNAUTHORIZED, Some("Wrong name or password."), &name);
        }
    };
    attempt.succeeded();
    if let Err(error) = state.store.delete_expired_console_sessions().await {
        tracing::debug!(%error, "console: cannot forget expired sessions now");
    }
    let id = session::begin(&state, operator, BY_PASSWORD).await?;
    tracing::info!(operator = %name, ?peer, "console: signed in");
    let mut response = Redirect::to("/console/approvals").into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, session::session_cookie(&state, &id));
    headers.append(header::SET_COOKIE, cookie(SIGN_IN_COOKIE, "", 0));
    Ok(response)
}

/// `POST /console/sign-out`.
pub async fn sign_out(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    csrf::check(&operator, &Form::parse(&body))?;
    state
        .store
        .delete_console_session(&id_hash(operator.session_id()))
        .await?;
    tracing::info!(operator = %operator.name, "console: signed out");
    let mut response = Redirect::to("/console/sign-in").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie(SESSION_COOKIE, "", 0));
    Ok(response)
}
