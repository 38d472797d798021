//! The kinds of audit records: what a record says happened. The audit trail is the runtime's, but
//! its vocabulary is the domain's, so that config (which endpoints follow which kinds) and the
//! trail name kinds the same way. Public surface (docs/audit.md): the spelling is stable.

use serde::{Deserialize, Serialize};

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A worker claimed an event for the first time.
    Received,
    /// Another copy of an event already claimed; not acted on again.
    Duplicate,
    /// An action a handler planned (also the record of a dry run).
    Planned,
    /// An action performed against Atlassian.
    Executed,
    /// An action not performed (already done, not needed, no policy for the event, rejected).
    Skipped,
    /// An action or event that failed (transiently, to be retried, or for good).
    Failed,
    /// An event parked in the dead-letter queue.
    DeadLettered,
    /// A dead letter sent back for processing.
    Replayed,
    /// A person approved a pending plan.
    Approved,
    /// A person rejected a pending plan.
    Rejected,
    /// Something refused at the trust boundary that has no event to record it under (a Connect
    /// install from a site no tenant names).
    Refused,
}

impl AuditKind {
    pub const ALL: [AuditKind; 11] = [
        AuditKind::Received,
        AuditKind::Duplicate,
        AuditKind::Planned,
        AuditKind::Executed,
        AuditKind::Skipped,
        AuditKind::Failed,
        AuditKind::DeadLettered,
        AuditKind::Replayed,
        AuditKind::Approved,
        AuditKind::Rejected,
        AuditKind::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Received => "received",
            AuditKind::Duplicate => "duplicate",
            AuditKind::Planned => "planned",
            AuditKind::Executed => "executed",
            AuditKind::Skipped => "skipped",
            AuditKind::Failed => "failed",
            AuditKind::DeadLettered => "dead_lettered",
            AuditKind::Replayed => "replayed",
            AuditKind::Approved => "approved",
            AuditKind::Rejected => "rejected",
            AuditKind::Refused => "refused",
        }
    }
}
