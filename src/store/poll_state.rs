//! What the pollers remember between runs and processes: the events-stream cursor, who holds a
//! singleton job's lease, and the last seen members of protected groups.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, duration_millis, from_millis, to_millis};

/// A protected group's members as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// The tenant whose site the group is in.
    pub tenant: String,
    pub group_id: String,
    pub group_name: String,
    /// Sorted account ids.
    pub members: Vec<String>,
    pub taken_at: DateTime<Utc>,
}

impl Store {
    pub async fn poll_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT cursor FROM poll_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("cursor")).transpose()?)
    }

    pub async fn save_poll_cursor(&self, name: &str, cursor: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO poll_cursors (name, cursor, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(cursor)
        .bind(to_millis(Utc::now()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Takes or renews the lease `name` for `owner`; false when another owner holds a live one.
    pub async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = to_millis(Utc::now());
        let until = now.saturating_add(duration_millis(ttl));
        let row = sqlx::query(
            "INSERT INTO leases (name, owner, lease_until) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
             WHERE leases.owner = excluded.owner OR leases.lease_until < $4
             RETURNING owner",
        )
        .bind(name)
        .bind(owner)
        .bind(until)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// How many live leases have names starting with `prefix` (processes sharing something,
    /// each holding its own).
    pub async fn live_leases(&self, prefix: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS live FROM leases
             WHERE substr(name, 1, CAST($1 AS INTEGER)) = $2 AND lease_until >= $3",
        )
        .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
        .bind(prefix)
        .bind(to_millis(Utc::now()))
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("live")?).unwrap_or(0))
    }

    /// Remembers that a request of kind `name` was made at `at` (and forgets those older than
    /// a day).
    pub async fn record_request(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO request_log (name, at) VALUES ($1, $2)")
            .bind(name)
            .bind(to_millis(at))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM request_log WHERE name = $1 AND at < $2")
            .bind(name)
            .bind(to_millis(at - chrono::Duration::days(1)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves the request of kind `name` recorded at `sent` to `answered` (when its answer came).
    pub async fn request_answered(
        &self,
        name: &str,
        sent: DateTime<Utc>,
        answered: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE request_log SET at = $1 WHERE name = $2 AND at = $3")
            .bind(to_millis(answered))
            .bind(name)
            .bind(to_millis(sent))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The times of requests of kind `name` made after `since`, oldest first.
    pub async fn requests_since(
        &self,
        name: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let rows = sqlx::query("SELECT at FROM request_log WHERE name = $1 AND at > $2 ORDER BY at")
            .bind(name)
            .bind(to_millis(since))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|row| from_millis(row.try_get("at")?)).collect()
    }

    /// Gives a lease up (shutdown), so another process takes over at once.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn group_snapshot(
        &self,
        tenant: &str,
        group_id: &str,
    ) -> Result<Option<GroupSnapshot>, StoreError> {
        let row = sqlx::query(
            "SELECT tenant, group_id, group_name, members, taken_at FROM group_snapshots
             WHERE tenant = $1 AND group_id = $2",
        )
        .bind(tenant)
        .bind(group_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            let members: String = row.try_get("members")?;
            Ok(GroupSnapshot {
                tenant: row.try_get("tenant")?,
                group_id: row.try_get("group_id")?,
                group_name: row.try_get("group_name")?,
                members: serde_json::from_str(&members)
                    .map_err(|e| StoreError::Corrupt(format!("group snapshot: {e}")))?,
                taken_at: from_millis(row.try_get("taken_at")?)?,
            })
        })
        .transpose()
    }

    pub async fn save_group_snapshot(&self, snapshot: &GroupSnapshot) -> Result<(), StoreError> {
        let members =
            serde_json::to_string(&snapshot.members).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO group_snapshots (tenant, group_id, group_name, members, taken_at)
             VALUES ($5, $1, $2, $3, $4)
             ON CONFLICT (tenant, group_id) DO UPDATE SET
                 group_name = excluded.group_name, members = excluded.members, taken_at = excluded.taken_at",
        )
        .bind(&snapshot.group_id)
        .bind(&snapshot.group_name)
        .bind(members)
        .bind(to_millis(snapshot.taken_at))
        .bind(&snapshot.tenant)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
