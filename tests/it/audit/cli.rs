//! `gatehouse audit …` as an operator runs it: verify (exit 3 and the seq on a break), query,
//! export (OCSF lines that validate), tail, and hash lookups.

use std::process::{Command, Output};

use gatehouse::audit::AuditLog;
use gatehouse::audit::hashing::lookup;
use gatehouse::config::{AuditSettings, Secret};

use super::{open_store, sample, sqlite_url};
use crate::helpers::TempDir;

const KEY_VAR: &str = "GH_IT_AUDIT_HASH_KEY";
const KEY: &str = "cli-test-hash-key-2b9e0c";

fn gatehouse(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env(KEY_VAR, KEY)
        .env_remove("GATEHOUSE_CONFIG")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[tokio::test]
async fn operators_read_export_verify_and_look_up() {
    let dir = TempDir::new();
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n[audit]\nhash_key = \"env:{KEY_VAR}\"\n",
            sqlite_url(&dir)
        ),
    )
    .unwrap();
    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    for i in 0..12 {
        log.append(sample(i)).await.unwrap();
    }

    let verified = gatehouse(&config, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains("chain intact: 12 records"),
        "{}",
        stdout(&verified)
    );

    let failed = gatehouse(
        &config,
        &["audit", "query", "--kind", "failed", "--format", "jsonl"],
    );
    assert!(failed.status.success(), "{}", stderr(&failed));
    let lines: Vec<serde_json::Value> = stdout(&failed)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|r| r["kind"] == "failed"));

    let table = gatehouse(&config, &["audit", "query", "--account-id", "557058:acc-0"]);
    let text = stdout(&table);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().next().unwrap().contains("SEQ"));

    let export = gatehouse(&config, &["audit", "export", "--format", "ocsf"]);
    assert!(export.status.success(), "{}", stderr(&export));
    let events: Vec<serde_json::Value> = stdout(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 12);
    for event in &events {
        let problems = super::ocsf::violations(event);
        assert!(problems.is_empty(), "{problems:?}");
    }

    let tail = gatehouse(&config, &["audit", "tail", "--from", "10"]);
    let seqs: Vec<u64> = stdout(&tail)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [10, 11, 12]);

    let hashed = gatehouse(&config, &["audit", "hash", "Alice@Example.COM"]);
    assert!(hashed.status.success());
    assert_eq!(
        stdout(&hashed).trim(),
        lookup(&Secret::new(KEY), "alice@example.com")
    );
    assert!(!stdout(&hashed).contains(KEY));

    // An intruder edits a row: verify names it and exits 3.
    sqlx::query("DROP TRIGGER audit_records_no_update")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE audit_records SET outcome_status = 'ok' WHERE seq = 5")
        .execute(store.pool())
        .await
        .unwrap();
    let broken = gatehouse(&config, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(3), "{}", stderr(&broken));
    assert!(stderr(&broken).contains("BROKEN at seq 5"), "{}", stderr(&broken));
    let later = gatehouse(&config, &["audit", "verify", "--from", "6"]);
    assert!(later.status.success(), "{}", stderr(&later));
    store.close().await;
}

#[test]
fn hash_without_a_key_is_a_config_error() {
    let dir = TempDir::new();
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(&config, format!("[store]\nurl = \"{}\"\n", sqlite_url(&dir))).unwrap();
    let output = gatehouse(&config, &["audit", "hash", "someone@example.com"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("audit.hash_key"), "{}", stderr(&output));
}
