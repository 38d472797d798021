//! gatehouse's integration tests: one binary, a module per area, all against the real RabbitMQ
//! and databases on the machine (`GATEHOUSE_TEST_AMQP_URL`, `GATEHOUSE_TEST_PG_URL` override the
//! defaults). Only Atlassian is simulated.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_debug_implementations)]

mod helpers;

mod atlassian;
mod audit;
mod broker_outage;
mod connect;
mod console;
mod demo;
mod ingress;
mod logging;
mod outbound;
mod poll;
mod probe;
mod queue;
mod reactions;
mod simulator;
mod slack;
mod store;
mod store_seal;
mod tenants;
mod trust;
