//! The queue envelopes travel on, behind a trait so the ingress, pollers and workers do not care
//! which backend carries them: RabbitMQ ([`rabbitmq`]) or a durable queue in the store
//! ([`embedded`]), with the same semantics.
//!
//! The contract of [`Queue::publish`]: when it returns `Ok`, the message is durable in the
//! backend (for RabbitMQ: the broker confirmed a persistent, routed publish). Every other outcome
//! is an error the caller must surface, never a silent success; the ingress answers 503 so the
//! sender retries.
//!
//! Consuming: [`Queue::consume`] hands out [`Delivery`]s of the work queue; each is settled by
//! the worker (ack, retry on a rung of the ladder, dead-letter, or release). Dead letters of both
//! backends end up in the store (`store::dead_letters`), where `gatehouse dlq` manages them.

pub mod dead_letter_records;
pub mod delivery;
pub mod embedded;
pub mod rabbitmq;
pub mod replay;

use async_trait::async_trait;
use handlers::Envelope;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use delivery::{DeadLetter, Delivery, Failure, QueueError, Retry, Settle};

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
    pub fn from_envelope(envelope: &Envelope, kind: &str) -> Self {
        let mut body = Vec::new();
        envelope.write_json(&mut body);
        Self::with_body(envelope, kind, body)
    }

    /// Serializes a delivery's envelope with its payload, `payload`: JSON text already parsed in
    /// full (the ingress's verified body; see [`Envelope::write_with_payload`]).
    pub fn from_delivery(envelope: &Envelope, payload: &str, kind: &str) -> Self {
        let mut body = Vec::new();
        envelope.write_with_payload(payload, &mut body);
        Self::with_body(envelope, kind, body)
    }

    fn with_body(envelope: &Envelope, kind: &str, body: Vec<u8>) -> Self {
        let event_type = envelope.event_type.as_str().into_owned();
        // Joined by hand, not through `format!`'s machinery: this runs for every delivery.
        let mut routing_key = String::with_capacity(kind.len() + 1 + event_type.len());
        routing_key.push_str(kind);
        routing_key.push('.');
        routing_key.push_str(&event_type);
        OutgoingMessage {
            routing_key,
            message_id: envelope.dedupe_key.clone(),
            event_id: envelope.id.to_string(),
            event_type,
            body,
        }
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

/// How many messages wait where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueDepths {
    /// Ready or in flight in the work queue.
    pub work: u64,
    /// Waiting in the retry ladder.
    pub retry: u64,
    /// Age of the oldest message waiting for work, when the backend can tell.
    pub oldest_age_seconds: Option<f64>,
}

/// A running subscription to the work queue.
#[derive(Debug)]
pub struct Consumer {
    /// Deliveries, as fast as the worker takes them (bounded by the prefetch).
    pub deliveries: mpsc::Receiver<Delivery>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Consumer {
    pub fn new(deliveries: mpsc::Receiver<Delivery>, stop: CancellationToken, task: JoinHandle<()>) -> Self {
        Consumer {
            deliveries,
            stop,
            task,
        }
    }

    /// Stops taking new messages. Deliveries already handed out stay valid and must still be
    /// settled; those still in the channel are returned for the caller to release.
    pub async fn stop(mut self) -> Vec<Delivery> {
        self.stop.cancel();
        let _ = (&mut self.task).await;
        self.deliveries.close();
        let mut left = Vec::new();
        while let Ok(delivery) = self.deliveries.try_recv() {
            left.push(delivery);
        }
        left
    }
}

/// Where envelopes are published and consumed.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes durably to the events exchange (every subscriber sees it; the work queue
    /// always does); `Ok` only once the backend has the message safe.
    async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError>;

    /// Publishes straight to the work queue, bypassing subscribers (replaying a dead letter).
    async fn requeue(&self, message: &OutgoingMessage) -> Result<(), PublishError>;

    /// Subscribes to the work queue with at most `prefetch` messages handed out at once. The
    /// subscription survives broker restarts.
    async fn consume(&self, prefetch: u16) -> Result<Consumer, QueueError>;

    /// Queue depths, for metrics.
    async fn depths(&self) -> Result<QueueDepths, QueueError>;

    /// Can a publish succeed right now? (readiness; cheap, no I/O)
    fn is_ready(&self) -> bool;

    /// Stops reconnecting and closes connections after in-flight publishes are done.
    async fn close(&self);
}
