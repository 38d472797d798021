//! Connect installations: `clientKey → sharedSecret`, written by the lifecycle callbacks and read
//! to verify each Connect webhook.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, from_millis, to_millis};
use crate::config::Secret;

/// One Atlassian site that installed the Connect app.
#[derive(Debug, Clone)]
pub struct Installation {
    pub client_key: String,
    pub shared_secret: Secret,
    pub base_url: String,
    pub cloud_id: Option<String>,
    pub installed_at: DateTime<Utc>,
}

/// What a sealed shared secret is bound to.
pub(super) fn context(client_key: &str) -> String {
    format!("connect_installations.shared_secret:{client_key}")
}

/// What a lifecycle callback asks of its installation.
#[derive(Debug, Clone, Copy)]
pub enum LifecycleChange<'a> {
    Install(&'a Installation),
    Uninstall { client_key: &'a str },
}

/// What applying a lifecycle callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleApplied {
    Installed,
    /// `existed`: whether there was an installation to forget.
    Uninstalled {
        existed: bool,
    },
    /// The token already carried this very body: it was applied then, and nothing is changed
    /// again (a retry whose answer was lost; a re-install since is not undone).
    AlreadyApplied,
    /// The token already carried another body: nothing was changed.
    TokenAlreadySpent,
}

/// The token a lifecycle callback came with, as it is remembered once spent.
#[derive(Debug, Clone, Copy)]
pub struct SpentToken<'a> {
    /// The token's fingerprint (`jwt::UnverifiedToken::fingerprint`): the token itself is a
    /// credential until it expires.
    pub sha256: &'a str,
    /// Hex SHA-256 of the body it carried.
    pub body_sha256: &'a str,
    /// When the token stops verifying: the row is kept until well after.
    pub expires_at: DateTime<Utc>,
}

/// How long after its token expired a spent token's row is kept: longer than any clock skew
/// between processes, or a request's time between its token's check and its transaction.
const SPENT_TOKENS_KEPT_AFTER_EXPIRY_MS: i64 = 10 * 60 * 1000;

impl Store {
    /// Records an installation, replacing the secret of an earlier one with the same client key
    /// (Atlassian sends `installed` again on re-install and on secret rotation).
    pub async fn upsert_installation(&self, installation: &Installation) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        self.upsert_installation_in(&mut conn, installation).await
    }

    async fn upsert_installation_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        installation: &Installation,
    ) -> Result<(), StoreError> {
        let now = to_millis(Utc::now());
        // SQLite and PostgreSQL spell this upsert the same way.
        let sql = "INSERT INTO connect_installations
                (client_key, shared_secret, base_url, cloud_id, installed_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (client_key) DO UPDATE SET
                shared_secret = excluded.shared_secret,
                base_url = excluded.base_url,
                cloud_id = excluded.cloud_id,
                updated_at = excluded.updated_at";
        sqlx::query(sql)
            .bind(&installation.client_key)
            .bind(self.seal(
                installation.shared_secret.expose(),
                &context(&installation.client_key),
            )?)
            .bind(&installation.base_url)
            .bind(installation.cloud_id.as_deref())
            .bind(to_millis(installation.installed_at))
            .bind(now)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Forgets an installation; true when there was one.
    pub async fn delete_installation(&self, client_key: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        delete_installation_in(&mut conn, client_key).await
    }

    /// The body digest a lifecycle token was spent with, if it was: checked before anything
    /// else is done with a callback, so a replay is refused as one (not, say, recorded as a
    /// refused install of another site). [`Store::apply_lifecycle`] decides for good.
    pub async fn spent_lifecycle_token(&self, token_sha256: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        spent_body_in(&mut conn, token_sha256).await
    }

    /// Applies a verified lifecycle callback's change and spends its token, in one transaction:
    /// a token that already carried a change (in this process or another) changes nothing:
    /// [`LifecycleApplied::AlreadyApplied`] when it carried this body,
    /// [`LifecycleApplied::TokenAlreadySpent`] when another. A change that fails leaves the
    /// token unspent, so Atlassian's retry of the same callback is not refused. Tokens long
    /// expired are forgotten afterwards (lifecycle callbacks are rare; the table holds minutes
    /// of them).
    pub async fn apply_lifecycle(
        &self,
        token: SpentToken<'_>,
        change: LifecycleChange<'_>,
    ) -> Result<LifecycleApplied, StoreError> {
        let mut tx = self.begin_write().await?;
        let spent = sqlx::query(
            "INSERT INTO connect_spent_tokens (token_sha256, body_sha256, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (token_sha256) DO NOTHING",
        )
        .bind(token.sha256)
        .bind(token.body_sha256)
        .bind(to_millis(token.expires_at))
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() == 0 {
            let first = spent_body_in(&mut tx, token.sha256).await?;
            tx.rollback().await?;
            return Ok(if first.as_deref() == Some(token.body_sha256) {
                LifecycleApplied::AlreadyApplied
            } else {
                LifecycleApplied::TokenAlreadySpent
            });
        }
        let applied = match change {
            LifecycleChange::Install(installation) => {
                self.upsert_installation_in(&mut tx, installation).await?;
                LifecycleApplied::Installed
            }
            LifecycleChange::Uninstall { client_key } => LifecycleApplied::Uninstalled {
                existed: delete_installation_in(&mut tx, client_key).await?,
            },
        };
        tx.commit().await?;
        // Outside the change's transaction: two callbacks purging the same rows in one would
        // wait on each other's locks. Best effort: a row left behind is purged by the next.
        let forgotten = to_millis(Utc::now()).saturating_sub(SPENT_TOKENS_KEPT_AFTER_EXPIRY_MS);
        if let Err(error) = sqlx::query("DELETE FROM connect_spent_tokens WHERE expires_at < $1")
            .bind(forgotten)
            .execute(self.pool())
            .await
        {
            tracing::warn!(%error, "cannot purge expired Connect lifecycle tokens; the next callback will");
        }
        Ok(applied)
    }

    /// Every installed client key (a handful: one per site).
    pub async fn installation_keys(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT client_key FROM connect_installations")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| row.try_get("client_key").map_err(StoreError::from))
            .collect()
    }

    /// The installation with this client key, if any.
    pub async fn installation(&self, client_key: &str) -> Result<Option<Installation>, StoreError> {
        let row = sqlx::query(
            "SELECT client_key, shared_secret, base_url, cloud_id, installed_at
             FROM connect_installations WHERE client_key = $1",
        )
        .bind(client_key)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Installation {
                client_key: row.try_get("client_key")?,
                shared_secret: Secret::new(
                    self.open(&row.try_get::<String, _>("shared_secret")?, &context(client_key))?,
                ),
                base_url: row.try_get("base_url")?,
                cloud_id: row.try_get("cloud_id")?,
                installed_at: from_millis(row.try_get("installed_at")?)?,
            })
        })
        .transpose()
    }
}

async fn delete_installation_in(
    conn: &mut sqlx::AnyConnection,
    client_key: &str,
) -> Result<bool, StoreError> {
    let result = sqlx::query("DELETE FROM connect_installations WHERE client_key = $1")
        .bind(client_key)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() > 0)
}

/// The body digest the lifecycle token `token_sha256` was spent with, if it was.
async fn spent_body_in(
    conn: &mut sqlx::AnyConnection,
    token_sha256: &str,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT body_sha256 FROM connect_spent_tokens WHERE token_sha256 = $1")
        .bind(token_sha256)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.try_get("body_sha256")).transpose()?)
}
