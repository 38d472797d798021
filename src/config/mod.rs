//! Typed settings: one TOML file, overridden key by key from `GATEHOUSE__…` environment
//! variables, secrets resolved from `env:`/`file:` references, and validated as a whole before
//! anything starts.
//!
//! Every error names the key it is about (`sources[1].secrets[0].value: …`), so an operator can fix
//! a config without reading code. Validation also produces warnings for configs that run but will
//! not do what the operator probably wants (a source that can verify nothing, a secret about to
//! expire); `gatehouse check-config` prints them.

mod approvals;
mod atlassian;
mod audit;
mod checks;
mod connect;
mod console;
pub(crate) mod env_override;
mod outbound;
mod poll;
mod queue;
mod reactions;
mod secret;
mod server;
mod sources;
mod span;
mod store;
mod tenants;
mod validate;
mod worker;

use std::fmt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use approvals::{ApprovalsSettings, SlackSettings};
pub use atlassian::{
    AtlassianSettings, AuthSettings, DEFAULT_TENANT, ENDPOINT_LABELS as ATLASSIAN_ENDPOINT_LABELS,
    EndpointRateLimit, HttpSettings, RateLimitSettings, RetrySettings,
};
pub use audit::{AuditSettings, AuditStreamSettings, PiiKind};
pub use checks::{Ending, ending};
pub use connect::ConnectSettings;
pub use console::{ConsoleSettings, IpNetwork, OperatorRole, OperatorSettings, PasswordHash};
pub use outbound::{
    OutboundSettings, RESERVED_OUTBOUND_NAMES, SLACK_OUTBOX, is_private_address, target_problem,
};
pub use poll::{DeactivationSource, PollSettings, ReconcileSettings};
pub use queue::{BrokerUrls, QueueBackend, QueueSettings};
pub use reactions::ReactionSettings;
pub use secret::{EncryptionKey, Secret, SensitiveUrl, redact_url};
pub use server::{
    DEDUPE_BYTES_PER_KEY, IngressSettings, LogFormat, LogSettings, MAX_DEDUPE_WINDOW, ServerSettings,
    check_log_filter,
};
pub use sources::{SourceSecret, SourceSettings, VerificationScheme, standard_webhooks_key};
pub use span::Span;
pub use store::StoreSettings;
pub use tenants::Site;
pub use worker::WorkerSettings;

/// A config problem, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Everything wrong with a config, reported together so one run shows every fix needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

/// Something that runs but is probably not what the operator wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub queue: QueueSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub ingress: IngressSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
    #[serde(default)]
    pub connect: ConnectSettings,
    #[serde(default)]
    pub sources: Vec<SourceSettings>,
    #[serde(default)]
    pub reactions: ReactionSettings,
    /// The reactions: each entry names events, actions and their settings.
    #[serde(default)]
    pub policies: Vec<handlers::policy::PolicyConfig>,
    #[serde(default)]
    pub poll: PollSettings,
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    #[serde(default)]
    pub audit: AuditSettings,
    /// Where people decide on plans that wait for approval (besides `gatehouse approvals`).
    #[serde(default)]
    pub approvals: ApprovalsSettings,
    /// Endpoints that receive signed deliveries of events and audit records.
    #[serde(default)]
    pub outbound: Vec<OutboundSettings>,
    /// The operator console (`/console`), off by default.
    #[serde(default)]
    pub console: ConsoleSettings,
    /// The Atlassian organizations and sites served, each with its own credentials and limits
    /// (see `config::tenants`).
    #[serde(default)]
    pub tenants: Vec<AtlassianSettings>,
    /// The older form of one tenant, read as the tenant `default` (absent with no `[[tenants]]`:
    /// gatehouse calls nothing).
    #[serde(default)]
    pub atlassian: Option<AtlassianSettings>,
}

/// Whether reading a config reads its secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretReading {
    Resolve,
    /// Check each reference's form only ([`Settings::check_without_secrets`]).
    LeaveUnread,
}

