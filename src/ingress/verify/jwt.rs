//! Just enough JWT for Atlassian Connect: compact-serialized tokens, HS256 (webhooks) and RS256
//! (lifecycle callbacks), the registered time claims, and Connect's `qsh` claim.
//!
//! Deliberately small: the algorithm is fixed by the caller per endpoint (never taken from the
//! token, the classic "alg confusion" hole), signatures are checked by `ring`, and every decoding
//! error is a [`VerifyError`] rather than a panic.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use ring::{hmac, signature};
use serde::Deserialize;

use super::VerifyError;

/// base64url, with or without padding (senders differ).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, wanted: &str) -> bool {
        let same = |a: &str| a.trim_end_matches('/') == wanted.trim_end_matches('/');
        match self {
            Audience::One(a) => same(a),
            Audience::Many(all) => all.iter().any(|a| same(a)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub qsh: Option<String>,
    #[serde(default)]
    pub aud: Option<Audience>,
}

/// A decoded token whose signature has not been checked yet. Nothing in it may be trusted until
/// one of the `verify_*` methods returned `Ok`.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    pub header: Header,
    pub claims: Claims,
    signing_input: &'a str,
    signature: Vec<u8>,
}

pub fn decode(token: &str) -> Result<UnverifiedToken<'_>, VerifyError> {
    let malformed = VerifyError::Malformed("JWT");
    let (signing_input, signature_b64) = token.rsplit_once('.').ok_or(malformed.clone())?;
    let (header_b64, claims_b64) = signing_input.split_once('.').ok_or(malformed.clone())?;
    let header_json = B64URL.decode(header_b64).map_err(|_| malformed.clone())?;
    let claims_json = B64URL.decode(claims_b64).map_err(|_| malformed.clone())?;
    let signature = B64URL.decode(signature_b64).map_err(|_| malformed.clone())?;
    let header: Header =
        serde_json::from_slice(&header_json).map_err(|_| VerifyError::Malformed("JWT header"))?;
    let claims: Claims =
        serde_json::from_slice(&claims_json).map_err(|_| VerifyError::Malformed("JWT claims"))?;
    Ok(UnverifiedToken {
        header,
        claims,
        signing_input,
        signature,
    })
}

impl UnverifiedToken<'_> {
    /// Hex SHA-256 naming this token however it was written: over the signed text as sent (the
    /// signature covers it byte for byte, so it cannot be written another way and still verify)
    /// and the signature's decoded bytes (its base64 may come with or without padding). For
    /// remembering a token without keeping it, e.g. one that may be used once.
    pub fn fingerprint(&self) -> String {
        crate::ingress::normalize::sha256_hex(&[self.signing_input.as_bytes(), b".", &self.signature])
    }

    /// HMAC-SHA256 with a shared secret (constant-time comparison).
    pub fn verify_hs256(&self, secret: &[u8]) -> Result<(), VerifyError> {
        self.expect_alg("HS256")?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::verify(&key, self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| VerifyError::BadSignature)
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256, with a PKCS#1 `RSAPublicKey` in DER.
    pub fn verify_rs256(&self, rsa_public_key_der: &[u8]) -> Result<(), VerifyError> {
        self.expect_alg("RS256")?;
        let key =
            signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, rsa_public_key_der);
        key.verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| VerifyError::BadSignature)
    }

    fn expect_alg(&self, alg: &str) -> Result<(), VerifyError> {
        if self.header.alg == alg {
            Ok(())
        } else {
            Err(VerifyError::WrongAlgorithm(self.header.alg.clone()))
        }
    }

    /// The last second (unix) at which the token is still accepted: its `exp` plus the leeway.
    pub fn accepted_until(&self, leeway_seconds: u64) -> Result<i64, VerifyError> {
        let exp = self.claims.exp.ok_or(VerifyError::Missing("exp claim"))?;
        Ok(exp.saturating_add(i64::try_from(leeway_seconds).unwrap_or(i64::MAX)))
    }

    /// `exp` must be present and not passed, `iat` present and not in the future, both with
    /// `leeway_seconds` of clock skew.
    pub fn check_time(&self, now: DateTime<Utc>, leeway_seconds: u64) -> Result<(), VerifyError> {
        let now = now.timestamp();
        let leeway = i64::try_from(leeway_seconds).unwrap_or(i64::MAX);
        let accepted_until = self.accepted_until(leeway_seconds)?;
        let iat = self.claims.iat.ok_or(VerifyError::Missing("iat claim"))?;
        if now > accepted_until {
            return Err(VerifyError::Expired);
        }
        if iat > now.saturating_add(leeway) {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }
}

