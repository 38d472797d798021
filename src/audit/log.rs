//! Appending to the trail: [`AuditLog`], the one way records get written.
//!
//! Every append, from every worker process, extends one hash chain, so appends are serialized:
//! on PostgreSQL by a transaction-level advisory lock (`pg_advisory_xact_lock`), on SQLite by the
//! database's single writer (`BEGIN IMMEDIATE`). Under that lock the append reads the chain's
//! head, gives each record the next `seq` (computed there, not an autoincrement, so a rolled-back
//! append leaves no gap), links and hashes it (see [`super::chain`]), inserts it and moves the
//! head, all in one transaction. A commit is durable before `append` returns `Ok`.
//!
//! Before a record is written its free text is HMAC'd where it holds personal data
//! ([`super::hashing`]) and scrubbed of anything that looks like a secret ([`super::scrub`]).
//!
//! Fail closed: any error (store down, lock not obtained within `audit.append_timeout_ms`,
//! encoding) is returned and nothing is written; a worker that gets an error must neither act nor
//! ack. (One edge: a timeout that fires while the commit is already on its way may report an
//! error for records that did commit. The worker then retries and records again: the trail may
//! hold a record twice, never miss one.)

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::Row;
use sqlx::any::AnyRow;
use ulid::Ulid;

use super::chain::{self, GENESIS};
use super::followers::TrailFollowers;
use super::hashing::PiiHasher;
use super::record::{ActionRef, AuditKind, AuditRecord, NewRecord, Outcome};
use super::scrub::Scrubber;
use crate::config::{AuditSettings, Secret};
use crate::store::{Backend, Store, StoreError, from_millis, to_millis};

/// The PostgreSQL advisory lock key that serializes appends (ASCII `gh-audit`).
pub const APPEND_LOCK_KEY: i64 = 0x6768_2d61_7564_6974;

/// Why an append or a read of the trail failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store is unreachable or refused the write: nothing was recorded.
    #[error("audit store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The append did not commit in time (store slow or the append lock held too long); nothing
    /// was recorded.
    #[error("audit append did not commit within {0:?}")]
    Timeout(Duration),
    #[error("audit record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// A row that cannot be read back as a record.
    #[error("audit store holds an unreadable record at seq {seq}: {reason}")]
    Corrupt { seq: i64, reason: String },
}

impl From<sqlx::Error> for AuditError {
    fn from(error: sqlx::Error) -> Self {
        AuditError::Store(StoreError::Query(error))
    }
}

/// The handle writers append through; cheap to clone (one per worker task is fine).
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<LogParts>,
}

/// What an [`AuditLog`] writes with (shared by its clones).
#[derive(Debug)]
struct LogParts {
    store: Store,
    hasher: PiiHasher,
    scrubber: Scrubber,
    timeout: Duration,
    /// The endpoints that get records of some kinds, with the records.
    followers: TrailFollowers,
}

impl AuditLog {
    /// A log over `store` (already migrated by [`Store::connect`]) that knows only the `[audit]`
    /// secrets; a process uses [`AuditLog::from_settings`].
    pub fn new(store: Store, settings: &AuditSettings) -> Self {
        let known = settings.hash_key.iter().chain(settings.api_token.iter()).cloned();
        AuditLog::with_known(store, settings, known, TrailFollowers::default())
    }

    /// The log a process should use: `[audit]` settings, with every secret of `settings` known
    /// to the scrubber ([`super::scrub::secrets_in`]).
    pub fn from_settings(store: Store, settings: &crate::config::Settings) -> Self {
        AuditLog::with_known(
            store,
            &settings.audit,
            super::scrub::secrets_in(settings),
            TrailFollowers::from_settings(settings),
        )
    }

