//! Whole-config checks that types cannot express: names that must be unique or URL-safe,
//! references between sections, secrets in the shape their scheme needs.

use chrono::{DateTime, Utc};

use super::checks::is_name;
use super::sources::RESERVED_SOURCE_NAMES;
use super::{ConfigError, ConfigErrors, ConfigWarning, Settings, VerificationScheme};

/// Checks the whole config, section by section (the sections with their own modules check
/// themselves: sources, connect, tenants, audit, polling); the warnings, or every error found.
pub(super) fn validate(settings: &Settings, now: DateTime<Utc>) -> Result<Vec<ConfigWarning>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut error = |key: String, message: String| errors.push(ConfigError { key, message });
    let mut warn = |key: String, message: String| warnings.push(ConfigWarning { key, message });

    let server = &settings.server;
    if server.max_body_bytes == 0 {
        error("server.max_body_bytes".into(), "must be greater than 0".into());
    }
    if server.request_timeout_seconds == 0 {
        error(
            "server.request_timeout_seconds".into(),
            "must be greater than 0".into(),
        );
    }
    if server.max_concurrent_requests == 0 {
        error(
            "server.max_concurrent_requests".into(),
            "must be greater than 0".into(),
        );
    }
    for (key, value, max) in [
        (
            "server.header_read_timeout_seconds",
            server.header_read_timeout_seconds,
            3_600,
        ),
        (
            "server.keep_alive_idle_seconds",
            server.keep_alive_idle_seconds,
            86_400,
        ),
        ("server.max_connections", server.max_connections as u64, 1_000_000),
        (
            "server.max_connections_per_peer",
            server.max_connections_per_peer as u64,
            1_000_000,
        ),
    ] {
        if value == 0 || value > max {
            error(key.into(), format!("must be between 1 and {max}"));
        }
    }

    let queue = &settings.queue;
    if !is_name(&queue.prefix, &['.', '-', '_']) {
        error(
            "queue.prefix".into(),
            "must be non-empty and use only letters, digits, `.`, `-` and `_`".into(),
        );
    }
    if queue.publish_timeout_ms == 0 {
        error("queue.publish_timeout_ms".into(), "must be greater than 0".into());
    }
    if queue.publish_timeout_ms >= server.request_timeout_seconds.saturating_mul(1000) {
        // Otherwise a slow broker would answer 408 (the sender's fault) instead of 503 (ours).
        error(
            "queue.publish_timeout_ms".into(),
            "must be shorter than server.request_timeout_seconds".into(),
        );
    }
    if queue.publish_channels == 0 {
        error("queue.publish_channels".into(), "must be at least 1".into());
    }
    if !(queue.url.expose().starts_with("amqp://") || queue.url.expose().starts_with("amqps://")) {
        error("queue.url".into(), "must be an amqp:// or amqps:// URL".into());
    }
    if queue.prefetch == 0 {
        error("queue.prefetch".into(), "must be at least 1".into());
    }
    if queue.delivery_limit == 0 {
        error("queue.delivery_limit".into(), "must be at least 1".into());
    }
    if queue.retry_delays_seconds.is_empty() {
        error(
            "queue.retry_delays_seconds".into(),
            "needs at least one rung".into(),
        );
    }
    for (i, delay) in queue.retry_delays_seconds.iter().enumerate() {
        if !(delay.is_finite() && *delay >= 0.001 && *delay <= 86_400.0 * 7.0) {
            error(
                format!("queue.retry_delays_seconds[{i}]"),
                "must be between 0.001 and 604800 seconds".into(),
            );
        }
    }
    if queue.max_attempts == Some(0) {
        error("queue.max_attempts".into(), "must be at least 1".into());
    }
    if queue.embedded_poll_ms == 0 {
        error("queue.embedded_poll_ms".into(), "must be greater than 0".into());
    }
    if queue.visibility_timeout_seconds == 0 {
        error(
            "queue.visibility_timeout_seconds".into(),
            "must be greater than 0".into(),
        );
    }
    let worker = &settings.worker;
    if worker.concurrency == 0 {
        error("worker.concurrency".into(), "must be at least 1".into());
    }
    if worker.concurrency > usize::from(queue.prefetch) {
        error(
            "worker.concurrency".into(),
            format!(
                "must not exceed queue.prefetch ({}): a worker cannot process more than it is handed",
                queue.prefetch
            ),
        );
    }
    if let Some(limit) = worker.tenant_concurrency
        && (limit == 0 || limit > worker.concurrency)
    {
        error(
            "worker.tenant_concurrency".into(),
            format!(
                "must be between 1 and worker.concurrency ({})",
                worker.concurrency
            ),
        );
    }
    if worker.claim_lease_seconds == 0 {
        error(
            "worker.claim_lease_seconds".into(),
            "must be greater than 0".into(),
        );
    }
    if worker.dedupe_retention_days == 0 {
        error("worker.dedupe_retention_days".into(), "must be at least 1".into());
    }
    if worker.depth_sample_seconds == 0 {
        error(
            "worker.depth_sample_seconds".into(),
            "must be greater than 0".into(),
        );
    }

    let store_url = settings.store.url.expose();
    if !(store_url.starts_with("sqlite:")
        || store_url.starts_with("postgres://")
        || store_url.starts_with("postgresql://"))
    {
        error(
            "store.url".into(),
            "must start with sqlite:, postgres:// or postgresql://".into(),
        );
    }
    if settings.store.max_connections == 0 {
        error("store.max_connections".into(), "must be at least 1".into());
    }
    match &settings.store.encryption_key {
        Some(key) => {
            if let Err(message) = super::EncryptionKey::parse(key) {
                error("store.encryption_key".into(), message);
            }
        }
        None => {
            let keeps_credentials = settings
                .sources
                .iter()
                .any(|s| s.scheme == VerificationScheme::ConnectJwt)
                || settings
                    .tenant_configs()
                    .iter()
                    .any(|(_, a)| matches!(a.auth, Some(crate::config::AuthSettings::Oauth { .. })));
            if keeps_credentials {
                warn(
                    "store.encryption_key".into(),
                    "not set: Connect shared secrets and OAuth tokens are stored in clear in the store"
                        .into(),
                );
            }
        }
    }

    if settings.ingress.dedupe_window_size == 0 {
        error("ingress.dedupe_window_size".into(), "must be at least 1".into());
    }

    super::sources::validate(settings, now, &mut error, &mut warn);
    super::connect::validate(settings, &mut error);

    super::tenants::validate(settings, now, &mut errors, &mut warnings);
    errors.extend(settings.audit.validate());
    super::poll::validate(settings, &mut errors);

    for (i, policy) in settings.policies.iter().enumerate() {
        for (key, message) in policy.problems() {
            errors.push(ConfigError {
                key: format!("policies[{i}].{key}"),
                message,
            });
        }
        errors.extend(policy_needs(settings, i, policy));
        for (j, name) in policy.sources.iter().enumerate() {
            let internal = &RESERVED_SOURCE_NAMES[..2];
            if !settings.sources.iter().any(|s| &s.name == name) && !internal.contains(&name.as_str()) {
                let mut have: Vec<&str> = settings.sources.iter().map(|s| s.name.as_str()).collect();
                have.extend(internal);
                errors.push(ConfigError::new(
                    format!("policies[{i}].sources[{j}]"),
                    format!("`{name}` is not a source (have: {})", have.join(", ")),
                ));
            }
        }
    }

    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// What a policy's actions need from each tenant it acts for: Confluence for every policy (to
