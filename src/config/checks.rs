//! The small checks every config section shares: names, URLs, ids, and when a credential's end
//! date deserves a warning.

use chrono::{DateTime, Duration, Utc};

/// How far ahead an expiring secret or credential is warned about.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Where a secret's end date stands, when it deserves a warning.
pub(super) enum Ending {
    Past,
    Soon,
}

pub(super) fn ending(end: DateTime<Utc>, now: DateTime<Utc>) -> Option<Ending> {
    if end < now {
        Some(Ending::Past)
    } else if end < now + Duration::days(EXPIRY_WARNING_DAYS) {
        Some(Ending::Soon)
    } else {
        None
    }
}

/// Reports `url` under `key` unless it is an absolute http(s) URL.
pub(super) fn check_url(key: &str, url: &str, error: &mut impl FnMut(String, String)) {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && !parsed.cannot_be_a_base() => {}
        _ => error(key.to_owned(), format!("`{url}` is not an http(s) URL")),
    }
}

/// Lowercase ASCII letters and digits plus `extra`, starting with a letter or digit.
pub(super) fn is_name(name: &str, extra: &[char]) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
}
