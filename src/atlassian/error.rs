//! [`ApiError`]: every failure of an Atlassian call, classified for the worker's retry logic.
//!
//! | Failure | Kind |
//! |---|---|
//! | 408, 425, 429, 5xx, timeouts, connection trouble, a rate-limit pause longer than the caller may wait | transient |
//! | 409 without a SCIM body (a concurrent change) | transient |
//! | 409 with a SCIM `scimType` (`uniqueness`, …): the data conflicts | permanent |
//! | 400, 401, 403, 404 and every other 4xx; an answer gatehouse cannot read | permanent |
//!
//! The client never retries a 401 or a refused OAuth refresh itself, but a worker does
//! ([`ApiError::kind_for_events`]): a refused credential is gatehouse's own problem (an expired
//! or rotated token), and events meanwhile wait on the retry ladder instead of dead-lettering at
//! once (past `queue.max_attempts` they are dead-lettered, and `gatehouse dlq replay` brings them
//! back).
//!
//! The text never holds a credential: messages are built from Atlassian's error fields (never
//! the request), cut short, and scrubbed of every secret the client knows before they leave the
//! caller. URLs are not included (a URL could carry a cursor or an id, never a token, but the
//! operation label names the endpoint well enough).

use std::fmt;
use std::time::Duration;

use handlers::ports::{ErrorKind, PortError};
use serde_json::Value;

/// Longest piece of an answer's body quoted in an error.
const MAX_QUOTED: usize = 300;

/// A failed Atlassian call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ApiError {
    kind: ErrorKind,
    operation: &'static str,
    status: Option<u16>,
    message: String,
    request_id: Option<String>,
    scim_type: Option<String>,
    retry_after: Option<Duration>,
    /// gatehouse's own credentials were refused or could not be obtained.
    credentials: bool,
    /// The process began to stop while the call waited ([`ApiError::interrupted`]).
    interrupted: bool,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.operation)?;
        if let Some(status) = self.status {
            write!(f, "HTTP {status}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(request_id) = &self.request_id {
            write!(f, " (request id {request_id})")?;
        }
        Ok(())
    }
}