/// read), SCIM for SCIM actions, the organization API key for lifecycle actions.
fn policy_needs(settings: &Settings, i: usize, policy: &handlers::policy::PolicyConfig) -> Vec<ConfigError> {
    use handlers::policy::Capability;
    let key = format!("policies[{i}].actions");
    let tenants = settings.tenant_configs();
    if tenants.is_empty() {
        return vec![ConfigError::new(
            key,
            "policies act on Atlassian: configure a tenant ([[tenants]], or the [atlassian] section)",
        )];
    }
    let mut errors = Vec::new();
    for (tenant_key, tenant) in tenants {
        let name = tenant.tenant_name();
        if !policy.applies_to_tenant(&name) {
            continue;
        }
        if tenant.auth.is_none() {
            errors.push(ConfigError::new(
                key.clone(),
                format!("policies read Confluence: configure {tenant_key}.auth (tenant `{name}`)"),
            ));
        }
        if policy.actions.iter().any(|c| c.needs_scim())
            && (tenant.scim_base_url.is_none() || tenant.scim_token.is_none())
        {
            errors.push(ConfigError::new(
                key.clone(),
                format!(
                    "SCIM actions need {tenant_key}.scim_base_url and {tenant_key}.scim_token (tenant `{name}`)"
                ),
            ));
        }
        if policy.actions.contains(&Capability::LifecycleDisable) && tenant.admin_api_key.is_none() {
            errors.push(ConfigError::new(
                key.clone(),
                format!(
                    "lifecycle.disable needs {tenant_key}.admin_api_key, the organization API key (tenant `{name}`)"
                ),
            ));
        }
    }
    errors
}
