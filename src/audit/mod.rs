//! The tamper-evident audit trail: every received event, decision and outbound call, in order,
//! hash-chained, queryable, and streamed to subscribers.
//!
//! - [`record`]: the record contract (public surface).
//! - [`chain`]: canonical JSON and the hash that links each record to the one before.
//! - [`log`]: [`AuditLog`], the one writer: serialized appends, gap-free `seq`, fail closed.
//! - [`hashing`] and [`scrub`]: what is done to a record's text before it is written (HMAC of
//!   emails and display names; secrets removed).
//! - [`query`]: filtered, `seq`-paged reads (CLI, `GET /audit`, the relay).
//! - [`mod@verify`]: walks the chain and names the first broken link.
//! - [`watch`]: [`ChainWatch`], which keeps the chain verified a slice at a time (the console's badge).
//! - [`ocsf`]: records as OCSF 3001 / 3006 / 6003 events.
//! - [`stream`]: [`AuditRelay`], which copies records once, in order, to the RabbitMQ stream.
//! - [`http`]: `GET /audit` behind a bearer token.
//!
//! What this module must not do: act on anything. It records; workers decide.

pub mod chain;
pub mod followers;
pub mod hashing;
pub mod http;
pub mod log;
pub mod ocsf;
pub mod query;
pub mod record;
pub mod scrub;
pub mod stream;
pub mod verify;
pub mod watch;

pub use hashing::pii;
pub use log::{AuditError, AuditLog};
pub use query::{AuditPage, AuditQuery};
pub use record::{ActionRef, AuditKind, AuditRecord, NewRecord, Outcome};
pub use stream::AuditRelay;
pub use verify::{BreakReason, BrokenLink, VerifyReport, verify};
pub use watch::{ChainStatus, ChainWatch};