impl ApiError {
    fn new(kind: ErrorKind, operation: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            operation,
            status: None,
            message: message.into(),
            request_id: None,
            scim_type: None,
            retry_after: None,
            credentials: false,
            interrupted: false,
        }
    }

    /// An HTTP answer that is not a success, classified by its status and (SCIM) body.
    pub fn from_answer(
        operation: &'static str,
        status: u16,
        body: &[u8],
        request_id: Option<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let scim_type = parsed
            .as_ref()
            .and_then(|v| v.get("scimType"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let kind = classify(status, scim_type.is_some());
        let message = match parsed.as_ref().and_then(describe) {
            Some(text) => text,
            None if body.is_empty() => "no details in the answer".to_owned(),
            None => "an answer gatehouse cannot read".to_owned(),
        };
        ApiError {
            status: Some(status),
            request_id,
            scim_type,
            retry_after,
            ..ApiError::new(kind, operation, shorten(&message))
        }
    }

    /// The request did not complete: connection refused or reset, timeout, bad TLS. `error`'s
    /// URL is left out.
    pub fn transport(operation: &'static str, error: &reqwest::Error) -> Self {
        let mut message = if error.is_timeout() {
            "timed out".to_owned()
        } else if error.is_connect() {
            "cannot connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        ApiError::new(ErrorKind::Transient, operation, shorten(&message))
    }

    /// A successful answer gatehouse cannot read as the documented shape. Transient: a proxy's
    /// page answered with 200, a body cut short or a page that shifted is more often a glitch than
    /// a changed API, and a leaver's plan must not be dead-lettered by one; a shape that really
    /// changed fails every try and is dead-lettered once the queue's attempts are spent.
    pub fn unreadable(operation: &'static str, detail: impl fmt::Display) -> Self {
        ApiError::new(
            ErrorKind::Transient,
            operation,
            shorten(&format!("unexpected answer: {detail}")),
        )
    }

    /// A listing that would not end (the server pages for ever): permanent, since reading it
    /// again would cost as much for the same result.
    pub fn endless(operation: &'static str, detail: impl fmt::Display) -> Self {
        ApiError::new(
            ErrorKind::Permanent,
            operation,
            shorten(&format!("unexpected answer: {detail}")),
        )
    }

    /// The rate limiter would make this call wait longer than allowed: nothing was sent.
    pub fn paused(operation: &'static str, wait: Duration) -> Self {
        let mut error = ApiError::new(
            ErrorKind::Transient,
            operation,
            format!(
                "rate limited: the next request may go in {} s, beyond this call's wait budget (retry.max_wait_ms); retry later",
                wait.as_secs().max(1)
            ),
        );
        error.retry_after = Some(wait);
        error
    }

    /// The process began to stop while the call waited to try again: it gives up rather than
    /// hold the shutdown for the rest of the wait. Transient: the event is handed back and
    /// performed later, by this process after its restart or by another.
    pub fn interrupted(operation: &'static str) -> Self {
        ApiError {
            interrupted: true,
            ..ApiError::new(
                ErrorKind::Transient,
                operation,
                "gatehouse is shutting down: stopped waiting to try again; retry later",
            )
        }
    }

    /// Whether the call gave up because the process began to stop (not Atlassian's doing).
    pub fn is_interrupted(&self) -> bool {
        self.interrupted
    }

    /// Credentials could not be obtained (OAuth refresh refused, store trouble).
    pub fn credentials(operation: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            credentials: true,
            ..ApiError::new(kind, operation, message)
        }
    }

    /// A problem with the request gatehouse was asked to make (bad input, missing config).
    pub fn invalid(operation: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Permanent, operation, message)
    }

    /// Whether retrying later can help.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The kind as an event's processing sees it: like [`ApiError::kind`], except that a 401 or
    /// a credential gatehouse could not obtain (a refused OAuth refresh) is transient: the event
    /// goes on the retry ladder, where fixing the credential in time lets it through.
    pub fn kind_for_events(&self) -> ErrorKind {
        if self.status == Some(401) || self.credentials {
            ErrorKind::Transient
        } else {
            self.kind
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The HTTP status, when Atlassian answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// What went wrong (without the operation and status).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The endpoint label, e.g. `GET /rest/api/user`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// Atlassian's request id (`X-ARequestId`), for support tickets and the audit trail.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// SCIM's `scimType` (`uniqueness`, `invalidFilter`, …).
    pub fn scim_type(&self) -> Option<&str> {
        self.scim_type.as_deref()
    }

    /// How long Atlassian asked to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Replaces every secret `redact` knows in the message.
    pub(crate) fn redacted(mut self, redact: impl Fn(&str) -> String) -> Self {
        self.message = redact(&self.message);
        self
    }
}

impl From<ApiError> for PortError {
    fn from(error: ApiError) -> Self {
        PortError {
            kind: error.kind_for_events(),
            status: error.status,
            message: error.to_string(),
        }
    }
}

/// Whether retrying can fix an answer with this status.
pub fn classify(status: u16, scim_error: bool) -> ErrorKind {
    match status {
        408 | 425 | 429 | 500..=599 => ErrorKind::Transient,
        409 if !scim_error => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// The human part of the error bodies Atlassian's APIs send.
fn describe(body: &Value) -> Option<String> {
    let text = |v: &Value| v.as_str().filter(|s| !s.trim().is_empty()).map(str::to_owned);
    body.get("detail")
        .and_then(text)
        .or_else(|| body.get("message").and_then(text))
        .or_else(|| body.get("errorMessage").and_then(text))
        .or_else(|| body.get("errorMessages")?.get(0).and_then(text))
        .or_else(|| {
            let first = body.get("errors")?.get(0)?;
            first
                .get("title")
                .and_then(text)
                .or_else(|| first.get("detail").and_then(text))
        })
        .or_else(|| {
            let error = body.get("error").and_then(text)?;
            Some(match body.get("error_description").and_then(text) {
                Some(description) => format!("{error}: {description}"),
                None => error,
            })
        })
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= MAX_QUOTED {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_QUOTED).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer that cannot be read is tried again (a glitch must not dead-letter a leaver's
    /// plan); a listing that never ends is not (it would cost as much again).
    #[test]
    fn an_unreadable_answer_is_transient_and_an_endless_listing_permanent() {
        assert_eq!(
            ApiError::unreadable("op", "cut short").kind(),
            ErrorKind::Transient
        );
        assert_eq!(
            ApiError::endless("op", "pages for ever").kind(),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn statuses_are_classified_for_retries() {
        for status in [408, 425, 429, 500, 502, 503, 504, 409] {
            assert_eq!(classify(status, false), ErrorKind::Transient, "{status}");
        }
        for status in [400, 401, 403, 404, 405, 410, 422] {
            assert_eq!(classify(status, false), ErrorKind::Permanent, "{status}");
        }
        assert_eq!(classify(409, true), ErrorKind::Permanent);
    }

    #[test]
    fn scim_bodies_with_string_statuses_are_read() {
        let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"User exists"}"#;
        let error = ApiError::from_answer("POST /Users", 409, body, Some("req-1".into()), None);
        assert_eq!(error.kind(), ErrorKind::Permanent);
        assert_eq!(error.scim_type(), Some("uniqueness"));
        assert_eq!(error.status(), Some(409));
        assert_eq!(
            error.to_string(),
            "POST /Users: HTTP 409: User exists (request id req-1)"
        );
        let not_found = ApiError::from_answer(
            "GET /Users/{id}",
            404,
            br#"{"schemas":[],"status":"404","detail":"User not found"}"#,
            None,
            None,
        );
        assert_eq!(not_found.kind(), ErrorKind::Permanent);
        assert_eq!(not_found.scim_type(), None);
    }

    #[test]
    fn other_error_shapes_and_unreadable_bodies() {
        let v2 =
            br#"{"errors":[{"status":400,"code":"INVALID","title":"accountIds must hold 1 to 100 ids"}]}"#;
        assert_eq!(
            ApiError::from_answer("POST /api/v2/users-bulk", 400, v2, None, None).message(),
            "accountIds must hold 1 to 100 ids"
        );
        let oauth = br#"{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}"#;
        assert_eq!(
            ApiError::from_answer("POST /oauth/token", 403, oauth, None, None).message(),
            "invalid_grant: Unknown or invalid refresh token."
        );
        // An HTML page from a proxy is not quoted.
        let html = ApiError::from_answer("GET /x", 502, b"<html>bad gateway</html>", None, None);
        assert_eq!(html.message(), "an answer gatehouse cannot read");
        assert!(html.is_transient());
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(1000));
        assert!(
            ApiError::from_answer("GET /x", 400, long.as_bytes(), None, None)
                .message()
                .len()
                < 400
        );
    }

    #[test]
    fn port_errors_keep_kind_and_status() {
        let error = ApiError::from_answer("GET /rest/api/user", 503, b"", None, None);
        let port: PortError = error.into();
        assert_eq!(port.kind, ErrorKind::Transient);
        assert_eq!(port.status, Some(503));
        assert!(port.message.contains("GET /rest/api/user"));
        let refused = ApiError::from_answer("GET /rest/api/user", 401, b"", None, None);
        assert_eq!(refused.kind(), ErrorKind::Permanent, "not retried by the client");
        let port: PortError = refused.into();
        assert_eq!(
            port.kind,
            ErrorKind::Transient,
            "an event waits for the credential to be fixed"
        );
        let refresh = ApiError::credentials("POST /oauth/token", ErrorKind::Permanent, "refused");
        assert_eq!(refresh.kind(), ErrorKind::Permanent);
        assert_eq!(PortError::from(refresh).kind, ErrorKind::Transient);
    }
}
