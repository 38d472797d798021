//! Secret values: how config refers to them, how they are resolved, and how they stay hidden.
//!
//! A config file never holds a secret, only a reference to one: `env:NAME` or `file:/path`. The
//! reference is resolved once, while the config is loaded, so a missing secret is a start-up error
//! naming its key rather than a surprise at the first request. The resolved value lives in a
//! [`Secret`], whose `Debug` and `Serialize` show the reference and never the value, so printing
//! or logging a config (or any struct holding one) cannot leak it.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A resolved secret. The only way to the value is [`Secret::expose`], which makes every use
/// greppable.
#[derive(Clone)]
pub struct Secret {
    /// Where the value came from (`env:NAME`, `file:/path`, or `<inline>` for values built in
    /// code); safe to show.
    reference: String,
    value: String,
    /// The value as an HMAC-SHA256 key, derived on first use (see [`Secret::hmac_sha256`]);
    /// boxed, as a key holds two hash states and most secrets never need one.
    hmac_key: OnceLock<Box<ring::hmac::Key>>,
}

impl Secret {
    /// A secret built in code (tests, values received at run time such as a Connect shared
    /// secret). Shown as `<inline>`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret {
            reference: "<inline>".to_owned(),
            value: value.into(),
            hmac_key: OnceLock::new(),
        }
    }

    /// Resolves an `env:NAME` or `file:/path` reference.
    pub fn resolve(reference: &str) -> Result<Self, String> {
        let value = match parse_reference(reference)? {
            Reference::Env(name) => match std::env::var(name) {
                Ok(value) => value,
                Err(std::env::VarError::NotPresent) => {
                    return Err(format!("environment variable {name} is not set"));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("environment variable {name} is not valid UTF-8"));
                }
            },
            Reference::File(path) => {
                let raw = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read secret file {path}: {e}"))?;
                // Files written by editors and secret managers usually end in a newline that is
                // not part of the secret.
                raw.trim_end_matches(['\n', '\r']).to_owned()
            }
        };
        if value.is_empty() {
            return Err(format!("{reference} resolves to an empty value"));
        }
        Ok(Secret {
            reference: reference.to_owned(),
            value,
            hmac_key: OnceLock::new(),
        })
    }

    /// The secret value. Call it only where the value is used, never to log or format it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The value's bytes as an HMAC-SHA256 key, derived once and kept: deriving a key hashes two
    /// blocks (the padded inner and outer keys), which a verifier would otherwise pay on every
    /// delivery.
    pub fn hmac_sha256(&self) -> &ring::hmac::Key {
        self.hmac_key.get_or_init(|| {
            Box::new(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                self.value.as_bytes(),
            ))
        })
    }

    /// The reference, safe to display.
    pub fn reference(&self) -> &str {
        &self.reference
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, redacted)", self.reference)
    }
}

impl PartialEq for Secret {
    /// Constant-time on the values, so comparing secrets cannot leak them through timing.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.value.len() == other.value.len()
            && bool::from(self.value.as_bytes().ct_eq(other.value.as_bytes()))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.reference)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reference = String::deserialize(deserializer)?;
        Secret::from_config(&reference).map_err(serde::de::Error::custom)
    }
}