    fn with_known(
        store: Store,
        settings: &AuditSettings,
        known: impl IntoIterator<Item = Secret>,
        followers: TrailFollowers,
    ) -> Self {
        AuditLog {
            inner: Arc::new(LogParts {
                store,
                hasher: PiiHasher::new(settings),
                scrubber: Scrubber::new(known),
                timeout: Duration::from_millis(settings.append_timeout_ms),
                followers,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Appends one record; `Ok` once it is committed, with its `seq`, `id`, `time` and hashes.
    pub async fn append(&self, record: NewRecord) -> Result<AuditRecord, AuditError> {
        let mut written = self.append_all(vec![record]).await?;
        written.pop().ok_or_else(|| AuditError::Corrupt {
            seq: 0,
            reason: "append wrote nothing".to_owned(),
        })
    }

    /// Appends several records in one transaction: all are written, consecutively, or none.
    pub async fn append_all(&self, records: Vec<NewRecord>) -> Result<Vec<AuditRecord>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = self.prepare(records);
        self.bounded(self.write(prepared), |timed_out| timed_out).await
    }

    async fn write(&self, records: Vec<NewRecord>) -> Result<Vec<AuditRecord>, AuditError> {
        let mut tx = self.inner.store.begin_write().await?;
        let written = self.write_in(&mut tx, records).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Appends inside the caller's transaction (begun with [`Store::begin_write`]), so the
    /// records commit or roll back with the caller's own writes, e.g. claiming an event's dedupe
    /// key together with its `received` record. The records are durable only once the caller
    /// commits; until then the append lock is held (other appends wait), so commit promptly.
    /// `audit.append_timeout_ms` does not apply by itself: run the transaction in [`AuditLog::bounded`].
    pub async fn append_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        records: Vec<NewRecord>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let prepared = self.prepare(records);
        self.write_in(tx, prepared).await
    }

    /// Runs `work`, a caller's transaction holding records appended with [`AuditLog::append_in`],
    /// within `audit.append_timeout_ms` like any append: past it the future is dropped, which
    /// rolls the transaction back (and releases the append lock), and the result is
    /// `timed_out(AuditError::Timeout)`.
    pub async fn bounded<T, E>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
        timed_out: impl FnOnce(AuditError) -> E,
    ) -> Result<T, E> {
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(AuditError::Timeout(timeout))),
        }
    }

    fn prepare(&self, records: Vec<NewRecord>) -> Vec<NewRecord> {
        records
            .into_iter()
            .map(|mut record| {
                // Secrets out first: one shaped like an address must become `***`, not a hash
                // that still stands for it; and last, since hashing drops stray markers, which
                // could join text into a secret the first pass did not see.
                self.inner.scrubber.apply_record(&mut record);
                self.inner.hasher.apply_record(&mut record);
                self.inner.scrubber.apply_record(&mut record);
                record
            })
            .collect()
    }

    async fn write_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        records: Vec<NewRecord>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if self.inner.store.backend() == Backend::Postgres {
            // The function returns `void`, which the Any driver cannot decode: select around it.
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(APPEND_LOCK_KEY)
                .execute(&mut **tx)
                .await?;
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut **tx)
            .await?;
        let mut seq = u64::try_from(head.try_get::<i64, _>("seq")?).map_err(|_| AuditError::Corrupt {
            seq: 0,
            reason: "negative head seq".to_owned(),
        })?;
        let mut prev_hash: String = head.try_get("hash")?;
        let time = chain::truncate_to_millis(Utc::now());
        let mut written = Vec::with_capacity(records.len());
        for record in records {
            seq += 1;
            let mut full = AuditRecord {
                seq,
                id: Ulid::generate(),
                time,
                record,
                prev_hash,
                hash: String::new(),
            };
            full.hash = chain::hash_of(&full)?;
            insert(tx, &full).await?;
            prev_hash = full.hash.clone();
            written.push(full);
        }
        // Subscribed endpoints get the records with them, or neither is written.
        let deliveries = self.inner.followers.deliveries(&written)?;
        if !deliveries.is_empty() {
            crate::store::outbox::enqueue_in(tx, &deliveries).await?;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq as i64)
            .bind(&prev_hash)
            .execute(&mut **tx)
            .await?;
        Ok(written)
    }
}

