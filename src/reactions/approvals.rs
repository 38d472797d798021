//! Deciding on pending plans (`gatehouse approvals`): approving records the decision and queues
//! an `approval.granted` event, so a worker performs exactly the recorded plan, with the queue's
//! retries; rejecting records the decision and nothing is performed. A plan nobody decided on
//! within `reactions.approval_ttl` expires: it is recorded as skipped and never runs, and
//! approving it is refused. A decision (or an expiry) and its audit record commit together or
//! not at all, and so does the update replacing the plan's Slack message with it (a bot token's
//! message; [`Outbox::for_settlement`]).

use handlers::EventType;

use super::own_events;
use crate::audit::{AuditError, AuditKind, AuditLog, NewRecord, Outcome};
use crate::config::Span;
use crate::outbound::Outbox;
use crate::queue::{PublishError, Queue};
use crate::store::{Approval, ApprovalState, Store, StoreError, approvals};

#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no approval {0}")]
    Unknown(String),
    #[error("approval {id} is already {state}")]
    AlreadyDecided { id: String, state: &'static str },
    #[error("approval {id} expired at {at} (reactions.approval_ttl): it will not run")]
    Expired {
        id: String,
        at: chrono::DateTime<chrono::Utc>,
    },
    #[error("approval {id} is for tenant `{actual}`, not `{expected}`")]
    OtherTenant {
        id: String,
        actual: String,
        expected: String,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("audit trail: {0}")]
    Audit(#[from] AuditError),
    #[error("approved, but the plan could not be queued (run approve again): {0}")]
    Queue(#[from] PublishError),
    #[error("cannot write the update of the plan's Slack message: {0}")]
    SlackUpdate(#[from] serde_json::Error),
}

/// Who settles plans, and which updates of a plan's Slack message their settlements make.
#[derive(Debug, Clone, Copy)]
pub struct Deciders<'a> {
    pub audit: &'a AuditLog,
    pub outbox: &'a Outbox,
    /// Decisions come from Slack clicks, whose own update (to the click's `response_url`)
    /// replaces the message: they are not announced again. An expiry a click runs into still is.
    pub clicked: bool,
}

impl<'a> Deciders<'a> {
    /// Deciding outside Slack (the CLI, the console, the worker).
    pub fn new(audit: &'a AuditLog, outbox: &'a Outbox) -> Self {
        Deciders {
            audit,
            outbox,
            clicked: false,
        }
    }

    /// Deciding by Slack clicks.
    pub fn clicked(audit: &'a AuditLog, outbox: &'a Outbox) -> Self {
        Deciders {
            clicked: true,
            ..Deciders::new(audit, outbox)
        }
    }
}

/// Moves `approval` from `from` to `to` and appends `record`, with the update of its Slack
/// message that `outbox` makes of it (none without one), in one transaction; false (and nothing
/// written) when someone decided first.
pub async fn transition(
    audit: &AuditLog,
    outbox: Option<&Outbox>,
    approval: &Approval,
    (from, to): (ApprovalState, ApprovalState),
    by: &str,
    note: Option<&str>,
    record: NewRecord,
) -> Result<bool, DecisionError> {
    let announce = match outbox {
        Some(outbox) => outbox.for_settlement(&approval.id, to, by, note)?,
        None => Vec::new(),
    };
    let write = async {
        let mut tx = audit.store().begin_write().await?;
        if !approvals::decide(&mut tx, &approval.id, from, to, Some(by), note).await? {
            return Ok(false);
        }
        audit.append_in(&mut tx, vec![record]).await?;
        crate::store::outbox::enqueue_in(&mut tx, &announce).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    };
    audit.bounded(write, DecisionError::Audit).await
}

/// A decision on a pending plan.
async fn decide(
    deciders: Deciders<'_>,
    approval: &Approval,
    to: ApprovalState,
    by: &str,
    note: Option<&str>,
    record: NewRecord,
) -> Result<bool, DecisionError> {
    let announced = (!deciders.clicked || to == ApprovalState::Expired).then_some(deciders.outbox);
    transition(
        deciders.audit,
        announced,
        approval,
        (ApprovalState::Pending, to),
        by,
        note,
        record,
    )
    .await
}

/// When a pending approval created at `created_at` expires.
pub fn expires_at(created_at: chrono::DateTime<chrono::Utc>, ttl: Span) -> chrono::DateTime<chrono::Utc> {
    created_at
        .checked_add_signed(ttl.as_delta())
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// Expires `approval` (pending past its time): state `expired` and a `skipped` record, together.
/// False when someone decided it first.
async fn expire(deciders: Deciders<'_>, approval: &Approval, ttl: Span) -> Result<bool, DecisionError> {
    let mut record = decision_record(approval, AuditKind::Skipped, "gatehouse");
    record.outcome = Outcome::status(format!(
        "expired: no decision within {ttl} (approval {}); the plan will not run",
        approval.id
    ));
    decide(
        deciders,
        approval,
        ApprovalState::Expired,
        "gatehouse",
        Some("expired"),
        record,
    )
    .await
}

/// Expires every pending approval older than `ttl` (the worker runs this periodically); how many.
pub async fn expire_overdue(deciders: Deciders<'_>, ttl: Span) -> Result<usize, DecisionError> {
    let audit = deciders.audit;
    let before = chrono::Utc::now()
        .checked_sub_signed(ttl.as_delta())
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut expired = 0;
    for approval in audit.store().pending_approvals_before(before).await? {
        if expire(deciders, &approval, ttl).await? {
            tracing::warn!(approval = %approval.id, handler = %approval.handler, "a plan waited longer than reactions.approval_ttl; expired, it will not run");
            expired += 1;
        }
    }
    Ok(expired)
}

fn decision_record(approval: &Approval, kind: AuditKind, by: &str) -> NewRecord {
    let event_id = approval.event_id.parse().unwrap_or_else(|_| ulid::Ulid::nil());
    let mut record = NewRecord::new(event_id, kind);
    record.handler = Some(approval.handler.clone());
    record.account_id = approval.account_id.clone();
    record.outcome = Outcome::status(format!("{} by {by} (approval {})", kind.as_str(), approval.id));
    // The decision is about the event's plan: it carries the event's authority and tenant.
    if let Ok(envelope) = serde_json::from_str::<handlers::Envelope>(&approval.envelope) {
        record.authority = Some(envelope.authority);
        record.tenant = Some(envelope.tenant_name().to_owned());
    }
    record
}

/// The tenant of approval `id`: the console and Slack decide in the plan's own tenant (their
/// operators are not bound to one, as a CLI run is).
pub async fn tenant_of(store: &Store, id: &str) -> Result<String, DecisionError> {
    let approval = store
        .approval(id)
        .await?
        .ok_or_else(|| DecisionError::Unknown(id.to_owned()))?;
    Ok(approval.tenant())
}

/// The approval `id`, which must be `tenant`'s: a person deciding for one tenant never decides
/// another's plan by a mistyped id.
async fn load(audit: &AuditLog, id: &str, tenant: &str) -> Result<Approval, DecisionError> {
    let approval = audit
        .store()
        .approval(id)
        .await?
        .ok_or_else(|| DecisionError::Unknown(id.to_owned()))?;
    let actual = approval.tenant();
    if actual != tenant {
        return Err(DecisionError::OtherTenant {
            id: id.to_owned(),
            actual,
            expected: tenant.to_owned(),
        });
    }
    Ok(approval)
}

/// What approving a plan that is approved already does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    /// Queue it again, on the trail with who asked: an operator's deliberate act (`gatehouse
    /// approvals approve`), e.g. for a plan held while dry run was on.
    Requeue,
    /// Queue it only if it never was (the publish after its decision failed): the sweep.
    IfNeverQueued,
    /// Refuse: it is decided already (a stale Slack button, a console form sent twice, a
    /// second approver's click). One never queued is the sweep's.
    Refuse,
}

/// Who queues the plans whose queuing after their decision did not complete.
const SWEEP: &str = "gatehouse (its queuing after the decision had not completed)";

/// Approves `tenant`'s pending plan `id`, or queues an approved one again (an operator's
/// deliberate act, `gatehouse approvals approve`: e.g. for a plan held while dry run was on). A
/// plan pending for longer than `ttl` is expired instead, and the approval refused. `deciders`
/// say whether the plan's Slack message is to be replaced with the decision.
pub async fn approve(
    deciders: Deciders<'_>,
    queue: &dyn Queue,
    ids: (&str, &str),
    by: &str,
    ttl: Span,
) -> Result<Approval, DecisionError> {
    approve_as(deciders, queue, ids, by, ttl, Again::Requeue).await
}

/// Approves `tenant`'s pending plan `id`, as a click decides (Slack, the console): a plan
/// approved already is decided already (a stale Slack button, a console form sent twice, a
/// second approver's click) and nothing is queued again; one whose queuing did not complete is
/// queued by the sweep ([`queue_unqueued`]).
pub async fn approve_pending(
    deciders: Deciders<'_>,
    queue: &dyn Queue,
    ids: (&str, &str),
    by: &str,
    ttl: Span,
) -> Result<Approval, DecisionError> {
    approve_as(deciders, queue, ids, by, ttl, Again::Refuse).await
}

async fn approve_as(
    deciders: Deciders<'_>,
    queue: &dyn Queue,
    (tenant, id): (&str, &str),
    by: &str,
    ttl: Span,
    again: Again,
) -> Result<Approval, DecisionError> {
    let approval = load(deciders.audit, id, tenant).await?;
    match approval.state {
        ApprovalState::Pending if expires_at(approval.created_at, ttl) <= chrono::Utc::now() => {
            expire(deciders, &approval, ttl).await?;
            return Err(DecisionError::Expired {
                id: id.to_owned(),
                at: expires_at(approval.created_at, ttl),
            });
        }
        ApprovalState::Pending => {
            let record = decision_record(&approval, AuditKind::Approved, by);
            if !decide(deciders, &approval, ApprovalState::Approved, by, None, record).await? {
                // Decided by someone else since it was read: say how.
                let now = load(deciders.audit, id, tenant).await?;
                return Err(DecisionError::AlreadyDecided {
                    id: id.to_owned(),
                    state: now.state.as_str(),
                });
            }
        }
        ApprovalState::Approved
            if again == Again::Refuse || (again == Again::IfNeverQueued && approval.queued_at.is_some()) =>
        {
            return Err(DecisionError::AlreadyDecided {
                id: id.to_owned(),
                state: "approved",
            });
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
    // The plan's own tenant performs it.
    envelope.tenant.name = Some(tenant.to_owned());
    if approval.state == ApprovalState::Approved {
        // Queued again (its first queuing failed, or it was not performed: dry run was on):
        // whoever asked for that is on the trail too, since it may now perform the plan, and
        // before it is queued (the trail fails closed: nothing runs that it does not show).
        let mut record = decision_record(&approval, AuditKind::Approved, by);
        record.outcome = Outcome::status(format!(
            "approved again by {by}: asked to queue it again (approval {id})"
        ));
        deciders.audit.append(record).await?;
    }
    let message = own_events::message(&envelope);
    queue.publish(&message).await?;
    // After the publish: a plan whose publish failed, or whose process stopped first, stays
    // unqueued, and the sweep queues it ([`queue_unqueued`]). A failed write here only means the
    // sweep queues it a second time, which the worker's dedupe absorbs.
    if let Err(error) = deciders.audit.store().mark_approval_queued(id).await {
        tracing::warn!(approval = id, %error, "queued the approved plan but cannot note it; the sweep may queue it again (harmless)");
    }
    Ok(approval)
}

/// Queues the plans approved before `decided_before` and never queued (the publish after their
/// decision failed, or the process stopped in between), so an approved plan is never left
/// behind. Returns how many were queued.
pub async fn queue_unqueued(
    deciders: Deciders<'_>,
    queue: &dyn Queue,
    ttl: Span,
    decided_before: chrono::DateTime<chrono::Utc>,
) -> Result<usize, DecisionError> {
    let mut queued = 0;
    for approval in deciders.audit.store().approved_not_queued(decided_before).await? {
        let tenant = approval.tenant();
        match approve_as(
            deciders,
            queue,
            (&tenant, &approval.id),
            SWEEP,
            ttl,
            Again::IfNeverQueued,
        )
        .await
        {
            Ok(_) => {
                tracing::warn!(approval = %approval.id, handler = %approval.handler, "an approved plan had not been queued; queued it now");
                queued += 1;
            }
            // Queued or decided meanwhile (by another worker's sweep, or a person).
            Err(DecisionError::AlreadyDecided { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(queued)
}

/// Rejects `tenant`'s pending plan `id`: nothing of it is performed.
pub async fn reject(
    deciders: Deciders<'_>,
    (tenant, id): (&str, &str),
    by: &str,
    reason: Option<&str>,
) -> Result<Approval, DecisionError> {
    let approval = load(deciders.audit, id, tenant).await?;
    let mut record = decision_record(&approval, AuditKind::Rejected, by);
    record.outcome.error = reason.map(str::to_owned);
    if approval.state != ApprovalState::Pending {
        return Err(DecisionError::AlreadyDecided {
            id: id.to_owned(),
            state: approval.state.as_str(),
        });
    }
    if !decide(deciders, &approval, ApprovalState::Rejected, by, reason, record).await? {
        // Decided by someone else since it was read: say how, not "pending".
        let now = load(deciders.audit, id, tenant).await?;
        return Err(DecisionError::AlreadyDecided {
            id: id.to_owned(),
            state: now.state.as_str(),
        });
    }
    Ok(approval)
}
