//! Performing one action: the [`Perform`] trait the executor calls, so the executor's bookkeeping
//! (dry-run, approvals, idempotency, audit) is independent of how an action reaches Atlassian.

use async_trait::async_trait;
use handlers::ports::ErrorKind;
use handlers::{Action, Envelope};

/// What a performed action left behind for the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Performed {
    /// Atlassian's request id, when the call returned one.
    pub request_id: Option<String>,
    pub http_status: Option<u16>,
    /// e.g. "already a member": the desired state already held.
    pub note: Option<String>,
}

/// A failed action, classified for the retry logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub kind: ErrorKind,
    pub http_status: Option<u16>,
    pub request_id: Option<String>,
    /// Never contains a credential.
    pub message: String,
}

impl ActionError {
    /// A failure that retrying later can fix.
    pub fn transient(message: impl Into<String>) -> Self {
        ActionError::new(ErrorKind::Transient, message)
    }

    /// A failure no retry fixes.
    pub fn permanent(message: impl Into<String>) -> Self {
        ActionError::new(ErrorKind::Permanent, message)
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ActionError {
            kind,
            http_status: None,
            request_id: None,
            message: message.into(),
        }
    }
}

/// Performs actions against the world.
#[async_trait]
pub trait Perform: Send + Sync {
    /// Performs `action` (planned for `envelope`). Must converge: when the desired state already
    /// holds, it succeeds.
    async fn perform(&self, action: &Action, envelope: &Envelope) -> Result<Performed, ActionError>;
}
