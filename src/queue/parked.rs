//! What both backends record about a message they park without a worker's say: the one that
//! was redelivered more than `queue.delivery_limit` times without being settled (a worker kept dying on it).
//! A worker records the dead letters it parks itself; these would otherwise be missing from the
//! audit trail.

use crate::audit::{AuditKind, NewRecord, Outcome};
use crate::store::DeadLetterRow;

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

/// The `dead_lettered` audit record of a parked message; none when its body names no event
/// (it was never an envelope, so there is no event to put on the trail).
pub fn audit_record(row: &DeadLetterRow) -> Option<NewRecord> {
    let event_id = row.event_id.parse::<ulid::Ulid>().ok()?;
    let mut record = NewRecord::new(event_id, AuditKind::DeadLettered);
    record.account_id = row.subject.clone().filter(|s| !s.starts_with("group:"));
    record.attempt = row.attempts;
    record.outcome = Outcome::error(row.reason.clone());
    Some(record)
}
