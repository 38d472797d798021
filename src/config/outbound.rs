//! `[[outbound]]`: HTTPS endpoints that follow gatehouse (a SOAR, a ticketing system, a chat
//! relay), each with the events and audit kinds it wants and the secrets its deliveries are
//! signed with (Standard Webhooks).
//!
//! The checks here are the ones a typo would otherwise turn into a leak or a silent nothing: an
//! `http://` URL, a URL that points into the private network gatehouse runs in (SSRF through
//! config), an endpoint that subscribes to nothing, a secret that cannot sign.

use std::collections::HashSet;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use handlers::{AuditKind, TypePattern};
use serde::{Deserialize, Serialize};

use super::SourceSecret;
use super::checks::{check_secret_ids_and_ends, is_name};
use super::sources::standard_webhooks_key;

/// Names the outbox keeps for deliveries that are not `[[outbound]]` endpoints.
pub const RESERVED_OUTBOUND_NAMES: [&str; 1] = [SLACK_OUTBOX];

/// The outbox name of the approval messages posted to Slack (`[approvals.slack]`).
pub const SLACK_OUTBOX: &str = "slack";

/// One endpoint that receives signed deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    /// Names the endpoint in the outbox, metrics and `gatehouse outbound`.
    pub name: String,
    /// Where deliveries are POSTed. `https://` unless `allow_http`.
    pub url: String,
    /// The event types sent (`policy.violation`, globs such as `user.*`), as the worker takes
    /// them off the queue: each event once, as its envelope.
    #[serde(default)]
    pub types: Vec<TypePattern>,
    /// The audit records sent, by kind (`executed`, `failed`, `dead_lettered`, …): each record
    /// once, as it was appended to the trail.
    #[serde(default)]
    pub audit_kinds: Vec<AuditKind>,
    /// Only these tenants' events and records (all when absent).
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// `whsec_…` keys; every live one signs each delivery, so a receiver can rotate.
    pub secrets: Vec<SourceSecret>,
    /// One attempt's bound, connection included.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// How long to wait after each failed attempt; after the last, the delivery is dead
    /// (`gatehouse outbound replay` sends it again).
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: Vec<u64>,
    /// Deliveries in flight to this endpoint at once (per process).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Allow `http://` (tests and demos: the body and signature travel in clear).
    #[serde(default)]
    pub allow_http: bool,
    /// Allow targets in loopback, private, link-local and other non-public ranges (a receiver
    /// on the same host or network). Off, such a target is refused even when a public name
    /// resolves to it at send time.
    #[serde(default)]
    pub allow_private_addresses: bool,
}

fn default_timeout_seconds() -> u64 {
    10
}

/// About 1 h 50 min of retries in all: a receiver down for a deploy or an afternoon catches up.
fn default_retry_seconds() -> Vec<u64> {
    vec![5, 30, 120, 600, 1800, 3600]
}

fn default_max_in_flight() -> usize {
    4
}

impl OutboundSettings {
    /// An endpoint with the defaults for everything but its name, URL and secrets; it sends
    /// nothing until given `types` or `audit_kinds`.
    pub fn new(name: impl Into<String>, url: impl Into<String>, secrets: Vec<SourceSecret>) -> Self {
        OutboundSettings {
            name: name.into(),
            url: url.into(),
            types: Vec::new(),
            audit_kinds: Vec::new(),
            tenants: None,
            secrets,
            timeout_seconds: default_timeout_seconds(),
            retry_seconds: default_retry_seconds(),
            max_in_flight: default_max_in_flight(),
            allow_http: false,
            allow_private_addresses: false,
        }
    }

    /// Does this endpoint take events and records of `tenant`?
    pub fn serves_tenant(&self, tenant: &str) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|tenants| tenants.iter().any(|t| t == tenant))
    }
}

