//! Standard Webhooks (<https://www.standardwebhooks.com>), used by relays, IdPs and other
//! gatehouses: `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`, a
//! space-separated list of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`. The
//! `svix-*` header spelling is accepted too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ring::hmac;

use super::{RequestParts, Verified, VerifyError, check_window, header, live_secrets};
use crate::config::{SourceSecret, standard_webhooks_key};

fn either<'a>(request: &'a RequestParts<'_>, name: &str) -> Option<&'a str> {
    header(request.headers, format!("webhook-{name}"))
        .or_else(|| header(request.headers, format!("svix-{name}")))
}

pub fn verify(
    secrets: &[SourceSecret],
    tolerance_seconds: u64,
    request: &RequestParts<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    let live = live_secrets(secrets, now)?;
    let id = either(request, "id").ok_or(VerifyError::Missing("webhook-id header"))?;
    let timestamp = either(request, "timestamp").ok_or(VerifyError::Missing("webhook-timestamp header"))?;
    let signatures = either(request, "signature").ok_or(VerifyError::Missing("webhook-signature header"))?;
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::Malformed("webhook-timestamp (unix seconds)"))?;
    check_window(timestamp, tolerance_seconds, now)?;
    let presented: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    if presented.is_empty() {
        return Err(VerifyError::Malformed("webhook-signature (no v1 entry)"));
    }
    let mut signed = Vec::with_capacity(id.len() + 24 + request.body.len());
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(request.body);
    for secret in live {
        // Validated at config load; a failure here means the secret cannot match anything.
        let Ok(key_bytes) = standard_webhooks_key(secret.value.expose()) else {
            continue;
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
        if presented
            .iter()
            .any(|sig| hmac::verify(&key, &signed, sig).is_ok())
        {
            return Ok(Verified::by_secret(&secret.id));
        }
    }
    Err(VerifyError::BadSignature)
}

/// Signs like a Standard Webhooks sender (used by gatehouse's own senders and tests).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{id}.{timestamp}.").as_bytes());
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};
    use chrono::TimeZone;

    use super::*;
    use crate::config::Secret;

    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    /// The example from the Standard Webhooks specification.
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secrets() -> Vec<SourceSecret> {
        vec![SourceSecret {
            id: "relay-1".into(),
            value: Secret::new(KEY),
            not_after: None,
        }]
    }

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from_str(ts).unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    fn at(offset: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(TS + offset, 0).unwrap()
    }

    fn run(h: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<Verified, VerifyError> {
        let request = RequestParts {
            method: &Method::POST,
            path: "/",
            query: None,
            headers: h,
            body,
        };
        verify(&secrets(), 300, &request, now)
    }

    #[test]
    fn spec_example_verifies_and_signs() {
        assert_eq!(
            run(&headers(ID, "1614265330", SPEC_SIGNATURE), BODY, at(10))
                .unwrap()
                .key_id,
            "relay-1"
        );
        let key = standard_webhooks_key(KEY).unwrap();
        assert_eq!(sign(&key, ID, TS, BODY), SPEC_SIGNATURE);
    }

    #[test]
    fn lists_tampering_and_time() {
        let listed = format!("v1,Zm9v v2,abc {SPEC_SIGNATURE}");
        assert!(run(&headers(ID, "1614265330", &listed), BODY, at(0)).is_ok());
        assert_eq!(
            run(
                &headers(ID, "1614265330", SPEC_SIGNATURE),
                b"{\"test\": 1}",
                at(0)
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            run(&headers("msg_other", "1614265330", SPEC_SIGNATURE), BODY, at(0)),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            run(&headers(ID, "1614265330", SPEC_SIGNATURE), BODY, at(301)),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            run(&headers(ID, "1614265330", SPEC_SIGNATURE), BODY, at(-301)),
            Err(VerifyError::NotYetValid)
        );
        let far_past = i64::MIN.to_string();
        assert_eq!(
            run(&headers(ID, &far_past, SPEC_SIGNATURE), BODY, at(0)),
            Err(VerifyError::Expired)
        );
        let far_future = i64::MAX.to_string();
        assert_eq!(
            run(&headers(ID, &far_future, SPEC_SIGNATURE), BODY, at(0)),
            Err(VerifyError::NotYetValid)
        );
        assert!(matches!(
            run(&headers(ID, "soon", SPEC_SIGNATURE), BODY, at(0)),
            Err(VerifyError::Malformed(_))
        ));
    }
}
