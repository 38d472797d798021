//! The audit record: what happened to an event, in the shape security teams consume.
//!
//! Public surface (docs/audit.md): field names and the spelling of [`AuditKind`] are
//! stable. Writers describe what happened with a [`NewRecord`]; the audit log assigns `seq`, `id`,
//! `time` and the hash chain and returns the full [`AuditRecord`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

pub use handlers::AuditKind;

/// The action a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRef {
    /// e.g. `confluence.remove_member`, `scim.deactivate`.
    #[serde(rename = "type")]
    pub action_type: String,
    /// What it acts on, e.g. `group:<id>/account:<id>`.
    pub target: String,
    /// True for actions that reach beyond Confluence (SCIM deactivation, lifecycle disable): the
    /// account loses every Atlassian product.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub org_wide: bool,
}

/// How it turned out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `ok`, `error`, `pending`, `skipped`, … (free text, short).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Never contains a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    pub fn ok() -> Self {
        Outcome {
            status: "ok".to_owned(),
            http_status: None,
            error: None,
        }
    }

    pub fn status(status: impl Into<String>) -> Self {
        Outcome {
            status: status.into(),
            http_status: None,
            error: None,
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Outcome {
            status: "error".to_owned(),
            http_status: None,
            error: Some(error.into()),
        }
    }
}

/// What a writer supplies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecord {
    pub event_id: Ulid,
    pub kind: AuditKind,
    /// The account the event or action is about, for queries by person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The handler (policy) that produced the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRef>,
    pub dry_run: bool,
    pub attempt: u32,
    pub outcome: Outcome,
    /// Atlassian's request id (`X-ARequestId`) of the call, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Things a reader must know (e.g. "group not mapped to Confluence: membership grants no
    /// access").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Whether the event was an observation of Atlassian's state or a decision made elsewhere
    /// (absent on records about no event's authority, and on records written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<handlers::Authority>,
    /// The configured tenant the event belongs to (absent on records written before tenants,
    /// and on records about no tenant, such as a refused Connect install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl NewRecord {
    /// A record of `kind` about `event_id`, outcome `ok`, first attempt, not a dry run.
    pub fn new(event_id: Ulid, kind: AuditKind) -> Self {
        NewRecord {
            event_id,
            kind,
            account_id: None,
            handler: None,
            action: None,
            dry_run: false,
            attempt: 1,
            outcome: Outcome::ok(),
            request_id: None,
            warnings: Vec::new(),
            authority: None,
            tenant: None,
        }
    }

    /// A record of `kind` about `envelope`'s event: its account, authority and tenant filled in.
    pub fn about(envelope: &handlers::Envelope, kind: AuditKind) -> Self {
        let mut record = NewRecord::new(envelope.id, kind);
        record.account_id = envelope.subject.account_id.clone();
        record.authority = Some(envelope.authority);
        record.tenant = Some(envelope.tenant_name().to_owned());
        record
    }

    /// Every free-text field a writer fills (all strings except `account_id`, an opaque
    /// Atlassian id): where personal data and, by mistake, secrets could appear. The audit log
    /// hashes and scrubs these before writing.
    pub fn free_text_mut(&mut self) -> impl Iterator<Item = &mut String> {
        let action = self
            .action
            .as_mut()
            .map(|a| [&mut a.action_type, &mut a.target])
            .into_iter()
            .flatten();
        self.handler
            .iter_mut()
            .chain(action)
            .chain(std::iter::once(&mut self.outcome.status))
            .chain(self.outcome.error.iter_mut())
            .chain(self.request_id.iter_mut())
            .chain(self.warnings.iter_mut())
    }
}

/// A record as stored and published: the writer's fields plus position, identity and chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the one chain; starts at 1, no gaps.
    pub seq: u64,
    pub id: Ulid,
    pub time: DateTime<Utc>,
    #[serde(flatten)]
    pub record: NewRecord,
    /// The previous record's hash (64 zeros for the first record).
    pub prev_hash: String,
    /// `SHA-256(prev_hash ‖ canonical JSON of this record without hash)`, hex.
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::AuditKind;

    #[test]
    fn every_kind_is_listed_once_under_its_wire_name() {
        let names: std::collections::BTreeSet<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), AuditKind::ALL.len());
        for kind in AuditKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(crate::audit::log::parse_kind(kind.as_str()), Ok(kind));
        }
    }
}
