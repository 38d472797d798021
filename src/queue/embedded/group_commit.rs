//! Group commit: publishes that arrive while a commit is running wait for it, then go into the
//! store together in one transaction, so N concurrent publishes cost one durable commit (one
//! fsync under SQLite's `synchronous = FULL`, one WAL flush on PostgreSQL) instead of N.
//!
//! Nothing is traded for it: a publish is answered only after the transaction holding its row
//! committed, and a failed commit fails every publish in it (none of them is answered as queued).
//! Under light load a batch is one message and nothing waits; batches grow only while a commit
//! is already in progress, which is exactly when waiting costs nothing.
//!
//! The commits run in a task of their own, so a publisher that gives up (its request timed out)
//! cannot abandon a half-written batch that others are waiting on.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::queue::{OutgoingMessage, PublishError};
use crate::store::{Store, StoreError, to_millis};

/// The most messages one transaction carries: enough to absorb every request a busy ingress has
/// in flight, small enough that one commit stays short.
const MAX_BATCH: usize = 256;

/// A message waiting for its commit.
struct Pending {
    message: OutgoingMessage,
    /// Told once the transaction holding the row committed, or why it did not.
    committed: oneshot::Sender<Result<(), String>>,
}

/// The embedded queue's way into the store for new messages.
pub(super) struct GroupCommit {
    store: Store,
    /// Wakes this process's idle consumers after a commit.
    published: Arc<Notify>,
    /// Started on the first publish (it needs the runtime the publishes run on).
    committer: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("started", &self.committer.get().is_some())
            .finish()
    }
}

impl GroupCommit {
    pub(super) fn new(store: Store, published: Arc<Notify>) -> Self {
        GroupCommit {
            store,
            published,
            committer: OnceLock::new(),
        }
    }

    /// Inserts `message` as a visible row; returns once it is durable.
    pub(super) async fn insert(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        // The body is stored as text: refuse anything else here, not inside someone's batch.
        if std::str::from_utf8(&message.body).is_err() {
            return Err(PublishError::Broker("envelope is not UTF-8".to_owned()));
        }
        let (committed, outcome) = oneshot::channel();
        let pending = Pending {
            message: message.clone(),
            committed,
        };
        let committer = self.committer.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(commit_batches(
                self.store.clone(),
                self.published.clone(),
                receiver,
            ));
            sender
        });
        committer
            .send(pending)
            .map_err(|_| PublishError::Broker("store: the committer has stopped".to_owned()))?;
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(PublishError::Broker(format!("store: {error}"))),
            Err(_) => Err(PublishError::Broker(
                "store: the committer has stopped".to_owned(),
            )),
        }
    }
}

/// Commits whatever is waiting, one transaction at a time, until every sender is gone.
async fn commit_batches(store: Store, published: Arc<Notify>, mut waiting: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = insert_all(&store, &batch).await;
        if outcome.is_ok() {
            published.notify_waiters();
        }
        if let Err(CommitError::Unreachable(_)) = &outcome {
            // The store could not even be reached (the pool waited its whole acquire timeout):
            // whoever queued up meanwhile is told now, instead of waiting out another timeout
            // behind this one. Their senders retry; nothing was answered as queued.
            while let Ok(pending) = waiting.try_recv() {
                batch.push(pending);
            }
        }
        let outcome = outcome.map_err(|e| e.to_string());
        for pending in batch.drain(..) {
            // A publisher that gave up no longer listens; its row is queued all the same (the
            // sender's retry is a duplicate the workers absorb).
            let _ = pending.committed.send(outcome.clone());
        }
    }
}

/// Why a group's commit failed.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    /// No transaction could be started: the store is down or its pool exhausted.
    #[error("{0}")]
    Unreachable(StoreError),
    /// The transaction failed (a full disk, a lost connection): none of its rows is there.
    #[error("{0}")]
    Failed(#[from] sqlx::Error),
}

async fn insert_all(store: &Store, batch: &[Pending]) -> Result<(), CommitError> {
    let now = to_millis(chrono::Utc::now());
    let mut tx = store.begin_write().await.map_err(CommitError::Unreachable)?;
    for Pending { message, .. } in batch {
        sqlx::query(
            "INSERT INTO queue_messages
                 (routing_key, message_id, event_id, event_type, body, deliveries, visible_at, history, created_at)
             VALUES ($1, $2, $3, $4, $5, 0, $6, '[]', $6)",
        )
        .bind(&message.routing_key)
        .bind(&message.message_id)
        .bind(&message.event_id)
        .bind(&message.event_type)
        // Checked when it was handed in, so nothing is ever replaced here.
        .bind(String::from_utf8_lossy(&message.body).into_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
