//! Measurements, not checks (ignored by default): append throughput with one and several writers,
//! and verify speed, on SQLite and PostgreSQL. Run with
//! `cargo test --release --test it -- --ignored --nocapture audit::bench`.

use std::time::Instant;

use gatehouse::audit::{AuditLog, verify};
use gatehouse::config::AuditSettings;

use super::{open_store, sample, sqlite_url};
use crate::helpers::TempDir;
use crate::store::PgDatabase;

const SEQUENTIAL: usize = 2_000;
const CONCURRENT_TASKS: usize = 8;
const PER_TASK: usize = 250;
const BULK: usize = 50_000;

async fn measure(url: &str, name: &str) {
    let store = open_store(url).await;
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        log.append(sample(i)).await.unwrap();
    }
    let sequential = started.elapsed();

    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..CONCURRENT_TASKS {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                log.append(sample(task * PER_TASK + i)).await.unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let concurrent = started.elapsed();

    // Bulk-load in transactions of 500 so the verify walk has something long to walk.
    for chunk in 0..BULK / 500 {
        log.append_all((0..500).map(|i| sample(chunk * 500 + i)).collect())
            .await
            .unwrap();
    }
    let total = SEQUENTIAL + CONCURRENT_TASKS * PER_TASK + BULK;
    let started = Instant::now();
    let report = verify(&store, 1, |_| {}).await.unwrap();
    let walk = started.elapsed();
    assert!(report.is_intact());
    assert_eq!(report.checked as usize, total);
    eprintln!(
        "{name}: append 1 writer {:.0}/s ({:.2} ms each); {CONCURRENT_TASKS} writers {:.0}/s; verify {total} records in {walk:.2?} ({:.0}/s)",
        SEQUENTIAL as f64 / sequential.as_secs_f64(),
        sequential.as_secs_f64() * 1000.0 / SEQUENTIAL as f64,
        (CONCURRENT_TASKS * PER_TASK) as f64 / concurrent.as_secs_f64(),
        total as f64 / walk.as_secs_f64(),
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run explicitly"]
async fn bench_append_and_verify() {
    let dir = TempDir::new();
    measure(&sqlite_url(&dir), "sqlite").await;
    let db = PgDatabase::create().await;
    measure(&db.url, "postgres").await;
    db.drop_now().await;
}