/// Is `ip` outside the public internet (loopback, private, link-local, shared, multicast,
/// documentation, unspecified, or an IPv6 form of one of those)? Such a target is refused unless
/// the endpoint allows it.
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // 100.64.0.0/10, carrier-grade NAT; 0.0.0.0/8; 192.0.0.0/24; 198.18.0.0/15
                // (benchmarking); the documentation ranges; 240.0.0.0/4.
                || (a == 100 && (64..128).contains(&b))
                || a == 0
                || matches!(v4.octets(), [192, 0, 0 | 2, _] | [198, 51, 100, _] | [203, 0, 113, _])
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_address(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let first = segments[0];
            let embedded = |high: u16, low: u16| {
                is_private_address(IpAddr::V4(std::net::Ipv4Addr::from(
                    (u32::from(high) << 16) | u32::from(low),
                )))
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed in places)
                || first == 0x2001 && segments[1] == 0x0db8 // documentation
                // 64:ff9b:1::/48, NAT64 for local use (RFC 8215): a network's own translator.
                || segments[..3] == [0x64, 0xff9b, 1]
                // Forms that reach an IPv4 address, judged by the embedded one: 64:ff9b::/96
                // (NAT64), ::/96 (IPv4-compatible, deprecated), 2002::/16 (6to4).
                || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && embedded(segments[6], segments[7]))
                || (segments[..6] == [0; 6] && embedded(segments[6], segments[7]))
                || (first == 0x2002 && embedded(segments[1], segments[2]))
        }
    }
}

/// Why `url` may not be a target of an endpoint with these allowances, if it may not. Host
/// names are judged again when they are resolved, at each attempt.
pub fn target_problem(url: &str, allow_http: bool, allow_private: bool) -> Option<String> {
    let parsed = match url::Url::parse(url) {
        Ok(parsed) if !parsed.cannot_be_a_base() => parsed,
        _ => return Some(format!("`{url}` is not an absolute URL")),
    };
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Some("must be https:// (or set allow_http = true, for tests and demos)".to_owned()),
        other => return Some(format!("`{other}://` is not http(s)")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("must not carry credentials; the deliveries are signed".to_owned());
    }
    if allow_private {
        return None;
    }
    let private = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => is_private_address(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private_address(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost") || name.ends_with(".internal")
        }
        None => true,
    };
    private.then(|| {
        "points into a private or local network (set allow_private_addresses = true if that is meant)"
            .to_owned()
    })
}

