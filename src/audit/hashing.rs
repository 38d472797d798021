//! Keyed hashing of personal data before it is written, in the manner of Vault's audit hashing:
//! a value is replaced by `hmac-sha256:<hex>` (HMAC-SHA256 under `[audit] hash_key`), so the trail
//! can still be searched for a person (`gatehouse audit hash alice@example.com` gives the string
//! to look for) without holding their email or name in clear.
//!
//! What is hashed, in every free-text field of a record ([`NewRecord::free_text_mut`]: handler,
//! action type and target, outcome status and error, request id, warnings):
//! - `email`: anything shaped like an email address (`local@domain.tld`, in any script), found
//!   by scanning; lowercased before hashing, so the same address always gives the same hash;
//! - `display_name`: names the writer marked with [`pii`] (a display name cannot be recognized
//!   in free text, so the writer says where it is); trimmed before hashing.
//!
//! `account_id` is never hashed: it is an opaque Atlassian id, not personal data by itself, and
//! the key that queries by person use. Without a `hash_key` (or for a kind not listed in
//! `hash_fields`) values are written as they are and the [`pii`] markers are simply removed.

use std::collections::HashSet;

use ring::hmac;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::record::NewRecord;
use crate::config::{AuditSettings, PiiKind, Secret};

/// Opens a span of personal data in free text (see [`pii`]).
const PII_START: char = '\u{2}';
/// Closes it.
const PII_END: char = '\u{3}';

/// The prefix of every hashed value.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// Marks `value` (a display name) as personal data inside a writer's free text, e.g.
/// `format!("added {} to group", audit::pii(&name))`. The audit log replaces the marked span with
/// its HMAC, or with the plain value when hashing is off.
pub fn pii(value: &str) -> String {
    let clean: String = value
        .chars()
        .filter(|c| *c != PII_START && *c != PII_END)
        .collect();
    format!("{PII_START}{clean}{PII_END}")
}

/// Applies `[audit] hash_key` / `hash_fields` to records.
#[derive(Clone)]
pub struct PiiHasher {
    key: Option<hmac::Key>,
    kinds: HashSet<PiiKind>,
}

impl std::fmt::Debug for PiiHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiiHasher")
            .field("keyed", &self.key.is_some())
            .field("kinds", &self.kinds)
            .finish()
    }
}

impl PiiHasher {
    pub fn new(settings: &AuditSettings) -> Self {
        PiiHasher {
            key: settings.hash_key.as_ref().map(key_of),
            kinds: settings.hash_fields.iter().copied().collect(),
        }
    }

    fn hashes(&self, kind: PiiKind) -> Option<&hmac::Key> {
        self.key.as_ref().filter(|_| self.kinds.contains(&kind))
    }

    /// Rewrites every free-text field of `record`.
    pub fn apply_record(&self, record: &mut NewRecord) {
        for text in record.free_text_mut() {
            if text.contains(['@', PII_START, PII_END]) {
                *text = self.apply(text);
            }
        }
    }

    /// Rewrites one text: marked names first, then email addresses.
    pub fn apply(&self, text: &str) -> String {
        let unmarked = replace_marked(text, |name| match self.hashes(PiiKind::DisplayName) {
            Some(key) => hash_with(key, PiiKind::DisplayName, name),
            None => name.to_owned(),
        });
        match self.hashes(PiiKind::Email) {
            Some(key) => replace_emails(&unmarked, |email| hash_with(key, PiiKind::Email, email)),
            None => unmarked,
        }
    }
}

/// What `value` is written as under `key`: `hmac-sha256:<hex>` (for `gatehouse audit hash`).
/// An email is recognized by its shape and lowercased first; anything else is a display name.
pub fn lookup(key: &Secret, value: &str) -> String {
    let value = value.trim();
    let kind = if is_email(value) {
        PiiKind::Email
    } else {
        PiiKind::DisplayName
    };
    hash_with(&key_of(key), kind, value)
}

fn key_of(secret: &Secret) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes())
}

fn hash_with(key: &hmac::Key, kind: PiiKind, value: &str) -> String {
    let normalized = match kind {
        // Composed (NFC) after lowercasing (which can decompose): `jörg` written with a
        // combining mark is the same address.
        PiiKind::Email => value.trim().to_lowercase().nfc().collect(),
        PiiKind::DisplayName => value.trim().to_owned(),
    };
    let tag = hmac::sign(key, normalized.as_bytes());
    format!("{HASH_PREFIX}{}", hex::encode(tag.as_ref()))
}

