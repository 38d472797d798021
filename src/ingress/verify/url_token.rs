//! A secret token in the URL path or a header, for senders that cannot sign (Guard Detect alert
//! forwarding). Weaker than a signature (the token travels with every request and proves nothing
//! about the body), so use it only where nothing better is offered.

use chrono::{DateTime, Utc};
use ring::digest;
use subtle::ConstantTimeEq;

use super::{Verified, VerifyError, live_secrets};
use crate::config::SourceSecret;

/// `token` is the path token if the URL carried one, else the configured header's value.
pub fn verify(
    secrets: &[SourceSecret],
    token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    let live = live_secrets(secrets, now)?;
    let token = token.ok_or(VerifyError::Missing("token"))?;
    // Comparing digests makes the comparison length-independent as well as constant-time.
    let presented = digest::digest(&digest::SHA256, token.as_bytes());
    for secret in live {
        let expected = digest::digest(&digest::SHA256, secret.value.expose().as_bytes());
        if bool::from(presented.as_ref().ct_eq(expected.as_ref())) {
            return Ok(Verified::by_secret(&secret.id));
        }
    }
    Err(VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn matches_any_live_token() {
        let secrets = [
            SourceSecret {
                id: "a".into(),
                value: Secret::new("tok-a"),
                not_after: None,
            },
            SourceSecret {
                id: "b".into(),
                value: Secret::new("tok-b"),
                not_after: None,
            },
        ];
        assert_eq!(verify(&secrets, Some("tok-b"), Utc::now()).unwrap().key_id, "b");
        assert_eq!(
            verify(&secrets, Some("tok-c"), Utc::now()),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&secrets, None, Utc::now()),
            Err(VerifyError::Missing("token"))
        );
        assert_eq!(
            verify(&[], Some("tok-a"), Utc::now()),
            Err(VerifyError::NoUsableSecret)
        );
    }
}
