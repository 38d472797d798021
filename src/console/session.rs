//! Who is signed in: sessions (256-bit random ids in a cookie, kept hashed in the store, with an
//! expiry) and the [`Operator`] extractor every protected page takes, which also honours an
//! authenticating reverse proxy's user header when the connection comes from a trusted proxy.
//!
//! A session made through the proxy is only good through the proxy: the same cookie presented on
//! a direct connection (or with another user in the header) signs nobody in, so reaching
//! gatehouse around the proxy gains nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use ring::rand::{SecureRandom, SystemRandom};

use super::{ConsoleError, ConsoleState};
use crate::config::{OperatorRole, OperatorSettings};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "gatehouse_console";

/// How an operator signed in (stored with the session).
pub const BY_PASSWORD: &str = "password";
pub const BY_PROXY: &str = "proxy";

/// `bytes` random bytes from the system's generator, base64url.
pub fn random_token(bytes: usize) -> Result<String, ConsoleError> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buffer).map_err(|_| {
        tracing::error!("console: the system's random generator failed");
        ConsoleError::Unavailable("cannot start a session right now".to_owned())
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer))
}

/// What the store keeps of a session id: its SHA-256, hex.
pub fn id_hash(id: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()))
}

/// A `Set-Cookie` value for the console's path: `HttpOnly; Secure; SameSite=Strict`.
/// `max_age_seconds` 0 deletes the cookie.
pub fn cookie(name: &str, value: &str, max_age_seconds: u64) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/console; Max-Age={max_age_seconds}; HttpOnly; Secure; SameSite=Strict"
    );
    // Names are constants and values base64url: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The value of cookie `name` in the request, if any.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A signed-in operator, for one request.
#[derive(Debug)]
pub struct Operator {
    pub name: String,
    pub role: OperatorRole,
    /// The session id (the cookie's value); the CSRF token derives from it.
    session_id: String,
    /// A session begun by this request (proxy sign-in), whose cookie the answer must set.
    set_cookie: Option<HeaderValue>,
}

impl Operator {
    /// Who decisions are attributed to in the audit trail.
    pub fn attributed(&self) -> String {
        format!("console:{}", self.name)
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Refuses (403) unless `allowed`; `what` says what was refused.
    pub fn require(&self, allowed: bool, what: &str) -> Result<(), ConsoleError> {
        if allowed {
            return Ok(());
        }
        tracing::warn!(operator = %self.name, role = self.role.as_str(), what, "console: refused an action the role may not take");
        Err(ConsoleError::Forbidden(format!(
            "{} is a {}: may not {what}",
            self.name,
            self.role.as_str()
        )))
    }

    /// `response`, with the new session's cookie when this request began one.
    pub fn respond(&self, response: impl IntoResponse) -> Response {
        let mut response = response.into_response();
        if let Some(cookie) = &self.set_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie.clone());
        }
        response
    }
}

/// Starts a session for `operator`; its id (for the cookie). A password session remembers
/// which password hash it signed in with ([`credential_of`]).
pub async fn begin(
    state: &ConsoleState,
    operator: &OperatorSettings,
    method: &str,
) -> Result<String, ConsoleError> {
    let id = random_token(32)?;
    let hours = i64::try_from(state.settings.console.session_hours).unwrap_or(8);
    let expires_at = Utc::now() + chrono::Duration::hours(hours);
    let credential = (method == BY_PASSWORD).then(|| credential_of(operator)).flatten();
    state
        .store
        .create_console_session(
            &id_hash(&id),
            (&operator.name, method, credential.as_deref()),
            expires_at,
        )
        .await?;
    Ok(id)
}

/// The hex SHA-256 of `operator`'s password hash: a session signed in with another (the
/// password was changed since) signs nobody in.
fn credential_of(operator: &OperatorSettings) -> Option<String> {
    operator
        .password_hash
        .as_ref()
        .map(|hash| id_hash(hash.expose().trim()))
}

/// The session cookie for a session begun now.
pub fn session_cookie(state: &ConsoleState, id: &str) -> HeaderValue {
    cookie(SESSION_COOKIE, id, state.settings.console.session_hours * 3_600)
}

