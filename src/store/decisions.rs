//! The latest decision about each account (`account_decisions`), so that decisions made
//! elsewhere (a source with `authority = "decision"`) are ordered by their own time: a newer
//! `user.reactivated` wins over an older `user.deactivated`, whichever arrives first. Decisions
//! are ordered per tenant: one person may belong to several organizations, each deciding for
//! itself.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, from_millis, to_millis};

/// A decision about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The tenant the decision was made for.
    pub tenant: String,
    pub account_id: String,
    pub decided_at: DateTime<Utc>,
    pub event_id: String,
    pub event_type: String,
    pub source: String,
}

/// Where a decision stands among the others about its account: its time to the millisecond (as
/// stored), then its event id. The store orders by exactly this, and so must everything else.
pub fn order(decided_at: DateTime<Utc>, event_id: &str) -> (i64, String) {
    (to_millis(decided_at), event_id.to_owned())
}

impl Decision {
    /// This decision's place in the order (see [`order`]).
    pub fn order(&self) -> (i64, String) {
        order(self.decided_at, &self.event_id)
    }
}

impl Store {
    /// Records `decision` as the account's latest unless a newer one is recorded already; that
    /// newer one is returned then (`decision` is superseded). Decisions are ordered by time,
    /// then by event id (two at the same millisecond still have one order, the same in every
    /// process). Recording the same decision again (a redelivery) is not a supersession.
    pub async fn record_decision(&self, decision: &Decision) -> Result<Option<Decision>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        // One statement, so two workers recording decisions about one account at once cannot
        // both win: the row only ever moves to a newer (time, event id).
        let written = sqlx::query(
            "INSERT INTO account_decisions (tenant, account_id, decided_at, event_id, event_type, source)
             VALUES ($6, $1, $2, $3, $4, $5)
             ON CONFLICT (tenant, account_id) DO UPDATE SET
                 decided_at = excluded.decided_at,
                 event_id = excluded.event_id,
                 event_type = excluded.event_type,
                 source = excluded.source
             WHERE excluded.decided_at > account_decisions.decided_at
                OR (excluded.decided_at = account_decisions.decided_at
                    AND excluded.event_id >= account_decisions.event_id)
             RETURNING event_id",
        )
        .bind(&decision.account_id)
        .bind(to_millis(decision.decided_at))
        .bind(&decision.event_id)
        .bind(&decision.event_type)
        .bind(&decision.source)
        .bind(&decision.tenant)
        .fetch_optional(&mut *conn)
        .await?;
        if written.is_some() {
            return Ok(None);
        }
        match latest_in(&mut conn, &decision.tenant, &decision.account_id).await? {
            // A redelivery of the latest decision is not superseded by itself.
            Some(latest) if latest.event_id == decision.event_id => Ok(None),
            newer => Ok(newer),
        }
    }

    /// The latest decision about `account_id` in `tenant`, if any.
    pub async fn latest_decision(
        &self,
        tenant: &str,
        account_id: &str,
    ) -> Result<Option<Decision>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        latest_in(&mut conn, tenant, account_id).await
    }
}

async fn latest_in(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    account_id: &str,
) -> Result<Option<Decision>, StoreError> {
    let row = sqlx::query(
        "SELECT tenant, account_id, decided_at, event_id, event_type, source
         FROM account_decisions WHERE tenant = $1 AND account_id = $2",
    )
    .bind(tenant)
    .bind(account_id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(Decision {
            tenant: row.try_get("tenant")?,
            account_id: row.try_get("account_id")?,
            decided_at: from_millis(row.try_get("decided_at")?)?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            source: row.try_get("source")?,
        })
    })
    .transpose()
}
