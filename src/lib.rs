//! gatehouse: verified Atlassian identity events in, safe and audited reactions out.
//!
//! The runtime around the pure domain in the `handlers` crate: configuration, the HTTP ingress,
//! the queue backends, the store, telemetry, and the wiring that starts and stops them
//! ([`app::Application`]). Data flows ingress → queue → worker → handlers → executor → Atlassian
//! and audit; the folder tree follows that flow.
//!
//! The modules exported are those the `gatehouse` binary, the benchmark harness and the
//! integration tests use; the rest are the crate's own. Helpers only tests and benchmarks need
//! are behind the `testing` feature.

pub mod app;
pub mod atlassian;
pub mod audit;
pub mod broker;
pub mod cli;
pub mod config;
pub mod console;
// The fuzz targets: built for the library's own tests (CI's short run) and for the fuzz harness
// (`fuzz/`, feature `fuzzing`), never into the binary.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod http_error;
pub mod ingress;
mod listener;
mod locking;
pub mod outbound;
mod pacing;
mod poll;
mod printable;
pub mod queue;
pub mod reactions;
mod slack_actions;
pub mod store;
pub mod telemetry;
mod tls;
pub mod worker;
