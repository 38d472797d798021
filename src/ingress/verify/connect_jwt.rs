//! Atlassian Connect webhooks: `Authorization: JWT <token>` (or `?jwt=`), HS256 with the shared
//! secret of the installation named by `iss`, `exp`/`iat` with a small leeway, and a `qsh` that
//! must match this very request (`context-qsh` is refused: it would accept the token anywhere).

use chrono::{DateTime, Utc};

use super::{RequestParts, Verified, VerifyError, header, jwt, qsh};
use crate::store::{Installation, StoreError};

/// Where the installation a Connect token names is found (the ingress's cached
/// `connect::Installations`; a map in tests).
#[async_trait::async_trait]
pub trait InstallationLookup: Send + Sync {
    /// The installation of `client_key`, if the site installed the app.
    async fn installation(
        &self,
        client_key: &str,
    ) -> Result<Option<std::sync::Arc<Installation>>, StoreError>;

    /// The installation of `client_key` read again past any cache, when what `installation`
    /// answered refused a token (another process may have installed or re-installed the site
    /// since). `None` when there is none, or nothing fresher to say: a lookup without a cache
    /// has nothing to re-read.
    async fn reread(&self, _client_key: &str) -> Result<Option<std::sync::Arc<Installation>>, StoreError> {
        Ok(None)
    }
}

/// The token of a Connect request, from the header or the `jwt` query parameter.
pub fn token<'a>(request: &RequestParts<'a>) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(value) = header(request.headers, "authorization") {
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("JWT")
            .then(|| std::borrow::Cow::Borrowed(token.trim()));
    }
    url::form_urlencoded::parse(request.query?.as_bytes())
        .find(|(k, _)| k == "jwt")
        .map(|(_, v)| v)
}

/// Checks `qsh` against the request; `context-qsh` is refused.
pub fn check_qsh(
    claims: &jwt::Claims,
    request: &RequestParts<'_>,
    base_path: &str,
) -> Result<(), VerifyError> {
    let presented = claims.qsh.as_deref().ok_or(VerifyError::Missing("qsh claim"))?;
    if presented == "context-qsh" {
        return Err(VerifyError::ContextQsh);
    }
    let expected = qsh::qsh(request.method.as_str(), request.path, request.query, base_path);
    if presented.eq_ignore_ascii_case(&expected) {
        Ok(())
    } else {
        Err(VerifyError::QshMismatch)
    }
}

pub async fn verify(
    installations: &dyn InstallationLookup,
    leeway_seconds: u64,
    base_path: &str,
    request: &RequestParts<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    let token = token(request).ok_or(VerifyError::Missing("Authorization: JWT header"))?;
    let decoded = jwt::decode(&token)?;
    if decoded.header.alg != "HS256" {
        return Err(VerifyError::WrongAlgorithm(decoded.header.alg.clone()));
    }
    let client_key = decoded
        .claims
        .iss
        .clone()
        .ok_or(VerifyError::Missing("iss claim"))?;
    let cached = installations
        .installation(&client_key)
        .await
        .map_err(unavailable)?;
    let installation = match cached {
        Some(cached) => match signed_with(&decoded, &cached) {
            Ok(()) => cached,
            // A re-install through another process may have replaced the secret.
            Err(VerifyError::BadSignature) => {
                read_again(installations, &client_key, &decoded, VerifyError::BadSignature).await?
            }
            Err(other) => return Err(other),
        },
        // The site may have been installed through another process since the cache looked.
        None => read_again(installations, &client_key, &decoded, VerifyError::UnknownIssuer).await?,
    };
    decoded.check_time(now, leeway_seconds)?;
    check_qsh(&decoded.claims, request, base_path)?;
    Ok(Verified {
        key_id: client_key.clone(),
        client_key: Some(client_key),
        cloud_id: installation.cloud_id.clone(),
        site: Some(installation.base_url.clone()),
        tenant: None,
    })
}

fn unavailable(error: StoreError) -> VerifyError {
    VerifyError::Unavailable(error.to_string())
}

