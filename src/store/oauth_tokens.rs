//! OAuth grants with rotating refresh tokens (`oauth_tokens`).
//!
//! Atlassian retires a refresh token the moment it hands out the next one, and reusing a retired
//! one after ten minutes revokes the whole grant. So the rotation protocol is:
//! 1. claim a short lease on the grant row (one refresher across every gatehouse process);
//! 2. call the token endpoint with the stored refresh token;
//! 3. store the new refresh and access tokens in one committed write, guarded by the generation
//!    read in step 1, *before* the access token is used;
//! 4. on failure, release the lease.
//!
//! The configured refresh token only seeds the row; a different one in config (the operator
//! authorized gatehouse again) replaces it, recognized by its fingerprint.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, from_millis, to_millis};
use crate::config::Secret;

/// One grant's tokens.
#[derive(Debug, Clone)]
pub struct OAuthGrant {
    pub grant_key: String,
    pub refresh_token: Secret,
    pub seed_fingerprint: String,
    pub access_token: Option<Secret>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub generation: i64,
    pub lease_until: Option<DateTime<Utc>>,
}

/// A rotation's result, to be stored.
#[derive(Debug, Clone)]
pub struct OAuthRotation<'a> {
    pub refresh_token: &'a Secret,
    pub access_token: &'a Secret,
    pub access_expires_at: DateTime<Utc>,
}

/// What sealed tokens are bound to.
pub(super) fn refresh_context(grant_key: &str) -> String {
    format!("oauth_tokens.refresh_token:{grant_key}")
}

pub(super) fn access_context(grant_key: &str) -> String {
    format!("oauth_tokens.access_token:{grant_key}")
}

impl Store {
    /// The grant's row, if any.
    pub async fn oauth_grant(&self, grant_key: &str) -> Result<Option<OAuthGrant>, StoreError> {
        let row = sqlx::query(
            "SELECT grant_key, refresh_token, seed_fingerprint, access_token, access_expires_at,
                    generation, lease_until
             FROM oauth_tokens WHERE grant_key = $1",
        )
        .bind(grant_key)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(OAuthGrant {
                grant_key: row.try_get("grant_key")?,
                refresh_token: Secret::new(self.open(
                    &row.try_get::<String, _>("refresh_token")?,
                    &refresh_context(grant_key),
                )?),
                seed_fingerprint: row.try_get("seed_fingerprint")?,
                access_token: row
                    .try_get::<Option<String>, _>("access_token")?
                    .map(|stored| self.open(&stored, &access_context(grant_key)).map(Secret::new))
                    .transpose()?,
                access_expires_at: row
                    .try_get::<Option<i64>, _>("access_expires_at")?
                    .map(from_millis)
                    .transpose()?,
                generation: row.try_get("generation")?,
                lease_until: row
                    .try_get::<Option<i64>, _>("lease_until")?
                    .map(from_millis)
                    .transpose()?,
            })
        })
        .transpose()
    }

    /// Makes sure the grant has a row: inserts the configured token when there is none, and
    /// replaces the row when the configured token changed (`fingerprint`). Returns the row.
    /// Several processes may seed at once (PostgreSQL's transaction does not lock a row it only
    /// read): the insert yields to one made meanwhile, and the replacement applies only to the
    /// row as it was read, so a stalled process never puts back a seed another already rotated.
    pub async fn seed_oauth_grant(
        &self,
        grant_key: &str,
        refresh_token: &Secret,
        fingerprint: &str,
    ) -> Result<OAuthGrant, StoreError> {
        // Called before every refresh: the row is nearly always there and current, which a
        // plain read settles without taking the write lock.
        if let Some(grant) = self.oauth_grant(grant_key).await?
            && grant.seed_fingerprint == fingerprint
        {
            return Ok(grant);
        }
        let now = to_millis(Utc::now());
        let mut tx = self.begin_write().await?;
        let stored: Option<(String, i64)> =
            sqlx::query("SELECT seed_fingerprint, generation FROM oauth_tokens WHERE grant_key = $1")
                .bind(grant_key)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?)))
                .transpose()?;
        match stored {
            None => {
                sqlx::query(
                    "INSERT INTO oauth_tokens (grant_key, refresh_token, seed_fingerprint, generation, updated_at)
                     VALUES ($1, $2, $3, 0, $4)
                     ON CONFLICT (grant_key) DO NOTHING",
                )
                .bind(grant_key)
                .bind(self.seal(refresh_token.expose(), &refresh_context(grant_key))?)
                .bind(fingerprint)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Some((stored_fingerprint, generation)) if stored_fingerprint != fingerprint => {
                sqlx::query(
                    "UPDATE oauth_tokens SET refresh_token = $2, seed_fingerprint = $3, access_token = NULL,
                        access_expires_at = NULL, generation = $4, lease_until = NULL, updated_at = $5
                     WHERE grant_key = $1 AND generation = $6 AND seed_fingerprint = $7",
                )
                .bind(grant_key)
                .bind(self.seal(refresh_token.expose(), &refresh_context(grant_key))?)
                .bind(fingerprint)
                .bind(generation + 1)
                .bind(now)
                .bind(generation)
                .bind(&stored_fingerprint)
                .execute(&mut *tx)
                .await?;
            }
            Some(_) => {}
        }
        tx.commit().await?;
        self.oauth_grant(grant_key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("oauth grant {grant_key} vanished")))
    }

    /// Claims the right to refresh generation `generation` until `until`; false when another
    /// process holds an unexpired lease or already rotated.
    pub async fn claim_oauth_refresh(
        &self,
        grant_key: &str,
        generation: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE oauth_tokens SET lease_until = $3
             WHERE grant_key = $1 AND generation = $2 AND (lease_until IS NULL OR lease_until < $4)",
        )
        .bind(grant_key)
        .bind(generation)
        .bind(to_millis(until))
        .bind(to_millis(now))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores a rotation of generation `generation` and releases the lease, in one committed
    /// write. False when the row moved on (another process rotated): the caller must not use
    /// its tokens' generation as current.
    pub async fn save_oauth_rotation(
        &self,
        grant_key: &str,
        generation: i64,
        rotation: &OAuthRotation<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let result = sqlx::query(
            "UPDATE oauth_tokens SET refresh_token = $3, access_token = $4, access_expires_at = $5,
                generation = generation + 1, lease_until = NULL, updated_at = $6
             WHERE grant_key = $1 AND generation = $2",
        )
        .bind(grant_key)
        .bind(generation)
        .bind(self.seal(rotation.refresh_token.expose(), &refresh_context(grant_key))?)
        .bind(self.seal(rotation.access_token.expose(), &access_context(grant_key))?)
        .bind(to_millis(rotation.access_expires_at))
        .bind(to_millis(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives up a lease after a failed refresh.
    pub async fn release_oauth_refresh(&self, grant_key: &str, generation: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE oauth_tokens SET lease_until = NULL WHERE grant_key = $1 AND generation = $2")
            .bind(grant_key)
            .bind(generation)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
