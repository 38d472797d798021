//! Signing deliveries the way each sender does, independently of the verifiers under test
//! (HMACs computed with ring directly; Connect tokens built here).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::{hmac, rand, signature};

pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// The dedupe key gatehouse gives a hub-signed body under `source`: the body's SHA-256, whichever
/// of the source's secrets signed it.
pub fn hub_dedupe_key(source: &str, body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!("{source}:sha256:{}", hex::encode(digest.as_ref()))
}

/// Standard Webhooks headers for a `whsec_…` secret, signed at `timestamp`.
pub fn standard_webhooks(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let signature = STANDARD.encode(hmac::sign(&key, &signed).as_ref());
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", format!("v1,{signature}")),
    ]
}

/// A Connect qsh, written from Atlassian's description (independent of gatehouse's).
pub fn qsh(method: &str, path: &str, query: &str) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "jwt")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    let mut names: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    names.dedup();
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string();
    let query = names
        .iter()
        .map(|name| {
            let values: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| enc(v))
                .collect();
            format!("{}={}", enc(name), values.join(","))
        })
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!("{}&{}&{}", method.to_uppercase(), path, query);
    hex::encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 Connect token.
pub fn connect_hs256(claims: serde_json::Value, secret: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("{input}.{}", b64(hmac::sign(&key, input.as_bytes()).as_ref()))
}

/// An RS256 token signed with the throwaway test key in tests/fixtures/connect.
pub fn connect_rs256(claims: serde_json::Value, kid: &str) -> String {
    let der = include_bytes!("../../fixtures/connect/install-key.private.pk8");
    let key = signature::RsaKeyPair::from_pkcs8(der).unwrap();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Slack's request signature headers: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn slack(signing_secret: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, signing_secret.as_bytes());
    let mut signed = format!("v0:{timestamp}:").into_bytes();
    signed.extend_from_slice(body);
    vec![
        ("x-slack-request-timestamp", timestamp.to_string()),
        (
            "x-slack-signature",
            format!("v0={}", hex::encode(hmac::sign(&key, &signed).as_ref())),
        ),
    ]
}