thread_local! {
    /// Set while a config is read without its secrets ([`without_reading_secrets`]).
    static LEAVE_UNREAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `read` (a config's deserialization, which is synchronous) with every secret reference
/// checked for its form but not read: each [`Secret`] it makes holds an empty value. For
/// checking a config where its secrets are not at hand (`gatehouse check-config
/// --without-secrets`); such settings must never run anything.
pub(super) fn without_reading_secrets<T>(read: impl FnOnce() -> T) -> T {
    /// Puts the flag back however `read` ends.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LEAVE_UNREAD.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(LEAVE_UNREAD.with(|flag| flag.replace(true)));
    read()
}

impl Secret {
    /// A secret the config refers to: resolved, or only checked for its form while
    /// [`without_reading_secrets`] runs.
    pub(super) fn from_config(reference: &str) -> Result<Self, String> {
        if !LEAVE_UNREAD.with(Cell::get) {
            return Secret::resolve(reference);
        }
        parse_reference(reference)?;
        Ok(Secret {
            reference: reference.to_owned(),
            value: String::new(),
            hmac_key: OnceLock::new(),
        })
    }
}

/// Where a reference points.
enum Reference<'a> {
    Env(&'a str),
    File(&'a str),
}

/// Reads the form of `reference` (`env:NAME`, `file:/path`) without reading what it names.
fn parse_reference(reference: &str) -> Result<Reference<'_>, String> {
    if let Some(name) = reference.strip_prefix("env:") {
        if name.is_empty() {
            return Err("`env:` needs a variable name, e.g. env:ATLASSIAN_API_TOKEN".to_owned());
        }
        Ok(Reference::Env(name))
    } else if let Some(path) = reference.strip_prefix("file:") {
        if path.is_empty() {
            return Err("`file:` needs a path, e.g. file:/run/secrets/hook".to_owned());
        }
        Ok(Reference::File(path))
    } else {
        Err("secrets must be references, `env:NAME` or `file:/path`, never literal values".to_owned())
    }
}

/// A URL that may carry a password (`amqp://user:pass@host`, `postgres://…?password=…`):
/// `Debug`, `Display` and `Serialize` show it redacted; [`SensitiveUrl::expose`] gives the real
/// one to the code that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SensitiveUrl(String);

/// The store's encryption key, decoded from its secret (base64 of 32 random bytes): checked once
/// here, so whatever seals with it cannot fail for the key's sake.
pub struct EncryptionKey {
    bytes: [u8; 32],
}

impl EncryptionKey {
    /// The key `secret` holds, or why it is not one.
    pub fn parse(secret: &Secret) -> Result<EncryptionKey, String> {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .map_err(|_| "the encryption key must be base64 (e.g. `openssl rand -base64 32`)".to_owned())?;
        let bytes = <[u8; 32]>::try_from(decoded.as_slice())
            .map_err(|_| format!("the encryption key must be 32 bytes, not {}", decoded.len()))?;
        Ok(EncryptionKey { bytes })
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(redacted)")
    }
}

impl SensitiveUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SensitiveUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SensitiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for SensitiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl Serialize for SensitiveUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&redact_url(&self.0))
    }
}

impl<'de> Deserialize<'de> for SensitiveUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SensitiveUrl)
    }
}

/// Hides the password (and any token-like query) of a URL for display: `amqp://guest:***@host/`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query().is_some() {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let lower = k.to_ascii_lowercase();
                        let hide = ["password", "token", "secret", "key"]
                            .iter()
                            .any(|w| lower.contains(w));
                        (
                            k.into_owned(),
                            if hide { "***".to_owned() } else { v.into_owned() },
                        )
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL we can parse: show only the scheme, in case the rest holds a password.
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***"),
            None => "***".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_never_show_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        let debug = format!("{secret:?}");
        let json = serde_json::to_string(&secret).unwrap();
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!json.contains("hunter2"), "{json}");
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn literals_are_refused_and_files_are_trimmed() {
        assert!(Secret::resolve("plain-value").unwrap_err().contains("env:NAME"));
        assert!(
            Secret::resolve("env:GATEHOUSE_TEST_SURELY_UNSET")
                .unwrap_err()
                .contains("not set")
        );
        let dir = std::env::temp_dir().join(format!("gh-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        std::fs::write(&path, "abc\n").unwrap();
        let secret = Secret::resolve(&format!("file:{}", path.display())).unwrap();
        assert_eq!(secret.expose(), "abc");
        assert!(format!("{secret:?}").contains("file:"));
    }

    #[test]
    fn sensitive_urls_never_print_their_password() {
        let url = SensitiveUrl::new("amqp://guest:hunter2@h:5672/%2f");
        assert!(!format!("{url:?} {url}").contains("hunter2"));
        assert!(!serde_json::to_string(&url).unwrap().contains("hunter2"));
        assert!(url.expose().contains("hunter2"));
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=x&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("sqlite://data/gatehouse.db"),
            "sqlite://data/gatehouse.db"
        );
    }
}