/// The operator the trusted proxy names, if the request came through one with the header.
/// A header from anywhere else is ignored (and logged); a name that is no operator is refused.
fn proxied_operator<'a>(
    state: &'a ConsoleState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Option<&'a OperatorSettings>, ConsoleError> {
    let console = &state.settings.console;
    let Some(header_name) = &console.proxy_user_header else {
        return Ok(None);
    };
    let Some(value) = headers.get(header_name.as_str()) else {
        return Ok(None);
    };
    let trusted = peer.is_some_and(|ip| console.is_trusted_proxy(ip));
    if !trusted {
        tracing::warn!(header = %header_name, peer = ?peer, "console: ignored a proxy user header from an address not in console.trusted_proxies");
        return Ok(None);
    }
    // A proxy that appends its header to one the client sent (instead of replacing it) would
    // let the client's copy, the first, choose who signs in: more than one is refused.
    if headers.get_all(header_name.as_str()).iter().nth(1).is_some() {
        tracing::warn!(header = %header_name, peer = ?peer, "console: the proxy user header came more than once; refused (the proxy must replace a client's copy)");
        return Err(ConsoleError::Forbidden(format!(
            "`{header_name}` came more than once: the proxy must replace any copy the client sent"
        )));
    }
    let name = value.to_str().unwrap_or_default().trim();
    match console.operator(name) {
        Some(operator) => Ok(Some(operator)),
        None => {
            tracing::warn!(user = ?name, "console: the proxy named someone who is not a console operator");
            Err(ConsoleError::Forbidden(
                "you are not a console operator (ask for a [[console.operators]] entry)".to_owned(),
            ))
        }
    }
}

impl FromRequestParts<Arc<ConsoleState>> for Operator {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let proxied = proxied_operator(state, &parts.headers, peer)?;
        let session = match read_cookie(&parts.headers, SESSION_COOKIE) {
            Some(id) if !id.is_empty() => state
                .store
                .console_session(&id_hash(id))
                .await?
                .map(|session| (id.to_owned(), session)),
            _ => None,
        };
        if let Some(operator) = proxied {
            if let Some((id, session)) = session
                && session.method == BY_PROXY
                && session.operator == operator.name
            {
                return Ok(Operator {
                    name: operator.name.clone(),
                    role: operator.role,
                    session_id: id,
                    set_cookie: None,
                });
            }
            // Clients without a cookie jar begin a session a request: forget the expired ones.
            if let Err(error) = state.store.delete_expired_console_sessions().await {
                tracing::debug!(%error, "console: cannot forget expired sessions now");
            }
            let id = begin(state, operator, BY_PROXY).await?;
            tracing::info!(operator = %operator.name, "console: signed in through the trusted proxy");
            return Ok(Operator {
                name: operator.name.clone(),
                role: operator.role,
                set_cookie: Some(session_cookie(state, &id)),
                session_id: id,
            });
        }
        let (id, session) = session.ok_or(ConsoleError::NotSignedIn)?;
        if session.method != BY_PASSWORD {
            // A proxy's session, presented around the proxy.
            return Err(ConsoleError::NotSignedIn);
        }
        // The role is config's now: an operator removed (or left without a password) is out,
        // and so is a session signed in with a password changed since.
        let operator = state
            .settings
            .console
            .operator(&session.operator)
            .filter(|o| session.credential.is_some() && credential_of(o) == session.credential)
            .ok_or(ConsoleError::NotSignedIn)?;
        Ok(Operator {
            name: operator.name.clone(),
            role: operator.role,
            session_id: id,
            set_cookie: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_and_written_strict() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; gatehouse_console=xyz; b=2"),
        );
        assert_eq!(read_cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(read_cookie(&headers, "c"), None);
        let set = cookie(SESSION_COOKIE, "xyz", 60);
        let set = set.to_str().unwrap();
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/console",
            "Max-Age=60",
        ] {
            assert!(set.contains(part), "{set}");
        }
    }

    #[test]
    fn session_ids_are_256_bits_and_stored_hashed() {
        let id = random_token(32).unwrap();
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&id)
                .unwrap()
                .len(),
            32
        );
        assert_ne!(random_token(32).unwrap(), id);
        assert_eq!(id_hash(&id).len(), 64);
        assert!(!id_hash(&id).contains(&id));
    }
}
