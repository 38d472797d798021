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

    // A limit that leaves records out says so, with where to go on; one that does not, nothing.
    let first = gatehouse(&config, &["audit", "query", "--limit", "5", "--format", "jsonl"]);
    assert_eq!(stdout(&first).lines().count(), 5);
    assert!(
        stderr(&first).contains("5 record(s) shown, oldest first; more match: add --after-seq 5"),
        "{}",
        stderr(&first)
    );
    let rest = gatehouse(&config, &["audit", "query", "--after-seq", "5", "--limit", "0"]);
    assert!(!stderr(&rest).contains("more match"), "{}", stderr(&rest));

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

/// A chain rewritten whole (a record edited and every later hash and the head recomputed, as an
/// intruder who knows the format would) verifies from the store alone; the head hash printed
/// before and kept elsewhere (`--anchor SEQ:HASH`) does not match, and verify exits 3.
#[tokio::test]
async fn an_anchor_kept_elsewhere_catches_a_chain_rewritten_whole() {
    let dir = TempDir::new();
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(&config, format!("[store]\nurl = \"{}\"\n", sqlite_url(&dir))).unwrap();
    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    for i in 0..8 {
        log.append(sample(i)).await.unwrap();
    }
    let verified = gatehouse(&config, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let head_hash = stdout(&verified)
        .split("head hash ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let anchor = format!("8:{head_hash}");
    let anchored = gatehouse(&config, &["audit", "verify", "--anchor", &anchor]);
    assert!(anchored.status.success(), "{}", stderr(&anchored));
    assert!(stdout(&anchored).contains("anchor at seq 8 matches"));

    // The rewrite: record 3 says something else, and the chain is recomputed from there.
    for trigger in ["audit_records_no_update"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
            .execute(store.pool())
            .await
            .unwrap();
    }
    let records = gatehouse::audit::query::query(&store, &Default::default())
        .await
        .unwrap();
    let mut prev = records[1].hash.clone();
    for mut record in records.into_iter().skip(2) {
        if record.seq == 3 {
            record.record.outcome.status = "forged".into();
        }
        record.prev_hash = prev.clone();
        record.hash = gatehouse::audit::chain::hash_of(&record).unwrap();
        sqlx::query("UPDATE audit_records SET outcome_status = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&record.record.outcome.status)
            .bind(&record.prev_hash)
            .bind(&record.hash)
            .bind(record.seq as i64)
            .execute(store.pool())
            .await
            .unwrap();
        prev = record.hash;
    }
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&prev)
        .execute(store.pool())
        .await
        .unwrap();
    let alone = gatehouse(&config, &["audit", "verify"]);
    assert!(
        alone.status.success(),
        "the store alone cannot tell: {}",
        stderr(&alone)
    );
    let caught = gatehouse(&config, &["audit", "verify", "--anchor", &anchor]);
    assert_eq!(caught.status.code(), Some(3), "{}", stdout(&caught));
    assert!(
        stderr(&caught).contains("BROKEN at seq 8") && stderr(&caught).contains("anchor"),
        "{}",
        stderr(&caught)
    );
    let malformed = gatehouse(&config, &["audit", "verify", "--anchor", "8:not-a-hash"]);
    assert_eq!(malformed.status.code(), Some(2), "{}", stderr(&malformed));
    store.close().await;
}
