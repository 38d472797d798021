//! `[reactions]` (what all policies share) and the checks on `[[policies]]` that need the rest of
//! the config.

use serde::{Deserialize, Serialize};

/// Settings every policy shares.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReactionSettings {
    /// Plan and record everything, call nothing (a policy's own `dry_run` wins).
    pub dry_run: bool,
    /// Group names mapped to the Confluence product in Atlassian Admin. Adding someone to any
    /// other group grants no access; plans warn about it.
    pub product_groups: Vec<String>,
}
