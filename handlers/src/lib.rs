//! gatehouse's domain, free of I/O.
//!
//! This crate holds what gatehouse *means*: the event model every queued message carries
//! ([`event`]) and the read-only view of Atlassian that handlers consult ([`ports`]). It knows nothing of HTTP, AMQP or SQL; the runtime in the `gatehouse` package
//! depends on it, never the other way round, so everything here is testable without a network.

pub mod event;
pub mod ports;

pub use event::{Actor, Delivery, Envelope, EventType, GroupRef, Scheme, Subject, Tenant, UnknownEventType};
