//! The outbox table: deliveries to outbound endpoints and Slack, each written in the transaction
//! of what it carries, taken by one sender at a time under a lease, and settled as delivered,
//! retried at a later time, or dead; plus one compact row per attempt.
//!
//! Several processes may send from one outbox: a delivery is taken with the same
//! lock-and-lease statement the embedded queue uses, and one whose sender died is taken over once
//! its lease ran out (so a delivery is sent at least once, and receivers dedupe on its id).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError, from_millis, to_millis};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 3] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(name: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A delivery to write: what it carries, for which endpoint.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub endpoint: String,
    /// What it carries; an endpoint gets each source key once however often it is offered.
    pub source_key: String,
    pub message_type: String,
    /// A target of its own instead of the endpoint's (a Slack `response_url`).
    pub url: Option<String>,
    pub payload: String,
}

/// The body every endpoint receives, in Standard Webhooks' recommended shape:
/// `{"type": …, "timestamp": …, "data": …}`.
pub fn payload(
    message_type: &str,
    timestamp: DateTime<Utc>,
    data: &impl serde::Serialize,
) -> Result<String, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Payload<'a, T> {
        #[serde(rename = "type")]
        message_type: &'a str,
        timestamp: DateTime<Utc>,
        data: &'a T,
    }
    serde_json::to_string(&Payload {
        message_type,
        timestamp,
        data,
    })
}

/// One delivery, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundDelivery {
    pub id: String,
    pub endpoint: String,
    pub source_key: String,
    pub message_type: String,
    pub url: Option<String>,
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub failures: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub millis: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// How an attempt ended, as the sender settles it.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Delivered,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// Not attempted yet, for a reason of gatehouse's own (a Slack update waiting for the message
    /// it replaces): due again at this time, without spending a rung of the ladder.
    Wait(DateTime<Utc>),
    Dead,
}

const COLUMNS: &str = "id, endpoint, source_key, message_type, url, payload, state, attempts, failures,
     next_attempt_at, last_status, last_error, created_at, finished_at";

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn from_row(row: &AnyRow) -> Result<OutboundDelivery, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(OutboundDelivery {
        id: row.try_get("id")?,
        endpoint: row.try_get("endpoint")?,
        source_key: row.try_get("source_key")?,
        message_type: row.try_get("message_type")?,
        url: row.try_get("url")?,
        payload: row.try_get("payload")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("outbound delivery state `{state}`")))?,
        attempts: count(row.try_get("attempts")?),
        failures: count(row.try_get("failures")?),
        next_attempt_at: from_millis(row.try_get("next_attempt_at")?)?,
        last_status: row
            .try_get::<Option<i64>, _>("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_millis)
            .transpose()?,
    })
}