/// Replaces each `PII_START…PII_END` span with `f(inner)`; a dangling start marker covers the rest
/// of the text (fail towards hiding), stray markers (an end outside a span, a start inside one)
/// are dropped, so none is left to be read as a span by a later pass.
fn replace_marked(text: &str, f: impl Fn(&str) -> String) -> String {
    if !text.contains(PII_START) && !text.contains(PII_END) {
        return text.to_owned();
    }
    let inner = |span: &str| -> String { span.chars().filter(|c| *c != PII_START).collect() };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(PII_START) {
        out.extend(rest[..start].chars().filter(|c| *c != PII_END));
        let after = &rest[start + PII_START.len_utf8()..];
        match after.find(PII_END) {
            Some(end) => {
                out.push_str(&f(&inner(&after[..end])));
                rest = &after[end + PII_END.len_utf8()..];
            }
            None => {
                out.push_str(&f(&inner(after)));
                rest = "";
            }
        }
    }
    out.extend(rest.chars().filter(|c| *c != PII_END));
    out
}

/// A character of an address's local part: letters and digits of any script (`jörg@…`, as
/// internationalized addresses have them), the combining marks that decomposed text writes
/// letters with (`jo\u{308}rg`), and ASCII's usual punctuation.
fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c) || "._%+-'".contains(c)
}

/// A character of an address's domain: letters and digits of any script (`müller.de`) and their
/// combining marks, `.`, `-`.
fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c) || c == '.' || c == '-'
}

/// The span of an email address around the `@` at byte `at` of `text`, if there is one. Its
/// ends are char boundaries.
fn email_at(text: &str, at: usize) -> Option<(usize, usize)> {
    let mut start = at;
    for (i, c) in text[..at].char_indices().rev() {
        if !is_local_char(c) {
            break;
        }
        start = i;
    }
    let mut end = at + 1;
    for (i, c) in text[at + 1..].char_indices() {
        if !is_domain_char(c) {
            break;
        }
        end = at + 1 + i + c.len_utf8();
    }
    while end > at + 1 && text[..end].ends_with(['.', '-']) {
        end -= 1;
    }
    while start < at && text[start..].starts_with('.') {
        start += 1;
    }
    let local = &text[start..at];
    let domain = &text[at + 1..end];
    let tld = domain.rsplit('.').next().unwrap_or_default();
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.contains("..")
        // Letters counted without their marks: `ü` composed or decomposed is one.
        && tld.chars().filter(|c| !is_combining_mark(*c)).count() >= 2
        && tld.starts_with(char::is_alphabetic)
        && tld.chars().all(|c| c.is_alphabetic() || is_combining_mark(c));
    ok.then_some((start, end))
}

fn is_email(value: &str) -> bool {
    value
        .find('@')
        .and_then(|at| email_at(value, at))
        .is_some_and(|(start, end)| start == 0 && end == value.len())
}