/// The PKCS#1 `RSAPublicKey` DER inside a PEM public key (`BEGIN PUBLIC KEY`, i.e.
/// SubjectPublicKeyInfo, as Atlassian's key server serves it; or `BEGIN RSA PUBLIC KEY`).
pub fn rsa_public_key_from_pem(pem: &str) -> Result<Vec<u8>, String> {
    let (label, der) = pem_decode(pem)?;
    match label.as_str() {
        "RSA PUBLIC KEY" => Ok(der),
        "PUBLIC KEY" => spki_rsa_key(&der),
        other => Err(format!("expected a public key, found PEM `{other}`")),
    }
}

fn pem_decode(pem: &str) -> Result<(String, Vec<u8>), String> {
    let pem = pem.trim();
    let begin = pem.strip_prefix("-----BEGIN ").ok_or("not PEM")?;
    let (label, rest) = begin.split_once("-----").ok_or("not PEM")?;
    let end_marker = format!("-----END {label}-----");
    let body = rest
        .strip_suffix(end_marker.as_str())
        .ok_or("PEM end marker missing")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "PEM body is not base64")?;
    Ok((label.to_owned(), der))
}

/// rsaEncryption, 1.2.840.113549.1.1.1, DER-encoded.
const RSA_ENCRYPTION_OID: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// `SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }` → RSAPublicKey.
fn spki_rsa_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let (spki, rest) = der_element(der, 0x30)?;
    if !rest.is_empty() {
        return Err("trailing bytes after SubjectPublicKeyInfo".into());
    }
    let (algorithm, rest) = der_element(spki, 0x30)?;
    if !algorithm.starts_with(RSA_ENCRYPTION_OID) {
        return Err("public key is not RSA".into());
    }
    let (bits, _) = der_element(rest, 0x03)?;
    match bits.split_first() {
        Some((0, key)) => Ok(key.to_vec()),
        _ => Err("malformed public key bit string".into()),
    }
}

/// One DER element with the expected tag: (contents, what follows).
fn der_element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let (&found, rest) = input.split_first().ok_or("truncated DER")?;
    if found != tag {
        return Err(format!("expected DER tag {tag:#04x}, found {found:#04x}"));
    }
    let (&first, rest) = rest.split_first().ok_or("truncated DER")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("unsupported DER length".into());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("truncated DER".into());
    }
    Ok(rest.split_at(len))
}

