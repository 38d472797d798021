//! Targets for the four verifiers (src/ingress/verify/), JWT and DER decoding, and Connect's
//! `qsh` canonicalization. Each runs the verifier on the raw input, then on a request signed
//! properly from the same input: what is signed with a live secret must verify, and nothing
//! may verify with a secret that is not live.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use ring::hmac;

use super::{complete, fields, qsh_spec, text};
use crate::config::{Secret, SourceSecret, standard_webhooks_key};
use crate::ingress::verify::connect_jwt::InstallationLookup;
use crate::ingress::verify::{
    RequestParts, Verified, VerifyError, connect_jwt, hub_signature, jwt, qsh, standard_webhooks, url_token,
};
use crate::store::{Installation, StoreError};

/// The fixed instant the targets verify at (the Standard Webhooks specification's example).
const NOW: i64 = 1_614_265_330;
const LIVE_SECRET: &str = "fuzz-live-secret-0123456789";
const RETIRED_SECRET: &str = "fuzz-retired-secret-0123456789";
/// The Standard Webhooks specification's example key.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CLIENT_KEY: &str = "fuzz-client";
const SHARED_SECRET: &str = "fuzz-shared-secret-0123456789abcdef";
/// The RSA key the Connect fixtures were signed with (tests/fixtures/connect).
const INSTALL_KEY_PEM: &str = include_str!("../../tests/fixtures/connect/install-key.public.pem");

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(NOW, 0).single().unwrap_or_default()
}

/// A live secret and one whose rotation ended before [`NOW`].
fn secrets(live: &str, retired: &str) -> Vec<SourceSecret> {
    vec![
        SourceSecret {
            id: "retired".into(),
            value: Secret::new(retired),
            not_after: Utc.timestamp_opt(NOW - 1, 0).single(),
        },
        SourceSecret {
            id: "live".into(),
            value: Secret::new(live),
            not_after: None,
        },
    ]
}

/// Adds `name: value` when the value is a valid header value (the HTTP layer refuses the rest).
fn insert(headers: &mut HeaderMap, name: &'static str, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.append(HeaderName::from_static(name), value);
    }
}

fn request<'a>(
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    body: &'a [u8],
) -> RequestParts<'a> {
    RequestParts {
        method,
        path,
        query,
        headers,
        body,
    }
}

