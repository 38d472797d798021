//! The queue envelopes travel on, behind a trait so the ingress and pollers do not care which
//! backend carries them.
//!
//! The contract of [`Queue::publish`]: when it returns `Ok`, the message is durable in the
//! backend (for RabbitMQ: the broker confirmed a persistent, routed publish). Every other outcome
//! is an error the caller must surface, never a silent success; the ingress answers 503 so the
//! sender retries.

pub mod rabbitmq;

use async_trait::async_trait;
use handlers::Envelope;

/// One message ready to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// `{source kind}.{event type}`, e.g. `confluence.user.removed`.
    pub routing_key: String,
    /// The envelope's dedupe key, as the AMQP `message_id`.
    pub message_id: String,
    /// The envelope's id.
    pub event_id: String,
    /// The envelope's type, as the AMQP `type` property.
    pub event_type: String,
    /// The envelope as JSON.
    pub body: Vec<u8>,
}

impl OutgoingMessage {
    /// Serializes an envelope for publication under `kind` (the routing-key prefix).
    pub fn from_envelope(envelope: &Envelope, kind: &str) -> Result<Self, serde_json::Error> {
        let event_type = envelope.event_type.as_str().into_owned();
        Ok(OutgoingMessage {
            routing_key: format!("{kind}.{event_type}"),
            message_id: envelope.dedupe_key.clone(),
            event_id: envelope.id.to_string(),
            event_type,
            body: serde_json::to_vec(envelope)?,
        })
    }
}

/// Why a publish did not become durable. Each of these answers 503 at the ingress.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to the backend right now (it is being re-established).
    #[error("queue unavailable: not connected")]
    Unavailable,
    /// The backend did not confirm in time; the message may still arrive (worker-side dedupe
    /// absorbs the copy the sender's retry makes).
    #[error("queue did not confirm the publish within {0:?}")]
    Timeout(std::time::Duration),
    /// The broker refused the message (`basic.nack`).
    #[error("broker refused the message (nack)")]
    Nacked,
    /// No queue is bound for the routing key (`mandatory` publish returned).
    #[error("message is unroutable: no queue bound for routing key {0}")]
    Unroutable(String),
    /// The connection or channel failed during the publish.
    #[error("broker error during publish: {0}")]
    Broker(String),
}

/// Where envelopes are published.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes durably; `Ok` only once the backend has the message safe.
    async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError>;

    /// Can a publish succeed right now? (readiness; cheap, no I/O)
    fn is_ready(&self) -> bool;

    /// Stops reconnecting and closes connections after in-flight publishes are done.
    async fn close(&self);
}
