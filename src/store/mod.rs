//! The SQL store: one pool over SQLite (default, a file under `data/`) or PostgreSQL, with
//! versioned migrations applied at start.
//!
//! Queries are written once, in the SQL both databases accept (`$1` placeholders, `BIGINT` unix
//! milliseconds for instants), and run through sqlx's `Any` driver. Where the two must differ
//! (locking, upserts), [`Backend`] says which one is underneath. Each table's queries live in the
//! submodule that owns it.

pub mod account_claims;
pub mod approvals;
pub mod console_sessions;
pub mod dead_letters;
pub mod decisions;
pub mod dedupe;
pub mod executed_actions;
mod installations;
mod migrations;
mod oauth_tokens;
pub mod outbox;
pub mod poll_state;
pub mod reconcile_runs;
mod sealed_columns;
pub mod sealing;
pub mod slack_messages;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::config::StoreSettings;

pub use account_claims::AccountClaim;
pub use approvals::{Approval, ApprovalState, NewApproval};
pub use console_sessions::ConsoleSession;
pub use dead_letters::{DeadLetterFilter, DeadLetterRow, Failure};
pub use dedupe::Claim;
pub use installations::{Installation, LifecycleApplied, LifecycleChange, SpentToken};
pub use oauth_tokens::{OAuthGrant, OAuthRotation};
pub use poll_state::GroupSnapshot;
pub use reconcile_runs::ReconcileRun;
pub use sealed_columns::{CredentialCensus, SealedColumn};

/// The tenant a stored envelope (an approval's, a dead letter's) is bound to, read without
/// parsing the rest of it (see [`handlers::Envelope::tenant_name`]); text that is no envelope
/// belongs to the default tenant, whose operators see it.
pub fn envelope_tenant(json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Bound {
        #[serde(default)]
        tenant: handlers::Tenant,
    }
    serde_json::from_str::<Bound>(json)
        .ok()
        .and_then(|bound| bound.tenant.name)
        .unwrap_or_else(|| handlers::DEFAULT_TENANT.to_owned())
}

/// Which database is underneath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("store holds invalid data: {0}")]
    Corrupt(String),
    /// A credential in clear where a sealed one is expected (`store.encryption_key` is set).
    #[error(
        "{context} is stored in clear, but store.encryption_key is set: seal it with `gatehouse store seal`"
    )]
    Unsealed { context: String },
    /// An operation that needs `store.encryption_key` without one.
    #[error("store.encryption_key is not configured")]
    NoKey,
}

/// A handle on the store; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Seals stored credentials when `store.encryption_key` is set.
    sealer: Option<std::sync::Arc<sealing::Sealer>>,
}

impl Store {
    /// Opens the store (creating a SQLite file and its folder if needed) and migrates it.
    pub async fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = settings.url.to_string();
        let connect_error = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        let (url, backend) = if let Some(rest) = settings.url.expose().strip_prefix("sqlite:") {
            (sqlite_url(rest)?, Backend::Sqlite)
        } else {
            (settings.url.expose().to_owned(), Backend::Postgres)
        };
        let options = AnyConnectOptions::from_str(&url).map_err(connect_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers proceed during a write; FULL makes a commit durable
                        // against power loss, which the embedded queue and the audit trail
                        // promise; the busy timeout makes writers wait for each other instead of
                        // failing.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            // A connection whose transaction could not end (a COMMIT refused by a full disk,
            // after which SQLite has already rolled back and the ROLLBACK on drop fails too)
            // still counts itself inside it, and every later `begin` on it fails: the pool
            // would hand out a poisoned connection forever. Such a connection is closed
            // instead of reused; closing it also ends whatever SQLite still held.
            .before_acquire(|conn, _meta| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        let retired = settings
            .retired_encryption_keys
            .iter()
            .map(crate::config::EncryptionKey::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(format!("store.retired_encryption_keys: {e}")))?;
        let sealer = match settings.encryption_key.as_ref() {
            Some(key) => {
                let key = crate::config::EncryptionKey::parse(key)
                    .map_err(|e| StoreError::Corrupt(format!("store.encryption_key: {e}")))?;
                Some(std::sync::Arc::new(sealing::Sealer::new(&key, &retired)))
            }
            None if !retired.is_empty() => return Err(StoreError::NoKey),
            None => None,
        };
        let store = Store {
            pool,
            backend,
            sealer,
        };
        migrations::run(&store).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Is the store reachable right now? (readiness)
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of one failing when
    /// it upgrades a read lock.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            // Read committed whatever the server's default: the audit chain reads its head after
            // taking its lock, which under a snapshot taken before the lock (repeatable read,
            // serializable) would be stale, and every contended append would fail.
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await?
            }
        };
        Ok(tx)
    }

    /// A credential as it is to be stored: sealed when a key is configured. `context` names the
    /// column and row (see [`sealing`]).
    pub fn seal(&self, value: &str, context: &str) -> Result<String, StoreError> {
        match &self.sealer {
            Some(sealer) => sealer.seal(value, context),
            None => Ok(value.to_owned()),
        }
    }

    /// A stored credential, opened: with a key only sealed values open, without one only clear
    /// values (see [`sealing`]).
    pub fn open(&self, stored: &str, context: &str) -> Result<String, StoreError> {
        match &self.sealer {
            Some(sealer) => sealer.open(stored, context),
            None => sealing::open_without_key(stored, context),
        }
    }

    /// Closes every connection (shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Turns `sqlite://path` / `sqlite:path` into an URL sqlx opens read-write-create, creating the
/// file's folder.
fn sqlite_url(rest: &str) -> Result<String, StoreError> {
    let path_and_query = rest.trim_start_matches("//");
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    if path.is_empty() || path == ":memory:" {
        // Every pooled connection would see its own empty database: never what gatehouse wants.
        return Err(StoreError::Connect {
            url: format!("sqlite:{rest}"),
            source: sqlx::Error::Configuration(
                "an in-memory SQLite store cannot be shared; give a file path".into(),
            ),
        });
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Connect {
            url: format!("sqlite:{rest}"),
            source: sqlx::Error::Io(e),
        })?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Milliseconds since the Unix epoch, the store's representation of an instant.
pub fn to_millis(time: chrono::DateTime<chrono::Utc>) -> i64 {
    time.timestamp_millis()
}

/// A length of time in the store's unit (milliseconds), saturating.
pub fn duration_millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The inverse of [`to_millis`].
pub fn from_millis(millis: i64) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {millis} out of range")))
}