fn assert_live(result: &Result<Verified, VerifyError>) {
    if let Ok(verified) = result {
        assert_eq!(verified.key_id, "live", "a retired secret verified a delivery");
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
        .as_ref()
        .to_vec()
}

/// `X-Hub-Signature-256 value \n X-Hub-Signature value \n body`.
pub fn hub_signature(data: &[u8]) {
    let [sha256_header, plain_header, body] = fields::<3>(data);
    let secrets = secrets(LIVE_SECRET, RETIRED_SECRET);
    let mut headers = HeaderMap::new();
    insert(&mut headers, "x-hub-signature-256", sha256_header);
    insert(&mut headers, "x-hub-signature", plain_header);
    let result = hub_signature::verify(
        &secrets,
        &request(&Method::POST, "/", None, &headers, body),
        now(),
    );
    assert_live(&result);

    // Signed with the live secret: accepted, under either header name.
    let good = format!(
        "sha256={}",
        hex::encode(hmac_sha256(LIVE_SECRET.as_bytes(), body))
    );
    for name in ["x-hub-signature-256", "x-hub-signature"] {
        let mut headers = HeaderMap::new();
        insert(&mut headers, name, good.as_bytes());
        let verified = hub_signature::verify(
            &secrets,
            &request(&Method::POST, "/", None, &headers, body),
            now(),
        );
        assert_eq!(verified.map(|v| v.key_id), Ok("live".to_owned()));
    }
    // Signed with the retired one: refused.
    let stale = format!(
        "sha256={}",
        hex::encode(hmac_sha256(RETIRED_SECRET.as_bytes(), body))
    );
    let mut headers = HeaderMap::new();
    insert(&mut headers, "x-hub-signature-256", stale.as_bytes());
    let refused = hub_signature::verify(
        &secrets,
        &request(&Method::POST, "/", None, &headers, body),
        now(),
    );
    assert_eq!(refused, Err(VerifyError::BadSignature));
}

/// `webhook-id \n webhook-timestamp \n webhook-signature \n body`; a leading `!` on the id sends
/// the `svix-*` spelling.
pub fn standard_webhooks(data: &[u8]) {
    let [id, timestamp, signature, body] = fields::<4>(data);
    let (prefix, id) = match id.strip_prefix(b"!") {
        Some(rest) => ("svix", rest),
        None => ("webhook", id),
    };
    let secrets = vec![
        SourceSecret {
            id: "retired".into(),
            value: Secret::new("whsec_cmV0aXJlZC1maXh0dXJlLWtleS0wMTIzNDU2Nzg5"),
            not_after: Utc.timestamp_opt(NOW - 1, 0).single(),
        },
        SourceSecret {
            id: "live".into(),
            value: Secret::new(WHSEC),
            not_after: None,
        },
    ];
    let mut headers = HeaderMap::new();
    let names: [&'static str; 3] = if prefix == "svix" {
        ["svix-id", "svix-timestamp", "svix-signature"]
    } else {
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    };
    insert(&mut headers, names[0], id);
    insert(&mut headers, names[1], timestamp);
    insert(&mut headers, names[2], signature);
    let result = standard_webhooks::verify(
        &secrets,
        300,
        &request(&Method::POST, "/", None, &headers, body),
        now(),
    );
    assert_live(&result);

    // Signed properly (for the id as the HTTP layer hands it over, and a time in the window):
    // accepted, alone or listed among other signatures.
    let Ok(key) = standard_webhooks_key(WHSEC) else {
        panic!("the specification's key is a valid key");
    };
    let Some(id) = HeaderValue::from_bytes(id)
        .ok()
        .and_then(|v| v.to_str().ok().map(|v| v.trim().to_owned()))
        .filter(|v| !v.is_empty())
    else {
        return;
    };
    let at = std::str::from_utf8(timestamp)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .filter(|t| (NOW - 300..=NOW + 300).contains(t))
        .unwrap_or(NOW);
    let good = standard_webhooks::sign(&key, &id, at, body);
    let listed = format!("v1,AAAA v2,xyz {good}");
    for signatures in [good.as_str(), listed.as_str()] {
        let mut headers = HeaderMap::new();
        insert(&mut headers, names[0], id.as_bytes());
        insert(&mut headers, names[1], at.to_string().as_bytes());
        insert(&mut headers, names[2], signatures.as_bytes());
        let verified = standard_webhooks::verify(
            &secrets,
            300,
            &request(&Method::POST, "/", None, &headers, body),
            now(),
        );
        assert_eq!(verified.map(|v| v.key_id), Ok("live".to_owned()));
    }
}

/// The whole input is the presented token.
pub fn url_token(data: &[u8]) {
    let token = text(data);
    let secrets = secrets(LIVE_SECRET, RETIRED_SECRET);
    let result = url_token::verify(&secrets, Some(&token), now());
    assert_live(&result);
    if result.is_ok() {
        assert_eq!(token, LIVE_SECRET);
    }
    assert_eq!(
        url_token::verify(&secrets, Some(LIVE_SECRET), now()).map(|v| v.key_id),
        Ok("live".to_owned())
    );
    assert_eq!(
        url_token::verify(&secrets, Some(RETIRED_SECRET), now()),
        Err(VerifyError::BadSignature)
    );
}

/// One installation, in memory.
struct FuzzInstallations(HashMap<String, Arc<Installation>>);

#[async_trait::async_trait]
impl InstallationLookup for FuzzInstallations {
    async fn installation(&self, client_key: &str) -> Result<Option<Arc<Installation>>, StoreError> {
        Ok(self.0.get(client_key).cloned())
    }
}

fn installations() -> &'static FuzzInstallations {
    static INSTALLATIONS: OnceLock<FuzzInstallations> = OnceLock::new();
    INSTALLATIONS.get_or_init(|| {
        let installation = Installation {
            client_key: CLIENT_KEY.into(),
            shared_secret: Secret::new(SHARED_SECRET),
            base_url: "https://fuzz.atlassian.net/wiki".into(),
            cloud_id: Some("fuzz-cloud".into()),
            installed_at: Utc.timestamp_opt(NOW - 86_400, 0).single().unwrap_or_default(),
        };
        FuzzInstallations(HashMap::from([(CLIENT_KEY.to_owned(), Arc::new(installation))]))
    })
}

