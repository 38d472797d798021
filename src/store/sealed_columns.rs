//! The columns that hold sealed credentials, taken together, for a store written before
//! `store.encryption_key` was set or before it was rotated: counting the values still in clear
//! (the roles refuse to start on any) and those under a retired key ([`Store::credential_census`]),
//! and sealing them in place under the current key (`gatehouse store seal`,
//! [`Store::seal_in_place`]).
//!
//! Each value is sealed bound to its row with the context its table's own write path uses (the
//! context functions are shared, not copied), so it opens exactly as if it had been written
//! sealed.

use std::borrow::Cow;

use sqlx::{AnyConnection, Row};

use super::sealing::Standing;
use super::{Store, StoreError, installations, oauth_tokens};
use crate::config::Secret;

/// One column of sealed credentials.
struct Column {
    /// `table.column`, as reports name it.
    name: &'static str,
    /// `(row key, value)` of every row holding a value.
    select: &'static str,
    /// Replaces the value (`$1`) of one row (`$2`) if it still holds what was read (`$3`).
    update: &'static str,
    /// What a value in this column is bound to, given its row key.
    context: fn(&str) -> String,
}

static COLUMNS: [Column; 3] = [
    Column {
        name: "connect_installations.shared_secret",
        select: "SELECT client_key, shared_secret FROM connect_installations ORDER BY client_key",
        update: "UPDATE connect_installations SET shared_secret = $1
                 WHERE client_key = $2 AND shared_secret = $3",
        context: installations::context,
    },
    Column {
        name: "oauth_tokens.refresh_token",
        select: "SELECT grant_key, refresh_token FROM oauth_tokens ORDER BY grant_key",
        update: "UPDATE oauth_tokens SET refresh_token = $1
                 WHERE grant_key = $2 AND refresh_token = $3",
        context: oauth_tokens::refresh_context,
    },
    Column {
        name: "oauth_tokens.access_token",
        select: "SELECT grant_key, access_token FROM oauth_tokens
                 WHERE access_token IS NOT NULL ORDER BY grant_key",
        update: "UPDATE oauth_tokens SET access_token = $1
                 WHERE grant_key = $2 AND access_token = $3",
        context: oauth_tokens::access_context,
    },
];

/// What sealing in place did (on a dry run: would do) to one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedColumn {
    /// `table.column`.
    pub column: &'static str,
    /// Values that were in clear and are now sealed (on a dry run: would be).
    pub sealed: usize,
    /// Values that were sealed already (and open with the key).
    pub already_sealed: usize,
    /// Values that were sealed under a retired key and are now sealed under the current one (on
    /// a dry run: would be).
    pub resealed: usize,
}

/// The state of every stored credential, as start-up reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialCensus {
    /// In clear although a key is set: refused, never used.
    pub in_clear: usize,
    /// Sealed under one of `store.retired_encryption_keys`: still opens, waits to be resealed.
    pub under_retired_key: usize,
    /// Sealed under no configured key: fails wherever it is read.
    pub unopenable: usize,
}

/// Every `(row key, stored value)` of `column`. The values are credentials (or sealed ones), so
/// they stay wrapped. `lock` (PostgreSQL, in a transaction) holds the rows until it ends, so a
/// token refreshed meanwhile waits for the seal instead of failing it.
async fn rows(
    column: &Column,
    conn: &mut AnyConnection,
    lock: bool,
) -> Result<Vec<(String, Secret)>, StoreError> {
    let select = if lock {
        Cow::Owned(format!("{} FOR UPDATE", column.select))
    } else {
        Cow::Borrowed(column.select)
    };
    sqlx::query(sqlx::AssertSqlSafe(select))
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, Secret::new(row.try_get::<String, _>(1)?))))
        .collect()
}

