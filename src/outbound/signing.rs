//! Standard Webhooks signatures on outbound deliveries: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (`v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`), one signature
//! per live key, space-separated, so a receiver keeps verifying while keys rotate.

use base64::Engine;
use chrono::{DateTime, Utc};

use crate::config::{SourceSecret, standard_webhooks_key};

/// The three headers of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
}

/// Signs `body` of delivery `id` at `now` with every key of `secrets` live then; `None` when no
/// key is (config validation refuses an endpoint whose keys all ended).
pub fn sign(id: &str, now: DateTime<Utc>, body: &[u8], secrets: &[SourceSecret]) -> Option<SignedHeaders> {
    let timestamp = now.timestamp().to_string();
    let signatures: Vec<String> = secrets
        .iter()
        .filter(|secret| secret.is_live(now))
        .filter_map(|secret| standard_webhooks_key(secret.value.expose()).ok())
        .map(|key| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
            let mut context = ring::hmac::Context::with_key(&key);
            context.update(id.as_bytes());
            context.update(b".");
            context.update(timestamp.as_bytes());
            context.update(b".");
            context.update(body);
            let tag = context.sign();
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
            )
        })
        .collect();
    (!signatures.is_empty()).then(|| SignedHeaders {
        id: id.to_owned(),
        timestamp,
        signature: signatures.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn matches_the_specs_example_and_signs_with_every_live_key() {
        // The example of the Standard Webhooks specification (standard-webhooks.md).
        let spec = SourceSecret {
            id: "spec".into(),
            value: Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            not_after: None,
        };
        let at = DateTime::from_timestamp(1_614_265_330, 0).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signed = sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            at,
            body,
            std::slice::from_ref(&spec),
        )
        .unwrap();
        assert_eq!(signed.timestamp, "1614265330");
        assert_eq!(
            signed.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );

        let ended = SourceSecret {
            id: "old".into(),
            value: Secret::new("whsec_c2VjcmV0LWtleS1vZi1zaXh0ZWVuIGJ5dGVz"),
            not_after: Some(at - chrono::Duration::seconds(1)),
        };
        let next = SourceSecret {
            id: "next".into(),
            value: Secret::new("whsec_c2VjcmV0LWtleS1vZi1zaXh0ZWVuIGJ5dGVz"),
            not_after: None,
        };
        let both = sign("m", at, body, &[spec.clone(), ended.clone(), next]).unwrap();
        assert_eq!(both.signature.split(' ').count(), 2);
        assert!(sign("m", at, body, &[ended]).is_none());
    }
}
