//! gatehouse's domain, free of I/O.
//!
//! This crate holds what gatehouse *means*: the event model every queued message carries
//! ([`event`]), the read-only view of Atlassian that handlers consult ([`ports`]), the
//! [`handler::Handler`] trait and the [`plan::Plan`]s handlers return, and the reactions
//! themselves ([`policy`]). It knows nothing of HTTP, AMQP or SQL; the runtime in the `gatehouse` package
//! depends on it, never the other way round, so everything here is testable without a network.

pub mod audit_kind;
pub mod event;
pub mod handler;
pub mod identifier;
pub mod json_text;
pub mod plan;
pub mod policy;
pub mod ports;

pub use audit_kind::AuditKind;
pub use event::{
    Actor, Authority, BadTypePattern, DEFAULT_TENANT, DeliveryFacts, Envelope, EventType, GroupRef,
    ORG_EVENTS_SOURCE, OWN_SOURCE, RECONCILE_SOURCE, RESERVED_SOURCES, Scheme, Subject, Tenant, TypePattern,
    UnknownEventType, internal_dedupe_key, source_dedupe_key,
};
pub use handler::{Handler, Ports};
pub use plan::{Action, Danger, Plan, PlannedAction};