fn signed_with(token: &jwt::UnverifiedToken<'_>, installation: &Installation) -> Result<(), VerifyError> {
    token.verify_hs256(installation.shared_secret.expose().as_bytes())
}

/// The installation `client_key` names, read again past the cache, if the token is signed with
/// its secret; `refused` (what the cached answer said) when there is nothing fresher. Connect
/// never retries a webhook refused with 401, so a stale cache must not be what refuses it.
async fn read_again(
    installations: &dyn InstallationLookup,
    client_key: &str,
    token: &jwt::UnverifiedToken<'_>,
    refused: VerifyError,
) -> Result<std::sync::Arc<Installation>, VerifyError> {
    let fresh = installations
        .reread(client_key)
        .await
        .map_err(unavailable)?
        .ok_or(refused)?;
    signed_with(token, &fresh)?;
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::{HeaderMap, Method};
    use chrono::TimeZone;
    use serde_json::Value;

    use super::*;

    /// Tokens made by PyJWT with a qsh computed independently (tests/fixtures/connect).
    fn fixture() -> Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/connect/pyjwt_tokens.json")).unwrap()
    }

    fn request<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestParts<'a> {
        RequestParts {
            method,
            path,
            query,
            headers,
            body: b"{}",
        }
    }

    #[test]
    fn pyjwt_webhook_token_with_repeated_and_encoded_query_verifies() {
        let f = fixture();
        let now = Utc.timestamp_opt(f["now"].as_i64().unwrap(), 0).unwrap();
        let hook = &f["webhook"];
        let token = hook["token"].as_str().unwrap();
        let decoded = jwt::decode(token).unwrap();
        decoded
            .verify_hs256(f["shared_secret"].as_str().unwrap().as_bytes())
            .unwrap();
        decoded.check_time(now, 30).unwrap();
        let headers = HeaderMap::new();
        let method = Method::POST;
        let path = hook["path"].as_str().unwrap();
        let query = hook["query"].as_str().unwrap();
        check_qsh(
            &decoded.claims,
            &request(&method, path, Some(query), &headers),
            "",
        )
        .unwrap();
        // The same token on another path, another query, or another method is refused.
        assert_eq!(
            check_qsh(
                &decoded.claims,
                &request(
                    &method,
                    "/webhooks/confluence/user_removed",
                    Some(query),
                    &headers
                ),
                ""
            ),
            Err(VerifyError::QshMismatch)
        );
        assert_eq!(
            check_qsh(
                &decoded.claims,
                &request(&method, path, Some("b=2"), &headers),
                ""
            ),
            Err(VerifyError::QshMismatch)
        );
        assert_eq!(
            check_qsh(
                &decoded.claims,
                &request(&Method::PUT, path, Some(query), &headers),
                ""
            ),
            Err(VerifyError::QshMismatch)
        );
        assert_eq!(
            decoded.check_time(now + chrono::Duration::seconds(600), 30),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn pyjwt_install_token_verifies_with_the_published_key() {
        let f = fixture();
        let now = Utc.timestamp_opt(f["now"].as_i64().unwrap(), 0).unwrap();
        let install = &f["install"];
        let decoded = jwt::decode(install["token"].as_str().unwrap()).unwrap();
        assert_eq!(decoded.header.kid.as_deref(), Some("fixture-kid"));
        let key = jwt::rsa_public_key_from_pem(include_str!(
            "../../../tests/fixtures/connect/install-key.public.pem"
        ))
        .unwrap();
        decoded.verify_rs256(&key).unwrap();
        decoded.check_time(now, 30).unwrap();
        assert!(
            decoded
                .claims
                .aud
                .as_ref()
                .unwrap()
                .contains(install["base_url"].as_str().unwrap())
        );
        let headers = HeaderMap::new();
        let method = Method::POST;
        check_qsh(
            &decoded.claims,
            &request(&method, install["path"].as_str().unwrap(), None, &headers),
            "/atlassian",
        )
        .unwrap();
        // Alg confusion: the RS256 token must not pass as HS256 with the public key as secret.
        assert!(matches!(
            decoded.verify_hs256(&key),
            Err(VerifyError::WrongAlgorithm(_))
        ));
    }

    /// A cache that answers `cached`, while the store already holds `stored`; counts re-reads.
    struct StaleCache {
        cached: Option<Arc<Installation>>,
        stored: Option<Arc<Installation>>,
        rereads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl InstallationLookup for StaleCache {
        async fn installation(&self, _: &str) -> Result<Option<Arc<Installation>>, StoreError> {
            Ok(self.cached.clone())
        }

        async fn reread(&self, _: &str) -> Result<Option<Arc<Installation>>, StoreError> {
            self.rereads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.stored.clone())
        }
    }

    fn installed(secret: &str) -> Option<Arc<Installation>> {
        Some(Arc::new(Installation {
            client_key: "confluence:re".into(),
            shared_secret: crate::config::Secret::new(secret),
            base_url: "https://acme.atlassian.net/wiki".into(),
            cloud_id: None,
            installed_at: Utc::now(),
        }))
    }

    /// Verifies a webhook signed with `secret` against `lookup`; the outcome and the re-reads.
    async fn webhook(lookup: &StaleCache, secret: &str) -> (Result<Verified, VerifyError>, usize) {
        let now = Utc::now().timestamp();
        let path = "/webhooks/confluence";
        let token = jwt::encode_hs256(
            &serde_json::json!({"iss": "confluence:re", "iat": now, "exp": now + 60, "qsh": qsh::qsh("POST", path, None, "")}),
            secret.as_bytes(),
        );
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("JWT {token}").parse().unwrap());
        let method = Method::POST;
        let outcome = verify(
            lookup,
            30,
            "",
            &request(&method, path, None, &headers),
            Utc::now(),
        )
        .await;
        (outcome, lookup.rereads.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn stale(cached: Option<Arc<Installation>>, stored: Option<Arc<Installation>>) -> StaleCache {
        StaleCache {
            cached,
            stored,
            rereads: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_token_the_cache_refuses_is_checked_once_against_the_store() {
        // Re-installed elsewhere with a new secret: the cached old one would refuse it.
        let (outcome, rereads) = webhook(
            &stale(installed("old-secret"), installed("new-secret")),
            "new-secret",
        )
        .await;
        assert_eq!(outcome.unwrap().client_key.as_deref(), Some("confluence:re"));
        assert_eq!(rereads, 1);
        // Installed elsewhere since the cache looked.
        let (outcome, rereads) = webhook(&stale(None, installed("new-secret")), "new-secret").await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(rereads, 1);
        // A cached secret that verifies costs no re-read.
        let (outcome, rereads) = webhook(&stale(installed("new-secret"), None), "new-secret").await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(rereads, 0);
        // Forged: refused as the cache said, after one re-read (which the lookup bounds).
        let (outcome, rereads) =
            webhook(&stale(installed("old-secret"), installed("new-secret")), "forged").await;
        assert_eq!(outcome, Err(VerifyError::BadSignature));
        assert_eq!(rereads, 1);
        let (outcome, rereads) = webhook(&stale(None, None), "forged").await;
        assert_eq!(outcome, Err(VerifyError::UnknownIssuer));
        assert_eq!(rereads, 1);
    }

    #[test]
    fn context_qsh_is_refused() {
        let now = Utc::now().timestamp();
        let token = jwt::encode_hs256(
            &serde_json::json!({"iss": "c", "iat": now, "exp": now + 60, "qsh": "context-qsh"}),
            b"k",
        );
        let decoded = jwt::decode(&token).unwrap();
        let headers = HeaderMap::new();
        assert_eq!(
            check_qsh(
                &decoded.claims,
                &request(&Method::POST, "/webhooks/x", None, &headers),
                ""
            ),
            Err(VerifyError::ContextQsh)
        );
    }
}
