//! Actions already performed, by idempotency key, so redeliveries, retries and duplicates never
//! perform one twice. The row is written in the same transaction as the action's `executed`
//! audit record.

use std::collections::HashSet;

use chrono::Utc;
use sqlx::Row;

use super::{Store, StoreError, to_millis};

/// What was performed.
#[derive(Debug, Clone)]
pub struct ExecutedAction<'a> {
    pub idempotency_key: &'a str,
    pub event_id: &'a str,
    pub handler: &'a str,
    pub action_type: &'a str,
    pub target: &'a str,
    pub request_id: Option<&'a str>,
}

/// Records a performed action on `conn` (the caller's transaction).
pub async fn insert(conn: &mut sqlx::AnyConnection, action: &ExecutedAction<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO executed_actions
             (idempotency_key, event_id, handler, action_type, target, request_id, executed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(action.idempotency_key)
    .bind(action.event_id)
    .bind(action.handler)
    .bind(action.action_type)
    .bind(action.target)
    .bind(action.request_id)
    .bind(to_millis(Utc::now()))
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The idempotency keys of the actions already performed for `event_id` (one read per plan,
    /// not one per action; keys begin with their event's id, and rows carry it).
    pub async fn executed_keys(&self, event_id: &str) -> Result<HashSet<String>, StoreError> {
        let rows = sqlx::query("SELECT idempotency_key FROM executed_actions WHERE event_id = $1")
            .bind(event_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("idempotency_key")?))
            .collect()
    }
}
