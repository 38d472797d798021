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
    let messages: Vec<&OutgoingMessage> = batch.iter().map(|pending| &pending.message).collect();
    insert_messages(&mut tx, &messages, now).await?;
    tx.commit().await?;
    Ok(())
}

/// The shapes of `INSERT` a batch is split into, largest first: a batch of n rows takes one
/// statement per binary digit of n (45 = 32 + 8 + 4 + 1), and every connection's statement cache
/// holds all eight shapes, so none is prepared twice.
const ROWS_PER_STATEMENT: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// The columns each row binds (the sixth, the time, twice).
const BINDS_PER_ROW: usize = 6;

/// Inserts `messages` as visible rows within `tx`, in as few statements as their count has binary
/// digits: a statement per row costs a round trip to the store's connection each (for SQLite, a
/// hop to its worker thread), which was most of what a commit of 64 rows spent outside its
/// fsync. Public so that the benchmark's ceiling (`gatehouse-bench ingest`, embedded) inserts the
/// same way. Each body must be UTF-8 (it is stored as text).
pub async fn insert_messages(
    tx: &mut sqlx::AnyConnection,
    messages: &[&OutgoingMessage],
    now_millis: i64,
) -> Result<(), sqlx::Error> {
    let mut rest = messages;
    // The largest shape that fits what is left; the last shape, one row, always does.
    while let Some((rows, statement)) = ROWS_PER_STATEMENT
        .iter()
        .zip(insert_statements())
        .find(|(rows, _)| **rows <= rest.len())
    {
        let (chunk, after) = rest.split_at(*rows);
        let mut query = sqlx::query(statement.as_str());
        for message in chunk {
            let body = std::str::from_utf8(&message.body).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            query = query
                .bind(message.routing_key.as_str())
                .bind(message.message_id.as_str())
                .bind(message.event_id.as_str())
                .bind(message.event_type.as_str())
                .bind(body)
                .bind(now_millis);
        }
        query.execute(&mut *tx).await?;
        rest = after;
    }
    Ok(())
}

/// The `INSERT` of each of [`ROWS_PER_STATEMENT`]'s shapes, in its order, written once.
fn insert_statements() -> &'static [String; ROWS_PER_STATEMENT.len()] {
    static STATEMENTS: OnceLock<[String; ROWS_PER_STATEMENT.len()]> = OnceLock::new();
    STATEMENTS.get_or_init(|| {
        ROWS_PER_STATEMENT.map(|rows| {
            let values: Vec<String> = (0..rows)
                .map(|row| {
                    let at = row * BINDS_PER_ROW;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, 0, ${}, '[]', ${})",
                        at + 1,
                        at + 2,
                        at + 3,
                        at + 4,
                        at + 5,
                        at + 6,
                        at + 6
                    )
                })
                .collect();
            format!(
                "INSERT INTO queue_messages
                     (routing_key, message_id, event_id, event_type, body, deliveries, visible_at, history, created_at)
                 VALUES {}",
                values.join(", ")
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_binds_six_values_a_row() {
        for (rows, statement) in ROWS_PER_STATEMENT.iter().zip(insert_statements()) {
            assert_eq!(statement.matches("'[]'").count(), *rows);
            let last = rows * BINDS_PER_ROW;
            assert!(
                statement.contains(&format!("${last}, '[]', ${last})")),
                "{statement}"
            );
            assert!(!statement.contains(&format!("${}", last + 1)), "{statement}");
        }
    }
}
