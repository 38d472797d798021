//! `[audit]`: how the audit trail protects personal data, who may pull it over HTTP, and how long
//! the RabbitMQ stream keeps it.
//!
//! Every key has a default that runs out of the box: no hashing key (emails and display names are
//! stored as written), no API token (`GET /audit` is off), a stream that keeps 30 days.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// The shortest HMAC key and API token accepted, in bytes: shorter ones can be guessed.
pub const MIN_KEY_BYTES: usize = 16;

/// The audit trail's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// The key emails and display names are HMAC'd with before they are written (like Vault's
    /// audit hashing). Unset: they are written as they are. Changing it changes every hash from
    /// then on, so lookups (`gatehouse audit hash`) use the key of the time.
    pub hash_key: Option<Secret>,
    /// Which kinds of personal data are HMAC'd when `hash_key` is set.
    pub hash_fields: Vec<PiiKind>,
    /// Bearer token of `GET /audit`. Unset: the endpoint does not exist (404).
    pub api_token: Option<Secret>,
    /// Records per page of `GET /audit` when the caller gives no `limit`.
    pub page_size: usize,
    /// The largest `limit` a caller may ask for.
    pub max_page_size: usize,
    /// An append that has not committed within this long fails (the worker then does not ack).
    pub append_timeout_ms: u64,
    /// The RabbitMQ stream every record is copied to.
    pub stream: AuditStreamSettings,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            hash_key: None,
            hash_fields: vec![PiiKind::Email, PiiKind::DisplayName],
            api_token: None,
            page_size: 100,
            max_page_size: 1_000,
            append_timeout_ms: 5_000,
            stream: AuditStreamSettings::default(),
        }
    }
}

/// A kind of personal data that can appear in a record's free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// Anything shaped like `local@domain.tld`, found by scanning.
    Email,
    /// Names writers mark with [`crate::audit::pii`].
    DisplayName,
}

/// `[audit.stream]`: the `{prefix}.audit` RabbitMQ stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditStreamSettings {
    /// Copy records to the stream (queue backend `rabbitmq`).
    pub enabled: bool,
    /// Segments older than this are deleted (`x-max-age`): `30D`, `12h`, `1Y`… (units Y M D h m s).
    pub max_age: String,
    /// The stream is truncated (oldest segments first) beyond this size (`x-max-length-bytes`).
    pub max_length_bytes: u64,
    /// Segment file size (`x-stream-max-segment-size-bytes`); retention removes whole segments.
    pub max_segment_size_bytes: u64,
    /// How often the relay looks for new records when idle.
    pub poll_ms: u64,
    /// Records published per batch before waiting for the broker's confirms.
    pub batch_size: usize,
}

impl Default for AuditStreamSettings {
    fn default() -> Self {
        AuditStreamSettings {
            enabled: true,
            max_age: "30D".to_owned(),
            max_length_bytes: 20 * 1024 * 1024 * 1024,
            max_segment_size_bytes: 100 * 1024 * 1024,
            poll_ms: 250,
            batch_size: 500,
        }
    }
}

impl AuditSettings {
    /// Problems with `[audit]`, each naming its key.
    pub(super) fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (key, secret) in [
            ("audit.hash_key", &self.hash_key),
            ("audit.api_token", &self.api_token),
        ] {
            if secret.as_ref().is_some_and(|s| s.expose().len() < MIN_KEY_BYTES) {
                errors.push(ConfigError::new(
                    key,
                    format!("must be at least {MIN_KEY_BYTES} bytes (use a random value)"),
                ));
            }
        }
        if self.page_size == 0 {
            errors.push(ConfigError::new("audit.page_size", "must be at least 1"));
        }
        if self.max_page_size < self.page_size {
            errors.push(ConfigError::new(
                "audit.max_page_size",
                "must be at least audit.page_size",
            ));
        }
        if self.append_timeout_ms == 0 {
            errors.push(ConfigError::new(
                "audit.append_timeout_ms",
                "must be greater than 0",
            ));
        }
        let stream = &self.stream;
        if !is_max_age(&stream.max_age) {
            errors.push(ConfigError::new(
                "audit.stream.max_age",
                format!(
                    "`{}` is not a duration like 30D, 12h or 1Y (units Y M D h m s)",
                    stream.max_age
                ),
            ));
        }
        if stream.max_length_bytes == 0 || stream.max_length_bytes > i64::MAX as u64 {
            errors.push(ConfigError::new(
                "audit.stream.max_length_bytes",
                "must be between 1 and 2^63-1",
            ));
        }
        if stream.max_segment_size_bytes == 0 || stream.max_segment_size_bytes > 3_000_000_000 {
            errors.push(ConfigError::new(
                "audit.stream.max_segment_size_bytes",
                "must be between 1 and 3000000000",
            ));
        }
        if stream.poll_ms == 0 {
            errors.push(ConfigError::new("audit.stream.poll_ms", "must be greater than 0"));
        }
        if stream.batch_size == 0 {
            errors.push(ConfigError::new("audit.stream.batch_size", "must be at least 1"));
        }
        errors
    }
}

/// RabbitMQ's `x-max-age` syntax: a positive integer and one unit letter.
fn is_max_age(value: &str) -> bool {
    let Some(unit) = value.chars().last() else {
        return false;
    };
    let digits = &value[..value.len() - unit.len_utf8()];
    matches!(unit, 'Y' | 'M' | 'D' | 'h' | 'm' | 's')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_syntax() {
        for ok in ["30D", "12h", "1Y", "90m", "3600s", "6M"] {
            assert!(is_max_age(ok), "{ok}");
        }
        for bad in ["", "D", "0D", "30d", "30", "1.5h", "-1D", "30 D"] {
            assert!(!is_max_age(bad), "{bad}");
        }
    }

    #[test]
    fn keys_come_from_the_file_and_the_environment() {
        let env = [
            ("GATEHOUSE__AUDIT__PAGE_SIZE".to_owned(), "50".to_owned()),
            ("GATEHOUSE__AUDIT__STREAM__MAX_AGE".to_owned(), "7D".to_owned()),
        ];
        let text = "[audit]\nhash_fields = [\"email\"]\n[audit.stream]\nmax_age = \"1Y\"\n";
        let (settings, _) = crate::config::Settings::from_toml(text, env).unwrap();
        assert_eq!(settings.audit.page_size, 50);
        assert_eq!(settings.audit.stream.max_age, "7D");
        assert_eq!(settings.audit.hash_fields, [PiiKind::Email]);

        let keys = |text: &str| -> Vec<String> {
            crate::config::Settings::from_toml(text, [])
                .unwrap_err()
                .0
                .into_iter()
                .map(|e| e.key)
                .collect()
        };
        assert_eq!(
            keys("[audit.stream]\nmax_age = \"forever\""),
            ["audit.stream.max_age"]
        );
        assert_eq!(keys("[audit]\nhash_feilds = []"), ["audit.hash_feilds"]);
        assert_eq!(
            keys("[audit]\nhash_fields = [\"phone\"]"),
            ["audit.hash_fields[0]"]
        );
        assert_eq!(
            keys("[audit]\npage_size = 10\nmax_page_size = 5"),
            ["audit.max_page_size"]
        );
    }

    #[test]
    fn short_keys_are_refused_by_name() {
        let settings = AuditSettings {
            hash_key: Some(Secret::new("short")),
            api_token: Some(Secret::new("tiny")),
            ..AuditSettings::default()
        };
        let keys: Vec<String> = settings.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["audit.hash_key", "audit.api_token"]);
        assert!(AuditSettings::default().validate().is_empty());
    }
}
