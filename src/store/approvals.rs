//! Plans waiting for a person's decision. A plan that needs approval is stored whole; approving
//! it performs exactly that plan, never a newer one.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, from_millis, to_millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    Executed,
    /// Nobody decided within `reactions.approval_ttl`: it never runs.
    Expired,
    /// Approved, but what it was about changed before it ran (the account is active again).
    Superseded,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Executed => "executed",
            ApprovalState::Expired => "expired",
            ApprovalState::Superseded => "superseded",
        }
    }

    /// Every state, for listings and messages.
    pub const ALL: [ApprovalState; 6] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Rejected,
        ApprovalState::Executed,
        ApprovalState::Expired,
        ApprovalState::Superseded,
    ];

    /// The state named `s` (as [`ApprovalState::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "rejected" => ApprovalState::Rejected,
            "executed" => ApprovalState::Executed,
            "expired" => ApprovalState::Expired,
            "superseded" => ApprovalState::Superseded,
            _ => return None,
        })
    }
}

/// One plan and its decision.
#[derive(Debug, Clone)]
pub struct Approval {
    pub id: String,
    pub event_id: String,
    pub handler: String,
    pub event_type: String,
    pub account_id: Option<String>,
    /// The plan as JSON (`handlers::Plan`).
    pub plan: String,
    /// The envelope as JSON.
    pub envelope: String,
    pub state: ApprovalState,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub note: Option<String>,
    /// When the approved plan was last handed to the queue; `None` while pending, or approved
    /// and not queued yet (see [`Store::approved_not_queued`]).
    pub queued_at: Option<DateTime<Utc>>,
}

impl Approval {
    /// The tenant of the plan's event (see [`handlers::Envelope::tenant_name`]); a stored
    /// envelope that cannot be read belongs to the default tenant, whose operators see it.
    pub fn tenant(&self) -> String {
        super::envelope_tenant(&self.envelope)
    }
}

const COLUMNS: &str = "id, event_id, handler, event_type, account_id, plan, envelope, state, created_at, decided_at, decided_by, note, queued_at";

fn from_row(row: &AnyRow) -> Result<Approval, StoreError> {
    let state: String = row.try_get("state")?;
    let decided_at: Option<i64> = row.try_get("decided_at")?;
    let queued_at: Option<i64> = row.try_get("queued_at")?;
    Ok(Approval {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        handler: row.try_get("handler")?,
        event_type: row.try_get("event_type")?,
        account_id: row.try_get("account_id")?,
        plan: row.try_get("plan")?,
        envelope: row.try_get("envelope")?,
        state: ApprovalState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("approval state {state}")))?,
        created_at: from_millis(row.try_get("created_at")?)?,
        decided_at: decided_at.map(from_millis).transpose()?,
        decided_by: row.try_get("decided_by")?,
        note: row.try_get("note")?,
        queued_at: queued_at.map(from_millis).transpose()?,
    })
}

/// A plan to store as pending.
#[derive(Debug, Clone)]
pub struct NewApproval<'a> {
    pub event_id: &'a str,
    pub handler: &'a str,
    pub event_type: &'a str,
    pub account_id: Option<&'a str>,
    pub plan: &'a str,
    pub envelope: &'a str,
}

/// Stores a pending plan on `conn` (a transaction, so its `planned` records commit with it); if
/// this event's handler already has one (a redelivery), returns the existing approval instead.
/// The bool says whether it was created now.
pub async fn request(
    conn: &mut sqlx::AnyConnection,
    new: &NewApproval<'_>,
) -> Result<(Approval, bool), StoreError> {
    let id = ulid::Ulid::generate().to_string();
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO approvals (id, event_id, handler, event_type, account_id, plan, envelope, state, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)
         ON CONFLICT (event_id, handler) DO NOTHING
         RETURNING {COLUMNS}"
    )))
    .bind(&id)
    .bind(new.event_id)
    .bind(new.handler)
    .bind(new.event_type)
    .bind(new.account_id)
    .bind(new.plan)
    .bind(new.envelope)
    .bind(to_millis(Utc::now()))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok((from_row(&row)?, true));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM approvals WHERE event_id = $1 AND handler = $2"
    )))
    .bind(new.event_id)
    .bind(new.handler)
    .fetch_one(&mut *conn)
    .await?;
    Ok((from_row(&row)?, false))
}

/// Moves an approval from `from` to `to` on `conn` (a transaction, so the decision commits with
/// its audit record); false if it was not in `from` (decided already).
pub async fn decide(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    from: ApprovalState,
    to: ApprovalState,
    by: Option<&str>,
    note: Option<&str>,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE approvals SET state = $1, decided_at = COALESCE(decided_at, $2),
             decided_by = COALESCE($3, decided_by), note = COALESCE($4, note)
         WHERE id = $5 AND state = $6",
    )
    .bind(to.as_str())
    .bind(to_millis(Utc::now()))
    .bind(by)
    .bind(note)
    .bind(id)
    .bind(from.as_str())
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

impl Store {
    pub async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Pending approvals created before `before`, oldest first.
    pub async fn pending_approvals_before(&self, before: DateTime<Utc>) -> Result<Vec<Approval>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE state = 'pending' AND created_at < $1 ORDER BY created_at, id"
        )))
        .bind(to_millis(before))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Pending approvals about `account_id`, oldest first.
    pub async fn pending_approvals_for(&self, account_id: &str) -> Result<Vec<Approval>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE state = 'pending' AND account_id = $1 ORDER BY created_at, id"
        )))
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Approvals in `state`, oldest first.
    pub async fn approvals(&self, state: ApprovalState) -> Result<Vec<Approval>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE state = $1 ORDER BY created_at, id"
        )))
        .bind(state.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Notes that approved plan `id` was handed to the queue now.
    pub async fn mark_approval_queued(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE approvals SET queued_at = $1 WHERE id = $2")
            .bind(to_millis(Utc::now()))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Plans approved before `before` and never handed to the queue (the publish after their
    /// decision failed, or the process stopped in between), oldest first.
    pub async fn approved_not_queued(&self, before: DateTime<Utc>) -> Result<Vec<Approval>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals
             WHERE state = 'approved' AND queued_at IS NULL AND decided_at < $1
             ORDER BY decided_at, id"
        )))
        .bind(to_millis(before))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Marks an approved plan performed (its actions' `executed` records are its trail); false
    /// if it was not approved.
    pub async fn mark_approval_executed(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        decide(
            &mut conn,
            id,
            ApprovalState::Approved,
            ApprovalState::Executed,
            None,
            None,
        )
        .await
    }
}
