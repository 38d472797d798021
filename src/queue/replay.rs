//! Sending a dead letter back for processing.
//!
//! The envelope goes straight to the work queue (subscribers of the exchange saw it once
//! already), with a fresh attempt count, and the dead letter is marked replayed. Publishing comes
//! first: if marking then fails, a second replay publishes a copy that the worker's dedupe claim
//! absorbs, so nothing is lost and nothing is done twice (and two replays at the same instant
//! both queue it, performed once).

use crate::audit::{AuditError, AuditKind, AuditLog, NewRecord, Outcome};
use crate::queue::{OutgoingMessage, PublishError, Queue};
use crate::store::{DeadLetterRow, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot record the replay in the audit trail (nothing was replayed): {0}")]
    Audit(#[from] AuditError),
    #[error("cannot queue the event again: {0}")]
    Publish(#[from] PublishError),
    #[error("queued again, but cannot mark the dead letter replayed: {0}")]
    Store(#[from] StoreError),
}

/// Replays one dead letter as `by` (`console:alice`, an operator's name); the replay is on the
/// audit trail, with who asked, before the event is queued.
pub async fn replay(
    audit: &AuditLog,
    queue: &dyn Queue,
    letter: &DeadLetterRow,
    by: &str,
) -> Result<(), ReplayError> {
    let store = audit.store();
    let outcome = Outcome::status(format!("replayed dead letter {} by {by}", letter.id));
    // A letter that names no gatehouse event (a message someone else published) is recorded
    // about no event: every replay is on the trail, whatever it queues.
    let record = super::dead_letter_records::letter_record(letter, AuditKind::Replayed, outcome.clone())
        .unwrap_or_else(|| {
            let mut record = NewRecord::new(ulid::Ulid::nil(), AuditKind::Replayed);
            record.outcome = outcome;
            record
        });
    audit.append(record).await?;
    let message = OutgoingMessage {
        routing_key: letter.routing_key.clone(),
        message_id: letter.message_id.clone(),
        event_id: letter.event_id.clone(),
        event_type: letter.event_type.clone(),
        body: letter.body.clone().into_bytes(),
    };
    queue.requeue(&message).await?;
    store.mark_dead_letter_replayed(&letter.id).await?;
    tracing::info!(dead_letter = %letter.id, event_id = %letter.event_id, "dead letter replayed");
    Ok(())
}
