//! `X-Hub-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body (Jira Cloud, Confluence Data
//! Center). GitHub's `X-Hub-Signature-256` spelling is accepted too, so one verifier serves both.
//! GitHub-style senders send both, the plain header then holding a SHA-1 HMAC: the `-256` header
//! wins whenever it is present, and SHA-1 is never accepted.

use axum::http::HeaderName;
use chrono::{DateTime, Utc};
use ring::hmac;

use super::{RequestParts, Verified, VerifyError, header, live_secrets};
use crate::config::SourceSecret;

const SIGNATURE_256: HeaderName = HeaderName::from_static("x-hub-signature-256");
const SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature");

pub fn verify(
    secrets: &[SourceSecret],
    request: &RequestParts<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    let live = live_secrets(secrets, now)?;
    let value = header(request.headers, SIGNATURE_256)
        .or_else(|| header(request.headers, SIGNATURE))
        .ok_or(VerifyError::Missing("X-Hub-Signature header"))?;
    let hex_digest = value
        .strip_prefix("sha256=")
        .ok_or(VerifyError::Malformed("X-Hub-Signature (expected sha256=<hex>)"))?;
    // Decoded onto the stack: a SHA-256 tag is 32 bytes, and any other length is no signature.
    let mut signature = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut signature)
        .map_err(|_| VerifyError::Malformed("X-Hub-Signature hex"))?;
    for secret in live {
        // `ring::hmac::verify` compares in constant time.
        if hmac::verify(secret.value.hmac_sha256(), request.body, &signature).is_ok() {
            return Ok(Verified::by_secret(&secret.id));
        }
    }
    Err(VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};

    use super::*;
    use crate::config::Secret;

    fn secret(id: &str, value: &str) -> SourceSecret {
        SourceSecret {
            id: id.into(),
            value: Secret::new(value),
            not_after: None,
        }
    }

    fn check(
        secrets: &[SourceSecret],
        name: &str,
        value: &str,
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        let request = RequestParts {
            method: &Method::POST,
            path: "/",
            query: None,
            headers: &headers,
            body,
        };
        verify(secrets, &request, Utc::now())
    }

    /// GitHub's published example ("Validating webhook deliveries").
    #[test]
    fn github_test_vector() {
        let secrets = [secret("gh", "It's a Secret to Everybody")];
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            check(&secrets, "x-hub-signature-256", sig, b"Hello, World!")
                .unwrap()
                .key_id,
            "gh"
        );
        assert_eq!(
            check(&secrets, "X-Hub-Signature", sig, b"Hello, World!")
                .unwrap()
                .key_id,
            "gh"
        );
        assert_eq!(
            check(&secrets, "X-Hub-Signature", sig, b"Hello, World?"),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn rotation_and_expiry() {
        let old = SourceSecret {
            not_after: Some(Utc::now() - chrono::Duration::seconds(1)),
            ..secret("old", "It's a Secret to Everybody")
        };
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            check(
                &[old.clone(), secret("new", "x")],
                "X-Hub-Signature",
                sig,
                b"Hello, World!"
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            check(&[old], "X-Hub-Signature", sig, b"Hello, World!"),
            Err(VerifyError::NoUsableSecret)
        );
        assert!(matches!(
            check(&[secret("a", "x")], "X-Hub-Signature", "sha1=00", b""),
            Err(VerifyError::Malformed(_))
        ));
    }

    /// GitHub sends `X-Hub-Signature: sha1=…` next to `X-Hub-Signature-256: sha256=…`.
    #[test]
    fn the_sha256_header_wins_over_a_sha1_one() {
        let secrets = [secret("gh", "It's a Secret to Everybody")];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hub-signature",
            HeaderValue::from_static("sha1=0000000000000000000000000000000000000000"),
        );
        headers.insert(
            "x-hub-signature-256",
            HeaderValue::from_static(
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        );
        let request = RequestParts {
            method: &Method::POST,
            path: "/",
            query: None,
            headers: &headers,
            body: b"Hello, World!",
        };
        assert_eq!(verify(&secrets, &request, Utc::now()).unwrap().key_id, "gh");
    }
}
