//! What the worker does with an event once it holds its claim: the [`Process`] trait. The
//! runtime's processor is `reactions::Reactor` (the configured policies); tests plug in their
//! own to script failures.

use std::time::Duration;

use async_trait::async_trait;
use handlers::Envelope;
use handlers::ports::ErrorKind;
use tokio::sync::OwnedSemaphorePermit;

/// How processing ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Handled.
    Done,
    /// Nothing reacts to this event (recorded, then acked).
    Skipped(String),
}

/// Whether an event may start now, asked before anything is claimed or recorded.
#[derive(Debug)]
pub enum Admission {
    /// Go ahead, holding this (if anything) until the delivery is settled.
    Now(Option<OwnedSemaphorePermit>),
    /// Not now, and not a failure (e.g. its tenant already has all the slots it may hold): give
    /// the delivery back to come again after about `after`, without counting an attempt.
    Later { why: String, after: Duration },
}

/// A failed attempt, classified for the retry logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProcessError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProcessError {
    pub fn transient(message: impl Into<String>) -> Self {
        ProcessError {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ProcessError {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }
}

impl From<handlers::ports::PortError> for ProcessError {
    fn from(error: handlers::ports::PortError) -> Self {
        ProcessError {
            kind: error.kind,
            message: error.message,
        }
    }
}

/// Reacts to one event. Called at most once at a time per fact (the worker holds the claim);
/// may be called again for the same event after a failure, so it must converge rather than
/// repeat side effects.
#[async_trait]
pub trait Process: Send + Sync + 'static {
    /// `attempt` counts from 1.
    async fn process(&self, envelope: &Envelope, attempt: u32) -> Result<Processed, ProcessError>;

    /// Why nothing reacts to this event, if nothing does. Such an event is recorded once (one
    /// compact `skipped` record, committed with its claim) and acked without processing: a
    /// sender cannot grow the audit trail by more than one record per delivery.
    fn ignores(&self, _envelope: &Envelope) -> Option<String> {
        None
    }

    /// Whether `envelope` may start now. Asked first, so an event sent back for later leaves
    /// no trace but a log line and a metric, however often it comes back.
    fn admit(&self, _envelope: &Envelope) -> Admission {
        Admission::Now(None)
    }
}
