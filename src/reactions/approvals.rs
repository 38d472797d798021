//! Deciding on pending plans (`gatehouse approvals`): approving records the decision and queues
//! an `approval.granted` event, so a worker performs exactly the recorded plan, with the queue's
//! retries; rejecting records the decision and nothing is performed. A decision and its audit
//! record commit together or not at all.

use handlers::EventType;

use super::own_events;
use crate::audit::{AuditError, AuditKind, AuditLog, NewRecord, Outcome};
use crate::queue::{PublishError, Queue};
use crate::store::{Approval, ApprovalState, StoreError, approvals};

#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no approval {0}")]
    Unknown(String),
    #[error("approval {id} is already {state}")]
    AlreadyDecided { id: String, state: &'static str },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("audit trail: {0}")]
    Audit(#[from] AuditError),
    #[error("approved, but the plan could not be queued (run approve again): {0}")]
    Queue(#[from] PublishError),
}

/// Moves `approval` from pending to `to` and appends `record`, in one transaction; false (and
/// nothing written) when someone decided first.
async fn decide(
    audit: &AuditLog,
    approval: &Approval,
    to: ApprovalState,
    by: &str,
    note: Option<&str>,
    record: NewRecord,
) -> Result<bool, DecisionError> {
    let write = async {
        let mut tx = audit.store().begin_write().await?;
        if !approvals::decide(&mut tx, &approval.id, ApprovalState::Pending, to, Some(by), note).await? {
            return Ok(false);
        }
        audit.append_in(&mut tx, vec![record]).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    };
    audit.bounded(write, DecisionError::Audit).await
}

fn decision_record(approval: &Approval, kind: AuditKind, by: &str) -> NewRecord {
    let event_id = approval.event_id.parse().unwrap_or_else(|_| ulid::Ulid::nil());
    let mut record = NewRecord::new(event_id, kind);
    record.handler = Some(approval.handler.clone());
    record.account_id = approval.account_id.clone();
    record.outcome = Outcome::status(format!("{} by {by} (approval {})", kind.as_str(), approval.id));
    record
}

async fn load(audit: &AuditLog, id: &str) -> Result<Approval, DecisionError> {
    audit
        .store()
        .approval(id)
        .await?
        .ok_or_else(|| DecisionError::Unknown(id.to_owned()))
}

/// Approves a pending plan (or re-queues an approved one whose queuing failed).
pub async fn approve(
    audit: &AuditLog,
    queue: &dyn Queue,
    id: &str,
    by: &str,
) -> Result<Approval, DecisionError> {
    let approval = load(audit, id).await?;
    match approval.state {
        ApprovalState::Pending => {
            let record = decision_record(&approval, AuditKind::Approved, by);
            if !decide(audit, &approval, ApprovalState::Approved, by, None, record).await? {
                return Err(DecisionError::AlreadyDecided {
                    id: id.to_owned(),
                    state: "decided",
                });
            }
        }
        ApprovalState::Approved => {}
        other => {
            return Err(DecisionError::AlreadyDecided {
                id: id.to_owned(),
                state: other.as_str(),
            });
        }
    }
    let body = own_events::ApprovalGranted {
        approval_id: id.to_owned(),
    };
    let unwritable = |e: serde_json::Error| DecisionError::Store(StoreError::Corrupt(e.to_string()));
    let mut envelope = own_events::envelope(
        EventType::ApprovalGranted,
        handlers::internal_dedupe_key("approval", id),
        &body,
    )
    .map_err(unwritable)?;
    envelope.subject.account_id = approval.account_id.clone();
    let message = own_events::message(&envelope).map_err(unwritable)?;
    queue.publish(&message).await?;
    Ok(approval)
}

/// Rejects a pending plan: nothing of it is performed.
pub async fn reject(
    audit: &AuditLog,
    id: &str,
    by: &str,
    reason: Option<&str>,
) -> Result<Approval, DecisionError> {
    let approval = load(audit, id).await?;
    let mut record = decision_record(&approval, AuditKind::Rejected, by);
    record.outcome.error = reason.map(str::to_owned);
    if approval.state != ApprovalState::Pending
        || !decide(audit, &approval, ApprovalState::Rejected, by, reason, record).await?
    {
        return Err(DecisionError::AlreadyDecided {
            id: id.to_owned(),
            state: approval.state.as_str(),
        });
    }
    Ok(approval)
}