/// Encodes a token (gatehouse signs nothing in production; tests and the simulator use this).
pub fn encode_hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = B64URL.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let signature = B64URL.encode(hmac::sign(&key, signing_input.as_bytes()).as_ref());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs256_round_trip_and_alg_pinning() {
        let now = Utc::now().timestamp();
        let token = encode_hs256(
            &serde_json::json!({"iss": "k", "iat": now, "exp": now + 60}),
            b"s3cret",
        );
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.claims.iss.as_deref(), Some("k"));
        decoded.verify_hs256(b"s3cret").unwrap();
        assert_eq!(decoded.verify_hs256(b"other"), Err(VerifyError::BadSignature));
        assert!(matches!(
            decoded.verify_rs256(b""),
            Err(VerifyError::WrongAlgorithm(_))
        ));
        decoded.check_time(Utc::now(), 0).unwrap();
        let late = Utc::now() + chrono::Duration::seconds(120);
        assert_eq!(decoded.check_time(late, 30), Err(VerifyError::Expired));
        assert!(decoded.check_time(late, 90).is_ok());
    }

    /// A token used once must not pass as new with its signature padded: it verifies all the
    /// same, and its fingerprint is the same; another token's is not.
    #[test]
    fn a_padded_signature_is_the_same_token() {
        let now = Utc::now().timestamp();
        let token = encode_hs256(
            &serde_json::json!({"iss": "k", "iat": now, "exp": now + 60}),
            b"s3cret",
        );
        let padded = format!("{token}=");
        let (as_sent, again) = (decode(&token).unwrap(), decode(&padded).unwrap());
        again.verify_hs256(b"s3cret").unwrap();
        assert_eq!(as_sent.fingerprint(), again.fingerprint());
        let other = encode_hs256(
            &serde_json::json!({"iss": "k", "iat": now, "exp": now + 61}),
            b"s3cret",
        );
        assert_ne!(as_sent.fingerprint(), decode(&other).unwrap().fingerprint());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for token in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "..",
            "e30.e30.",
            "eyJhbGciOiJIUzI1NiJ9.!!!.x",
        ] {
            assert!(
                decode(token).and_then(|t| t.verify_hs256(b"k")).is_err(),
                "{token}"
            );
        }
    }

    #[test]
    fn der_lengths_are_bounds_checked() {
        assert!(der_element(&[0x30, 0x82, 0xff], 0x30).is_err());
        assert!(der_element(&[0x30, 0x05, 1, 2], 0x30).is_err());
        assert_eq!(
            der_element(&[0x30, 0x02, 1, 2, 9], 0x30).unwrap(),
            (&[1u8, 2][..], &[9u8][..])
        );
        assert!(
            rsa_public_key_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").is_err()
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..64)
                    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
            ]
        }

        /// One token part: text, base64url of arbitrary bytes, or base64url of JSON that is
        /// almost a header or claims set.
        fn part() -> impl Strategy<Value = String> {
            const JSON: &[&str] = &[
                r#"{"alg":"HS256"}"#,
                r#"{"alg":"RS256","kid":"k"}"#,
                r#"{"alg":1}"#,
                r#"{"iss":"k","iat":0,"exp":9223372036854775807,"aud":["a/"]}"#,
                r#"{"iat":-9223372036854775808,"exp":-1,"qsh":"x","aud":"b"}"#,
                r#"{"exp":1e400}"#,
                "[]",
                "null",
                "{",
            ];
            prop_oneof![
                text(),
                prop::collection::vec(any::<u8>(), 0..48).prop_map(|bytes| B64URL.encode(bytes)),
                prop::sample::select(JSON).prop_map(|json| B64URL.encode(json)),
            ]
        }

        /// DER that is nearly a SubjectPublicKeyInfo: real tags, arbitrary lengths and contents.
        fn der() -> impl Strategy<Value = Vec<u8>> {
            let chunk = prop_oneof![
                prop::sample::select(vec![
                    0x30u8, 0x03, 0x06, 0x05, 0x00, 0x80, 0x81, 0x82, 0x84, 0x85, 0xff
                ])
                .prop_map(|b| vec![b]),
                Just(RSA_ENCRYPTION_OID.to_vec()),
                prop::collection::vec(any::<u8>(), 0..8),
            ];
            prop::collection::vec(chunk, 0..10).prop_map(|chunks| chunks.concat())
        }

        proptest! {
            #[test]
            fn decoding_and_checking_never_panic(
                parts in prop::collection::vec(part(), 0..5),
                now in any::<i64>(),
                leeway in any::<u64>(),
            ) {
                for token in [parts.join("."), parts.concat()] {
                    if let Ok(decoded) = decode(&token) {
                        prop_assert!(decoded.verify_hs256(b"secret").is_err());
                        prop_assert!(decoded.verify_rs256(b"").is_err());
                        if let Some(now) = DateTime::from_timestamp(now / 1000, 0) {
                            let _ = decoded.check_time(now, leeway);
                        }
                        if let Some(aud) = &decoded.claims.aud {
                            let _ = aud.contains("a");
                        }
                    }
                }
            }

            #[test]
            fn arbitrary_text_is_no_token(token in text()) {
                let _ = decode(&token);
            }

            #[test]
            fn pem_parsing_never_panics(
                text in text(),
                label in prop_oneof![
                    Just("PUBLIC KEY".to_owned()),
                    Just("RSA PUBLIC KEY".to_owned()),
                    text(),
                ],
                der in der(),
                wrap in 1usize..80,
            ) {
                let _ = rsa_public_key_from_pem(&text);
                let body = base64::engine::general_purpose::STANDARD.encode(&der);
                let lines: Vec<&str> = body
                    .as_bytes()
                    .chunks(wrap)
                    .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
                    .collect();
                let pem = format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"));
                let parsed = rsa_public_key_from_pem(&pem);
                if label == "RSA PUBLIC KEY" {
                    prop_assert_eq!(parsed, Ok(der.clone()));
                }
                let _ = spki_rsa_key(&der);
                let _ = der_element(&der, 0x30);
            }
        }
    }
}