/// A secret reference a config was checked without reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadSecret {
    /// Its key, e.g. `sources[0].secrets[0].value`.
    pub key: String,
    /// The reference, e.g. `env:HUB_SECRET` (a reference is safe to show).
    pub reference: String,
}

/// A config checked without its secrets: what [`Settings::check_without_secrets`] found.
#[derive(Debug)]
pub struct UncheckedSecrets {
    /// For showing only: every secret in them is empty.
    pub settings: Settings,
    pub warnings: Vec<ConfigWarning>,
    /// The references left unread, which the deployment must provide.
    pub unread: Vec<UnreadSecret>,
}

impl Settings {
    /// Reads `path`, applies `GATEHOUSE__…` variables from the process environment, resolves
    /// secrets and validates.
    pub fn load(path: &Path) -> Result<(Settings, Vec<ConfigWarning>), ConfigErrors> {
        let overrides = env_override::from_process()?;
        Settings::load_with(path, overrides)
    }

    /// Like [`Settings::load`], with `env` instead of the process environment (`gatehouse demo`
    /// gives none: it promises to need no configuration, so none may leak in).
    pub fn load_with(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Settings, Vec<ConfigWarning>), ConfigErrors> {
        Settings::from_toml(&read_config_file(path)?, env)
    }

    /// Like [`Settings::load`], from text and an explicit environment (tests).
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Settings, Vec<ConfigWarning>), ConfigErrors> {
        let (settings, warnings, _) = Settings::read(text, env, SecretReading::Resolve)?;
        Ok((settings, warnings))
    }

    /// Checks `path` like [`Settings::load`] without reading a single secret: every `env:`/`file:`
    /// reference is checked for its form only, and what depends on a secret's value is not
    /// checked. For a pipeline that checks a deployment's config where its secrets are not at
    /// hand. The settings are for showing only: every secret in them is empty.
    pub fn check_without_secrets(path: &Path) -> Result<UncheckedSecrets, ConfigErrors> {
        let text = read_config_file(path)?;
        let (settings, warnings, unread) =
            Settings::read(&text, env_override::from_process()?, SecretReading::LeaveUnread)?;
        Ok(UncheckedSecrets {
            settings,
            warnings,
            unread,
        })
    }

    fn read(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        secrets: SecretReading,
    ) -> Result<(Settings, Vec<ConfigWarning>, Vec<UnreadSecret>), ConfigErrors> {
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|span| position(text, span.start))
                .unwrap_or_default();
            ConfigError::new("<file>", format!("not valid TOML{at}: {}", e.message().trim()))
        })?;
        let overridden = env_override::apply(&mut root, env)?;
        // After the overrides: a placeholder a variable replaces is no placeholder.
        let placeholders = placeholders(&root);
        let from_env = |mut error: ConfigError| {
            if let Some(by) = overridden.iter().rev().find(|o| o.covers(&error.key)) {
                error.message = format!(
                    "{} (set by the environment variable {})",
                    error.message, by.variable
                );
            }
            error
        };
        let unread: Vec<UnreadSecret> = match secrets {
            SecretReading::Resolve => Vec::new(),
            SecretReading::LeaveUnread => secret_references(&root)
                .into_iter()
                .map(|(key, reference)| UnreadSecret {
                    key,
                    reference: reference.to_owned(),
                })
                .collect(),
        };
        let deserialize = || serde_path_to_error::deserialize(toml::Value::Table(root.clone()));
        let deserialized: Result<Settings, _> = match secrets {
            SecretReading::Resolve => deserialize(),
            SecretReading::LeaveUnread => secret::without_reading_secrets(deserialize),
        };
        let settings = deserialized.map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "<file>".to_owned() } else { key };
            // Reading stops at the first secret that cannot be resolved: name every one at
            // once (a deployment missing ten would otherwise take ten runs to learn which).
            // Looked for only then, so a config that loads reads each secret once.
            let unresolvable = match secrets {
                SecretReading::Resolve => unresolvable_secrets(&root),
                SecretReading::LeaveUnread => Vec::new(),
            };
            if unresolvable.iter().any(|u| is_within(&u.key, &key)) {
                return ConfigErrors(unresolvable.into_iter().map(&from_env).collect());
            }
            ConfigErrors(vec![from_env(ConfigError::new(
                key,
                e.into_inner().message().trim().to_owned(),
            ))])
        })?;
        let (mut errors, mut warnings) = validate::findings(&settings, Utc::now());
        // What was said of a secret that was not read is about its empty stand-in.
        let about_unread = |key: &str| unread.iter().any(|u| is_within(key, &u.key));
        errors.retain(|error| !about_unread(&error.key));
        warnings.retain(|warning| !about_unread(&warning.key));
        if !errors.is_empty() {
            return Err(ConfigErrors(errors.into_iter().map(from_env).collect()));
        }
        warnings.extend(placeholders.into_iter().map(|key| ConfigWarning {
            key,
            message: format!("still holds the example's placeholder `{PLACEHOLDER}`: set the real value"),
        }));
        Ok((settings, warnings, unread))
    }

    /// Checks what types alone cannot; returns warnings, or every error found.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<Vec<ConfigWarning>, ConfigErrors> {
        validate::validate(self, now)
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceSettings> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The effective config as TOML, with every secret shown as its reference and every URL
    /// password hidden.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// The config file's text, or an error naming it.
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))
}

