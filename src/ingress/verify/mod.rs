//! Proving a delivery is genuine, on the raw bytes, before anything parses them.
//!
//! One file per scheme. Each takes the source's live secrets (or, for Connect, a lookup of the
//! installation's secret) and the untouched request, and answers either which secret matched
//! (its id goes into the envelope and the logs) or a [`VerifyError`] whose reason is a metric
//! label. Comparisons are constant-time; a source with no usable secret refuses everything.

pub mod connect_jwt;
pub mod hub_signature;
pub mod jwt;
pub mod qsh;
pub mod slack_signature;
pub mod standard_webhooks;
pub mod url_token;

use axum::http::header::AsHeaderName;
use axum::http::{HeaderMap, Method};

use crate::config::SourceSecret;

/// The parts of a request verification may look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a Method,
    /// The raw (still percent-encoded) path.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What verification proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The id of the secret that matched (the client key for Connect).
    pub key_id: String,
    /// Connect: the installation's client key.
    pub client_key: Option<String>,
    /// Connect: the installation's cloud id, when it told us.
    pub cloud_id: Option<String>,
    /// Connect: the installation's site (`baseUrl`), which binds it to a tenant.
    pub site: Option<String>,
    /// The tenant the delivery belongs to, bound by the ingress after verification (from the
    /// source, or the Connect installation's site); never read from the body.
    pub tenant: Option<String>,
}

impl Verified {
    pub fn by_secret(id: &str) -> Self {
        Verified {
            key_id: id.to_owned(),
            client_key: None,
            cloud_id: None,
            site: None,
            tenant: None,
        }
    }
}

/// Why a delivery was refused. `reason()` is the metric label; the message is for logs and the
/// sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("signature does not match any live secret")]
    BadSignature,
    #[error("the source has no usable secret")]
    NoUsableSecret,
    #[error("timestamp outside the allowed window")]
    Expired,
    #[error("token not valid yet (issued in the future)")]
    NotYetValid,
    #[error("unknown issuer (no Connect installation for this client key)")]
    UnknownIssuer,
    #[error("algorithm {0} is not accepted here")]
    WrongAlgorithm(String),
    #[error("context-qsh tokens are not accepted for webhooks")]
    ContextQsh,
    #[error("query string hash does not match the request")]
    QshMismatch,
    /// A Connect lifecycle token that already carried a change: its signature does not cover
    /// the body, so a second body under it is not Atlassian's word.
    #[error("this token already carried a lifecycle change; each token is good for one")]
    Replayed,
    #[error("token audience is not this app")]
    WrongAudience,
    #[error("token issuer does not match the payload's client key")]
    IssuerMismatch,
    #[error("signing key {0} is unknown")]
    UnknownKey(String),
    /// A Connect installation whose site no configured tenant names (installed before tenants
    /// were bound, or its tenant since removed), or another tenant's than the source serves.
    #[error("the installation is not bound to this source's tenant: {0}")]
    UnboundSite(String),
    /// Not the sender's fault: a store or key server gatehouse needs is unreachable (503).
    #[error("cannot verify now: {0}")]
    Unavailable(String),
}

impl VerifyError {
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Missing(_) => "missing_credentials",
            VerifyError::Malformed(_) => "malformed_credentials",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::NoUsableSecret => "no_usable_secret",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::UnknownIssuer => "unknown_issuer",
            VerifyError::WrongAlgorithm(_) => "wrong_algorithm",
            VerifyError::ContextQsh => "context_qsh",
            VerifyError::QshMismatch => "qsh_mismatch",
            VerifyError::Replayed => "replayed_token",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::IssuerMismatch => "issuer_mismatch",
            VerifyError::UnknownKey(_) => "unknown_key",
            VerifyError::UnboundSite(_) => "unbound_site",
            VerifyError::Unavailable(_) => "unavailable",
        }
    }
}

/// The secrets of a source still live at `now`; an error when there are none.
pub fn live_secrets(
    secrets: &[SourceSecret],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<&SourceSecret>, VerifyError> {
    let live: Vec<&SourceSecret> = secrets.iter().filter(|s| s.is_live(now)).collect();
    if live.is_empty() {
        Err(VerifyError::NoUsableSecret)
    } else {
        Ok(live)
    }
}

/// Refuses a timestamp (unix seconds) more than `tolerance_seconds` before or after `now`.
/// Saturating: a timestamp near i64's ends is refused, never an overflow.
pub fn check_window(
    timestamp: i64,
    tolerance_seconds: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), VerifyError> {
    let age = now.timestamp().saturating_sub(timestamp);
    let tolerance = i64::try_from(tolerance_seconds).unwrap_or(i64::MAX);
    if age > tolerance {
        return Err(VerifyError::Expired);
    }
    if age.saturating_neg() > tolerance {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

/// A header as UTF-8 text, if present. Names looked up on every delivery are best given as
/// `HeaderName` constants: a `&str` is checked and lowercased again on each lookup (about 300
/// instructions).
pub fn header(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