impl Store {
    /// How every stored credential stands against the configured keys. All zero without a key:
    /// then clear is how credentials are stored.
    pub async fn credential_census(&self) -> Result<CredentialCensus, StoreError> {
        let mut census = CredentialCensus::default();
        let Some(sealer) = self.sealer.as_deref() else {
            return Ok(census);
        };
        let mut conn = self.pool().acquire().await?;
        for column in &COLUMNS {
            for (key, value) in rows(column, &mut conn, false).await? {
                match sealer.standing(value.expose(), &(column.context)(&key)) {
                    Standing::InClear => census.in_clear += 1,
                    Standing::Current => {}
                    Standing::Retired(_) => census.under_retired_key += 1,
                    Standing::Unopenable => census.unopenable += 1,
                }
            }
        }
        Ok(census)
    }

    /// How many stored credentials are in clear although `store.encryption_key` is set (they
    /// would not open). Always 0 without a key: then clear is how credentials are stored.
    pub async fn count_unsealed(&self) -> Result<usize, StoreError> {
        Ok(self.credential_census().await?.in_clear)
    }

    /// Seals, with the configured key, every credential stored in clear or sealed under a retired
    /// key, in one transaction: all of them or, on any error, none. Values already sealed with
    /// the key are left alone; one that opens with no configured key (a key dropped too soon,
    /// another row's value) is an error and nothing is changed. With `dry_run`, only reads and
    /// reports what it would do.
    pub async fn seal_in_place(&self, dry_run: bool) -> Result<Vec<SealedColumn>, StoreError> {
        let sealer = self.sealer.as_deref().ok_or(StoreError::NoKey)?;
        let mut tx = if dry_run {
            self.pool().begin().await?
        } else {
            self.begin_write().await?
        };
        // SQLite's write transaction already keeps every other writer out.
        let lock = !dry_run && self.backend() == super::Backend::Postgres;
        let mut report = Vec::with_capacity(COLUMNS.len());
        let mut unopenable = Vec::new();
        // (column, row key, context, the value as stored, the credential it holds)
        let mut to_seal = Vec::new();
        for column in &COLUMNS {
            let mut done = SealedColumn {
                column: column.name,
                sealed: 0,
                already_sealed: 0,
                resealed: 0,
            };
            for (key, value) in rows(column, &mut tx, lock).await? {
                let context = (column.context)(&key);
                match sealer.standing(value.expose(), &context) {
                    Standing::InClear => {
                        done.sealed += 1;
                        let plain = value.clone();
                        to_seal.push((column, key, context, value, plain));
                    }
                    Standing::Current => done.already_sealed += 1,
                    Standing::Retired(plain) => {
                        done.resealed += 1;
                        to_seal.push((column, key, context, value, plain));
                    }
                    Standing::Unopenable => unopenable.push(context),
                }
            }
            report.push(done);
        }
        if !unopenable.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "{} sealed value(s) do not open with store.encryption_key or any of \
                 store.retired_encryption_keys (another key?): {}; nothing was sealed",
                unopenable.len(),
                unopenable.join(", ")
            )));
        }
        if dry_run {
            tx.rollback().await?;
            return Ok(report);
        }
        for (column, key, context, stored, plain) in to_seal {
            let updated = sqlx::query(column.update)
                .bind(sealer.seal(plain.expose(), &context)?)
                .bind(&key)
                .bind(stored.expose())
                .execute(&mut *tx)
                .await?;
            // The rows are held (SQLite's write lock, PostgreSQL's `FOR UPDATE`): this would take a
            // writer that ignores both.
            if updated.rows_affected() != 1 {
                return Err(StoreError::Corrupt(format!(
                    "{context} changed while it was being sealed (a gatehouse without the key \
                     writing to this store?); nothing was sealed, run again"
                )));
            }
        }
        tx.commit().await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed value's context is `table.column:row`, the column reports name.
    #[test]
    fn contexts_name_their_column() {
        for column in &COLUMNS {
            assert_eq!((column.context)("row-1"), format!("{}:row-1", column.name));
            let (table, field) = column.name.split_once('.').unwrap();
            for sql in [column.select, column.update] {
                assert!(sql.contains(table) && sql.contains(field), "{sql}");
            }
        }
    }
}
