//! The last run of each tenant's background reconciler: when it ran and what it found (or why
//! it failed), kept so the operator console can show it. Only the last run is kept per tenant.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, from_millis, to_millis};

/// One tenant's last reconciler run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileRun {
    pub tenant: String,
    pub ran_at: DateTime<Utc>,
    /// A JSON array of findings (`event_type`, `account_id`, `group`, `reason`).
    pub findings: String,
    pub groups_scanned: u64,
    pub accounts_checked: u64,
    /// A JSON array of the deactivated accounts still holding groups whose plan already waits
    /// for a person (found, not queued again).
    pub awaiting_approval: String,
    /// Why the run failed, when it did.
    pub error: Option<String>,
}

impl Store {
    /// Replaces `run.tenant`'s last run with `run`.
    pub async fn record_reconcile_run(&self, run: &ReconcileRun) -> Result<(), StoreError> {
        // Both databases accept this upsert as written.
        let sql = "INSERT INTO reconcile_runs
                 (tenant, ran_at, findings, groups_scanned, accounts_checked, awaiting_approval, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (tenant) DO UPDATE SET ran_at = excluded.ran_at, findings = excluded.findings,
                     groups_scanned = excluded.groups_scanned, accounts_checked = excluded.accounts_checked,
                     awaiting_approval = excluded.awaiting_approval, error = excluded.error";
        sqlx::query(sql)
            .bind(&run.tenant)
            .bind(to_millis(run.ran_at))
            .bind(&run.findings)
            .bind(i64::try_from(run.groups_scanned).unwrap_or(i64::MAX))
            .bind(i64::try_from(run.accounts_checked).unwrap_or(i64::MAX))
            .bind(&run.awaiting_approval)
            .bind(run.error.as_deref())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// `tenant`'s last reconciler run, if one was recorded.
    pub async fn last_reconcile_run(&self, tenant: &str) -> Result<Option<ReconcileRun>, StoreError> {
        let row = sqlx::query(
            "SELECT tenant, ran_at, findings, groups_scanned, accounts_checked, awaiting_approval, error
             FROM reconcile_runs WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            let groups: i64 = row.try_get("groups_scanned")?;
            let accounts: i64 = row.try_get("accounts_checked")?;
            Ok(ReconcileRun {
                tenant: row.try_get("tenant")?,
                ran_at: from_millis(row.try_get("ran_at")?)?,
                findings: row.try_get("findings")?,
                groups_scanned: u64::try_from(groups).unwrap_or(0),
                accounts_checked: u64::try_from(accounts).unwrap_or(0),
                awaiting_approval: row.try_get("awaiting_approval")?,
                error: row.try_get("error")?,
            })
        })
        .transpose()
    }
}
