//! Dead letters of both queue backends: what could not be processed, why, after how many
//! attempts, with its failure history; kept until replayed or purged (`gatehouse dlq`).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, from_millis, to_millis};

/// One failed attempt of a message, as its history carries it (on the queue, and here once it is
/// dead).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: String,
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRow {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// The account or group the event is about, for listings.
    pub subject: Option<String>,
    pub routing_key: String,
    pub message_id: String,
    /// The envelope, as published.
    pub body: String,
    pub reason: String,
    pub attempts: u32,
    pub first_failure_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub history: Vec<Failure>,
    pub dead_at: DateTime<Utc>,
}

impl DeadLetterRow {
    /// The tenant the letter's envelope is bound to (see [`handlers::Envelope::tenant_name`]);
    /// a body that is no envelope belongs to the default tenant, whose operators see it.
    pub fn tenant(&self) -> String {
        super::envelope_tenant(&self.body)
    }
}

const COLUMNS: &str = "id, event_id, event_type, subject, routing_key, message_id, body, reason, attempts,
     first_failure_at, last_failure_at, history, dead_at";

fn optional_time(value: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    value.map(from_millis).transpose()
}

fn from_row(row: &AnyRow) -> Result<DeadLetterRow, StoreError> {
    let history: String = row.try_get("history")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(DeadLetterRow {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        subject: row.try_get("subject")?,
        routing_key: row.try_get("routing_key")?,
        message_id: row.try_get("message_id")?,
        body: row.try_get("body")?,
        reason: row.try_get("reason")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        first_failure_at: optional_time(row.try_get("first_failure_at")?)?,
        last_failure_at: optional_time(row.try_get("last_failure_at")?)?,
        history: serde_json::from_str(&history)
            .map_err(|e| StoreError::Corrupt(format!("dead letter history: {e}")))?,
        dead_at: from_millis(row.try_get("dead_at")?)?,
    })
}

/// Which dead letters a listing shows.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub event_type: Option<String>,
    pub limit: Option<u32>,
}

/// Inserts a dead letter on `conn` (a transaction, when moving a message must be atomic); false
/// when it is already recorded. A broker-parked letter (its id derived from its content, so the
/// same message parked again has the same id) that was replayed or purged and came back is dead
/// again, with its new reason and history. Letters a worker parked get a fresh id each time, so
/// a stale redelivery of one cannot revive a letter already replayed.
pub async fn insert(conn: &mut sqlx::AnyConnection, row: &DeadLetterRow) -> Result<bool, StoreError> {
    let history = serde_json::to_string(&row.history).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let result = sqlx::query(
        "INSERT INTO dead_letters
             (id, event_id, event_type, subject, routing_key, message_id, body, reason, attempts,
              first_failure_at, last_failure_at, history, dead_at, state, replayed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'dead', NULL)
         ON CONFLICT (id) DO UPDATE SET
             reason = excluded.reason,
             attempts = excluded.attempts,
             first_failure_at = excluded.first_failure_at,
             last_failure_at = excluded.last_failure_at,
             history = excluded.history,
             dead_at = excluded.dead_at,
             state = 'dead',
             replayed_at = NULL
         WHERE dead_letters.state <> 'dead' AND dead_letters.id LIKE 'broker-%'",
    )
    .bind(&row.id)
    .bind(&row.event_id)
    .bind(&row.event_type)
    .bind(row.subject.as_deref())
    .bind(&row.routing_key)
    .bind(&row.message_id)
    .bind(&row.body)
    .bind(&row.reason)
    .bind(i64::from(row.attempts))
    .bind(row.first_failure_at.map(to_millis))
    .bind(row.last_failure_at.map(to_millis))
    .bind(history)
    .bind(to_millis(row.dead_at))
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

impl Store {
    /// Records a dead letter; false if one with this id was already recorded (idempotent, so a
    /// recorder that crashed before acking does not duplicate it).
    pub async fn insert_dead_letter(&self, row: &DeadLetterRow) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        insert(&mut conn, row).await
    }

    /// Dead letters not replayed or purged, oldest first.
    pub async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetterRow>, StoreError> {
        let limit = i64::from(filter.limit.unwrap_or(u32::MAX).min(1_000_000));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM dead_letters
             WHERE state = 'dead' AND ($1 = '' OR event_type = $1)
             ORDER BY dead_at, id LIMIT $2"
        )))
        .bind(filter.event_type.clone().unwrap_or_default())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// One dead letter (also once replayed, for `dlq show`).
    pub async fn dead_letter(&self, id: &str) -> Result<Option<(DeadLetterRow, bool)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, state FROM dead_letters WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            let state: String = row.try_get("state")?;
            Ok((from_row(&row)?, state == "dead"))
        })
        .transpose()
    }

    /// Marks a dead letter replayed; false if it was not (or no longer) dead.
    pub async fn mark_dead_letter_replayed(&self, id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE dead_letters SET state = 'replayed', replayed_at = $1 WHERE id = $2 AND state = 'dead'",
        )
        .bind(to_millis(Utc::now()))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Deletes a dead letter for good; false if there was none.
    pub async fn purge_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM dead_letters WHERE id = $1 AND state = 'dead'")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() > 0)
    }

    pub async fn count_dead_letters(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM dead_letters WHERE state = 'dead'")
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
