//! gatehouse: verified Atlassian identity events in, safe and audited reactions out.
//!
//! The runtime around the pure domain in the `handlers` crate: configuration, the HTTP ingress,
//! the queue backends, the store, telemetry, and the wiring that starts and stops them
//! ([`app::Application`]). Data flows ingress → queue → worker → handlers → executor → Atlassian
//! and audit; the folder tree follows that flow.

pub mod app;
pub mod atlassian;
pub mod audit;
pub mod cli;
pub mod config;
pub mod http_error;
pub mod ingress;
pub mod listener;
mod locking;
mod pacing;
pub mod poll;
pub mod queue;
pub mod reactions;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod worker;
