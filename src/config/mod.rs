//! Typed settings: one TOML file, overridden key by key from `GATEHOUSE__…` environment
//! variables, secrets resolved from `env:`/`file:` references, and validated as a whole before
//! anything starts.
//!
//! Every error names the key it is about (`sources[1].secrets[0].value: …`), so an operator can fix
//! a config without reading code. Validation also produces warnings for configs that run but will
//! not do what the operator probably wants (a source that can verify nothing, a secret about to
//! expire); `gatehouse check-config` prints them.

mod atlassian;
mod audit;
mod checks;
mod connect;
mod env_override;
mod poll;
mod reactions;
mod secret;
mod sources;
mod span;
mod tenants;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use atlassian::{
    AtlassianSettings, AuthSettings, DEFAULT_TENANT, EndpointRateLimit, HttpSettings, RateLimitSettings,
    RetrySettings,
};
pub use audit::{AuditSettings, AuditStreamSettings, PiiKind};
pub use connect::ConnectSettings;
pub use poll::{DeactivationSource, PollSettings, ReconcileSettings};
pub use reactions::ReactionSettings;
pub use secret::{EncryptionKey, Secret, SensitiveUrl, redact_url};
pub use sources::{SourceSecret, SourceSettings, VerificationScheme, standard_webhooks_key};
pub use span::Span;
pub use tenants::Site;

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
    /// The Atlassian organizations and sites served, each with its own credentials and limits
    /// (see [`tenants`]).
    #[serde(default)]
    pub tenants: Vec<AtlassianSettings>,
    /// The older form of one tenant, read as the tenant `default` (absent with no `[[tenants]]`:
    /// gatehouse calls nothing).
    #[serde(default)]
    pub atlassian: Option<AtlassianSettings>,
}

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Where the ingress listens. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Bodies larger than this are refused with 413 before they are read in full.
    pub max_body_bytes: usize,
    /// A request that takes longer (usually a sender trickling its body) gets 408.
    pub request_timeout_seconds: u64,
    /// Requests beyond this many in flight get 503 at once instead of queueing in memory.
    pub max_concurrent_requests: usize,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub shutdown_grace_seconds: u64,
    /// A request's line and headers must arrive within this once its first byte has; a client
    /// that trickles them (or sends half a request line and stops) is disconnected.
    pub header_read_timeout_seconds: u64,
    /// A kept-alive connection with no request for this long is closed.
    pub keep_alive_idle_seconds: u64,
    /// Open connections at most; a connection beyond this is answered 503 at once and closed,
    /// so idle or slow clients cannot hold every socket.
    pub max_connections: usize,
    /// Open connections from one client address at most (beyond: 503 at once). Behind a load
    /// balancer every connection comes from its few addresses: raise it to `max_connections`.
    pub max_connections_per_peer: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            request_timeout_seconds: 15,
            max_concurrent_requests: 1024,
            shutdown_grace_seconds: 30,
            header_read_timeout_seconds: 10,
            keep_alive_idle_seconds: 75,
            max_connections: 4096,
            max_connections_per_peer: 1024,
        }
    }
}

/// How gatehouse logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,gatehouse::ingress=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Which queue carries envelopes, and how to reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub backend: QueueBackend,
    /// AMQP URL of the RabbitMQ cluster (backend `rabbitmq`). Shown with its password hidden.
    pub url: SensitiveUrl,
    /// Every exchange and queue name starts with this, so several deployments (or tests) can
    /// share one broker.
    pub prefix: String,
    /// How long a publish may wait for the broker's confirm before the request answers 503.
    pub publish_timeout_ms: u64,
    /// Publishes are spread over this many confirm-mode channels.
    pub publish_channels: usize,
    /// Giving up on one connection attempt after this long.
    pub connect_timeout_ms: u64,
    /// Reconnect backoff doubles from 100 ms up to this.
    pub reconnect_max_delay_ms: u64,
    /// Messages handed to one worker process at once (AMQP prefetch; embedded: rows locked).
    pub prefetch: u16,
    /// Redeliveries after which the broker parks a message it keeps getting back (a worker
    /// crashing on it): RabbitMQ's `x-delivery-limit`; the embedded backend counts the same way.
    /// On RabbitMQ every return counts, also a message given back at shutdown or when a channel
    /// closes under it, so leave room for restarts and broker blips (RabbitMQ 4's own default
    /// is 20).
    pub delivery_limit: u32,
    /// The retry ladder: a failed attempt n waits `retry_delays_seconds[n-1]` (the last rung
    /// repeats). Each rung is a RabbitMQ queue whose TTL sends messages back to the work queue.
    pub retry_delays_seconds: Vec<f64>,
    /// Attempts before a transiently failing message is dead-lettered. Default: one more than
    /// the rungs of the ladder.
    pub max_attempts: Option<u32>,
    /// Embedded backend: how often an idle worker looks for new messages.
    pub embedded_poll_ms: u64,
    /// Embedded backend: a delivery not settled within this long (the worker died) is handed out
    /// again. Workers extend it while they process.
    pub visibility_timeout_seconds: u64,
}

