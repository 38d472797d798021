//! The small checks every config section shares: names, URLs, ids, and when a credential's end
//! date deserves a warning.

use chrono::{DateTime, Duration, Utc};

/// How far ahead an expiring secret or credential is warned about.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Where a secret's end date stands, when it deserves a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Past,
    Soon,
}

/// Past, within the warning period (30 days), or `None`: far enough away.
pub fn ending(end: DateTime<Utc>, now: DateTime<Utc>) -> Option<Ending> {
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

/// [`check_url`] for a URL gatehouse sends credentials to (Atlassian's APIs, the OAuth token
/// endpoint): `https`, or plain `http` to a loopback address only (a local simulator). Elsewhere
/// plain http would carry the API token, the SCIM token or the client secret in clear.
pub(super) fn check_credentialed_url(key: &str, url: &str, error: &mut impl FnMut(String, String)) {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "http" && !is_loopback(&parsed) => error(
            key.to_owned(),
            format!(
                "`{url}` would carry credentials unencrypted: use https (plain http is accepted only to a \
                 loopback address, such as a local simulator)"
            ),
        ),
        _ => check_url(key, url, error),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Lowercase ASCII letters and digits plus `extra`, starting with a letter or digit.
pub(super) fn is_name(name: &str, extra: &[char]) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
}

/// Checks the secrets of one source or endpoint, under `key` (`sources[0]`): each has a
/// non-empty id used once in its `owner` (`source`, `endpoint`), and an end date, when it has one,
/// that is not past or near (a warning: the secret then `does` nothing, e.g. "verifies").
pub(super) fn check_secret_ids_and_ends(
    key: &str,
    secrets: &[super::SourceSecret],
    (owner, does): (&str, &str),
    now: DateTime<Utc>,
    error: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
) {
    let mut ids = std::collections::HashSet::new();
    for (j, secret) in secrets.iter().enumerate() {
        let secret_key = format!("{key}.secrets[{j}]");
        if secret.id.trim().is_empty() {
            error(format!("{secret_key}.id"), "must not be empty".into());
        } else if !ids.insert(secret.id.as_str()) {
            error(
                format!("{secret_key}.id"),
                format!("`{}` is used twice in this {owner}", secret.id),
            );
        }
        if let Some(end) = secret.not_after {
            match ending(end, now) {
                Some(Ending::Past) => warn(
                    format!("{secret_key}.not_after"),
                    format!("secret `{}` expired at {end}; it {does} nothing", secret.id),
                ),
                Some(Ending::Soon) => warn(
                    format!("{secret_key}.not_after"),
                    format!("secret `{}` expires at {end}: rotate it", secret.id),
                ),
                None => {}
            }
        }
    }
}
