//! `[poll]` (the organization events-stream poller) and `[reconcile]` (the periodic comparison of
//! real state with what events said): what fills the gaps Atlassian's webhooks leave.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The organization events poller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollSettings {
    /// Poll the events-stream (needs `atlassian.org_id` and `atlassian.admin_api_key`).
    pub org_events: bool,
    /// Pause between polls once the stream is drained (Atlassian allows 10 requests a minute).
    pub interval_seconds: u64,
    pub page_size: u32,
    /// On the very first start (no saved cursor), read events from this instant; default: from
    /// the start, now.
    pub backfill_from: Option<DateTime<Utc>>,
    /// The routing-key prefix of polled events (`admin.user.deactivated`).
    pub kind: String,
    /// Org event actions mapped to envelope types, over the defaults
    /// (`{ "user_offboarded" = "user.deactivated" }`); unmapped actions become `other.<action>`.
    pub actions: BTreeMap<String, String>,
    /// At most this many events-stream requests in any `window_seconds` (Atlassian's documented
    /// limit: 10 a minute), across every process and restart: the request times are kept in the
    /// store.
    pub requests_per_window: u32,
    pub window_seconds: u64,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            org_events: false,
            interval_seconds: 30,
            page_size: 100,
            backfill_from: None,
            kind: "admin".to_owned(),
            actions: BTreeMap::new(),
            requests_per_window: 10,
            window_seconds: 60,
        }
    }
}

/// Where the reconciler learns who is deactivated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeactivationSource {
    /// Confluence v2 `accountStatus` of every group member.
    Confluence,
    /// SCIM users with `active = false` (needs SCIM).
    Scim,
}

/// The reconciler.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Reconcile periodically in worker processes (`gatehouse reconcile` runs it on demand).
    pub enabled: bool,
    pub interval_seconds: u64,
    /// After a failed round, the next is tried this long later, doubling while rounds keep
    /// failing, up to `interval_seconds`.
    pub retry_after_failure_seconds: u64,
    pub deactivated_from: Vec<DeactivationSource>,
    /// Groups whose members are compared with the last snapshot, besides the policies'
    /// `protected_groups`.
    pub protected_groups: Vec<String>,
    /// Memberships a deactivated account may keep, besides the groups kept by every policy that
    /// removes groups on the reconciler's findings.
    pub ignore_groups: Vec<String>,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            enabled: false,
            interval_seconds: 900,
            retry_after_failure_seconds: 30,
            deactivated_from: vec![DeactivationSource::Confluence],
            protected_groups: Vec::new(),
            ignore_groups: Vec::new(),
        }
    }
}

pub(super) fn validate(settings: &super::Settings, errors: &mut Vec<ConfigError>) {
    let poll = &settings.poll;
    let tenants = settings.tenant_configs();
    // Each tenant that can is polled; at least one must be able to.
    if poll.org_events && !tenants.iter().any(|(_, t)| t.polls_org_events()) {
        errors.push(ConfigError::new(
            "poll.org_events",
            "polling the events-stream needs a tenant with org_id and admin_api_key",
        ));
    }
    if poll.interval_seconds == 0 {
        errors.push(ConfigError::new(
            "poll.interval_seconds",
            "must be greater than 0",
        ));
    }
    if poll.page_size == 0 {
        errors.push(ConfigError::new("poll.page_size", "must be at least 1"));
    }
    if poll.requests_per_window == 0 {
        errors.push(ConfigError::new("poll.requests_per_window", "must be at least 1"));
    }
    if poll.window_seconds == 0 || poll.window_seconds > 86_400 {
        errors.push(ConfigError::new(
            "poll.window_seconds",
            "must be between 1 and 86400",
        ));
    }
    for (action, event_type) in &poll.actions {
        if let Err(error) = event_type.parse::<handlers::EventType>() {
            errors.push(ConfigError::new(
                format!("poll.actions.{action}"),
                error.to_string(),
            ));
        }
    }
    let reconcile = &settings.reconcile;
    if reconcile.interval_seconds == 0 {
        errors.push(ConfigError::new(
            "reconcile.interval_seconds",
            "must be greater than 0",
        ));
    }
    if reconcile.retry_after_failure_seconds == 0 {
        errors.push(ConfigError::new(
            "reconcile.retry_after_failure_seconds",
            "must be greater than 0",
        ));
    }
    if reconcile.enabled && !tenants.iter().any(|(_, t)| t.auth.is_some()) {
        errors.push(ConfigError::new(
            "reconcile.enabled",
            "reconciling reads Confluence: configure a tenant's auth",
        ));
    }
    // Every tenant reconciled (those with Confluence) must have SCIM if SCIM is asked for.
    if reconcile.deactivated_from.contains(&DeactivationSource::Scim) {
        for (key, tenant) in &tenants {
            if tenant.auth.is_none() || tenant.scim_reachable() {
                continue;
            }
            errors.push(ConfigError::new(
                "reconcile.deactivated_from",
                format!("\"scim\" needs {key}.scim_base_url and {key}.scim_token"),
            ));
        }
        if tenants.is_empty() {
            errors.push(ConfigError::new(
                "reconcile.deactivated_from",
                "\"scim\" needs a tenant with scim_base_url and scim_token",
            ));
        }
    }
}
