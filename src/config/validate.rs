//! Whole-config checks that types cannot express: each section checks itself in its own module
//! (server, queue, worker, store, sources, connect, tenants, audit, polling, console); what is left here
//! is the order they run in and the policies, which refer to sources and tenants.

use chrono::{DateTime, Utc};

use super::sources::RESERVED_SOURCE_NAMES;
use super::{ConfigError, ConfigErrors, ConfigWarning, Settings};

/// Checks the whole config, section by section; the warnings, or every error found (all of
/// them, so one run shows every fix needed).
pub(super) fn validate(settings: &Settings, now: DateTime<Utc>) -> Result<Vec<ConfigWarning>, ConfigErrors> {
    let (errors, warnings) = findings(settings, now);
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Every error and warning of the whole config, section by section.
pub(super) fn findings(settings: &Settings, now: DateTime<Utc>) -> (Vec<ConfigError>, Vec<ConfigWarning>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut error = |key: String, message: String| errors.push(ConfigError { key, message });
    let mut warn = |key: String, message: String| warnings.push(ConfigWarning { key, message });

    super::server::validate(settings, &mut error);
    super::queue::validate(settings, &mut error);
    super::worker::validate(settings, &mut error);
    super::store::validate(settings, &mut error, &mut warn);
    super::sources::validate(settings, now, &mut error, &mut warn);
    super::connect::validate(settings, &mut error);
    super::outbound::validate(settings, now, &mut error, &mut warn);
    super::approvals::validate(settings, &mut error);

    super::tenants::validate(settings, now, &mut errors, &mut warnings);
    errors.extend(settings.audit.validate());
    super::poll::validate(settings, &mut errors);
    super::console::validate(settings, &mut errors);

    let tenants = settings.tenant_names();
    for (i, policy) in settings.policies.iter().enumerate() {
        for (key, message) in policy.problems() {
            errors.push(ConfigError {
                key: format!("policies[{i}].{key}"),
                message,
            });
        }
        errors.extend(policy_needs(settings, i, policy));
        // Plans and approvals are told apart by their policy's name within an event (an
        // approval is one per event and policy): two that could both act on one event must
        // have different names.
        let name = policy.display_name();
        if let Some(j) = settings.policies[..i].iter().position(|other| {
            other.display_name() == name
                && other.on.iter().any(|t| policy.on.contains(t))
                && (policy.sources.is_empty() || policy.sources.iter().any(|s| other.accepts_source(s)))
                && tenants
                    .iter()
                    .any(|t| other.applies_to_tenant(t) && policy.applies_to_tenant(t))
        }) {
            errors.push(ConfigError::new(
                format!("policies[{i}].name"),
                format!(
                    "`{name}` is policies[{j}]'s name too, and both may act on one event: give them different names"
                ),
            ));
        }
        // A policy listening only to sources that may not cause one of its types never fires
        // for that type: most likely a mistake (the sources' `allow_types`).
        let listed: Vec<&super::SourceSettings> = policy
            .sources
            .iter()
            .filter_map(|name| settings.sources.iter().find(|s| &s.name == name))
            .collect();
        if !listed.is_empty() && listed.len() == policy.sources.len() {
            for event_type in &policy.on {
                if !listed.iter().any(|source| source.allows(event_type)) {
                    warnings.push(ConfigWarning {
                        key: format!("policies[{i}].on"),
                        message: format!(
                            "none of its sources ({}) may cause {event_type} (their allow_types): it never acts on it",
                            policy.sources.join(", ")
                        ),
                    });
                }
            }
        }
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
    (errors, warnings)
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
