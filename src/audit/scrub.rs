//! The last line of defence against secrets in the trail: every free-text field of a record (and
//! `account_id`) is scrubbed before it is written, because error strings from HTTP clients and
//! brokers are where credentials leak by accident.
//!
//! Removed, each replaced by `***`:
//! - the exact value of every secret the process was configured with (see [`secrets_in`]), at
//!   least [`MIN_SECRET_LEN`] bytes long;
//! - credentials after `Bearer ` and `Basic ` (any case), and the value of headers
//!   whose name says authorization, token, secret, key, signature or password;
//! - passwords in URLs (`scheme://user:***@host`) and the values of query parameters whose name
//!   says token, secret, key, password, signature or sig;
//! - the token of `url-token` webhook paths (`/webhooks/{source}/t/***`);
//! - anything shaped like a JWT (`eyJ….….…`) and Standard Webhooks keys (`whsec_…`).
//!
//! Writers must still not put secrets into records; this catches the mistakes.

use super::record::NewRecord;
use crate::config::{Secret, Settings};

/// Shorter configured secrets are not matched literally (they would redact ordinary words).
pub const MIN_SECRET_LEN: usize = 8;

const REDACTED: &str = "***";

/// Every secret value in `settings` that could end up quoted in an error message. New config
/// sections holding secrets must be listed here.
pub fn secrets_in(settings: &Settings) -> Vec<Secret> {
    let mut secrets: Vec<Secret> = settings
        .sources
        .iter()
        .flat_map(|s| s.secrets.iter().map(|s| s.value.clone()))
        .collect();
    secrets.extend(settings.audit.hash_key.clone());
    secrets.extend(settings.audit.api_token.clone());
    secrets.extend(settings.store.encryption_key.clone());
    if let Some(atlassian) = &settings.atlassian {
        secrets.extend(atlassian.secrets());
    }
    let urls = [settings.queue.url.expose(), settings.store.url.expose()];
    for url in urls {
        if let Ok(parsed) = url::Url::parse(url)
            && let Some(password) = parsed.password()
        {
            let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
            secrets.push(Secret::new(decoded.into_owned()));
            secrets.push(Secret::new(password.to_owned()));
        }
    }
    secrets
}

/// Scrubs records with a fixed list of known secret values plus the patterns above.
#[derive(Clone, Default)]
pub struct Scrubber {
    known: Vec<Secret>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("known_secrets", &self.known.len())
            .finish()
    }
}

impl Scrubber {
    pub fn new(known: impl IntoIterator<Item = Secret>) -> Self {
        let mut known: Vec<Secret> = known
            .into_iter()
            .filter(|s| s.expose().len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret that contains another is removed whole; each once.
        known.sort_by(|a, b| (b.expose().len(), b.expose()).cmp(&(a.expose().len(), a.expose())));
        known.dedup_by(|a, b| a.expose() == b.expose());
        Scrubber { known }
    }

    pub fn apply_record(&self, record: &mut NewRecord) {
        if let Some(account) = record.account_id.as_mut() {
            *account = self.apply(account);
        }
        for text in record.free_text_mut() {
            *text = self.apply(text);
        }
    }

    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.known {
            if out.contains(secret.expose()) {
                out = out.replace(secret.expose(), REDACTED);
            }
        }
        redact_following(&mut out, &["bearer ", "basic "]);
        redact_headers(&mut out);
        redact_url_parts(&mut out);
        redact_token_paths(&mut out);
        redact_shaped_tokens(&mut out);
        out
    }
}

/// Characters a credential token is made of.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/=%:".contains(c)
}

/// The byte length of the token starting at `text`.
fn token_len(text: &str) -> usize {
    text.find(|c: char| !is_token_char(c)).unwrap_or(text.len())
}