impl QueueSettings {
    /// The effective attempt limit.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
            .unwrap_or(self.retry_delays_seconds.len() as u32 + 1)
    }

    /// The first rung of the ladder waiting at least `wait` (the last one when none does).
    pub fn rung_for(&self, wait: std::time::Duration) -> usize {
        let rungs = self.retry_delays_seconds.len().max(1);
        (0..rungs)
            .find(|&rung| self.retry_delay(rung) >= wait)
            .unwrap_or(rungs - 1)
    }

    /// The delay of rung `rung` (the last rung repeats).
    pub fn retry_delay(&self, rung: usize) -> std::time::Duration {
        let seconds = self
            .retry_delays_seconds
            .get(rung)
            .or(self.retry_delays_seconds.last())
            .copied()
            .unwrap_or(5.0);
        std::time::Duration::from_secs_f64(seconds.max(0.0))
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            backend: QueueBackend::Embedded,
            url: SensitiveUrl::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "gatehouse".to_owned(),
            publish_timeout_ms: 5_000,
            publish_channels: 2,
            connect_timeout_ms: 5_000,
            reconnect_max_delay_ms: 5_000,
            prefetch: 32,
            delivery_limit: 20,
            retry_delays_seconds: vec![5.0, 30.0, 120.0, 600.0, 3_600.0],
            max_attempts: None,
            embedded_poll_ms: 200,
            visibility_timeout_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// A durable queue in the store: no external service needed.
    Embedded,
    Rabbitmq,
}

/// The SQL store: installations, dedupe claims, cursors, approvals and the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://…`. Shown with its password
    /// hidden.
    pub url: SensitiveUrl,
    pub max_connections: u32,
    /// Seals the credentials the store keeps (Connect shared secrets, OAuth tokens) with
    /// AES-256-GCM: base64 of 32 random bytes (`openssl rand -base64 32`), as a secret reference.
    pub encryption_key: Option<Secret>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: SensitiveUrl::new("sqlite://data/gatehouse.db"),
            max_connections: 8,
            encryption_key: None,
        }
    }
}

/// The ingress's own duplicate window (the authoritative dedupe is the worker's claim).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSettings {
    /// How many recently published dedupe keys are remembered.
    pub dedupe_window_size: usize,
    /// How long a published dedupe key is remembered.
    pub dedupe_window_seconds: u64,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            dedupe_window_size: 100_000,
            dedupe_window_seconds: 3_600,
        }
    }
}

/// The worker role: how events are processed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Events processed at once by one process.
    pub concurrency: usize,
    /// Events of one tenant processed at once by one process, so that a tenant Atlassian
    /// throttles (its calls waiting out pauses) leaves slots for the others; its other events
    /// go back to the queue for the first rung of the ladder, not counted as attempts. Default:
    /// `concurrency` with one tenant, half of it (at least 1) with several.
    pub tenant_concurrency: Option<usize>,
    /// On shutdown, in-flight events get this long to finish; the rest go back to the queue.
    pub shutdown_grace_seconds: u64,
    /// A claim on an event's dedupe key held by a worker that stopped renewing it (crashed) is
    /// taken over after this long.
    pub claim_lease_seconds: u64,
    /// Completed dedupe keys are remembered this long (copies arriving later are duplicates).
    pub dedupe_retention_days: u64,
    /// How often queue depths are sampled for metrics.
    pub depth_sample_seconds: u64,
}

impl WorkerSettings {
    /// Events of one tenant at once (see [`WorkerSettings::tenant_concurrency`]) when `tenants`
    /// are served.
    pub fn effective_tenant_concurrency(&self, tenants: usize) -> usize {
        self.tenant_concurrency.unwrap_or(if tenants > 1 {
            (self.concurrency / 2).max(1)
        } else {
            self.concurrency
        })
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 8,
            tenant_concurrency: None,
            shutdown_grace_seconds: 30,
            claim_lease_seconds: 300,
            dedupe_retention_days: 30,
            depth_sample_seconds: 15,
        }
    }
}

impl Settings {
    /// Reads `path`, applies `GATEHOUSE__…` variables from the process environment, resolves
    /// secrets and validates.
    pub fn load(path: &Path) -> Result<(Settings, Vec<ConfigWarning>), ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?;
        Settings::from_toml(&text, std::env::vars())
    }

    /// Like [`Settings::load`], from text and an explicit environment (tests).
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Settings, Vec<ConfigWarning>), ConfigErrors> {
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new("<file>", format!("not valid TOML: {}", e.message().trim()))
        })?;
        env_override::apply(&mut root, env)?;
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "<file>".to_owned() } else { key };
            ConfigError::new(key, e.into_inner().message().trim().to_owned())
        })?;
        let warnings = settings.validate(Utc::now())?;
        Ok((settings, warnings))
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
    fn errors_name_the_key() {
        assert_eq!(error_keys("[server]\nlistn = \"x\""), ["server.listn"]);
        assert_eq!(error_keys("[server]\nlisten = \"nope\""), ["server.listen"]);
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
}
