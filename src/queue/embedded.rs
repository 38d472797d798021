//! The embedded queue: the work queue as rows in the store, for deployments with no broker.
//!
//! Same semantics as RabbitMQ, on SQL:
//! - publish is an `INSERT`, durable when the transaction commits (publishes that arrive together
//!   share one transaction: `embedded::group_commit`);
//! - a worker takes a message by locking its row until a visibility timeout (extended while it
//!   works), so a crashed worker's message comes back;
//! - a retry makes the row invisible until the ladder's delay has passed;
//! - a message redelivered more than `delivery_limit` times without being settled (it keeps
//!   killing its worker) is dead-lettered, like RabbitMQ's `x-delivery-limit`, and recorded in
//!   the audit trail in the same transaction;
//! - dead letters go to the store's `dead_letters` table, like the broker's `.dead` queue ends.
//!
//! On PostgreSQL several processes can share the queue (`FOR UPDATE SKIP LOCKED`); on SQLite
//! writers take turns on the file lock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod group_commit;

use group_commit::GroupCommit;
pub use group_commit::insert_messages;

use super::dead_letter_records::{self, subject_of};
use super::{
    Consumer, DeadLetter, Delivery, Failure, OutgoingMessage, PublishError, Queue, QueueDepths, QueueError,
    Retry, Settle,
};
use crate::audit::AuditLog;
use crate::config::QueueSettings;
use crate::store::{Backend, DeadLetterRow, Store, StoreError, duration_millis, to_millis};

/// The embedded queue backend.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    store: Store,
    settings: Arc<QueueSettings>,
    /// Where messages parked at the delivery limit are recorded.
    audit: AuditLog,
    /// Identifies this process's locks.
    owner: String,
    /// Wakes idle consumers of this process when a message is published here.
    published: Arc<Notify>,
    /// Where publishes go: concurrent ones share a commit.
    new_messages: Arc<GroupCommit>,
    closed: CancellationToken,
}

impl EmbeddedQueue {
    pub fn new(store: Store, settings: QueueSettings, audit: AuditLog) -> Self {
        let published = Arc::new(Notify::new());
        EmbeddedQueue {
            new_messages: Arc::new(GroupCommit::new(store.clone(), published.clone())),
            store,
            settings: Arc::new(settings),
            audit,
            owner: format!("embedded-{}", ulid::Ulid::generate()),
            published,
            closed: CancellationToken::new(),
        }
    }

