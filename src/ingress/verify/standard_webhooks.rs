//! Standard Webhooks (<https://www.standardwebhooks.com>), used by relays, IdPs and other
//! gatehouses: `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`, a
//! space-separated list of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`. The
//! `svix-*` header spelling is accepted too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ring::hmac;
use subtle::ConstantTimeEq;

use super::{RequestParts, Verified, VerifyError, check_window, header, live_secrets};
use crate::config::{SourceSecret, standard_webhooks_key};

fn either<'a>(request: &'a RequestParts<'_>, name: &str) -> Option<&'a str> {
    header(request.headers, format!("webhook-{name}"))
        .or_else(|| header(request.headers, format!("svix-{name}")))
}

/// The most `webhook-signature` entries considered. A sender signs once per live secret, so a
/// real header holds a handful (two during a rotation); more is refused unread, so the work an
/// unsigned request can cause is bounded by the header, not multiplied by it.
pub const MAX_SIGNATURE_ENTRIES: usize = 16;

/// An HMAC-SHA256 tag.
type Tag = [u8; 32];

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
    let presented = presented(signatures)?;
    let timestamp = timestamp.to_string();
    let signed = |key: &hmac::Key| {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(request.body);
        ctx.sign()
    };
    matching(&live, &presented, signed)
        .map(|secret| Verified::by_secret(&secret.id))
        .ok_or(VerifyError::BadSignature)
}

/// The `v1` signatures of a `webhook-signature` header: entries that are not `v1,` with a
/// 32-byte tag (another version, an empty or mistyped signature) are no signature and skipped.
/// More than [`MAX_SIGNATURE_ENTRIES`] entries of any kind are refused.
fn presented(header: &str) -> Result<Vec<Tag>, VerifyError> {
    let mut entries = header.split(' ').filter(|entry| !entry.is_empty());
    let tags: Vec<Tag> = entries
        .by_ref()
        .take(MAX_SIGNATURE_ENTRIES)
        .filter_map(|entry| entry.strip_prefix("v1,"))
        // 32 bytes are 44 characters of padded base64: anything else is no tag, and is not
        // decoded to find that out.
        .filter(|b64| b64.len() == 44)
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .filter_map(|bytes| Tag::try_from(bytes).ok())
        .collect();
    if entries.next().is_some() {
        return Err(VerifyError::Malformed(
            "webhook-signature (more than 16 entries; a sender signs once per secret)",
        ));
    }
    if tags.is_empty() {
        return Err(VerifyError::Malformed("webhook-signature (no v1 signature)"));
    }
    Ok(tags)
}

/// The first live secret one of the `presented` tags is the HMAC of, by `signed`. Each secret's
/// HMAC over the message is computed once, whatever the number of tags, and compared with each
/// tag in constant time.
fn matching<'a>(
    live: &[&'a SourceSecret],
    presented: &[Tag],
    mut signed: impl FnMut(&hmac::Key) -> hmac::Tag,
) -> Option<&'a SourceSecret> {
    live.iter().copied().find(|secret| {
        // Validated at config load; a failure here means the secret cannot match anything.
        let Ok(key_bytes) = standard_webhooks_key(secret.value.expose()) else {
            return false;
        };
        let expected = signed(&hmac::Key::new(hmac::HMAC_SHA256, &key_bytes));
        // Every tag is compared, so the time taken says nothing about which one matched.
        presented
            .iter()
            .fold(subtle::Choice::from(0), |found, tag| {
                found | tag.as_slice().ct_eq(expected.as_ref())
            })
            .into()
    })
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

    /// A tag that is no signature of anything here (right length, wrong bytes).
    fn decoy(n: u8) -> String {
        format!("v1,{}", STANDARD.encode([n; 32]))
    }

    #[test]
    fn up_to_the_cap_of_entries_the_right_signature_is_found_wherever_it_is() {
        let mut listed: Vec<String> = (0..MAX_SIGNATURE_ENTRIES - 1).map(|n| decoy(n as u8)).collect();
        listed.push(SPEC_SIGNATURE.to_owned());
        let header = listed.join(" ");
        assert_eq!(
            run(&headers(ID, "1614265330", &header), BODY, at(0))
                .unwrap()
                .key_id,
            "relay-1"
        );
        // Spaces between entries are not entries.
        let spaced = format!("  {}  ", listed.join("   "));
        assert!(run(&headers(ID, "1614265330", &spaced), BODY, at(0)).is_ok());
    }

    #[test]
    fn more_entries_than_the_cap_are_refused_even_with_the_right_signature_among_them() {
        let mut listed: Vec<String> = (0..MAX_SIGNATURE_ENTRIES).map(|n| decoy(n as u8)).collect();
        listed.push(SPEC_SIGNATURE.to_owned());
        let refused = run(&headers(ID, "1614265330", &listed.join(" ")), BODY, at(0));
        let Err(VerifyError::Malformed(why)) = refused else {
            panic!("{refused:?}");
        };
        assert!(
            why.contains(&format!("more than {MAX_SIGNATURE_ENTRIES} entries")),
            "{why}"
        );
        // So is the 64 KiB header of the attack, before any of it is decoded.
        let flood = vec!["v1,"; 16_000].join(" ");
        assert!(matches!(
            presented(&flood),
            Err(VerifyError::Malformed(why)) if why.contains("more than")
        ));
    }

    #[test]
    fn empty_and_mistyped_entries_are_no_signatures() {
        for header in [
            "v1,",
            "v1, v1, v1,",
            "v1,Zm9v",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=AAAA",
        ] {
            assert_eq!(
                run(&headers(ID, "1614265330", header), BODY, at(0)),
                Err(VerifyError::Malformed("webhook-signature (no v1 signature)")),
                "{header}"
            );
        }
        // They still count towards the cap: a header cannot be padded out with them.
        let padded = format!(
            "{} {SPEC_SIGNATURE}",
            vec!["v1,"; MAX_SIGNATURE_ENTRIES].join(" ")
        );
        assert!(matches!(
            run(&headers(ID, "1614265330", &padded), BODY, at(0)),
            Err(VerifyError::Malformed(_))
        ));
    }

    /// The work is one HMAC over the body per live secret, however many tags are presented
    /// (before: one per tag and secret).
    #[test]
    fn each_live_secret_signs_the_body_once_whatever_the_number_of_tags() {
        let live_secrets: Vec<SourceSecret> = (0..3)
            .map(|n| SourceSecret {
                id: format!("relay-{n}"),
                value: Secret::new(format!("whsec_{}", STANDARD.encode([n as u8 + 1; 24]))),
                not_after: None,
            })
            .collect();
        let live: Vec<&SourceSecret> = live_secrets.iter().collect();
        let tags: Vec<Tag> = (0..MAX_SIGNATURE_ENTRIES as u8).map(|n| [n; 32]).collect();
        let mut signed = 0;
        let found = matching(&live, &tags, |key| {
            signed += 1;
            hmac::sign(key, BODY)
        });
        assert!(found.is_none());
        assert_eq!(signed, live.len());
        // A match stops there: the secrets after it are not tried.
        let key = standard_webhooks_key(live_secrets[1].value.expose()).unwrap();
        let right = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), BODY);
        let mut with_right = tags.clone();
        with_right[7].copy_from_slice(right.as_ref());
        let mut signed = 0;
        let found = matching(&live, &with_right, |key| {
            signed += 1;
            hmac::sign(key, BODY)
        });
        assert_eq!(found.map(|s| s.id.as_str()), Some("relay-1"));
        assert_eq!(signed, 2);
    }
}
