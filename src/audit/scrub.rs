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
//! The result is stable: scrubbing scrubbed text changes nothing (see [`Scrubber::apply`]).
//!
//! Writers must still not put secrets into records; this catches the mistakes.

use super::record::NewRecord;
use crate::config::{Secret, Settings};

/// Shorter configured secrets are not matched literally (they would redact ordinary words).
pub const MIN_SECRET_LEN: usize = 8;

const REDACTED: &str = "***";

/// Passes of the rules before text that keeps changing is replaced whole (see [`Scrubber::apply`]).
const MAX_PASSES: usize = 8;

/// The authorization schemes whose credential follows them.
const SCHEMES: [&str; 2] = ["bearer ", "basic "];

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
    secrets.extend(settings.store.retired_encryption_keys.iter().cloned());
    secrets.extend(
        settings
            .outbound
            .iter()
            .flat_map(|endpoint| endpoint.secrets.iter().map(|s| s.value.clone())),
    );
    if let Some(slack) = &settings.approvals.slack {
        secrets.push(slack.signing_secret.clone());
        secrets.extend(slack.bot_token.clone());
        secrets.extend(slack.webhook_url.clone());
    }
    // Every tenant's credentials, whichever way the tenants are configured.
    for (_, tenant) in settings.tenant_configs() {
        secrets.extend(tenant.secrets());
    }
    let urls = settings
        .queue
        .url
        .iter()
        .map(|url| url.expose())
        .chain([settings.store.url.expose()]);
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

    /// `text` with every secret replaced. The result is stable: scrubbing it again changes
    /// nothing, and no configured secret is left in it.
    ///
    /// One pass runs the rules in order, and a replacement can reveal a match for a rule that
    /// already ran (a `whsec_` key removed from inside a URL lets the URL's authority run on to
    /// the next `@`; a redaction can complete a configured secret that starts or ends with `*`).
    /// So passes repeat until one changes nothing. Every replacement turns something that is not
    /// `***` into `***`, so that comes quickly; text still changing after `MAX_PASSES` (only
    /// crafted text gets there) is replaced whole, failing towards hiding.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for _ in 0..MAX_PASSES {
            let next = self.pass(&out);
            if next == out {
                return out;
            }
            out = next;
        }
        REDACTED.to_owned()
    }

    /// Every rule once, in order.
    fn pass(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.known {
            if out.contains(secret.expose()) {
                out = out.replace(secret.expose(), REDACTED);
            }
        }
        redact_following(&mut out, &SCHEMES);
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

/// Does `text` have `word` (ASCII, any case) at byte `at`? Compared as bytes, because what
/// follows `at` may be a multi-byte character; a match is ASCII, so it ends on a char boundary.
fn has_word_at(text: &str, at: usize, word: &str) -> bool {
    text.as_bytes()
        .get(at..at + word.len())
        .is_some_and(|found| found.eq_ignore_ascii_case(word.as_bytes()))
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
/// A prefix written twice (`Bearer Bearer x`, a client adding the scheme to a value that had it)
/// is not the credential: the token after the last one is.
///
/// Every occurrence is found in the text as it was before any replacement, so a token that runs
/// into the next prefix (`bearer x/Bearer y`) hides neither that prefix nor the token after it.
fn redact_following(out: &mut String, prefixes: &[&str]) {
    let mut spans = Vec::new();
    for prefix in prefixes {
        let mut from = 0;
        while let Some(at) = find_ci(out, prefix, from) {
            from = at + 1;
            let word_start = at == 0 || !out.as_bytes()[at - 1].is_ascii_alphanumeric();
            let token_start = at + prefix.len();
            let repeated = prefixes.iter().any(|p| has_word_at(out, token_start, p));
            if word_start && !repeated {
                spans.push((token_start, token_start + token_len(&out[token_start..])));
            }
        }
    }
    redact_spans(out, spans);
}

/// Replaces each `(start, end)` byte span of `out` (char boundaries) with [`REDACTED`];
/// overlapping spans become one, empty ones and those redacted already are left alone.
fn redact_spans(out: &mut String, mut spans: Vec<(usize, usize)>) {
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    // Back to front, so the offsets still to be used stay valid.
    for (start, end) in merged.into_iter().rev() {
        redact_at(out, start, end - start);
    }
}

/// `authorization: …`, `x-gatehouse-token=…`, `"api_key": "…"`. Like the schemes, every name is
/// found in the text as it was before any replacement (`key: a/key: b` loses both values).
fn redact_headers(out: &mut String) {
    const NAMES: &[&str] = &["authorization", "token", "secret", "key", "signature", "password"];
    let mut spans = Vec::new();
    for name in NAMES {
        let mut from = 0;
        while let Some(at) = find_ci(out, name, from) {
            from = at + name.len();
            let mut i = at + name.len();
            // A header or field name ends with the word; skip `"`, spaces, `:` or `=`.
            let bytes = out.as_bytes();
            let name_end = i >= bytes.len() || !(bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_');
            let mut separator = false;
            while i < bytes.len() && matches!(bytes[i], b'"' | b'\'' | b' ' | b':' | b'=') {
                separator |= matches!(bytes[i], b':' | b'=');
                i += 1;
            }
            // `Authorization: Bearer x` is handled by the scheme rule; skip the scheme word(s).
            while let Some(scheme) = SCHEMES.iter().find(|scheme| has_word_at(out, i, scheme)) {
                i += scheme.len();
            }
            if name_end && separator {
                spans.push((i, i + token_len(&out[i..])));
            }
        }
    }
    redact_spans(out, spans);
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
    fn every_tenants_credentials_are_known_secrets() {
        let mut settings = Settings::default();
        for name in ["prod", "sandbox"] {
            let mut tenant = crate::config::AtlassianSettings::new(None);
            tenant.name = Some(name.to_owned());
            tenant.scim_token = Some(Secret::new(format!("{name}-scim-token-0123456789")));
            settings.tenants.push(tenant);
        }
        let scrubber = Scrubber::new(secrets_in(&settings));
        assert_eq!(
            scrubber.apply("sandbox-scim-token-0123456789 and prod-scim-token-0123456789"),
            "*** and ***"
        );
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

    #[test]
    fn multi_byte_text_after_a_name_or_scheme() {
        // Used to slice inside `é` while looking for a scheme word after `key: `, and panic.
        for text in ["key: éééé", "Authorization: ééé", "token=é", "key: bearer é"] {
            assert_eq!(scrub(text), text);
        }
        assert_eq!(scrub("secret: Bearé"), "secret: ***é");
        assert_eq!(scrub("key: Basic é€x"), "key: Basic é€x");
        assert_eq!(scrub("token=é bearer ab"), "token=é bearer ***");
    }

    #[test]
    fn a_credential_is_never_hidden_by_the_one_before() {
        assert_eq!(
            scrub("Authorization: Bearer Bearer tok-1"),
            "Authorization: Bearer Bearer ***"
        );
        assert_eq!(scrub("bearer https://Bearer tok-1"), "bearer *** ***");
        assert_eq!(scrub("key: a/key: tok-1"), "key: *** ***");
        assert_eq!(scrub("token: key: tok-1"), "token: *** ***");
    }

    #[test]
    fn scrubbing_is_stable() {
        // One pass: the `whsec_` rule removes the `/` that ended the second URL's authority, so
        // a second pass found a password running from `u:` to the last `@`.
        let text = "://u:p@h@whsec_://u:p@hbearer ";
        let once = scrub(text);
        assert_eq!(once, "://u:***@hbearer ");
        assert_eq!(scrub(&once), once);
        // A redaction completing a configured secret made of `*`.
        let stars = Scrubber::new([Secret::new("********")]);
        assert_eq!(stars.apply("x *************"), "x ***");
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// What the rules look for, and what trips up byte offsets: glued together in random
        /// order these reach far more near-misses than arbitrary text does.
        const PIECES: &[&str] = &[
            "bearer ",
            "Bearer ",
            "BASIC ",
            "Basic ",
            "basic",
            "key:",
            "key: ",
            "Key=",
            "Authorization: ",
            "token=",
            "x-api-key=",
            "\"api_key\": \"",
            "password",
            "://u:p@h",
            "https://",
            "http://",
            "@",
            ":",
            "?sig=",
            "&token=",
            "?jwt=",
            "?",
            "&",
            "=",
            "/webhooks/",
            "/webhooks/x/t/",
            "/t/",
            "/",
            "eyJ",
            "eyJhbGciOiJIUzI1NiJ9",
            ".",
            "whsec_",
            "***",
            "*",
            " ",
            "\"",
            "'",
            "#",
            "é",
            "ééé",
            "€",
            "😀",
            "\u{0}",
            "\n",
            "\u{2}",
            "hunter2-configured-secret",
        ];

        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => prop::sample::select(PIECES).prop_map(str::to_owned),
                2 => "[A-Za-z0-9_.~+/=%:-]{1,6}",
                1 => any::<char>().prop_map(String::from),
            ]
        }

        /// Arbitrary Unicode, arbitrary bytes (lossily decoded, as a client's error text may
        /// be), or pieces.
        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..64)
                    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                prop::collection::vec(piece(), 0..16).prop_map(|pieces| pieces.concat()),
            ]
        }

        /// Text after which a word starts (`xBearer` is not the scheme).
        fn word_end() -> impl Strategy<Value = String> {
            (
                text(),
                prop::sample::select(&[' ', '(', '"', '=', '/', 'é', '\n'][..]),
            )
                .prop_map(|(mut text, separator)| {
                    if text.ends_with(|c: char| c.is_ascii_alphanumeric()) {
                        text.push(separator);
                    }
                    text
                })
        }

        fn scrubbers() -> [Scrubber; 2] {
            [
                Scrubber::default(),
                Scrubber::new([Secret::new("hunter2-configured-secret")]),
            ]
        }

        proptest! {
            #[test]
            fn never_panics_and_is_idempotent(text in text()) {
                for scrubber in scrubbers() {
                    let once = scrubber.apply(&text);
                    prop_assert_eq!(scrubber.apply(&once), once, "input {:?}", text);
                }
            }

            #[test]
            fn a_configured_secret_never_survives(
                secret in text().prop_filter("at least MIN_SECRET_LEN bytes", |s| s.len() >= MIN_SECRET_LEN),
                before in text(),
                after in text(),
            ) {
                let scrubber = Scrubber::new([Secret::new(secret.clone())]);
                let out = scrubber.apply(&format!("{before}{secret}{after}"));
                prop_assert!(!out.contains(&secret), "{:?} survived in {:?}", secret, out);
                prop_assert_eq!(scrubber.apply(&out), out.clone());
            }

            #[test]
            fn a_bearer_token_never_survives(
                before in word_end(),
                scheme in prop::sample::select(&["Bearer ", "bearer ", "BEARER ", "Basic "][..]),
                token in "[A-Za-z0-9._~+/=%:-]{8,40}",
                after in text(),
            ) {
                let out = Scrubber::default().apply(&format!("{before}{scheme}{token}{after}"));
                prop_assert!(!out.contains(&token), "{:?} survived in {:?}", token, out);
            }
        }
    }
}
