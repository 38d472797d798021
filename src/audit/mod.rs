//! The tamper-evident audit trail: every received event, decision and outbound call, in order,
//! hash-chained, queryable, and streamed to subscribers.

pub mod record;

pub use record::{ActionRef, AuditKind, AuditRecord, NewRecord, Outcome};
