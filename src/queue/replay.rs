//! Sending a dead letter back for processing.
//!
//! The envelope goes straight to the work queue (subscribers of the exchange saw it once
//! already), with a fresh attempt count, and the dead letter is marked replayed. Publishing comes
//! first: if marking then fails, a second replay publishes a copy that the worker's dedupe claim
//! absorbs, so nothing is lost and nothing is done twice.

use crate::audit::{AuditError, AuditKind, AuditLog, Outcome};
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

/// Replays one dead letter; the replay is on the audit trail before the event is queued.
pub async fn replay(audit: &AuditLog, queue: &dyn Queue, letter: &DeadLetterRow) -> Result<(), ReplayError> {
    let store = audit.store();
    let outcome = Outcome::status(format!("replayed dead letter {}", letter.id));
    if let Some(record) = super::dead_letter_records::letter_record(letter, AuditKind::Replayed, outcome) {
        audit.append(record).await?;
    }
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
