//! `[console]`: the operator console (`/console`), off until enabled, and who may sign in to it
//! with which role: operators with an Argon2 password hash, or named by an authenticating reverse
//! proxy (a header believed only from the proxy addresses listed here).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, Secret};

/// The operator console.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Serve `/console`. Off: no route at all (404).
    pub enabled: bool,
    /// A session ends this long after sign-in.
    pub session_hours: u64,
    /// Who may sign in, and what each may do.
    pub operators: Vec<OperatorSettings>,
    /// The header an authenticating reverse proxy names the signed-in user in (e.g.
    /// `X-Forwarded-User`); believed only on connections from `trusted_proxies`.
    pub proxy_user_header: Option<String>,
    /// The addresses (`127.0.0.1/32`, `10.0.0.0/8`, `::1/128`) `proxy_user_header` is believed
    /// from: the TCP peer of the connection, never a forwarded-for header.
    pub trusted_proxies: Vec<IpNetwork>,
    /// Failed sign-ins for one operator name before it is locked for `lockout_seconds`.
    pub max_failed_sign_ins: u32,
    pub lockout_seconds: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: false,
            session_hours: 8,
            operators: Vec::new(),
            proxy_user_header: None,
            trusted_proxies: Vec::new(),
            max_failed_sign_ins: 5,
            lockout_seconds: 300,
        }
    }
}

impl ConsoleSettings {
    /// The operator named `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorSettings> {
        self.operators.iter().find(|o| o.name == name)
    }

    /// Is `peer` one of `trusted_proxies`?
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|network| network.contains(peer))
    }
}

/// One person who may sign in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSettings {
    /// The name decisions are attributed to (`console:{name}` in the audit trail); for proxy
    /// sign-in, what the proxy's header says.
    pub name: String,
    pub role: OperatorRole,
    /// An Argon2 PHC string (`$argon2id$v=19$…`, made by `gatehouse console hash-password`), or
    /// an `env:`/`file:` reference to one. Absent: this operator signs in only through the proxy.
    #[serde(default)]
    pub password_hash: Option<PasswordHash>,
}

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorRole {
    /// Sees every page; decides nothing.
    Viewer,
    /// Also approves and rejects plans.
    Approver,
    /// Also replays dead letters.
    Admin,
}

impl OperatorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Approver => "approver",
            OperatorRole::Admin => "admin",
        }
    }

    pub fn may_decide_approvals(self) -> bool {
        self >= OperatorRole::Approver
    }

    pub fn may_replay_dead_letters(self) -> bool {
        self == OperatorRole::Admin
    }
}

/// An Argon2 password hash: not the password, but enough to guess it offline, so it is kept
/// like a secret (never in `Debug`, shown by `check-config` as its reference or `<argon2 hash>`).
#[derive(Clone)]
pub struct PasswordHash(Secret);

impl PasswordHash {
    /// The PHC string, for verifying a password against it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// Whether the value is an Argon2 PHC string `argon2` can verify with.
    fn problem(&self) -> Option<String> {
        let text = self.expose().trim();
        if !text.starts_with("$argon2") {
            return Some("must be an Argon2 PHC string ($argon2id$v=19$…): make one with `gatehouse console hash-password`".to_owned());
        }
        argon2::password_hash::phc::PasswordHash::new(text)
            .err()
            .map(|e| format!("not a valid Argon2 PHC string: {e}"))
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({}, redacted)", self.shown())
    }
}

impl PasswordHash {
    fn shown(&self) -> &str {
        match self.0.reference() {
            "<inline>" => "<argon2 hash>",
            reference => reference,
        }
    }
}

impl Serialize for PasswordHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // A hash may be written in the file (it is not the password); a reference is resolved
        // like any secret.
        if text.starts_with("env:") || text.starts_with("file:") {
            Secret::from_config(&text)
                .map(PasswordHash)
                .map_err(serde::de::Error::custom)
        } else {
            Ok(PasswordHash(Secret::new(text)))
        }
    }
}

impl From<String> for PasswordHash {
    fn from(value: String) -> Self {
        PasswordHash(Secret::new(value))
    }
}

