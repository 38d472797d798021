//! `[reactions]` (what all policies share) and the checks on `[[policies]]` that need the rest of
//! the config.

use serde::{Deserialize, Serialize};

use super::Span;

/// Settings every policy shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReactionSettings {
    /// Plan and record everything, call nothing (a policy's own `dry_run` wins).
    pub dry_run: bool,
    /// Group names mapped to the Confluence product in Atlassian Admin. Adding someone to any
    /// other group grants no access; plans warn about it.
    pub product_groups: Vec<String>,
    /// A plan waiting for approval longer than this expires: it is recorded and never runs (a
    /// week-old decision about access is no decision about today's).
    pub approval_ttl: Span,
}

impl Default for ReactionSettings {
    fn default() -> Self {
        ReactionSettings {
            dry_run: false,
            product_groups: Vec::new(),
            approval_ttl: Span::parse("7d").unwrap_or_else(|| unreachable!("a valid literal")),
        }
    }
}
