//! The audit trail against the real databases and RabbitMQ: one gap-free chain under concurrent
//! writers, tamper detection, the stream relay, OCSF, secrets, `GET /audit` and the CLI.

mod chain;
mod cli;
mod http;
mod ocsf;
mod secrets;
mod stream;
mod tamper;

use gatehouse::audit::{ActionRef, AuditKind, AuditLog, NewRecord, Outcome};
use gatehouse::config::{AuditSettings, SensitiveUrl, StoreSettings};
use gatehouse::store::Store;
use ulid::Ulid;

use crate::helpers::TempDir;

/// Opens (and migrates) the store at `url` with its own pool: one "worker".
pub async fn open_store(url: &str) -> Store {
    Store::connect(&StoreSettings {
        url: SensitiveUrl::new(url),
        max_connections: 4,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await
    .unwrap()
}

pub fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}/audit.db", dir.0.display())
}

/// A varied record: the `i`-th of a test.
pub fn sample(i: usize) -> NewRecord {
    let kinds = [
        AuditKind::Received,
        AuditKind::Planned,
        AuditKind::Executed,
        AuditKind::Skipped,
        AuditKind::Failed,
    ];
    let kind = kinds[i % kinds.len()];
    let mut record = NewRecord::new(Ulid::generate(), kind);
    record.account_id = Some(format!("557058:acc-{}", i % 7));
    if kind != AuditKind::Received {
        record.handler = Some("deprovision".into());
        record.action = Some(ActionRef {
            action_type: if i.is_multiple_of(2) {
                "confluence.remove_member".into()
            } else {
                "scim.deactivate".into()
            },
            target: format!("group:g{}/account:557058:acc-{}", i % 3, i % 7),
            org_wide: i % 2 == 1,
        });
    }
    if kind == AuditKind::Failed {
        record.outcome = Outcome {
            status: "error".into(),
            http_status: Some(503),
            error: Some("upstream unavailable".into()),
        };
        record.attempt = 2;
    }
    if i.is_multiple_of(4) {
        record.warnings = vec!["group not mapped to Confluence: membership grants no access".into()];
    }
    record
}

/// Appends `n` sample records through one log.
pub async fn fill(store: &Store, n: usize) -> AuditLog {
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    for i in 0..n {
        log.append(sample(i)).await.unwrap();
    }
    log
}
