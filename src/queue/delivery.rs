//! A message handed to a worker, and the three ways to settle it.
//!
//! Whatever the backend, a delivery ends in exactly one of: [`Delivery::ack`] (done, forget it),
//! [`Delivery::retry`] (failed transiently: come back after a rung of the retry ladder; or
//! [`Delivery::postpone`], the same without counting a failure),
//! [`Delivery::dead_letter`] (cannot be processed: park it with its reason), or
//! [`Delivery::release`] (not processed at all, e.g. at shutdown: give it back at once). The
//! failure history travels with the message, so a dead letter shows every attempt.

use async_trait::async_trait;
use chrono::Utc;

/// A queue operation that failed (the broker or the store went away, usually).
#[derive(Debug, thiserror::Error)]
#[error("queue error: {0}")]
pub struct QueueError(pub String);

impl From<sqlx::Error> for QueueError {
    fn from(error: sqlx::Error) -> Self {
        QueueError(error.to_string())
    }
}

impl From<crate::store::StoreError> for QueueError {
    fn from(error: crate::store::StoreError) -> Self {
        QueueError(error.to_string())
    }
}

pub use crate::store::Failure;

/// At most this many failures are carried (the oldest are dropped), so headers stay small.
const MAX_HISTORY: usize = 20;

/// What a backend needs to send a message back for a later attempt.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Index into the retry ladder (`queue.retry_delays_seconds`).
    pub rung: usize,
    /// Failed attempts so far, this one included.
    pub attempts: u32,
    pub history: Vec<Failure>,
}

/// What a backend needs to park a message.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: String,
    pub attempts: u32,
    pub history: Vec<Failure>,
}

/// How a backend settles one of its deliveries.
#[async_trait]
pub trait Settle: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    async fn retry(self: Box<Self>, retry: Retry) -> Result<(), QueueError>;
    async fn dead_letter(self: Box<Self>, letter: DeadLetter) -> Result<(), QueueError>;
    async fn release(self: Box<Self>) -> Result<(), QueueError>;
}

/// A message handed to a worker.
pub struct Delivery {
    /// The envelope JSON.
    pub body: Vec<u8>,
    pub routing_key: String,
    pub message_id: String,
    /// This attempt's number: 1 the first time, failed attempts so far + 1 after.
    pub attempt: u32,
    pub history: Vec<Failure>,
    /// The backend handed this message out before (a worker died or gave it back).
    pub redelivered: bool,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("message_id", &self.message_id)
            .field("attempt", &self.attempt)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(
        body: Vec<u8>,
        routing_key: String,
        message_id: String,
        history: Vec<Failure>,
        redelivered: bool,
        settle: Box<dyn Settle>,
    ) -> Self {
        // The history came in a header anyone who may publish could have written.
        let attempt = history.last().map_or(1, |f| f.attempt.saturating_add(1));
        Delivery {
            body,
            routing_key,
            message_id,
            attempt,
            history,
            redelivered,
            settle,
        }
    }

    pub async fn ack(self) -> Result<(), QueueError> {
        self.settle.ack().await
    }

    /// This attempt failed with `error`; try again after rung `rung` of the ladder.
    pub async fn retry(self, rung: usize, error: &str) -> Result<(), QueueError> {
        let history = with_failure(self.history, self.attempt, error);
        self.settle
            .retry(Retry {
                rung,
                attempts: self.attempt,
                history,
            })
            .await
    }

    /// Not processed now, and not a failure (another worker holds the event): come back after
    /// the first rung of the ladder without counting an attempt.
    pub async fn postpone(self) -> Result<(), QueueError> {
        self.postpone_at(0).await
    }

    /// Like [`Delivery::postpone`], coming back after rung `rung` of the ladder.
    pub async fn postpone_at(self, rung: usize) -> Result<(), QueueError> {
        let attempts = self.attempt.saturating_sub(1);
        self.settle
            .retry(Retry {
                rung,
                attempts,
                history: self.history,
            })
            .await
    }

    /// This attempt failed for good (or the last allowed attempt failed): park the message.
    pub async fn dead_letter(self, reason: &str, error: Option<&str>) -> Result<(), QueueError> {
        let history = match error {
            Some(error) => with_failure(self.history, self.attempt, error),
            None => self.history,
        };
        self.settle
            .dead_letter(DeadLetter {
                reason: reason.to_owned(),
                attempts: self.attempt,
                history,
            })
            .await
    }

    /// Not processed: hand it back at once, without counting an attempt.
    pub async fn release(self) -> Result<(), QueueError> {
        self.settle.release().await
    }
}

fn with_failure(mut history: Vec<Failure>, attempt: u32, error: &str) -> Vec<Failure> {
    history.push(Failure {
        attempt,
        at: Utc::now(),
        // Errors come from our own code and Atlassian's answers; bound them anyway.
        error: error.chars().take(1_000).collect(),
    });
    if history.len() > MAX_HISTORY {
        history.drain(..history.len() - MAX_HISTORY);
    }
    history
}
