//! One hash chain across every writer: concurrent appends from several "workers" (each its own
//! pool, several tasks each) give seq 1..=N with no gap, and the chain verifies. A failed append
//! (the lock held too long) writes nothing and leaves no gap.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gatehouse::audit::query::{AuditQuery, query};
use gatehouse::audit::{AuditError, AuditLog, verify};
use gatehouse::config::AuditSettings;
use gatehouse::store::Store;
use sqlx::Connection;

use super::{open_store, sample, sqlite_url};
use crate::helpers::TempDir;
use crate::store::PgDatabase;

const WORKERS: usize = 3;
const TASKS_PER_WORKER: usize = 4;
const ROUNDS: usize = 20;

async fn concurrent_appends_keep_one_chain(url: &str) {
    let mut handles = Vec::new();
    let mut stores = Vec::new();
    let started = Instant::now();
    for worker in 0..WORKERS {
        let store = open_store(url).await;
        let log = AuditLog::new(store.clone(), &AuditSettings::default());
        stores.push(store);
        for task in 0..TASKS_PER_WORKER {
            let log = log.clone();
            handles.push(tokio::spawn(async move {
                let mut written = 0;
                for round in 0..ROUNDS {
                    let i = (worker * TASKS_PER_WORKER + task) * ROUNDS + round;
                    if round % 5 == 0 {
                        // Several records in one transaction stay consecutive.
                        let batch = log
                            .append_all(vec![sample(i), sample(i + 1), sample(i + 2)])
                            .await
                            .unwrap();
                        assert_eq!(batch[1].seq, batch[0].seq + 1);
                        assert_eq!(batch[2].seq, batch[1].seq + 1);
                        assert_eq!(batch[1].prev_hash, batch[0].hash);
                        written += 3;
                    } else {
                        log.append(sample(i)).await.unwrap();
                        written += 1;
                    }
                }
                written
            }));
        }
    }
    let mut total = 0u64;
    for handle in handles {
        total += handle.await.unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{total} concurrent appends ({WORKERS} pools x {TASKS_PER_WORKER} tasks) on {} in {elapsed:?}",
        url.split(':').next().unwrap()
    );

    let store = &stores[0];
    let report = verify(store, 1, |_| {}).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, total);
    assert_eq!(report.head_seq, total);
    let records = query(store, &AuditQuery::default()).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    let ids: HashSet<_> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids.len() as u64, total);
    for store in stores {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_on_sqlite_keep_one_gap_free_chain() {
    let dir = TempDir::new();
    concurrent_appends_keep_one_chain(&sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_on_postgres_keep_one_gap_free_chain() {
    let db = PgDatabase::create().await;
    concurrent_appends_keep_one_chain(&db.url).await;
    db.drop_now().await;
}

/// A server whose default isolation is repeatable read (a DBA's choice): appends still keep one
/// chain, since gatehouse's write transactions ask for read committed themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_on_a_repeatable_read_postgres_keep_one_chain() {
    use sqlx::Connection;
    let db = PgDatabase::create().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_isolation TO 'repeatable read'"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    concurrent_appends_keep_one_chain(&db.url).await;
    db.drop_now().await;
}

/// Holds the append lock from outside, so an append times out; then checks nothing was written
/// and the next append continues the chain without a gap.
async fn a_failed_append_writes_nothing_and_leaves_no_gap(
    store: Store,
    mut hold_lock: impl FnMut(tokio::sync::oneshot::Sender<()>) -> tokio::task::JoinHandle<()>,
) {
    let settings = AuditSettings {
        append_timeout_ms: 300,
        ..AuditSettings::default()
    };
    let log = AuditLog::new(store.clone(), &settings);
    log.append(sample(0)).await.unwrap();
    log.append(sample(1)).await.unwrap();

    let (held, holding) = tokio::sync::oneshot::channel();
    let holder = hold_lock(held);
    holding.await.unwrap();
    let error = log.append(sample(2)).await.unwrap_err();
    assert!(
        matches!(error, AuditError::Timeout(_) | AuditError::Store(_)),
        "{error}"
    );
    holder.await.unwrap();

    let next = log.append(sample(3)).await.unwrap();
    assert_eq!(next.seq, 3, "the failed append must not use up a seq");
    let report = verify(&store, 1, |_| {}).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 3);
    store.close().await;
}

#[tokio::test]
async fn sqlite_failed_append_leaves_no_gap() {
    let dir = TempDir::new();
    let url = sqlite_url(&dir);
    let store = open_store(&url).await;
    let path = format!("{}/audit.db", dir.0.display());
    a_failed_append_writes_nothing_and_leaves_no_gap(store, move |held| {
        let path = path.clone();
        tokio::spawn(async move {
            // Another process's writer: holds SQLite's write lock for a second.
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
            held.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        })
    })
    .await;
}

#[tokio::test]
async fn postgres_failed_append_leaves_no_gap() {
    let db = PgDatabase::create().await;
    let store = open_store(&db.url).await;
    let url = db.url.clone();
    a_failed_append_writes_nothing_and_leaves_no_gap(store, move |held| {
        let url = url.clone();
        tokio::spawn(async move {
            // Another worker stuck inside its append transaction.
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(gatehouse::audit::log::APPEND_LOCK_KEY)
                .execute(&mut conn)
                .await
                .unwrap();
            held.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        })
    })
    .await;
    db.drop_now().await;
}

/// Records appended inside a caller's transaction commit or roll back with it, without a gap.
async fn appends_inside_a_callers_transaction(store: Store) {
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    log.append(sample(0)).await.unwrap();

    let mut tx = store.begin_write().await.unwrap();
    let pending = log.append_in(&mut tx, vec![sample(1), sample(2)]).await.unwrap();
    assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
    tx.rollback().await.unwrap();

    let mut tx = store.begin_write().await.unwrap();
    let committed = log.append_in(&mut tx, vec![sample(3)]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(committed[0].seq, 2, "the rolled-back records used up no seq");
    let report = verify(&store, 1, |_| {}).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 2);
    store.close().await;
}

#[tokio::test]
async fn sqlite_appends_inside_a_callers_transaction() {
    let dir = TempDir::new();
    appends_inside_a_callers_transaction(open_store(&sqlite_url(&dir)).await).await;
}

#[tokio::test]
async fn postgres_appends_inside_a_callers_transaction() {
    let db = PgDatabase::create().await;
    appends_inside_a_callers_transaction(open_store(&db.url).await).await;
    db.drop_now().await;
}