async fn insert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    record: &AuditRecord,
) -> Result<(), AuditError> {
    let r = &record.record;
    let warnings = if r.warnings.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&r.warnings)?)
    };
    sqlx::query(
        "INSERT INTO audit_records (seq, id, time, event_id, kind, account_id, handler,
            action_type, action_target, action_org_wide, dry_run, attempt, outcome_status,
            http_status, outcome_error, request_id, warnings, prev_hash, hash, authority, tenant)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(record.seq as i64)
    .bind(record.id.to_string())
    .bind(to_millis(record.time))
    .bind(r.event_id.to_string())
    .bind(r.kind.as_str())
    .bind(r.account_id.as_deref())
    .bind(r.handler.as_deref())
    .bind(r.action.as_ref().map(|a| a.action_type.as_str()))
    .bind(r.action.as_ref().map(|a| a.target.as_str()))
    .bind(r.action.as_ref().map(|a| a.org_wide))
    .bind(r.dry_run)
    .bind(i64::from(r.attempt))
    .bind(r.outcome.status.as_str())
    .bind(r.outcome.http_status.map(i64::from))
    .bind(r.outcome.error.as_deref())
    .bind(r.request_id.as_deref())
    .bind(warnings)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .bind(r.authority.map(|a| a.as_str()))
    .bind(r.tenant.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The columns [`decode`] reads, in a `SELECT`.
pub(crate) const COLUMNS: &str = "seq, id, time, event_id, kind, account_id, handler, action_type, \
     action_target, action_org_wide, dry_run, attempt, outcome_status, http_status, outcome_error, \
     request_id, warnings, prev_hash, hash, authority, tenant";

/// A row's `seq`, even when the rest of it cannot be decoded.
pub(crate) fn row_seq(row: &AnyRow) -> Result<i64, sqlx::Error> {
    row.try_get("seq")
}

/// A row back into the record that was hashed; `Err` names what is wrong with it.
pub(crate) fn decode(row: &AnyRow) -> Result<AuditRecord, String> {
    fn get<'r, T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>>(
        row: &'r AnyRow,
        column: &str,
    ) -> Result<T, String> {
        row.try_get(column).map_err(|e| format!("{column}: {e}"))
    }
    let seq: i64 = get(row, "seq")?;
    let id: String = get(row, "id")?;
    let kind: String = get(row, "kind")?;
    let event_id: String = get(row, "event_id")?;
    let action_type: Option<String> = get(row, "action_type")?;
    let warnings: Option<String> = get(row, "warnings")?;
    let attempt: i64 = get(row, "attempt")?;
    let http_status: Option<i64> = get(row, "http_status")?;
    let record = NewRecord {
        event_id: event_id.parse().map_err(|e| format!("event_id: {e}"))?,
        kind: parse_kind(&kind)?,
        account_id: get(row, "account_id")?,
        handler: get(row, "handler")?,
        action: match action_type {
            Some(action_type) => Some(ActionRef {
                action_type,
                target: get::<Option<String>>(row, "action_target")?.unwrap_or_default(),
                org_wide: get_bool(row, "action_org_wide")?.unwrap_or(false),
            }),
            None => None,
        },
        dry_run: get_bool(row, "dry_run")?.ok_or("dry_run: NULL")?,
        attempt: u32::try_from(attempt).map_err(|_| format!("attempt {attempt} out of range"))?,
        outcome: Outcome {
            status: get(row, "outcome_status")?,
            http_status: http_status
                .map(|s| u16::try_from(s).map_err(|_| format!("http_status {s} out of range")))
                .transpose()?,
            error: get(row, "outcome_error")?,
        },
        request_id: get(row, "request_id")?,
        warnings: match warnings {
            Some(text) => serde_json::from_str(&text).map_err(|e| format!("warnings: {e}"))?,
            None => Vec::new(),
        },
        authority: match get::<Option<String>>(row, "authority")?.as_deref() {
            None => None,
            Some("observation") => Some(handlers::Authority::Observation),
            Some("decision") => Some(handlers::Authority::Decision),
            Some(other) => return Err(format!("authority: unknown value `{other}`")),
        },
        tenant: get(row, "tenant")?,
    };
    Ok(AuditRecord {
        seq: u64::try_from(seq).map_err(|_| format!("seq {seq} out of range"))?,
        id: id.parse().map_err(|e| format!("id: {e}"))?,
        time: from_millis(get(row, "time")?).map_err(|e| e.to_string())?,
        record,
        prev_hash: get(row, "prev_hash")?,
        hash: get(row, "hash")?,
    })
}

/// A boolean column: `BOOLEAN` on PostgreSQL, `INTEGER` 0/1 on SQLite (which has no booleans,
/// and whose declared `BOOLEAN` the Any driver cannot decode).
fn get_bool(row: &AnyRow, column: &str) -> Result<Option<bool>, String> {
    match row.try_get::<Option<bool>, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => row
            .try_get::<Option<i64>, _>(column)
            .map(|v| v.map(|v| v != 0))
            .map_err(|e| format!("{column}: {e}")),
    }
}

/// `received` → [`AuditKind::Received`], … (the stored spelling is the wire one).
pub fn parse_kind(kind: &str) -> Result<AuditKind, String> {
    AuditKind::ALL
        .into_iter()
        .find(|known| known.as_str() == kind)
        .ok_or_else(|| {
            let known: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown kind `{kind}` (known: {})", known.join(", "))
        })
}

/// Kinds named in a filter (`--kind`, `?kind=`), blanks ignored.
pub fn parse_kinds<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<AuditKind>, String> {
    names
        .into_iter()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(parse_kind)
        .collect()
}

/// The chain's head: the last `seq` appended (0 when empty) and its hash ([`GENESIS`] then).
pub async fn head(store: &Store) -> Result<(u64, String), AuditError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(store.pool())
        .await?;
    match row {
        Some(row) => {
            let seq: i64 = row.try_get("seq")?;
            Ok((
                u64::try_from(seq).map_err(|_| AuditError::Corrupt {
                    seq,
                    reason: "negative head".to_owned(),
                })?,
                row.try_get("hash")?,
            ))
        }
        None => Ok((0, GENESIS.to_owned())),
    }
}
