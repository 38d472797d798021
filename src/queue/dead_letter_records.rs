//! Recording dead letters, the same for both backends: the row, and the audit record of a
//! message the queue parked without a worker's say (redelivered more than
//! `queue.delivery_limit` times without being settled: a worker kept dying on it). A worker
//! records the dead letters it parks itself; these would otherwise be missing from the trail.

use super::QueueError;
use crate::audit::{AuditKind, AuditLog, NewRecord, Outcome};
use crate::store::{DeadLetterRow, dead_letters};

/// The account or group an envelope is about, for dead-letter listings.
pub fn subject_of(body: &str) -> Option<String> {
    let envelope: serde_json::Value = serde_json::from_str(body).ok()?;
    let subject = envelope.get("subject")?;
    if let Some(account) = subject.get("account_id").and_then(|v| v.as_str()) {
        return Some(account.to_owned());
    }
    let group = subject.get("group")?;
    group
        .get("name")
        .or_else(|| group.get("id"))
        .and_then(|v| v.as_str())
        .map(|g| format!("group:{g}"))
}

/// Records `row` among the dead letters on `tx`, with its `dead_lettered` audit record when
/// `audited` (the queue parked it, not a worker that records its own) and the row is new: a
/// letter recorded again after a lost acknowledgement is on the trail once.
pub async fn record_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    audit: &AuditLog,
    row: &DeadLetterRow,
    audited: bool,
) -> Result<(), QueueError> {
    let inserted = dead_letters::insert(tx, row).await?;
    if inserted
        && audited
        && let Some(record) = audit_record(row)
    {
        audit
            .append_in(tx, vec![record])
            .await
            .map_err(|e| QueueError(e.to_string()))?;
    }
    Ok(())
}

/// An audit record of `kind` about a dead letter's event; none when its body names no event (it
/// was never an envelope, so there is no event to put on the trail).
pub fn letter_record(row: &DeadLetterRow, kind: AuditKind, outcome: Outcome) -> Option<NewRecord> {
    let event_id = row.event_id.parse::<ulid::Ulid>().ok()?;
    let mut record = NewRecord::new(event_id, kind);
    record.account_id = row.subject.clone().filter(|s| !s.starts_with("group:"));
    record.tenant = serde_json::from_str::<handlers::Envelope>(&row.body)
        .ok()
        .map(|envelope| envelope.tenant_name().to_owned());
    record.attempt = row.attempts;
    record.outcome = outcome;
    Some(record)
}

fn audit_record(row: &DeadLetterRow) -> Option<NewRecord> {
    letter_record(row, AuditKind::DeadLettered, Outcome::error(row.reason.clone()))
}
