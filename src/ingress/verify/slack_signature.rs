//! `X-Slack-Signature: v0=<hex>`: HMAC-SHA256 under the Slack app's signing secret of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}`, with the timestamp within the tolerance (Slack's
//! own advice is five minutes), compared in constant time. Slack signs its interactive callbacks
//! this way (the Approve / Reject clicks of `[approvals.slack]`).

use chrono::{DateTime, Utc};
use ring::hmac;

use super::{RequestParts, VerifyError, check_window, header};
use crate::config::Secret;

pub fn verify(
    signing_secret: &Secret,
    tolerance_seconds: u64,
    request: &RequestParts<'_>,
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let timestamp = header(request.headers, "x-slack-request-timestamp")
        .ok_or(VerifyError::Missing("X-Slack-Request-Timestamp header"))?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::Malformed("X-Slack-Request-Timestamp (expected unix seconds)"))?;
    let signature = header(request.headers, "x-slack-signature")
        .ok_or(VerifyError::Missing("X-Slack-Signature header"))?;
    let digest = signature
        .strip_prefix("v0=")
        .ok_or(VerifyError::Malformed("X-Slack-Signature (expected v0=<hex>)"))?;
    let digest = hex::decode(digest).map_err(|_| VerifyError::Malformed("X-Slack-Signature hex"))?;
    // The window first: a replayed old click is refused whatever it carries.
    check_window(seconds, tolerance_seconds, now)?;
    let mut signed = Vec::with_capacity(request.body.len() + timestamp.len() + 4);
    signed.extend_from_slice(b"v0:");
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b':');
    signed.extend_from_slice(request.body);
    // `ring::hmac::verify` compares in constant time.
    hmac::verify(signing_secret.hmac_sha256(), &signed, &digest).map_err(|_| VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};

    use super::*;

    fn check(timestamp: &str, signature: &str, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-slack-request-timestamp",
            HeaderValue::from_str(timestamp).unwrap(),
        );
        headers.insert("x-slack-signature", HeaderValue::from_str(signature).unwrap());
        let request = RequestParts {
            method: &Method::POST,
            path: "/slack/actions",
            query: None,
            headers: &headers,
            body,
        };
        let secret = Secret::new("8f742231b10e8888abcd99yyyzzz85a5");
        verify(&secret, 300, &request, DateTime::from_timestamp(now, 0).unwrap())
    }

    /// Slack's published example ("Verifying requests from Slack").
    #[test]
    fn slacks_example_verifies_and_any_change_does_not() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(check("1531420618", signature, body, 1_531_420_618), Ok(()));
        assert_eq!(check("1531420618", signature, body, 1_531_420_618 + 299), Ok(()));
        assert_eq!(
            check("1531420618", signature, body, 1_531_420_618 + 301),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            check("1531420619", signature, body, 1_531_420_618),
            Err(VerifyError::BadSignature)
        );
        let mut changed = body.to_vec();
        changed[6] ^= 1;
        assert_eq!(
            check("1531420618", signature, &changed, 1_531_420_618),
            Err(VerifyError::BadSignature)
        );
        assert!(matches!(
            check("1531420618", "sha256=00", body, 1_531_420_618),
            Err(VerifyError::Malformed(_))
        ));
    }
}
