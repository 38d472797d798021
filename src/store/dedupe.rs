//! Worker-side dedupe: a claim per fact (the envelope's `dedupe_key`), taken atomically before a
//! worker acts, so two copies of an event (a duplicate delivery, a webhook and a poll of the same
//! fact, a redelivery) are acted on once.
//!
//! A claim is `processing` while a worker holds it (with a lease it renews), `completed` once the
//! work is done and durable, or `released` when the attempt failed and the event may be tried
//! again. A lease that ran out belongs to a worker that died: the next copy takes it over.
//! Completed claims are kept for the retention period, then purged.

use std::time::Duration;

use chrono::Utc;
use sqlx::Row;

use super::{Store, StoreError, duration_millis, to_millis};

/// The result of trying to claim a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker holds the claim now: act.
    Acquired,
    /// The fact was already handled (by `event_id`): a duplicate, do not act.
    Completed { event_id: String },
    /// Another delivery (in this process or another) holds a live lease: it is being handled
    /// right now.
    Busy { owner: String },
}

/// Claims `key` for `owner` on `conn` (a transaction, so the claim can commit with the event's
/// `received` record), taking over a released claim, an expired lease, or a completed
/// claim past its retention. Claiming again as the same owner succeeds, so a claim whose
/// commit was not acknowledged can be retried (owners are one per delivery, never shared).
pub async fn claim_in(
    conn: &mut sqlx::AnyConnection,
    key: &str,
    event_id: &str,
    owner: &str,
    lease: Duration,
    retention: Duration,
) -> Result<Claim, StoreError> {
    let now = to_millis(Utc::now());
    let acquired = sqlx::query(
        "INSERT INTO dedupe_claims
             (dedupe_key, event_id, state, owner, lease_until, claimed_at, completed_at, expires_at)
         VALUES ($1, $2, 'processing', $3, $4, $5, NULL, $6)
         ON CONFLICT (dedupe_key) DO UPDATE SET
             event_id = excluded.event_id,
             state = 'processing',
             owner = excluded.owner,
             lease_until = excluded.lease_until,
             claimed_at = excluded.claimed_at,
             completed_at = NULL,
             expires_at = excluded.expires_at
         WHERE dedupe_claims.state = 'released'
            OR (dedupe_claims.state = 'processing'
                AND (dedupe_claims.lease_until < $5 OR dedupe_claims.owner = excluded.owner))
            OR (dedupe_claims.state = 'completed' AND dedupe_claims.expires_at < $5)
         RETURNING owner",
    )
    .bind(key)
    .bind(event_id)
    .bind(owner)
    .bind(now.saturating_add(duration_millis(lease)))
    .bind(now)
    .bind(now.saturating_add(duration_millis(retention)))
    .fetch_optional(&mut *conn)
    .await?;
    if acquired.is_some() {
        return Ok(Claim::Acquired);
    }
    let row = sqlx::query("SELECT state, owner, event_id FROM dedupe_claims WHERE dedupe_key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("claim for {key} vanished while claiming")))?;
    let state: String = row.try_get("state")?;
    Ok(match state.as_str() {
        "completed" => Claim::Completed {
            event_id: row.try_get("event_id")?,
        },
        _ => Claim::Busy {
            owner: row.try_get("owner")?,
        },
    })
}

impl Store {
    /// [`claim_in`] on its own.
    pub async fn claim(
        &self,
        key: &str,
        event_id: &str,
        owner: &str,
        lease: Duration,
        retention: Duration,
    ) -> Result<Claim, StoreError> {
        let mut conn = self.pool().acquire().await?;
        claim_in(&mut conn, key, event_id, owner, lease, retention).await
    }

    /// Extends `owner`'s lease; false when the claim is no longer theirs.
    pub async fn renew_claim(&self, key: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let until = to_millis(Utc::now()).saturating_add(duration_millis(lease));
        let result = sqlx::query(
            "UPDATE dedupe_claims SET lease_until = $1
             WHERE dedupe_key = $2 AND owner = $3 AND state = 'processing'",
        )
        .bind(until)
        .bind(key)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Marks the fact handled: later copies are duplicates until the retention ends. False when
    /// the claim was no longer `owner`'s (its lease ran out and another delivery took it over);
    /// completing again as the same owner is true (a retry after an unacknowledged commit).
    pub async fn complete_claim(
        &self,
        key: &str,
        owner: &str,
        retention: Duration,
    ) -> Result<bool, StoreError> {
        let now = to_millis(Utc::now());
        let result = sqlx::query(
            "UPDATE dedupe_claims SET state = 'completed', completed_at = $1, expires_at = $2
             WHERE dedupe_key = $3 AND owner = $4 AND state IN ('processing', 'completed')",
        )
        .bind(now)
        .bind(now.saturating_add(duration_millis(retention)))
        .bind(key)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Gives the claim up (the attempt failed): the next copy or retry may claim it.
    pub async fn release_claim(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE dedupe_claims SET state = 'released'
             WHERE dedupe_key = $1 AND owner = $2 AND state = 'processing'",
        )
        .bind(key)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets completed claims past their retention; returns how many.
    pub async fn purge_expired_claims(&self) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM dedupe_claims WHERE state = 'completed' AND expires_at < $1")
            .bind(to_millis(Utc::now()))
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }
}