/// Checks every endpoint.
pub(super) fn validate(
    settings: &super::Settings,
    now: DateTime<Utc>,
    error: &mut impl FnMut(String, String),
    warn: &mut impl FnMut(String, String),
) {
    let mut names = HashSet::new();
    let tenants = settings.tenant_names();
    for (i, endpoint) in settings.outbound.iter().enumerate() {
        let key = format!("outbound[{i}]");
        if !is_name(&endpoint.name, &['-', '_']) {
            error(
                format!("{key}.name"),
                format!(
                    "`{}` must be lowercase letters, digits, `-` and `_`",
                    endpoint.name
                ),
            );
        } else if RESERVED_OUTBOUND_NAMES.contains(&endpoint.name.as_str()) {
            error(
                format!("{key}.name"),
                format!(
                    "`{}` is kept for Slack approval messages: choose another name",
                    endpoint.name
                ),
            );
        } else if !names.insert(endpoint.name.as_str()) {
            error(
                format!("{key}.name"),
                format!("`{}` is used by another endpoint", endpoint.name),
            );
        }
        if let Some(problem) = target_problem(
            &endpoint.url,
            endpoint.allow_http,
            endpoint.allow_private_addresses,
        ) {
            error(format!("{key}.url"), problem);
        }
        if endpoint.types.is_empty() && endpoint.audit_kinds.is_empty() {
            error(
                format!("{key}.types"),
                "the endpoint subscribes to nothing: give `types` or `audit_kinds`".into(),
            );
        }
        for (j, tenant) in endpoint.tenants.iter().flatten().enumerate() {
            if !tenants.contains(tenant) {
                error(
                    format!("{key}.tenants[{j}]"),
                    format!("`{tenant}` is not a tenant (have: {})", tenants.join(", ")),
                );
            }
        }
        if endpoint.secrets.is_empty() {
            error(
                format!("{key}.secrets"),
                "give at least one `whsec_…` key: receivers verify every delivery".into(),
            );
        }
        check_secret_ids_and_ends(&key, &endpoint.secrets, ("endpoint", "signs"), now, error, warn);
        for (j, secret) in endpoint.secrets.iter().enumerate() {
            if let Err(message) = standard_webhooks_key(secret.value.expose()) {
                error(format!("{key}.secrets[{j}].value"), message);
            }
        }
        if !endpoint.secrets.is_empty() && !endpoint.secrets.iter().any(|s| s.is_live(now)) {
            error(
                format!("{key}.secrets"),
                "every secret has ended: deliveries could not be signed".into(),
            );
        }
        if !(1..=120).contains(&endpoint.timeout_seconds) {
            error(format!("{key}.timeout_seconds"), "must be 1 to 120".into());
        }
        if endpoint.retry_seconds.is_empty() {
            error(
                format!("{key}.retry_seconds"),
                "give at least one wait: a delivery that fails once would be dead at once".into(),
            );
        }
        for (j, wait) in endpoint.retry_seconds.iter().enumerate() {
            if !(1..=86_400).contains(wait) {
                error(format!("{key}.retry_seconds[{j}]"), "must be 1 to 86400".into());
            }
        }
        if !(1..=64).contains(&endpoint.max_in_flight) {
            error(format!("{key}.max_in_flight"), "must be 1 to 64".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_targets_are_told_apart_from_public_ones() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "2002:a9fe:a9fe::1",
            "::a9fe:a9fe",
            "fec0::1",
        ] {
            assert!(is_private_address(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_private_address(public.parse().unwrap()), "{public}");
        }
    }

    fn error_keys(text: &str) -> Vec<String> {
        let errors = crate::config::Settings::from_toml(text, std::iter::empty()).unwrap_err();
        errors.0.into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn endpoints_are_checked_with_their_keys() {
        let path = std::env::temp_dir().join(format!("gh-outbound-key-{}", std::process::id()));
        std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let good = format!(
            "[[outbound]]\nname = \"soar\"\nurl = \"https://soar.example.com/hook\"\ntypes = [\"user.*\"]\naudit_kinds = [\"executed\", \"dead_lettered\"]\nsecrets = [{{id = \"1\", value = \"file:{}\"}}]\n",
            path.display()
        );
        let (settings, warnings) = crate::config::Settings::from_toml(&good, std::iter::empty()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            settings.outbound[0].audit_kinds,
            [AuditKind::Executed, AuditKind::DeadLettered]
        );
        // The key never shows.
        assert!(!settings.to_redacted_toml().contains("MfKQ9r8"));
        let bad = format!(
            "{good}[[outbound]]\nname = \"slack\"\nurl = \"http://10.0.0.8/x\"\nsecrets = [{{id = \"1\", value = \"file:{}\"}}]\nretry_seconds = []\ntimeout_seconds = 0\n",
            path.display()
        );
        let keys = error_keys(&bad);
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            keys,
            [
                "outbound[1].name",
                "outbound[1].url",
                "outbound[1].types",
                "outbound[1].timeout_seconds",
                "outbound[1].retry_seconds"
            ]
        );
        assert_eq!(
            error_keys(
                "[[outbound]]\nname = \"a\"\nurl = \"https://x.example\"\naudit_kinds = [\"exploded\"]\nsecrets = []"
            ),
            ["outbound[0].audit_kinds[0]"]
        );
    }

    #[test]
    fn targets_must_be_https_public_and_without_credentials() {
        assert_eq!(
            target_problem("https://soar.example.com/hook", false, false),
            None
        );
        assert!(
            target_problem("http://soar.example.com/hook", false, false)
                .unwrap()
                .contains("https")
        );
        assert_eq!(target_problem("http://soar.example.com/hook", true, false), None);
        for local in [
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost:8443/x",
            "https://metadata.google.internal/x",
        ] {
            assert!(
                target_problem(local, false, false).unwrap().contains("private"),
                "{local}"
            );
            assert_eq!(target_problem(local, false, true), None, "{local}");
        }
        assert!(
            target_problem("https://u:p@example.com/", false, false)
                .unwrap()
                .contains("credentials")
        );
        assert!(target_problem("ftp://example.com/", false, false).is_some());
        assert!(target_problem("not a url", false, false).is_some());
    }
}
