//! CSRF tokens: every form of a session carries a token derived from the session id (HMAC-SHA256,
//! so it can be neither guessed without the id nor used to recover it), checked in constant time
//! before a POST does anything. The sign-in form, which has no session yet, carries a random
//! value that must equal a short-lived cookie of its own (double submit).

use std::collections::HashMap;

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use super::ConsoleError;
use super::session::{Operator, read_cookie};

/// The form field tokens travel in.
pub const FIELD: &str = "csrf";

/// The cookie the sign-in form's token is paired with.
pub const SIGN_IN_COOKIE: &str = "gatehouse_console_sign_in";

/// The CSRF token of the session `session_id`.
pub fn token(session_id: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, session_id.as_bytes());
    hex::encode(ring::hmac::sign(&key, b"gatehouse console csrf v1"))
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A submitted form (`application/x-www-form-urlencoded`).
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Refuses (403) a form of `operator`'s session without its token.
pub fn check(operator: &Operator, form: &Form) -> Result<(), ConsoleError> {
    let expected = token(operator.session_id());
    match form.get(FIELD) {
        Some(sent) if equal(sent, &expected) => Ok(()),
        _ => {
            tracing::warn!(operator = %operator.name, "console: refused a form without a valid CSRF token");
            Err(ConsoleError::Forbidden(
                "this form is stale or was not sent by the console (CSRF token missing or wrong): reload the page"
                    .to_owned(),
            ))
        }
    }
}

/// Refuses (403) a sign-in form whose token is not its cookie's.
pub fn check_sign_in(headers: &HeaderMap, form: &Form) -> Result<(), ConsoleError> {
    match (read_cookie(headers, SIGN_IN_COOKIE), form.get(FIELD)) {
        (Some(cookie), Some(sent)) if !cookie.is_empty() && equal(cookie, sent) => Ok(()),
        _ => Err(ConsoleError::Forbidden(
            "the sign-in form is stale or was not sent by the console: reload the page".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_per_session_and_hide_the_id() {
        assert_eq!(token("a"), token("a"));
        assert_ne!(token("a"), token("b"));
        assert!(!token("session-id").contains("session-id"));
        assert!(equal(&token("a"), &token("a")));
        assert!(!equal(&token("a"), &token("b")));
        assert!(!equal("", &token("a")));
    }

    #[test]
    fn forms_decode() {
        let form = Form::parse(b"csrf=abc&reason=not+now%21");
        assert_eq!(form.get("csrf"), Some("abc"));
        assert_eq!(form.get("reason"), Some("not now!"));
        assert_eq!(form.get("other"), None);
    }
}