/// An address range, `address/prefix` (a bare address is the range of that one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Is `ip` inside this range? (An IPv4 peer seen as `::ffff:a.b.c.d` counts as `a.b.c.d`.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address or address/prefix"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix must be 0 to {max}"))?,
        };
        Ok(IpNetwork { address, prefix })
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl Serialize for IpNetwork {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNetwork {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Problems with `[console]`, each naming its key.
pub(super) fn validate(settings: &super::Settings, errors: &mut Vec<ConfigError>) {
    let console = &settings.console;
    if console.session_hours == 0 || console.session_hours > 24 * 7 {
        errors.push(ConfigError::new(
            "console.session_hours",
            "must be between 1 and 168",
        ));
    }
    if console.max_failed_sign_ins == 0 {
        errors.push(ConfigError::new(
            "console.max_failed_sign_ins",
            "must be at least 1",
        ));
    }
    if console.lockout_seconds == 0 || console.lockout_seconds > 86_400 {
        errors.push(ConfigError::new(
            "console.lockout_seconds",
            "must be between 1 and 86400",
        ));
    }
    if let Some(header) = &console.proxy_user_header {
        if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            errors.push(ConfigError::new(
                "console.proxy_user_header",
                format!("`{header}` is not an HTTP header name"),
            ));
        }
        if console.trusted_proxies.is_empty() {
            errors.push(ConfigError::new(
                "console.trusted_proxies",
                "proxy_user_header is believed only from listed proxy addresses: list them",
            ));
        }
    }
    if console.enabled && console.operators.is_empty() {
        errors.push(ConfigError::new(
            "console.operators",
            "the console is enabled but nobody may sign in: add [[console.operators]]",
        ));
    }
    let mut names = HashSet::new();
    for (i, operator) in console.operators.iter().enumerate() {
        let key = format!("console.operators[{i}]");
        let name_ok = !operator.name.is_empty()
            && operator.name.len() <= 128
            && operator
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
        if !name_ok {
            errors.push(ConfigError::new(
                format!("{key}.name"),
                "must be 1 to 128 ASCII letters, digits, `-`, `_`, `.` and `@`",
            ));
        } else if !names.insert(operator.name.as_str()) {
            errors.push(ConfigError::new(
                format!("{key}.name"),
                format!("`{}` is listed twice", operator.name),
            ));
        }
        match &operator.password_hash {
            Some(hash) => {
                if let Some(problem) = hash.problem() {
                    errors.push(ConfigError::new(format!("{key}.password_hash"), problem));
                }
            }
            None if console.proxy_user_header.is_none() => errors.push(ConfigError::new(
                format!("{key}.password_hash"),
                "needed unless console.proxy_user_header signs operators in",
            )),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        crate::config::Settings::from_toml(text, [])
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.key)
            .collect()
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Ys3aTHoaKrKXR5wb1qxsPl02XGtFuFTQiNvLPtjXwBQ";

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNetwork = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: IpNetwork = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: IpNetwork = "::1/128".parse().unwrap();
        assert!(v6.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNetwork>().is_err());
        assert!("nope/8".parse::<IpNetwork>().is_err());
    }

    #[test]
    fn a_valid_console_loads_and_hides_its_hashes() {
        let text = format!(
            "[console]\nenabled = true\n[[console.operators]]\nname = \"alice\"\nrole = \"admin\"\npassword_hash = \"{HASH}\"\n"
        );
        let (settings, _) = crate::config::Settings::from_toml(&text, []).unwrap();
        let alice = settings.console.operator("alice").unwrap();
        assert_eq!(alice.role, OperatorRole::Admin);
        assert!(!format!("{settings:?}").contains("Ys3aTHoa"));
        assert!(!settings.to_redacted_toml().contains("Ys3aTHoa"));
    }

    #[test]
    fn errors_name_their_keys() {
        assert_eq!(keys("[console]\nenabled = true"), ["console.operators"]);
        assert_eq!(
            keys("[[console.operators]]\nname = \"bob\"\nrole = \"viewer\"\npassword_hash = \"hunter2\""),
            ["console.operators[0].password_hash"]
        );
        assert_eq!(
            keys("[[console.operators]]\nname = \"bob\"\nrole = \"viewer\""),
            ["console.operators[0].password_hash"]
        );
        assert_eq!(
            keys("[[console.operators]]\nname = \"bob\"\nrole = \"root\""),
            ["console.operators[0].role"]
        );
        assert_eq!(
            keys("[console]\nproxy_user_header = \"X-Forwarded-User\""),
            ["console.trusted_proxies"]
        );
        assert_eq!(
            keys("[console]\ntrusted_proxies = [\"127.0.0.1/40\"]"),
            ["console.trusted_proxies[0]"]
        );
        assert_eq!(keys("[console]\nsession_hours = 0"), ["console.session_hours"]);
        let twice = format!(
            "[[console.operators]]\nname = \"a\"\nrole = \"viewer\"\npassword_hash = \"{HASH}\"\n[[console.operators]]\nname = \"a\"\nrole = \"admin\"\npassword_hash = \"{HASH}\"\n"
        );
        assert_eq!(keys(&twice), ["console.operators[1].name"]);
    }

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(!OperatorRole::Viewer.may_decide_approvals());
        assert!(OperatorRole::Approver.may_decide_approvals());
        assert!(!OperatorRole::Approver.may_replay_dead_letters());
        assert!(OperatorRole::Admin.may_replay_dead_letters());
    }
}
