//! Atlassian's public keys for signed-install callbacks, fetched by `kid` and cached.
//!
//! A key server that cannot be reached is gatehouse's trouble, not the sender's: it answers 503
//! (retry later), whereas a key the server does not know is a refusal (401).
//!
//! Anyone can send an install callback naming any `kid`, so lookups are bounded: a `kid` the
//! server did not know is remembered as a miss for [`MISS_TTL`], and fetches of keys not in the
//! cache are limited to [`FETCH_BURST`] at once and [`FETCHES_PER_MINUTE`] on average. A flood of
//! random key ids therefore costs a few outbound requests a minute in all; beyond that budget
//! callbacks get 503 and Atlassian retries them, except that a key fetched before is used even
//! once its hour is up (published keys do not change), so a flood cannot lock out a known key.

use std::sync::Arc;
use std::time::Duration;

use super::ttl_cache::TtlCache;
use crate::ingress::limits::TokenBucket;
use crate::ingress::verify::{VerifyError, jwt};

/// Keys rotate rarely; an hour keeps the key server off the hot path.
const TTL: Duration = Duration::from_secs(3600);
/// How long a `kid` the key server did not know is answered "unknown" without asking again.
pub const MISS_TTL: Duration = Duration::from_secs(300);
/// Key fetches allowed at once, and on average per minute.
pub const FETCH_BURST: f64 = 10.0;
pub const FETCHES_PER_MINUTE: f64 = 30.0;

#[derive(Debug)]
pub struct InstallKeys {
    base_url: String,
    http: reqwest::Client,
    cache: TtlCache<Vec<u8>>,
    misses: TtlCache<()>,
    fetches: TokenBucket,
}

impl InstallKeys {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        InstallKeys {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
            cache: TtlCache::new(TTL, 1_000),
            misses: TtlCache::new(MISS_TTL, 10_000),
            fetches: TokenBucket::new(FETCHES_PER_MINUTE / 60.0, FETCH_BURST),
        }
    }

    /// The RSA public key (PKCS#1 DER) for `kid`.
    pub async fn key(&self, kid: &str) -> Result<Arc<Vec<u8>>, VerifyError> {
        // The kid becomes part of a URL: allow only what key ids look like, so a token cannot
        // point the fetch anywhere else.
        let valid = !kid.is_empty()
            && kid.len() <= 128
            && kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !kid.starts_with('.');
        if !valid {
            return Err(VerifyError::Malformed("kid"));
        }
        if let Some(key) = self.cache.get(kid) {
            return Ok(key);
        }
        if self.misses.get(kid).is_some() {
            return Err(VerifyError::UnknownKey(kid.to_owned()));
        }
        if self.fetches.take().is_err() {
            // A flood of made-up key ids must not lock out a site whose key we had: Atlassian's
            // keys do not change once published, so an expired copy still verifies.
            if let Some(key) = self.cache.get_stale(kid) {
                return Ok(key);
            }
            return Err(VerifyError::Unavailable(
                "install key lookups are over their budget; retry later".to_owned(),
            ));
        }
        let url = format!("{}/{kid}", self.base_url);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| VerifyError::Unavailable(format!("install key server: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            self.misses.insert(kid, Arc::new(()));
            return Err(VerifyError::UnknownKey(kid.to_owned()));
        }
        if !status.is_success() {
            return Err(VerifyError::Unavailable(format!(
                "install key server answered {status}"
            )));
        }
        let pem = response
            .text()
            .await
            .map_err(|e| VerifyError::Unavailable(format!("install key server: {e}")))?;
        let key = match jwt::rsa_public_key_from_pem(&pem) {
            Ok(key) => Arc::new(key),
            Err(_) => {
                self.misses.insert(kid, Arc::new(()));
                return Err(VerifyError::UnknownKey(kid.to_owned()));
            }
        };
        self.cache.insert(kid, key.clone());
        Ok(key)
    }
}
