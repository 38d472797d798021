//! Versioned schema migrations, embedded in the binary, one folder per database.
//!
//! The two folders hold the same versions with the same meaning; they differ only where the SQL
//! dialects must. A new table is a new numbered file in both.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use super::{Backend, Store, StoreError};

/// `(version, description, sqlite sql, postgres sql)`.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "connect installations",
        include_str!("../../migrations/sqlite/0001_connect_installations.sql"),
        include_str!("../../migrations/postgres/0001_connect_installations.sql"),
    ),
    (
        2,
        "queue and claims",
        include_str!("../../migrations/sqlite/0002_queue_and_claims.sql"),
        include_str!("../../migrations/postgres/0002_queue_and_claims.sql"),
    ),
    (
        3,
        "audit trail",
        include_str!("../../migrations/sqlite/0003_audit.sql"),
        include_str!("../../migrations/postgres/0003_audit.sql"),
    ),
    (
        4,
        "oauth tokens",
        include_str!("../../migrations/sqlite/0004_oauth_tokens.sql"),
        include_str!("../../migrations/postgres/0004_oauth_tokens.sql"),
    ),
    (
        5,
        "reactions: executed actions and approvals",
        include_str!("../../migrations/sqlite/0005_reactions.sql"),
        include_str!("../../migrations/postgres/0005_reactions.sql"),
    ),
    (
        6,
        "polling: cursors, leases, group snapshots",
        include_str!("../../migrations/sqlite/0006_polling.sql"),
        include_str!("../../migrations/postgres/0006_polling.sql"),
    ),
    (
        7,
        "queue messages keep their failures in history only",
        include_str!("../../migrations/sqlite/0007_queue_messages_history_only.sql"),
        include_str!("../../migrations/postgres/0007_queue_messages_history_only.sql"),
    ),
    (
        8,
        "decisions: the latest per account, and the authority of audit records",
        include_str!("../../migrations/sqlite/0008_decisions.sql"),
        include_str!("../../migrations/postgres/0008_decisions.sql"),
    ),
    (
        9,
        "request log: rate-limited requests across processes and restarts",
        include_str!("../../migrations/sqlite/0009_request_log.sql"),
        include_str!("../../migrations/postgres/0009_request_log.sql"),
    ),
    (
        10,
        "tenants: audit records, decisions, group snapshots and poll state per tenant",
        include_str!("../../migrations/sqlite/0010_tenants.sql"),
        include_str!("../../migrations/postgres/0010_tenants.sql"),
    ),
    (
        11,
        "account claims: one account acted on at a time across workers",
        include_str!("../../migrations/sqlite/0011_account_claims.sql"),
        include_str!("../../migrations/postgres/0011_account_claims.sql"),
    ),
    (
        12,
        "outbox: signed deliveries to outbound endpoints and Slack, and their attempts",
        include_str!("../../migrations/sqlite/0012_outbox.sql"),
        include_str!("../../migrations/postgres/0012_outbox.sql"),
    ),
    (
        13,
        "console: operator sessions and the reconciler's last run per tenant",
        include_str!("../../migrations/sqlite/0013_console.sql"),
        include_str!("../../migrations/postgres/0013_console.sql"),
    ),
    (
        14,
        "slack messages: where each approval's request was posted",
        include_str!("../../migrations/sqlite/0014_slack_messages.sql"),
        include_str!("../../migrations/postgres/0014_slack_messages.sql"),
    ),
    (
        15,
        "connect: lifecycle tokens spent by the change they carried",
        include_str!("../../migrations/sqlite/0015_connect_spent_tokens.sql"),
        include_str!("../../migrations/postgres/0015_connect_spent_tokens.sql"),
    ),
    (
        16,
        "approvals: when an approved plan was queued",
        include_str!("../../migrations/sqlite/0016_approval_queued.sql"),
        include_str!("../../migrations/postgres/0016_approval_queued.sql"),
    ),
    (
        17,
        "console sessions: the password hash they signed in with",
        include_str!("../../migrations/sqlite/0017_console_session_credential.sql"),
        include_str!("../../migrations/postgres/0017_console_session_credential.sql"),
    ),
];

pub(super) async fn run(store: &Store) -> Result<(), StoreError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sqlite, postgres)| {
            let sql = match store.backend() {
                Backend::Sqlite => *sqlite,
                Backend::Postgres => *postgres,
            };
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                AssertSqlSafe(sql).into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations).run(store.pool()).await?;
    Ok(())
}