    /// Locks the next visible message for this process, if there is one. Each take locks with a
    /// token of its own, so a copy handed out again after its visibility ran out (even to this
    /// process) cannot be settled by the earlier holder.
    async fn take_next(&self) -> Result<Option<Taken>, StoreError> {
        let token = format!("{}/{}", self.owner, ulid::Ulid::generate());
        let now = to_millis(Utc::now());
        let until = now.saturating_add(duration_millis(Duration::from_secs(
            self.settings.visibility_timeout_seconds,
        )));
        let pick = match self.store.backend() {
            // Several processes may poll one PostgreSQL queue: skip rows another one is locking.
            Backend::Postgres => {
                "SELECT id FROM queue_messages
                 WHERE visible_at <= $3 AND (locked_until IS NULL OR locked_until < $3)
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT id FROM queue_messages
                 WHERE visible_at <= $3 AND (locked_until IS NULL OR locked_until < $3)
                 ORDER BY id LIMIT 1"
            }
        };
        // One statement, so no transaction around it: a writing statement takes SQLite's write
        // lock from its start, and PostgreSQL's row lock is the statement's own.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE queue_messages SET locked_by = $1, locked_until = $2, deliveries = deliveries + 1
             WHERE id = ({pick})
             RETURNING id, routing_key, message_id, event_id, event_type, body, deliveries, history"
        )))
        .bind(&token)
        .bind(until)
        .bind(now)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get("id")?;
        let history: String = row.try_get("history")?;
        // Informational (the delivery limit counts `deliveries`): a history that cannot be read
        // is left out rather than keeping its message from ever being handed out again (it
        // would be locked, refused here, and locked again, for ever), as RabbitMQ's header is.
        let history = serde_json::from_str(&history).unwrap_or_else(|error| {
            tracing::warn!(message_row = id, %error, "a queued message's failure history cannot be read; delivered without it");
            Vec::new()
        });
        let deliveries: i64 = row.try_get("deliveries")?;
        Ok(Some(Taken {
            id,
            token,
            routing_key: row.try_get("routing_key")?,
            message_id: row.try_get("message_id")?,
            body: row.try_get("body")?,
            deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
            history,
        }))
    }

    fn settle_for(&self, id: i64, token: String) -> EmbeddedSettle {
        let keepalive = {
            let store = self.store.clone();
            let token = token.clone();
            let visibility = Duration::from_secs(self.settings.visibility_timeout_seconds);
            tokio::spawn(async move {
                // Renew well before expiry, so a slow handler never loses its message.
                let mut tick = tokio::time::interval((visibility / 3).max(Duration::from_millis(100)));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let until = to_millis(Utc::now()).saturating_add(duration_millis(visibility));
                    let renewed = sqlx::query(
                        "UPDATE queue_messages SET locked_until = $1 WHERE id = $2 AND locked_by = $3",
                    )
                    .bind(until)
                    .bind(id)
                    .bind(&token)
                    .execute(store.pool())
                    .await;
                    if let Err(error) = renewed {
                        tracing::warn!(%error, message_row = id, "cannot extend the visibility of a message in progress");
                    }
                }
            })
        };
        EmbeddedSettle {
            queue: self.clone(),
            id,
            token,
            keepalive,
        }
    }

    async fn poll(self, tx: mpsc::Sender<Delivery>, stop: CancellationToken) {
        let idle = Duration::from_millis(self.settings.embedded_poll_ms);
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.closed.cancelled() => return,
                permit = tx.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            match self.take_next().await {
                Ok(Some(taken)) => {
                    // Like RabbitMQ's limit: the first delivery plus `delivery_limit` redeliveries.
                    if taken.deliveries > self.settings.delivery_limit.saturating_add(1) {
                        let settle = self.settle_for(taken.id, taken.token);
                        let attempts = taken.history.last().map_or(0, |f| f.attempt);
                        let letter = DeadLetter {
                            reason: format!(
                                "delivery limit exceeded: handed out {} times without being settled (a worker kept dying on it)",
                                taken.deliveries - 1
                            ),
                            attempts,
                            history: taken.history,
                        };
                        if let Err(error) = settle.park(letter, true).await {
                            tracing::warn!(%error, "cannot dead-letter a poison message");
                        }
                        drop(permit);
                        continue;
                    }
                    let settle = Box::new(self.settle_for(taken.id, taken.token));
                    permit.send(Delivery::new(
                        taken.body.into_bytes(),
                        taken.routing_key,
                        taken.message_id,
                        taken.history,
                        taken.deliveries > 1,
                        settle,
                    ));
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.closed.cancelled() => return,
                        _ = self.published.notified() => {}
                        _ = tokio::time::sleep(idle) => {}
                    }
                }
                Err(error) => {
                    drop(permit);
                    tracing::warn!(%error, "embedded queue: cannot take the next message; retrying");
                    if !crate::pacing::sleep_unless(Duration::from_secs(1), &stop).await {
                        return;
                    }
                }
            }
        }
    }
}

struct Taken {
    id: i64,
    /// What the row is locked with.
    token: String,
    routing_key: String,
    message_id: String,
    body: String,
    deliveries: u32,
    history: Vec<Failure>,
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        self.new_messages.insert(message).await
    }

    async fn requeue(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        self.new_messages.insert(message).await
    }

    async fn consume(&self, prefetch: u16) -> Result<Consumer, QueueError> {
        // One message waits in the channel; the worker's own concurrency bounds the rest.
        let _ = prefetch;
        let (tx, rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.clone().poll(tx, stop.clone()));
        Ok(Consumer::new(rx, stop, task))
    }

    async fn depths(&self) -> Result<QueueDepths, QueueError> {
        let now = to_millis(Utc::now());
        let row = sqlx::query(
            "SELECT
                 COALESCE(SUM(CASE WHEN visible_at <= $1 THEN 1 ELSE 0 END), 0) AS work,
                 COALESCE(SUM(CASE WHEN visible_at > $1 THEN 1 ELSE 0 END), 0) AS retry,
                 MIN(CASE WHEN visible_at <= $1 THEN created_at END) AS oldest
             FROM queue_messages",
        )
        .bind(now)
        .fetch_one(self.store.pool())
        .await?;
        let work: i64 = row.try_get("work")?;
        let retry: i64 = row.try_get("retry")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(QueueDepths {
            work: u64::try_from(work).unwrap_or(0),
            retry: u64::try_from(retry).unwrap_or(0),
            oldest_age_seconds: oldest.map(|created| (now - created).max(0) as f64 / 1000.0),
        })
    }

    fn is_ready(&self) -> bool {
        // The store's own readiness is checked separately; the queue is the store.
        !self.closed.is_cancelled()
    }

    /// Stops polling, and hands back the messages this process took and never settled: a
    /// handler still running when the worker's grace period ran out was dropped with its
    /// message locked, which would otherwise wait out its visibility timeout (minutes) before
    /// the next process could take it. RabbitMQ does the same when a consumer's channel closes.
    /// The delivery counts towards the delivery limit as handed out; the event's dedupe claim
    /// keeps whoever takes it next from acting while the claim's lease lasts.
    async fn close(&self) {
        self.closed.cancel();
        let mine = format!("{}/", self.owner);
        let handed_back = sqlx::query(
            "UPDATE queue_messages SET locked_by = NULL, locked_until = NULL
             WHERE substr(locked_by, 1, CAST($1 AS INTEGER)) = $2",
        )
        .bind(i64::try_from(mine.len()).unwrap_or(i64::MAX))
        .bind(&mine)
        .execute(self.store.pool())
        .await;
        match handed_back {
            Ok(done) if done.rows_affected() > 0 => tracing::info!(
                messages = done.rows_affected(),
                "unfinished messages handed back to the queue for the next process"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(
                %error,
                "cannot hand back unfinished messages; they are handed out again once their visibility timeout runs out"
            ),
        }
    }
}