/// `method \n path \n query \n Authorization value \n claims JSON`: the request as sent, then the
/// same request with a token signed for it from the claims.
pub fn connect_jwt(data: &[u8]) {
    let [method, path, query, authorization, claims] = fields::<5>(data);
    let method = Method::from_bytes(method).unwrap_or(Method::POST);
    let path = text(path);
    let query = (!query.is_empty()).then(|| text(query));
    let mut headers = HeaderMap::new();
    insert(&mut headers, "authorization", authorization);
    let base_path = if path.starts_with("/atlassian") {
        "/atlassian"
    } else {
        ""
    };
    let lookup = installations();
    let as_sent = request(&method, &path, query.as_deref(), &headers, b"{}");
    let result = complete(connect_jwt::verify(lookup, 30, base_path, &as_sent, now()));
    if let Ok(verified) = &result {
        assert_eq!(verified.client_key.as_deref(), Some(CLIENT_KEY));
    }

    // A token signed for this very request verifies; for another method it does not.
    let mut claims = match serde_json::from_slice::<serde_json::Value>(claims) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let request_qsh = qsh::qsh(method.as_str(), &path, query.as_deref(), base_path);
    // `aud` is read (and a malformed one refused) before anything else: leave it out.
    claims.remove("aud");
    claims.insert("iss".into(), CLIENT_KEY.into());
    claims.insert("iat".into(), (NOW - 5).into());
    claims.insert("exp".into(), (NOW + 60).into());
    claims.insert("qsh".into(), request_qsh.into());
    let token = jwt::encode_hs256(&serde_json::Value::Object(claims), SHARED_SECRET.as_bytes());
    let mut headers = HeaderMap::new();
    insert(&mut headers, "authorization", format!("JWT {token}").as_bytes());
    let signed = request(&method, &path, query.as_deref(), &headers, b"{}");
    let verified = complete(connect_jwt::verify(lookup, 30, base_path, &signed, now()));
    assert_eq!(verified.map(|v| v.key_id), Ok(CLIENT_KEY.to_owned()));
    // The method is canonicalized in upper case: `pUT` is `PUT` to the qsh.
    let other_method = if method.as_str().eq_ignore_ascii_case("PUT") {
        Method::PATCH
    } else {
        Method::PUT
    };
    let replayed = request(&other_method, &path, query.as_deref(), &headers, b"{}");
    assert_eq!(
        complete(connect_jwt::verify(lookup, 30, base_path, &replayed, now())),
        Err(VerifyError::QshMismatch)
    );
    // The same token in the `jwt` query parameter instead of the header.
    let in_query = match &query {
        Some(q) => format!("{q}&jwt={token}"),
        None => format!("jwt={token}"),
    };
    let empty = HeaderMap::new();
    let _ = complete(connect_jwt::verify(
        lookup,
        30,
        base_path,
        &request(&method, &path, Some(&in_query), &empty, b"{}"),
        now(),
    ));
}

fn install_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| jwt::rsa_public_key_from_pem(INSTALL_KEY_PEM).unwrap_or_default())
}

/// The input as a compact JWT (decoding, both signature checks, the time and audience checks),
/// then as the DER of a public key (PEM-wrapped, as a key server would send it) and as PEM text.
pub fn jwt_and_der(data: &[u8]) {
    let token = text(data);
    if let Ok(decoded) = jwt::decode(token.trim()) {
        let hs256 = decoded.verify_hs256(SHARED_SECRET.as_bytes());
        let rs256 = decoded.verify_rs256(install_key());
        // The algorithm is pinned by the caller: never both.
        assert!(hs256.is_err() || rs256.is_err());
        if decoded.header.alg != "HS256" {
            assert!(matches!(hs256, Err(VerifyError::WrongAlgorithm(_))));
        }
        if decoded.header.alg != "RS256" {
            assert!(matches!(rs256, Err(VerifyError::WrongAlgorithm(_))));
        }
        for leeway in [0, 30, u64::MAX] {
            let _ = decoded.check_time(now(), leeway);
        }
        if let Some(audience) = &decoded.claims.aud {
            let _ = audience.contains("https://gatehouse.example.com/atlassian");
        }
    }
    let body = base64::engine::general_purpose::STANDARD.encode(data);
    for label in ["PUBLIC KEY", "RSA PUBLIC KEY"] {
        let pem = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
        match jwt::rsa_public_key_from_pem(&pem) {
            // An RSAPublicKey is passed through as it is.
            Ok(key) if label == "RSA PUBLIC KEY" => assert_eq!(key, data),
            Ok(key) => assert!(key.len() < data.len()),
            Err(_) => {}
        }
    }
    let _ = jwt::rsa_public_key_from_pem(&token);
}

/// `method \n path \n query \n base path`: the canonical request is deterministic, well formed,
/// independent of the parameters' order, and the same as the one written from Atlassian's
/// specification ([`qsh_spec`]).
pub fn qsh_canonical(data: &[u8]) {
    let [method, path, query, base] = fields::<4>(data).map(text);
    let query = (!query.is_empty()).then_some(query.as_str());
    let canonical = qsh::canonical_request(&method, &path, query, &base);
    assert_eq!(canonical, qsh::canonical_request(&method, &path, query, &base));
    assert!(canonical.starts_with(&format!("{}&", method.to_ascii_uppercase())));
    let hash = qsh::qsh(&method, &path, query, &base);
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(query) = query {
        let reversed: Vec<&str> = query.split('&').rev().collect();
        let reversed = reversed.join("&");
        assert_eq!(
            qsh::canonical_request(&method, &path, Some(&reversed), &base),
            canonical,
            "parameter order changed the canonical query"
        );
    }
    if qsh_spec::in_scope(&method, &path, query, &base) {
        assert_eq!(
            canonical,
            qsh_spec::canonical_request(&method, &path, query, &base),
            "gatehouse and the specification disagree"
        );
    }
}