/// The key of field `name` inside `parent` (`""` at the top), as config errors name keys.
fn field_key(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// The key of item `index` of the array at `parent` (`sources[0]`).
fn item_key(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Whether `key` is `outer` or a key inside it (`sources[0].name` is inside `sources[0]` and
/// `sources`), as config errors name keys.
fn is_within(key: &str, outer: &str) -> bool {
    key.strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// What the example configs write where a deployment's own value belongs.
const PLACEHOLDER: &str = "CHANGE-ME";

/// The keys of the file whose text still holds [`PLACEHOLDER`] (a broker password in a URL, an
/// organization id), named as config errors name keys; the values are not repeated (a URL may
/// hold a real password next to a placeholder).
fn placeholders(root: &toml::Table) -> Vec<String> {
    strings(root)
        .into_iter()
        .filter(|(_, text)| text.contains(PLACEHOLDER))
        .map(|(key, _)| key)
        .collect()
}

/// Every secret reference (`env:…`, `file:…`) of the file, with its key.
fn secret_references(root: &toml::Table) -> Vec<(String, &str)> {
    strings(root)
        .into_iter()
        .filter(|(_, text)| text.starts_with("env:") || text.starts_with("file:"))
        .collect()
}

/// Every secret reference of the file that cannot be resolved, each with its key.
fn unresolvable_secrets(root: &toml::Table) -> Vec<ConfigError> {
    secret_references(root)
        .into_iter()
        .filter_map(|(key, reference)| {
            Secret::resolve(reference)
                .err()
                .map(|why| ConfigError::new(key, why))
        })
        .collect()
}

/// Every string of `root` with its key, named as config errors name keys
/// (`sources[0].secrets[1].value`).
fn strings(root: &toml::Table) -> Vec<(String, &str)> {
    fn walk<'a>(value: &'a toml::Value, key: String, found: &mut Vec<(String, &'a str)>) {
        match value {
            toml::Value::String(text) => found.push((key, text)),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, item_key(&key, i), found);
                }
            }
            toml::Value::Table(table) => {
                for (name, item) in table {
                    walk(item, field_key(&key, name), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (name, value) in root {
        walk(value, name.clone(), &mut found);
    }
    found
}

/// ` at line L, column C` of byte `offset` in `text` (both from 1), for a TOML syntax error.
fn position(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" at line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<(Settings, Vec<ConfigWarning>), ConfigErrors> {
        Settings::from_toml(text, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn error_keys(text: &str) -> Vec<String> {
        load(text, &[])
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.key)
            .collect()
    }

    #[test]
    fn shipped_default_config_is_valid() {
        let (settings, warnings) = load(include_str!("../../config/default.toml"), &[]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(settings.sources.is_empty());
    }

    #[test]
    fn the_broker_url_names_one_node_or_a_cluster() {
        let one = load("[queue]\nurl = \"amqp://u:pw@a:5672/%2f\"", &[]).unwrap().0;
        assert_eq!(one.queue.url, BrokerUrls::new("amqp://u:pw@a:5672/%2f"));
        let listed = "[queue]\nurl = [\"amqp://u:pw@a:5672/%2f\", \"amqp://u:pw@b:5672/%2f\"]\nquorum_initial_group_size = 3";
        let (cluster, _) = load(listed, &[]).unwrap();
        let nodes: Vec<&str> = cluster.queue.url.iter().map(|u| u.expose()).collect();
        assert_eq!(nodes, ["amqp://u:pw@a:5672/%2f", "amqp://u:pw@b:5672/%2f"]);
        assert_eq!(cluster.queue.quorum_initial_group_size, Some(3));
        // Passwords stay hidden wherever the list is shown.
        assert!(!format!("{} {:?}", cluster.queue.url, cluster.queue.url).contains("pw"));
        assert!(!cluster.to_redacted_toml().contains("pw"));
        // One variable may name several nodes; a comma inside a password splits nothing.
        let (from_env, _) = load(
            "",
            &[(
                "GATEHOUSE__QUEUE__URL",
                "amqp://u:pw@a:1/%2f, amqps://u:pw@b:2/%2f",
            )],
        )
        .unwrap();
        assert_eq!(from_env.queue.url.len(), 2);
        let (comma, _) = load("", &[("GATEHOUSE__QUEUE__URL", "amqp://u:p,w@a:1/%2f")]).unwrap();
        assert_eq!(comma.queue.url, BrokerUrls::new("amqp://u:p,w@a:1/%2f"));
        assert_eq!(comma.queue.url.len(), 1);
        // Each node is checked on its own, and at least one is needed.
        assert_eq!(
            error_keys("[queue]\nurl = [\"amqp://a\", \"http://b\"]"),
            ["queue.url[1]"]
        );
        assert_eq!(error_keys("[queue]\nurl = []"), ["queue.url"]);
        assert_eq!(
            error_keys("[queue]\nquorum_initial_group_size = 0"),
            ["queue.quorum_initial_group_size"]
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(error_keys("[server]\nlistn = \"x\""), ["server.listn"]);
        assert_eq!(error_keys("[server]\nlisten = \"nope\""), ["server.listen"]);
        assert_eq!(error_keys("[log]\nlevel = \"inf\""), ["log.level"]);
        assert_eq!(
            error_keys("[queue]\nconnect_timeout_ms = 0"),
            ["queue.connect_timeout_ms"]
        );
        assert_eq!(
            error_keys("[[sources]]\nname = \"a\"\nscheme = \"magic\""),
            ["sources[0].scheme"]
        );
        assert_eq!(
            error_keys(
                "[[sources]]\nname = \"a\"\nscheme = \"url-token\"\nsecrets = [{id = \"1\", value = \"env:GH_TEST_UNSET_VAR\"}]"
            ),
            ["sources[0].secrets[0].value"]
        );
        let err = load("[[sources]]\nname = \"a\"\nscheme = \"url-token\"\nsecrets = [{id = \"1\", value = \"env:GH_TEST_UNSET_VAR\"}]", &[]).unwrap_err();
        assert!(err.to_string().contains("GH_TEST_UNSET_VAR is not set"), "{err}");
        assert_eq!(error_keys("not toml ["), ["<file>"]);
    }

    #[test]
    fn retired_encryption_keys_are_checked_with_their_key() {
        use base64::Engine;
        let dir = std::env::temp_dir().join(format!("gh-retired-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, byte: u8| {
            let path = dir.join(name);
            std::fs::write(
                &path,
                base64::engine::general_purpose::STANDARD.encode([byte; 32]),
            )
            .unwrap();
            format!("file:{}", path.display())
        };
        let (current, old, older) = (file("current", 1), file("old", 2), file("older", 3));
        let short = dir.join("short");
        std::fs::write(&short, "c2hvcnQ=").unwrap();
        let short = format!("file:{}", short.display());
        let config = |key: Option<&str>, retired: &[&str]| {
            let mut text = String::from("[store]\n");
            if let Some(key) = key {
                text.push_str(&format!("encryption_key = \"{key}\"\n"));
            }
            let list: Vec<String> = retired.iter().map(|r| format!("\"{r}\"")).collect();
            text.push_str(&format!("retired_encryption_keys = [{}]\n", list.join(", ")));
            text
        };
        let (settings, _) = load(&config(Some(&current), &[&old, &older]), &[]).unwrap();
        assert_eq!(settings.store.retired_encryption_keys.len(), 2);
        let refused = |text: String| {
            let errors = load(&text, &[]).unwrap_err();
            errors
                .0
                .into_iter()
                .map(|e| (e.key, e.message))
                .collect::<Vec<_>>()
        };
        let errors = refused(config(None, &[&old]));
        assert_eq!(errors[0].0, "store.retired_encryption_keys[0]");
        assert!(errors[0].1.contains("store.encryption_key"), "{errors:?}");
        let errors = refused(config(Some(&current), &[&old, &current]));
        assert_eq!(errors[0].0, "store.retired_encryption_keys[1]");
        assert!(errors[0].1.contains("itself"), "{errors:?}");
        let errors = refused(config(Some(&current), &[&old, &old]));
        assert_eq!(errors[0].0, "store.retired_encryption_keys[1]");
        assert!(errors[0].1.contains("twice"), "{errors:?}");
        let errors = refused(config(Some(&current), &[&short]));
        assert_eq!(errors[0].0, "store.retired_encryption_keys[0]");
        assert!(errors[0].1.contains("32 bytes"), "{errors:?}");
        // Shown by reference, never by value.
        assert!(!format!("{:?}", settings.store).contains("AQEBAQ"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn short_secrets_and_bad_type_patterns_are_refused_with_their_key() {
        let path = std::env::temp_dir().join(format!("gh-short-secret-{}", std::process::id()));
        std::fs::write(&path, "only-15-bytes!!").unwrap();
        let text = format!(
            "[[sources]]\nname = \"a\"\nscheme = \"url-token\"\nsecrets = [{{id = \"1\", value = \"file:{}\"}}]",
            path.display()
        );
        let errors = load(&text, &[]).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert_eq!(errors.0[0].key, "sources[0].secrets[0].value");
        assert!(errors.0[0].message.contains("at least 16"), "{errors}");
        let text = "[[sources]]\nname = \"a\"\nscheme = \"url-token\"\nallow_types = [\"user.*\", \"usr.*\"]";
        let errors = load(text, &[]).unwrap_err();
        assert_eq!(errors.0[0].key, "sources[0].allow_types[1]", "{errors}");
        assert!(errors.0[0].message.contains("matches no event type"), "{errors}");
    }

    #[test]
    fn policy_sources_must_exist() {
        let text = r#"
            [atlassian]
            confluence_base_url = "https://example.atlassian.net/wiki"
            auth = { kind = "basic", email = "bot@example.com", token = "file:/etc/hostname" }
            [[policies]]
            on = "user.deactivated"
            actions = ["confluence.remove_from_all_groups"]
            sources = ["org-events", "reconcile", "hr"]
        "#;
        let errors = load(text, &[]).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"policies[0].sources[2]"), "{errors}");
        assert!(!keys.contains(&"policies[0].sources[0]"), "{errors}");
    }

    #[test]
    fn policy_names_differ_and_their_sources_may_cause_their_types() {
        let tenant = r#"
            [atlassian]
            confluence_base_url = "https://example.atlassian.net/wiki"
            auth = { kind = "basic", email = "bot@example.com", token = "file:/etc/hostname" }
            [[sources]]
            name = "hook"
            scheme = "url-token"
        "#;
        let twice = format!(
            "{tenant}
            [[policies]]
            name = \"leaver\"
            on = \"user.deactivated\"
            actions = [\"confluence.remove_from_all_groups\"]
            [[policies]]
            name = \"leaver\"
            on = [\"user.removed\", \"user.deactivated\"]
            actions = [\"confluence.remove_from_all_groups\"]
            "
        );
        let errors = load(&twice, &[]).unwrap_err();
        assert_eq!(errors.0[0].key, "policies[1].name", "{errors}");
        // Unnamed policies share the name of their actions: on different types they never
        // meet on one event, and are fine.
        let apart = format!(
            "{tenant}
            [[policies]]
            on = \"user.created\"
            actions = [\"confluence.add_to_groups\"]
            groups = [\"team\"]
            [[policies]]
            on = \"user.reactivated\"
            actions = [\"confluence.add_to_groups\"]
            groups = [\"team\"]
            "
        );
        assert!(load(&apart, &[]).is_ok());
        // A URL token may cause `other.*` only: a policy on it for a user event never acts.
        let never = format!(
            "{tenant}
            [[policies]]
            on = \"user.deactivated\"
            actions = [\"confluence.remove_from_all_groups\"]
            sources = [\"hook\"]
            "
        );
        let (_, warnings) = load(&never, &[]).unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.key == "policies[0].on" && w.message.contains("user.deactivated")),
            "{warnings:?}"
        );
    }

    #[test]
    fn validation_collects_every_problem() {
        let text = r#"
            [queue]
            prefix = ""
            [[sources]]
            name = "Bad Name"
            scheme = "hub-signature"
            [[sources]]
            name = "c"
            scheme = "connect-jwt"
        "#;
        let keys = error_keys(text);
        assert!(keys.contains(&"queue.prefix".to_owned()), "{keys:?}");
        assert!(keys.contains(&"sources[0].name".to_owned()), "{keys:?}");
        assert!(keys.contains(&"connect.base_url".to_owned()), "{keys:?}");
    }

    #[test]
    fn policies_are_validated_with_their_keys() {
        let text = r#"
            [[policies]]
            on = "user.deactivated"
            actions = ["confluence.remove_from_all_groups", "scim.deactivate"]
            [[policies]]
            on = ["user.created", "user.exploded"]
            actions = ["confluence.add_to_groups"]
        "#;
        let errors = load(text, &[]).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].key, "policies[1].on[1]");
        assert!(errors.0[0].message.contains("user.exploded"), "{errors}");
        let text = r#"
            [[policies]]
            on = "user.deactivated"
            actions = ["confluence.remove_from_all_groups", "scim.deactivate"]
        "#;
        let errors = load(text, &[]).unwrap_err();
        assert_eq!(errors.0[0].key, "policies[0].actions[1]");
        assert!(errors.0[0].message.contains("allow_org_wide"), "{errors}");
    }

    #[test]
    fn env_overrides_and_warnings() {
        let dir = std::env::temp_dir().join(format!("gh-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("hook");
        std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let text = format!(
            "[[sources]]\nname = \"relay\"\nscheme = \"standard-webhooks\"\nsecrets = [{{id = \"a\", value = \"file:{}\"}}]\n[[sources]]\nname = \"guard\"\nscheme = \"url-token\"\n",
            secret.display()
        );
        let (settings, warnings) = load(
            &text,
            &[
                ("GATEHOUSE__SERVER__LISTEN", "0.0.0.0:9999"),
                ("GATEHOUSE__SOURCES__0__TOLERANCE_SECONDS", "60"),
            ],
        )
        .unwrap();
        assert_eq!(settings.server.listen.port(), 9999);
        assert_eq!(settings.sources[0].tolerance_seconds(), 60);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].key, "sources[1].secrets");
        let rendered = settings.to_redacted_toml();
        assert!(!rendered.contains("MfKQ9r8"), "{rendered}");
        assert!(rendered.contains("file:"), "{rendered}");
        assert!(!rendered.contains("guest:guest"), "{rendered}");
        let bad = format!(
            "[[sources]]\nname = \"relay\"\nscheme = \"standard-webhooks\"\nsecrets = [{{id = \"a\", value = \"file:{}\"}}]\n",
            dir.join("missing").display()
        );
        assert_eq!(error_keys(&bad), ["sources[0].secrets[0].value"]);
    }

    /// An error about a key an environment variable set names the variable: the user would
    /// otherwise search their file for a key that is not there.
    #[test]
    fn errors_about_overridden_keys_name_the_variable() {
        let errors = load("", &[("GATEHOUSE__SERVER__LISTN", "0.0.0.0:9")]).unwrap_err();
        assert_eq!(errors.0[0].key, "server.listn");
        assert!(
            errors.0[0]
                .message
                .contains("set by the environment variable GATEHOUSE__SERVER__LISTN"),
            "{errors}"
        );
        let errors = load("", &[("GATEHOUSE__SERVER__MAX_BODY_BYTES", "abc")]).unwrap_err();
        assert!(
            errors.0[0].message.contains("GATEHOUSE__SERVER__MAX_BODY_BYTES"),
            "{errors}"
        );
        // Found by validation, inside an array the variable indexes.
        let text = "[[sources]]\nname = \"relay\"\nscheme = \"url-token\"\n";
        let errors = load(text, &[("GATEHOUSE__SOURCES__0__NAME", "Not A Name")]).unwrap_err();
        assert_eq!(errors.0[0].key, "sources[0].name");
        assert!(
            errors.0[0].message.contains("GATEHOUSE__SOURCES__0__NAME"),
            "{errors}"
        );
        // An error about a key no variable set does not blame one.
        let errors = load(
            "[server]\nlistn = 1\n",
            &[("GATEHOUSE__SERVER__LISTEN", "0.0.0.0:9")],
        )
        .unwrap_err();
        assert!(!errors.0[0].message.contains("environment"), "{errors}");
    }

    /// A value the example left for the deployment to fill is pointed out, by key only.
    #[test]
    fn placeholders_left_from_the_examples_are_warned_about() {
        let text = "[atlassian]\norg_id = \"CHANGE-ME\"\n[queue]\nurl = [\"amqp://u:CHANGE-ME@a:5672/%2f\", \"amqp://u:pw-4f9e@b:5672/%2f\"]\n";
        let (_, warnings) = load(text, &[]).unwrap();
        let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
        assert!(
            keys.contains(&"atlassian.org_id") && keys.contains(&"queue.url[0]"),
            "{keys:?}"
        );
        assert!(!keys.contains(&"queue.url[1]"), "{keys:?}");
        assert!(warnings.iter().all(|w| !w.message.contains("pw-4f9e")));
        // Replaced by an environment variable: no longer a placeholder.
        let (_, warnings) = load(text, &[("GATEHOUSE__ATLASSIAN__ORG_ID", "org-1")]).unwrap();
        assert!(
            warnings.iter().all(|w| w.key != "atlassian.org_id"),
            "{warnings:?}"
        );
    }

    /// Every secret that cannot be resolved is named at once, with its whole key, not the first
    /// one per run.
    #[test]
    fn every_unresolvable_secret_is_named_in_one_run() {
        let text = "[[sources]]\nname = \"relay\"\nscheme = \"hub-signature\"\nsecrets = [{ id = \"a\", value = \"env:GH_SURELY_UNSET_1\" }, { id = \"b\", value = \"file:/surely/not/there\" }]\n[atlassian]\nauth = { kind = \"oauth\", client_id = \"c\", client_secret = \"env:GH_SURELY_UNSET_2\", refresh_token = \"env:PATH\", cloud_id = \"cloud-1\" }\n";
        let errors = load(text, &[]).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "atlassian.auth.client_secret",
                "sources[0].secrets[0].value",
                "sources[0].secrets[1].value"
            ]
        );
        assert!(
            errors.to_string().contains("GH_SURELY_UNSET_2 is not set"),
            "{errors}"
        );
    }

    /// Without its secrets, a config is checked for everything else: the references are listed,
    /// none is read (not even one that could be), nothing is said of a secret's value (it has
    /// none), and every other mistake, or a reference of the wrong form, is still an error.
    #[test]
    fn a_config_is_checked_without_reading_its_secrets() {
        let read = |text: &str| Settings::read(text, Vec::new(), SecretReading::LeaveUnread);
        let text = "[[sources]]\nname = \"relay\"\nscheme = \"hub-signature\"\nsecrets = [{ id = \"a\", value = \"env:GH_SURELY_UNSET_1\" }, { id = \"b\", value = \"file:/surely/not/there\" }]\n[store]\nencryption_key = \"env:PATH\"\n[atlassian]\nauth = { kind = \"oauth\", client_id = \"c\", client_secret = \"env:GH_SURELY_UNSET_2\", refresh_token = \"env:GH_SURELY_UNSET_3\", cloud_id = \"cloud-1\" }\n";
        // Read as gatehouse starts, PATH is no encryption key; unread, it is not judged.
        let path_as_key = "[store]\nencryption_key = \"env:PATH\"\n";
        assert_eq!(error_keys(path_as_key), ["store.encryption_key"]);
        assert!(read(path_as_key).is_ok());
        let (settings, _, unread) = read(text).unwrap();
        let listed: Vec<(&str, &str)> = unread
            .iter()
            .map(|u| (u.key.as_str(), u.reference.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("atlassian.auth.client_secret", "env:GH_SURELY_UNSET_2"),
                ("atlassian.auth.refresh_token", "env:GH_SURELY_UNSET_3"),
                ("sources[0].secrets[0].value", "env:GH_SURELY_UNSET_1"),
                ("sources[0].secrets[1].value", "file:/surely/not/there"),
                ("store.encryption_key", "env:PATH"),
            ]
        );
        assert_eq!(
            settings.store.encryption_key.as_ref().map(Secret::expose),
            Some("")
        );
        let rendered = settings.to_redacted_toml();
        assert!(rendered.contains("env:GH_SURELY_UNSET_1"), "{rendered}");

        let misnamed = text.replace("name = \"relay\"", "name = \"Not A Name\"");
        let keys: Vec<String> = read(&misnamed)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["sources[0].name"]);
        for (reference, problem) in [
            ("hunter2", "never literal values"),
            ("env:", "needs a variable name"),
            ("file:", "needs a path"),
        ] {
            let errors = read(&text.replace("env:GH_SURELY_UNSET_1", reference)).unwrap_err();
            assert_eq!(errors.0[0].key, "sources[0].secrets[0].value", "{errors}");
            assert!(errors.0[0].message.contains(problem), "{errors}");
        }
        // Reading the real config afterwards reads its secrets again.
        assert!(error_keys(text).contains(&"sources[0].secrets[0].value".to_owned()));
    }

    /// A host name where an address belongs says what to write instead.
    #[test]
    fn a_listen_host_name_says_to_write_an_address() {
        let errors = load("[server]\nlisten = \"localhost:8080\"\n", &[]).unwrap_err();
        assert_eq!(errors.0[0].key, "server.listen");
        assert!(errors.0[0].message.contains("`127.0.0.1:8080`"), "{errors}");
        let (settings, _) = load("", &[("GATEHOUSE__SERVER__LISTEN", "0.0.0.0:9")]).unwrap();
        assert_eq!(settings.server.listen.port(), 9);
    }

    /// A syntax error says where it is.
    #[test]
    fn toml_syntax_errors_name_their_line_and_column() {
        let errors = load(
            "[server]\nlisten = \"0.0.0.0:1\"\n[queue\nbackend = \"embedded\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.0[0].key, "<file>");
        assert!(errors.0[0].message.contains("at line 3, column"), "{errors}");
    }
}