/// Replaces every email address in `text` with `f(address)`.
///
/// Addresses that share characters (`a@b.co@c.com`: `b.co` is the first one's domain and the
/// second one's local part) are replaced as one span. Replacing only the first would leave the
/// second's domain in clear, and its hash's hex digits would become the local part of a new
/// address (`hmac-sha256:…@c.com`) that hashing the result again would replace: hashing would
/// not be stable.
fn replace_emails(text: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    // The span being grown, replaced once the next address no longer overlaps it.
    let mut pending: Option<(usize, usize)> = None;
    let mut replace = |out: &mut String, (start, end): (usize, usize)| {
        out.push_str(&text[copied..start]);
        out.push_str(&f(&text[start..end]));
        copied = end;
    };
    for (at, _) in text.match_indices('@') {
        let Some((start, end)) = email_at(text, at) else {
            continue;
        };
        match &mut pending {
            Some((_, pending_end)) if start < *pending_end => *pending_end = end,
            _ => {
                if let Some(span) = pending.replace((start, end)) {
                    replace(&mut out, span);
                }
            }
        }
    }
    if let Some(span) = pending {
        replace(&mut out, span);
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(kinds: &[PiiKind]) -> PiiHasher {
        PiiHasher::new(&AuditSettings {
            hash_key: Some(Secret::new("0123456789abcdef-test-key")),
            hash_fields: kinds.to_vec(),
            ..AuditSettings::default()
        })
    }

    #[test]
    fn emails_are_found_and_hashed_case_insensitively() {
        let h = hasher(&[PiiKind::Email]);
        let out = h.apply("removed Alice.Smith+x@Example.COM from group (bob@example.org).");
        let alice = lookup(
            &Secret::new("0123456789abcdef-test-key"),
            "alice.smith+x@example.com",
        );
        let bob = lookup(&Secret::new("0123456789abcdef-test-key"), "bob@example.org");
        assert_eq!(out, format!("removed {alice} from group ({bob})."));
        assert!(alice.starts_with(HASH_PREFIX) && alice.len() == HASH_PREFIX.len() + 64);
    }

    /// Internationalized addresses (RFC 6531) are found whole: leaving `jö` of `jörg@…` in
    /// clear, or missing `bob@müller.de`, would keep them readable.
    #[test]
    fn addresses_in_any_script_are_found_whole() {
        let h = hasher(&[PiiKind::Email]);
        let key = Secret::new("0123456789abcdef-test-key");
        for address in ["jörg@firma.de", "bob@müller.de", "ИВАН@почта.рф"] {
            let out = h.apply(&format!("removed «{address}» from group"));
            assert_eq!(
                out,
                format!("removed «{}» from group", lookup(&key, address)),
                "{address}"
            );
        }
        // Decomposed text writes `ö` as `o` and a combining mark: the address is still found
        // whole (before, `jo` was left in clear), and it is the composed address's hash.
        for decomposed in [
            "jo\u{308}rg@firma.de",
            "bob@mu\u{308}ller.de",
            "ivan@pochta.bu\u{308}ro",
        ] {
            let out = h.apply(&format!("removed «{decomposed}» from group"));
            let composed = decomposed.nfc().collect::<String>();
            assert_eq!(
                out,
                format!("removed «{}» from group", lookup(&key, &composed)),
                "{decomposed}"
            );
        }
    }

    #[test]
    fn non_emails_are_left_alone() {
        let h = hasher(&[PiiKind::Email]);
        for text in [
            "a@b",
            "user@localhost",
            "@example.com",
            "x@.com",
            "v1.2@3.4",
            "no at all",
        ] {
            assert_eq!(h.apply(text), text);
        }
    }

    #[test]
    fn marked_names_are_hashed_or_unmarked() {
        let text = format!("renamed to {} ok", pii(" Zoë Example "));
        let hashed = hasher(&[PiiKind::DisplayName]).apply(&text);
        let expected = lookup(&Secret::new("0123456789abcdef-test-key"), "Zoë Example");
        assert_eq!(hashed, format!("renamed to {expected} ok"));
        let plain = hasher(&[]).apply(&text);
        assert_eq!(plain, "renamed to  Zoë Example  ok");
        let unkeyed = PiiHasher::new(&AuditSettings::default()).apply(&text);
        assert_eq!(unkeyed, plain);
    }

    #[test]
    fn a_dangling_marker_hides_the_rest() {
        let h = hasher(&[PiiKind::DisplayName]);
        let out = h.apply(&format!("x {PII_START}Secret Name"));
        assert!(out.starts_with("x hmac-sha256:"), "{out}");
        assert!(!out.contains("Secret Name"));
    }

    #[test]
    fn stray_markers_are_dropped() {
        let plain = PiiHasher::new(&AuditSettings::default());
        // A start inside a span used to be written out, and read as a span by the next pass.
        assert_eq!(plain.apply("\u{2}\u{2}"), "");
        assert_eq!(plain.apply("a\u{3}b \u{2}c\u{2}d\u{3} e"), "ab cd e");
    }

    #[test]
    fn records_are_rewritten_except_account_id() {
        let h = hasher(&[PiiKind::Email, PiiKind::DisplayName]);
        let mut record = NewRecord::new(ulid::Ulid::nil(), crate::audit::AuditKind::Executed);
        record.account_id = Some("acc@example.com".into());
        record.outcome = crate::audit::Outcome::error("user carol@example.com not found");
        record.warnings = vec![format!("name {}", pii("Carol"))];
        h.apply_record(&mut record);
        assert_eq!(record.account_id.as_deref(), Some("acc@example.com"));
        let error = record.outcome.error.unwrap();
        assert!(!error.contains("carol"), "{error}");
        assert!(!record.warnings[0].contains("Carol"));
    }

    #[test]
    fn addresses_sharing_characters_are_hashed_as_one() {
        let h = hasher(&[PiiKind::Email]);
        let key = Secret::new("0123456789abcdef-test-key");
        let text = "from a@b.co@c.com, ok";
        let once = h.apply(text);
        let whole = hash_with(&key_of(&key), PiiKind::Email, "a@b.co@c.com");
        assert_eq!(once, format!("from {whole}, ok"));
        assert_eq!(h.apply(&once), once);
        // A trailing dot is not part of the first address, but is of the second's local part.
        let once = h.apply("a@b.co.@c.com");
        assert_eq!(h.apply(&once), once);
        assert!(!once.contains("c.com"), "{once}");
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        const KEY: &str = "0123456789abcdef-test-key";

        /// Addresses as [`is_email`] defines them, in mixed case.
        fn email() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_%+'-][A-Za-z0-9._%+'-]{0,10}@([A-Za-z0-9-]{1,8}\\.){1,3}[A-Za-z]{2,6}"
        }

        const PIECES: &[&str] = &[
            "@",
            ".",
            "-",
            "_",
            "+",
            "'",
            "a",
            "Z",
            "9",
            "com",
            ".org",
            "@x.io",
            " ",
            "<",
            ">",
            ",",
            "\u{2}",
            "\u{3}",
            "é",
            "😀",
            "hmac-sha256:",
            "\u{0}",
        ];

        /// Arbitrary Unicode, arbitrary bytes, or pieces of addresses and markers.
        fn text() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                3 => prop::sample::select(PIECES).prop_map(str::to_owned),
                1 => email(),
                1 => any::<char>().prop_map(String::from),
            ];
            prop_oneof![
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..64)
                    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat()),
            ]
        }

        fn hashers() -> [PiiHasher; 4] {
            [
                hasher(&[PiiKind::Email, PiiKind::DisplayName]),
                hasher(&[PiiKind::Email]),
                hasher(&[PiiKind::DisplayName]),
                PiiHasher::new(&AuditSettings::default()),
            ]
        }

        /// The addresses the scan finds in `text`.
        fn emails_in(text: &str) -> Vec<&str> {
            text.match_indices('@')
                .filter_map(|(at, _)| email_at(text, at))
                .map(|(start, end)| &text[start..end])
                .collect()
        }

        proptest! {
            #[test]
            fn never_panics_and_is_stable(text in text()) {
                for hasher in hashers() {
                    let once = hasher.apply(&text);
                    prop_assert!(!once.contains([PII_START, PII_END]), "markers left in {:?}", once);
                    prop_assert_eq!(hasher.apply(&once), once, "input {:?}", text);
                }
            }

            #[test]
            fn no_address_survives(text in text()) {
                let out = hasher(&[PiiKind::Email]).apply(&text);
                prop_assert!(emails_in(&out).is_empty(), "{:?} left in {:?}", emails_in(&out), out);
            }

            #[test]
            fn an_address_is_written_as_its_lookup(
                email in email(),
                before in text(),
                after in text(),
                separators in prop::sample::subsequence(vec![" ", "<", ">", "(", ")", ",", ";", "»"], 2),
            ) {
                prop_assert!(is_email(&email));
                let (open, close) = (separators[0], separators[1]);
                // Without markers in the surroundings, which could swallow the address.
                let before: String = before.chars().filter(|c| ![PII_START, PII_END].contains(c)).collect();
                let after: String = after.chars().filter(|c| ![PII_START, PII_END].contains(c)).collect();
                let h = hasher(&[PiiKind::Email]);
                let out = h.apply(&format!("{before}{open}{email}{close}{after}"));
                let expected = format!(
                    "{}{open}{}{close}{}",
                    h.apply(&before),
                    lookup(&Secret::new(KEY), &email),
                    h.apply(&after)
                );
                prop_assert_eq!(out, expected);
            }

            #[test]
            fn lookup_ignores_case_and_surrounding_whitespace(
                email in email(),
                upper in prop::collection::vec(any::<bool>(), 32),
                padding in prop::sample::select(&["", " ", "\t", "\n ", "\u{a0}"][..]),
            ) {
                let key = Secret::new(KEY);
                let varied: String = email
                    .chars()
                    .zip(upper.iter().cycle())
                    .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                    .collect();
                prop_assert_eq!(
                    lookup(&key, &format!("{padding}{varied}{padding}")),
                    lookup(&key, &email)
                );
            }

            #[test]
            fn a_marked_name_is_written_as_its_hash(name in text(), before in text(), after in text()) {
                let unmarked = |text: &str| -> String {
                    text.chars().filter(|c| ![PII_START, PII_END].contains(c)).collect()
                };
                let (before, after) = (unmarked(&before), unmarked(&after));
                let out = hasher(&[PiiKind::DisplayName]).apply(&format!("{before}{}{after}", pii(&name)));
                let key = key_of(&Secret::new(KEY));
                let hashed = hash_with(&key, PiiKind::DisplayName, &unmarked(&name));
                prop_assert_eq!(out, format!("{before}{hashed}{after}"));
            }
        }
    }
}