/// Case-insensitive ASCII search from `from`.
fn find_ci(haystack: &str, needle: &str, from: usize) -> Option<usize> {
    let h = haystack.as_bytes();
    let n = needle.as_bytes();
    (from..=h.len().checked_sub(n.len())?).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Replaces `out[start..start + len]` with [`REDACTED`] unless it is empty or redacted already;
/// where to search on from when it did.
fn redact_at(out: &mut String, start: usize, len: usize) -> Option<usize> {
    if len == 0 || &out[start..start + len] == REDACTED {
        return None;
    }
    out.replace_range(start..start + len, REDACTED);
    Some(start + REDACTED.len())
}

/// Replaces the token that follows each of `prefixes` (matched case-insensitively, at a word start).
fn redact_following(out: &mut String, prefixes: &[&str]) {
    for prefix in prefixes {
        let mut from = 0;
        while let Some(at) = find_ci(out, prefix, from) {
            let word_start = at == 0 || !out.as_bytes()[at - 1].is_ascii_alphanumeric();
            let token_start = at + prefix.len();
            let len = token_len(&out[token_start..]);
            let redacted = if word_start {
                redact_at(out, token_start, len)
            } else {
                None
            };
            from = redacted.unwrap_or(token_start);
        }
    }
}

/// `authorization: …`, `x-gatehouse-token=…`, `"api_key": "…"`.
fn redact_headers(out: &mut String) {
    const NAMES: &[&str] = &["authorization", "token", "secret", "key", "signature", "password"];
    for name in NAMES {
        let mut from = 0;
        while let Some(at) = find_ci(out, name, from) {
            let mut i = at + name.len();
            // A header or field name ends with the word; skip `"`, spaces, `:` or `=`.
            let bytes = out.as_bytes();
            let name_end = i >= bytes.len() || !(bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_');
            let mut separator = false;
            while i < bytes.len() && matches!(bytes[i], b'"' | b'\'' | b' ' | b':' | b'=') {
                separator |= matches!(bytes[i], b':' | b'=');
                i += 1;
            }
            // `Authorization: Bearer x` is handled by the scheme rule; skip the scheme word.
            let rest = &out[i..];
            for scheme in ["bearer ", "basic "] {
                if rest.len() >= scheme.len() && rest[..scheme.len()].eq_ignore_ascii_case(scheme) {
                    i += scheme.len();
                }
            }
            let len = token_len(&out[i..]);
            let redacted = if name_end && separator {
                redact_at(out, i, len)
            } else {
                None
            };
            from = redacted.unwrap_or(at + name.len());
        }
    }
}

/// URL passwords and secret-named query parameters.
fn redact_url_parts(out: &mut String) {
    // scheme://user:password@host
    let mut from = 0;
    while let Some(offset) = out[from..].find("://") {
        let start = from + offset + 3;
        let authority_len = out[start..]
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(out.len() - start);
        let authority = &out[start..start + authority_len];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
            && &authority[colon + 1..at] != REDACTED
        {
            out.replace_range(start + colon + 1..start + at, REDACTED);
        }
        from = start;
    }
    // ?token=… &sig=…
    const NAMES: &[&str] = &["token", "secret", "key", "password", "signature", "sig", "jwt"];
    let mut from = 0;
    while let Some(offset) = out[from..].find(['?', '&']) {
        let start = from + offset + 1;
        let Some(eq) = out[start..].find('=') else { break };
        let name = &out[start..start + eq];
        let value_start = start + eq + 1;
        let value_len = out[value_start..]
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(out.len() - value_start);
        let secret_name = !name.is_empty()
            && name.len() < 40
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && NAMES.iter().any(|n| name.to_ascii_lowercase().contains(n));
        let redacted = if secret_name {
            redact_at(out, value_start, value_len)
        } else {
            None
        };
        from = redacted.unwrap_or(start);
    }
}

/// `/webhooks/{source}/t/{token}`: the path segment after `/t/`.
fn redact_token_paths(out: &mut String) {
    let mut from = 0;
    while let Some(offset) = out[from..].find("/webhooks/") {
        let start = from + offset + "/webhooks/".len();
        let source_len = out[start..].find('/').unwrap_or(out.len() - start);
        let after_source = start + source_len;
        if out[after_source..].starts_with("/t/") {
            let token_start = after_source + 3;
            let len = out[token_start..]
                .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
                .unwrap_or(out.len() - token_start);
            redact_at(out, token_start, len);
        }
        from = start;
    }
}

/// JWTs (`eyJ` + two more dot-separated base64url parts) and `whsec_` keys.
fn redact_shaped_tokens(out: &mut String) {
    redact_following(out, &["whsec_"]);
    if !out.contains("eyJ") {
        return;
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("eyJ") {
        let candidate = &rest[at..];
        let len = candidate
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(candidate.len());
        let token = &candidate[..len];
        let boundary = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        if boundary && token.split('.').count() >= 3 {
            result.push_str(&rest[..at]);
            result.push_str(REDACTED);
        } else {
            result.push_str(&rest[..at + len.max(3)]);
        }
        rest = &rest[at + len.max(3)..];
    }
    result.push_str(rest);
    *out = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(text: &str) -> String {
        Scrubber::new([Secret::new("hunter2-configured-secret")]).apply(text)
    }

    #[test]
    fn configured_secrets_are_removed() {
        assert_eq!(scrub("got hunter2-configured-secret back"), "got *** back");
        // Too short to match literally.
        assert_eq!(Scrubber::new([Secret::new("abc")]).apply("abc"), "abc");
    }

    #[test]
    fn credentials_in_headers_and_schemes() {
        assert_eq!(
            scrub("Authorization: Bearer abc.def-ghi"),
            "Authorization: Bearer ***"
        );
        assert_eq!(
            scrub("sent basic dXNlcjpwYXNz and failed"),
            "sent basic *** and failed"
        );
        assert_eq!(scrub("x-gatehouse-token: s3cr3t-value"), "x-gatehouse-token: ***");
        assert_eq!(scrub(r#"{"api_key": "k-123"}"#), r#"{"api_key": "***"}"#);
        // Words that merely contain the names are kept.
        assert_eq!(scrub("the token was refused"), "the token was refused");
        assert_eq!(scrub("keyboard: fine"), "keyboard: fine");
    }

    #[test]
    fn urls_lose_passwords_tokens_and_token_paths() {
        assert_eq!(
            scrub(
                "error sending request for url (https://bot:pw@api.example.com/x?limit=5&access_token=abc#f)"
            ),
            "error sending request for url (https://bot:***@api.example.com/x?limit=5&access_token=***#f)"
        );
        assert_eq!(
            scrub("POST http://h/webhooks/guard/t/tok-123/user_created failed"),
            "POST http://h/webhooks/guard/t/***/user_created failed"
        );
    }

    #[test]
    fn jwts_and_webhook_keys() {
        assert_eq!(
            scrub("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-part_x rejected"),
            "jwt *** rejected"
        );
        assert_eq!(
            scrub("key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "key whsec_***"
        );
        assert_eq!(scrub("eyJ alone"), "eyJ alone");
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        for text in [
            "group:g1/account:557058:abc",
            "confluence.remove_member",
            "HTTP 404 from https://example.atlassian.net/wiki/rest/api/group/x",
            "ok",
            "",
        ] {
            assert_eq!(scrub(text), text);
        }
    }
}
