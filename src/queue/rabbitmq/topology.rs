//! The exchanges and queues gatehouse declares on RabbitMQ, and why each argument is set.
//!
//! Declarations are idempotent: every process declares the whole topology each time it
//! (re)connects, so a fresh broker, a restarted one, or one where someone deleted a queue all end
//! up the same. A declaration that clashes with an existing object (different arguments) fails
//! loudly with `PRECONDITION_FAILED`, which is reported instead of silently using the old shape.

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

/// The names of gatehouse's objects under a prefix (default `gatehouse`).
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology {
            prefix: prefix.into(),
        }
    }

    /// The topic exchange every envelope is published to (routing key `{kind}.{type}`).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Declares everything on `channel`.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        channel
            .exchange_declare(
                self.events_exchange().into(),
                // Topic: subscribers bind their own queues with patterns such as
                // `*.user.deactivated` or `confluence.#`.
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    // Survives a broker restart; the bindings of durable queues go with it.
                    durable: true,
                    // Never deleted when the last queue unbinds: publishers depend on it.
                    auto_delete: false,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
    }
}
