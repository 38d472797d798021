//! The operator console's sessions: one row per signed-in browser, keyed by a hash of the
//! session id (the cookie holds the id itself), with its expiry. What an operator may do is read
//! from config on every request, so a role changed or an operator removed takes effect at once.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, from_millis, to_millis};

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub operator: String,
    /// `password` or `proxy`.
    pub method: String,
    /// Signed in by password: the hex SHA-256 of the password hash it signed in with.
    pub credential: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Records a session; `id_hash` is the hex SHA-256 of its id.
    pub async fn create_console_session(
        &self,
        id_hash: &str,
        (operator, method, credential): (&str, &str, Option<&str>),
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, operator, method, credential, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id_hash)
        .bind(operator)
        .bind(method)
        .bind(credential)
        .bind(to_millis(Utc::now()))
        .bind(to_millis(expires_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session with this id hash, unless it expired.
    pub async fn console_session(&self, id_hash: &str) -> Result<Option<ConsoleSession>, StoreError> {
        let row = sqlx::query(
            "SELECT operator, method, credential, created_at, expires_at FROM console_sessions
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(to_millis(Utc::now()))
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(ConsoleSession {
                operator: row.try_get("operator")?,
                method: row.try_get("method")?,
                credential: row.try_get("credential")?,
                created_at: from_millis(row.try_get("created_at")?)?,
                expires_at: from_millis(row.try_get("expires_at")?)?,
            })
        })
        .transpose()
    }

    /// Ends a session (sign-out).
    pub async fn delete_console_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets expired sessions; how many.
    pub async fn delete_expired_console_sessions(&self) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(to_millis(Utc::now()))
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }
}
