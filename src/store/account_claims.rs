//! One account at a time: a claim per (tenant, account) that the delivery acting on the account
//! holds until it is settled, across every worker process sharing the store.
//!
//! Why: two events about one person arriving together (a `user.created` and a
//! `user.deactivated` from HR within a second) would otherwise be planned and performed
//! side by side by two workers, and the removal could list the memberships before the additions
//! landed: a deactivated person left in the default groups. Held one after the other, whichever
//! comes second sees what the first did (the decision order, the account's status, the groups).
//!
//! Why in the store rather than by partitioning on the broker: it holds for both queue backends,
//! for retries and redeliveries (which a partition would hand to whichever consumer is next),
//! and for any number of workers without a partition count to choose; the price is one upsert
//! per event that names an account. A claim is a row with a lease the holder renews; released
//! claims are deleted, and a dead worker's claim is taken over once its lease ran out.

use std::time::Duration;

use chrono::Utc;
use sqlx::Row;

use super::{Store, StoreError, duration_millis, to_millis};

/// The result of trying to claim an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountClaim {
    /// This delivery holds the account now.
    Acquired,
    /// Another delivery holds it (acting on `event_id`); come back later.
    Busy { event_id: String },
}

/// Expired claims older than this are forgotten by housekeeping (a worker that died holding
/// them; nothing else would remove them if the account never sees another event).
const FORGET_AFTER: Duration = Duration::from_secs(3_600);

impl Store {
    /// Claims `account_id` of `tenant` for `owner` (one owner per delivery), taking over a
    /// claim whose lease ran out. Claiming again as the same owner succeeds.
    pub async fn claim_account(
        &self,
        tenant: &str,
        account_id: &str,
        owner: &str,
        event_id: &str,
        lease: Duration,
    ) -> Result<AccountClaim, StoreError> {
        let mut conn = self.pool().acquire().await?;
        // A claim released between the upsert and the look at its holder is free: try again
        // (a couple of times; a free-for-all that long is someone else's turn).
        for _ in 0..3 {
            let now = to_millis(Utc::now());
            // One statement: two workers claiming at once cannot both win.
            let acquired = sqlx::query(
                "INSERT INTO account_claims (tenant, account_id, owner, event_id, lease_until)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, account_id) DO UPDATE SET
                     owner = excluded.owner,
                     event_id = excluded.event_id,
                     lease_until = excluded.lease_until
                 WHERE account_claims.lease_until < $6 OR account_claims.owner = excluded.owner
                 RETURNING owner",
            )
            .bind(tenant)
            .bind(account_id)
            .bind(owner)
            .bind(event_id)
            .bind(now.saturating_add(duration_millis(lease)))
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            if acquired.is_some() {
                return Ok(AccountClaim::Acquired);
            }
            let holder =
                sqlx::query("SELECT event_id FROM account_claims WHERE tenant = $1 AND account_id = $2")
                    .bind(tenant)
                    .bind(account_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(row) = holder {
                return Ok(AccountClaim::Busy {
                    event_id: row.try_get("event_id")?,
                });
            }
        }
        Ok(AccountClaim::Busy {
            event_id: "(claimed and released by others meanwhile)".to_owned(),
        })
    }

    /// Extends `owner`'s lease on the account; false when the claim is no longer theirs.
    pub async fn renew_account_claim(
        &self,
        tenant: &str,
        account_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let until = to_millis(Utc::now()).saturating_add(duration_millis(lease));
        let result = sqlx::query(
            "UPDATE account_claims SET lease_until = $1
             WHERE tenant = $2 AND account_id = $3 AND owner = $4",
        )
        .bind(until)
        .bind(tenant)
        .bind(account_id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Lets the account go (the delivery is settled); nothing when it is no longer `owner`'s.
    pub async fn release_account(
        &self,
        tenant: &str,
        account_id: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM account_claims WHERE tenant = $1 AND account_id = $2 AND owner = $3")
            .bind(tenant)
            .bind(account_id)
            .bind(owner)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets claims whose lease ran out long ago (their worker died); returns how many.
    pub async fn purge_abandoned_account_claims(&self) -> Result<u64, StoreError> {
        let before = to_millis(Utc::now()).saturating_sub(duration_millis(FORGET_AFTER));
        let result = sqlx::query("DELETE FROM account_claims WHERE lease_until < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }
}