/// Writes `deliveries` in the caller's transaction (they are sent once it commits); a source key
/// an endpoint already has is skipped. How many were new.
pub async fn enqueue_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    deliveries: &[NewDelivery],
) -> Result<u64, StoreError> {
    let now = to_millis(Utc::now());
    let mut written = 0;
    for delivery in deliveries {
        written += sqlx::query(
            "INSERT INTO outbound_deliveries
                 (id, endpoint, source_key, message_type, url, payload, state, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)
             ON CONFLICT (endpoint, source_key) DO NOTHING",
        )
        .bind(ulid::Ulid::generate().to_string())
        .bind(&delivery.endpoint)
        .bind(&delivery.source_key)
        .bind(&delivery.message_type)
        .bind(&delivery.url)
        .bind(&delivery.payload)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(written)
}

/// One delivery taken for sending, with the lock its settlement needs.
#[derive(Debug, Clone)]
pub struct Taken {
    pub delivery: OutboundDelivery,
    pub token: String,
}

impl Store {
    /// Writes `deliveries` in a transaction of their own.
    pub async fn enqueue_outbound(&self, deliveries: &[NewDelivery]) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let written = enqueue_in(&mut tx, deliveries).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Is one of `endpoint`'s deliveries due and free? A read, so an idle sender's look does not
    /// take SQLite's write lock.
    pub async fn has_due_outbound(&self, endpoint: &str) -> Result<bool, StoreError> {
        let now = to_millis(Utc::now());
        let row = sqlx::query(
            "SELECT 1 AS due FROM outbound_deliveries
             WHERE endpoint = $1 AND state = 'pending' AND next_attempt_at <= $2
               AND (locked_until IS NULL OR locked_until < $2)
             LIMIT 1",
        )
        .bind(endpoint)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Takes `endpoint`'s next due delivery for `lease`, counting the attempt; `None` when none
    /// is due.
    pub async fn take_outbound(
        &self,
        endpoint: &str,
        lease: std::time::Duration,
    ) -> Result<Option<Taken>, StoreError> {
        let now = Utc::now();
        let until = to_millis(now) + super::duration_millis(lease);
        let token = ulid::Ulid::generate().to_string();
        let pick = match self.backend() {
            Backend::Postgres => {
                "SELECT id FROM outbound_deliveries
                 WHERE endpoint = $3 AND state = 'pending' AND next_attempt_at <= $4
                   AND (locked_until IS NULL OR locked_until < $4)
                 ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT id FROM outbound_deliveries
                 WHERE endpoint = $3 AND state = 'pending' AND next_attempt_at <= $4
                   AND (locked_until IS NULL OR locked_until < $4)
                 ORDER BY next_attempt_at, id LIMIT 1"
            }
        };
        // One statement: the row lock (PostgreSQL) or the write lock (SQLite) is its own.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbound_deliveries SET locked_by = $1, locked_until = $2, attempts = attempts + 1
             WHERE id = ({pick})
             RETURNING {COLUMNS}"
        )))
        .bind(&token)
        .bind(until)
        .bind(endpoint)
        .bind(to_millis(now))
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Taken {
                delivery: from_row(&row)?,
                token,
            })
        })
        .transpose()
    }

    /// Settles a taken delivery and records its attempt, together. False when the lease ran out
    /// and another sender took it meanwhile (nothing is written).
    pub async fn settle_outbound(
        &self,
        taken: &Taken,
        attempt: &Attempt,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        let now = to_millis(Utc::now());
        let (state, next, failed, finished) = match settlement {
            Settlement::Delivered => ("delivered", now, 0, Some(now)),
            Settlement::Retry(at) => ("pending", to_millis(*at), 1, None),
            Settlement::Wait(at) => ("pending", to_millis(*at), 0, None),
            Settlement::Dead => ("dead", now, 1, Some(now)),
        };
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE outbound_deliveries
             SET state = $1, next_attempt_at = $2, failures = failures + $3, finished_at = $4,
                 last_status = $5, last_error = $6, locked_by = NULL, locked_until = NULL
             WHERE id = $7 AND locked_by = $8",
        )
        .bind(state)
        .bind(next)
        .bind(failed)
        .bind(finished)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(&taken.delivery.id)
        .bind(&taken.token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO outbound_attempts (delivery_id, attempt, at, millis, status, error)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&taken.delivery.id)
        .bind(i64::from(attempt.attempt))
        .bind(to_millis(attempt.at))
        .bind(i64::try_from(attempt.millis).unwrap_or(i64::MAX))
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deliveries, newest first, of one endpoint and/or state.
    pub async fn outbound_deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<OutboundDelivery>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbound_deliveries
             WHERE ($1 IS NULL OR endpoint = $1) AND ($2 IS NULL OR state = $2)
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(endpoint)
        .bind(state.map(DeliveryState::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// `endpoint`'s delivery of `source_key`, if there is one.
    pub async fn outbound_delivery_of(
        &self,
        endpoint: &str,
        source_key: &str,
    ) -> Result<Option<OutboundDelivery>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbound_deliveries WHERE endpoint = $1 AND source_key = $2"
        )))
        .bind(endpoint)
        .bind(source_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// One delivery and its attempts, oldest first.
    pub async fn outbound_delivery(
        &self,
        id: &str,
    ) -> Result<Option<(OutboundDelivery, Vec<Attempt>)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbound_deliveries WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let attempts = sqlx::query(
            "SELECT attempt, at, millis, status, error FROM outbound_attempts
             WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            Ok(Attempt {
                attempt: count(row.try_get("attempt")?),
                at: from_millis(row.try_get("at")?)?,
                millis: u64::try_from(row.try_get::<i64, _>("millis")?).unwrap_or(0),
                status: row
                    .try_get::<Option<i64>, _>("status")?
                    .and_then(|s| u16::try_from(s).ok()),
                error: row.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((from_row(&row)?, attempts)))
    }

    /// Sends delivery `id` again from the first rung; false when there is none, or it is still
    /// pending. `forget_posted`: the approval whose Slack message this delivery posted, forgotten
    /// in the same transaction, so that the new post is the message a settlement's update
    /// replaces (and the sender does not take the replay for a post whose settlement was lost).
    pub async fn replay_outbound(&self, id: &str, forget_posted: Option<&str>) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE outbound_deliveries
             SET state = 'pending', failures = 0, next_attempt_at = $1, finished_at = NULL,
                 locked_by = NULL, locked_until = NULL
             WHERE id = $2 AND state <> 'pending'",
        )
        .bind(to_millis(Utc::now()))
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Ok(false);
        }
        if let Some(approval_id) = forget_posted {
            sqlx::query("DELETE FROM slack_messages WHERE approval_id = $1")
                .bind(approval_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Pending deliveries per endpoint, and the oldest one's creation (for metrics).
    pub async fn outbound_backlog(&self) -> Result<Vec<(String, u64, DateTime<Utc>)>, StoreError> {
        sqlx::query(
            "SELECT endpoint, COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbound_deliveries
             WHERE state = 'pending' GROUP BY endpoint ORDER BY endpoint",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("endpoint")?,
                u64::try_from(row.try_get::<i64, _>("pending")?).unwrap_or(0),
                from_millis(row.try_get("oldest")?)?,
            ))
        })
        .collect()
    }

    /// Forgets delivered deliveries (and their attempts) finished before `before`; how many. Dead
    /// ones are kept until replayed.
    pub async fn forget_delivered_outbound(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let before = to_millis(before);
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM outbound_attempts WHERE delivery_id IN (
                 SELECT id FROM outbound_deliveries WHERE state = 'delivered' AND finished_at < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let forgotten =
            sqlx::query("DELETE FROM outbound_deliveries WHERE state = 'delivered' AND finished_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(forgotten)
    }
}