/// Settles one locked row.
struct EmbeddedSettle {
    queue: EmbeddedQueue,
    id: i64,
    token: String,
    keepalive: JoinHandle<()>,
}

impl Drop for EmbeddedSettle {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl EmbeddedSettle {
    fn lost(&self, what: &str) {
        // The visibility timeout ran out and another worker took the message; the dedupe claim
        // keeps the two from both acting.
        tracing::warn!(
            message_row = self.id,
            "embedded queue: lost the lock before {what}"
        );
    }

    /// The outcome of a statement that settles the row only while this delivery holds its lock.
    fn settled(
        &self,
        what: &str,
        result: Result<sqlx::any::AnyQueryResult, sqlx::Error>,
    ) -> Result<(), QueueError> {
        if result?.rows_affected() == 0 {
            self.lost(what);
        }
        Ok(())
    }
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        let result = sqlx::query("DELETE FROM queue_messages WHERE id = $1 AND locked_by = $2")
            .bind(self.id)
            .bind(&self.token)
            .execute(self.queue.store.pool())
            .await;
        self.settled("ack", result)
    }

    async fn retry(self: Box<Self>, retry: Retry) -> Result<(), QueueError> {
        let visible_at = to_millis(Utc::now())
            .saturating_add(duration_millis(self.queue.settings.retry_delay(retry.rung)));
        let history = serde_json::to_string(&retry.history).map_err(|e| QueueError(e.to_string()))?;
        let result = sqlx::query(
            "UPDATE queue_messages SET
                 history = $1, visible_at = $2, locked_by = NULL, locked_until = NULL, deliveries = 0
             WHERE id = $3 AND locked_by = $4",
        )
        .bind(history)
        .bind(visible_at)
        .bind(self.id)
        .bind(&self.token)
        .execute(self.queue.store.pool())
        .await;
        self.settled("retry", result)
    }

    async fn dead_letter(self: Box<Self>, letter: DeadLetter) -> Result<(), QueueError> {
        self.park(letter, false).await
    }

    async fn release(self: Box<Self>) -> Result<(), QueueError> {
        sqlx::query(
            "UPDATE queue_messages SET locked_by = NULL, locked_until = NULL, deliveries = deliveries - 1
             WHERE id = $1 AND locked_by = $2",
        )
        .bind(self.id)
        .bind(&self.token)
        .execute(self.queue.store.pool())
        .await?;
        Ok(())
    }
}

impl EmbeddedSettle {
    /// Moves the row to the dead letters, with its `dead_lettered` audit record when `audited`
    /// (the queue parked it, not a worker that records its own).
    async fn park(self, letter: DeadLetter, audited: bool) -> Result<(), QueueError> {
        let audit = &self.queue.audit;
        audit
            .bounded(self.move_to_dead_letters(letter, audited), |e| {
                QueueError(e.to_string())
            })
            .await
    }

    async fn move_to_dead_letters(&self, letter: DeadLetter, audited: bool) -> Result<(), QueueError> {
        let store = &self.queue.store;
        let mut tx = store.begin_write().await?;
        // Taking the row out first makes the move atomic with respect to a lock that ran out
        // meanwhile: only the holder of the lock deletes it.
        let row = sqlx::query(
            "DELETE FROM queue_messages WHERE id = $1 AND locked_by = $2
             RETURNING routing_key, message_id, event_id, event_type, body",
        )
        .bind(self.id)
        .bind(&self.token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            self.lost("dead-lettering");
            return Ok(());
        };
        let get = |name: &str| {
            row.try_get::<String, _>(name)
                .map_err(|e| QueueError(e.to_string()))
        };
        let body = get("body")?;
        let dead = DeadLetterRow {
            id: ulid::Ulid::generate().to_string(),
            event_id: get("event_id")?,
            event_type: get("event_type")?,
            subject: subject_of(&body),
            routing_key: get("routing_key")?,
            message_id: get("message_id")?,
            body,
            reason: letter.reason,
            attempts: letter.attempts,
            first_failure_at: letter.history.first().map(|f| f.at),
            last_failure_at: letter.history.last().map(|f| f.at),
            history: letter.history,
            dead_at: Utc::now(),
        };
        dead_letter_records::record_in(&mut tx, &self.queue.audit, &dead, audited).await?;
        tx.commit().await?;
        Ok(())
    }
}
