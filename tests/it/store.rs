//! The store on both databases: migrations apply (and re-apply as a no-op), installations
//! round-trip, dedupe claims move as the worker relies on, an account is held by one delivery at
//! a time, a dead letter that comes back after a
//! replay is dead again. PostgreSQL runs against a private database created for the test.

use gatehouse::config::{Secret, SensitiveUrl, StoreSettings};
use std::time::Duration;

use gatehouse::store::{AccountClaim, Claim, DeadLetterFilter, DeadLetterRow, Installation, Store};
use sqlx::Connection;

use crate::helpers::{TempDir, pg_admin_url, unique};

/// A private PostgreSQL database, dropped by [`PgDatabase::drop_now`], or when dropped itself (a
/// test that failed before its end leaves nothing on the shared server).
pub struct PgDatabase {
    pub url: String,
    name: String,
    dropped: bool,
}

/// Drops database `name` (its connections ended).
async fn drop_database(name: &str) {
    let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        let name = unique("gh_it").replace('-', "_");
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL must be reachable for tests");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        PgDatabase {
            url: url.to_string(),
            name,
            dropped: false,
        }
    }

    pub async fn drop_now(mut self) {
        drop_database(&self.name).await;
        self.dropped = true;
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Unwinding from a failed test, maybe inside a runtime: a thread and a runtime of its own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(drop_database(&name));
            }
        })
        .join();
    }
}

async fn round_trips(url: String) {
    let settings = StoreSettings {
        url: SensitiveUrl::new(url),
        max_connections: 4,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    };
    let store = Store::connect(&settings).await.unwrap();
    // Migrating again is a no-op.
    let again = Store::connect(&settings).await.unwrap();
    again.close().await;
    store.ping().await.unwrap();
    assert!(store.installation("c1").await.unwrap().is_none());
    let mut installation = Installation {
        client_key: "c1".into(),
        shared_secret: Secret::new("first"),
        base_url: "https://a.atlassian.net/wiki".into(),
        cloud_id: None,
        installed_at: chrono::Utc::now(),
    };
    store.upsert_installation(&installation).await.unwrap();
    installation.shared_secret = Secret::new("rotated");
    installation.cloud_id = Some("cloud-1".into());
    store.upsert_installation(&installation).await.unwrap();
    let found = store.installation("c1").await.unwrap().unwrap();
    assert_eq!(found.shared_secret.expose(), "rotated");
    assert_eq!(found.cloud_id.as_deref(), Some("cloud-1"));
    assert!(store.delete_installation("c1").await.unwrap());
    assert!(!store.delete_installation("c1").await.unwrap());
    lifecycle_tokens_are_spent_once(&store, &installation).await;
    claims_move_as_the_worker_relies_on(&store).await;
    accounts_are_held_one_delivery_at_a_time(&store).await;
    dead_letter_comes_back_after_a_replay(&store).await;
    store.close().await;
}

/// A lifecycle token carries one change: the same body again changes nothing and is answered as
/// done, another body is refused; a token long expired is forgotten (it no longer verifies).
async fn lifecycle_tokens_are_spent_once(store: &Store, installation: &Installation) {
    use gatehouse::store::{LifecycleApplied, LifecycleChange, SpentToken};
    let later = chrono::Utc::now() + chrono::Duration::minutes(3);
    let token = SpentToken {
        sha256: "aa11",
        body_sha256: "body-1",
        expires_at: later,
    };
    let install = LifecycleChange::Install(installation);
    let uninstall = LifecycleChange::Uninstall { client_key: "c1" };
    assert_eq!(
        store.apply_lifecycle(token, install).await.unwrap(),
        LifecycleApplied::Installed
    );
    assert_eq!(
        store.spent_lifecycle_token("aa11").await.unwrap().as_deref(),
        Some("body-1")
    );
    assert_eq!(
        store.apply_lifecycle(token, install).await.unwrap(),
        LifecycleApplied::AlreadyApplied
    );
    let mut rotated = installation.clone();
    rotated.shared_secret = Secret::new("chosen-by-whoever-holds-the-token");
    let other_body = SpentToken {
        body_sha256: "body-2",
        ..token
    };
    for change in [LifecycleChange::Install(&rotated), uninstall] {
        assert_eq!(
            store.apply_lifecycle(other_body, change).await.unwrap(),
            LifecycleApplied::TokenAlreadySpent
        );
    }
    let kept = store.installation("c1").await.unwrap().unwrap();
    assert_eq!(kept.shared_secret.expose(), installation.shared_secret.expose());
    // Another token may uninstall; it is spent too, and does not uninstall again after a
    // re-install.
    let other = SpentToken {
        sha256: "bb22",
        body_sha256: "body-3",
        expires_at: later,
    };
    assert_eq!(
        store.apply_lifecycle(other, uninstall).await.unwrap(),
        LifecycleApplied::Uninstalled { existed: true }
    );
    store.upsert_installation(installation).await.unwrap();
    assert_eq!(
        store.apply_lifecycle(other, uninstall).await.unwrap(),
        LifecycleApplied::AlreadyApplied
    );
    assert!(store.installation("c1").await.unwrap().is_some());
    assert!(store.delete_installation("c1").await.unwrap());
    // Two uses of one token at once, with different bodies (a replay racing the first use,
    // through two processes): one changes the installation, the other nothing.
    let racing = |body_sha256| SpentToken {
        sha256: "dd44",
        body_sha256,
        expires_at: later,
    };
    let (first, second) = tokio::join!(
        store.apply_lifecycle(racing("body-5"), install),
        store.apply_lifecycle(racing("body-6"), LifecycleChange::Install(&rotated)),
    );
    let mut outcomes = [first.unwrap(), second.unwrap()];
    outcomes.sort_by_key(|applied| format!("{applied:?}"));
    assert_eq!(
        outcomes,
        [LifecycleApplied::Installed, LifecycleApplied::TokenAlreadySpent]
    );
    let winner = store.installation("c1").await.unwrap().unwrap();
    let expected = if first_won(&winner, installation) {
        "body-5"
    } else {
        "body-6"
    };
    assert_eq!(
        store.spent_lifecycle_token("dd44").await.unwrap().as_deref(),
        Some(expected)
    );
    assert!(store.delete_installation("c1").await.unwrap());
    // A token expired long ago is forgotten after the next callback.
    let expired = SpentToken {
        sha256: "cc33",
        body_sha256: "body-4",
        expires_at: chrono::Utc::now() - chrono::Duration::minutes(11),
    };
    assert_eq!(
        store.apply_lifecycle(expired, uninstall).await.unwrap(),
        LifecycleApplied::Uninstalled { existed: false }
    );
    assert_eq!(store.spent_lifecycle_token("cc33").await.unwrap(), None);
    assert_eq!(
        store.spent_lifecycle_token("bb22").await.unwrap().as_deref(),
        Some("body-3")
    );
}

/// Whether the installation stored is `first` (not the rotated one raced against it).
fn first_won(stored: &Installation, first: &Installation) -> bool {
    stored.shared_secret.expose() == first.shared_secret.expose()
}

/// One holder at a time per fact; a retry by the same holder is harmless; a holder whose lease
/// ran out and was taken over can neither renew nor complete.
async fn claims_move_as_the_worker_relies_on(store: &Store) {
    let lease = Duration::from_secs(60);
    let keep = Duration::from_secs(3_600);
    assert_eq!(
        store.claim("fact", "e1", "a", lease, keep).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        store.claim("fact", "e1", "a", lease, keep).await.unwrap(),
        Claim::Acquired,
        "the same delivery claiming again (a retried write)"
    );
    assert_eq!(
        store.claim("fact", "e2", "b", lease, keep).await.unwrap(),
        Claim::Busy { owner: "a".into() }
    );
    // `a` stalls past a lease of zero; `b` takes over.
    assert!(store.renew_claim("fact", "a", Duration::ZERO).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        store.claim("fact", "e2", "b", lease, keep).await.unwrap(),
        Claim::Acquired
    );
    assert!(!store.renew_claim("fact", "a", lease).await.unwrap(), "a lost it");
    assert!(!store.complete_claim("fact", "a", keep).await.unwrap());
    assert!(store.complete_claim("fact", "b", keep).await.unwrap());
    assert!(
        store.complete_claim("fact", "b", keep).await.unwrap(),
        "completing is idempotent"
    );
    assert_eq!(
        store.claim("fact", "e3", "c", lease, keep).await.unwrap(),
        Claim::Completed {
            event_id: "e2".into()
        }
    );
    // A released claim (a failed attempt) is free for the next copy.
    assert_eq!(
        store.claim("other", "e4", "d", lease, keep).await.unwrap(),
        Claim::Acquired
    );
    store.release_claim("other", "d").await.unwrap();
    assert_eq!(
        store.claim("other", "e5", "e", lease, keep).await.unwrap(),
        Claim::Acquired
    );
}

/// One delivery holds an account at a time (per tenant); a stalled holder is taken over after
/// its lease, and then can neither renew nor let go of what is no longer its own.
async fn accounts_are_held_one_delivery_at_a_time(store: &Store) {
    let lease = Duration::from_secs(60);
    let claim = |tenant: &'static str, owner: &'static str, event: &'static str, lease: Duration| async move {
        store
            .claim_account(tenant, "ann", owner, event, lease)
            .await
            .unwrap()
    };
    assert_eq!(claim("t1", "a", "e1", lease).await, AccountClaim::Acquired);
    assert_eq!(
        claim("t1", "a", "e1", lease).await,
        AccountClaim::Acquired,
        "the same delivery claiming again (a retried write)"
    );
    assert_eq!(
        claim("t1", "b", "e2", lease).await,
        AccountClaim::Busy {
            event_id: "e1".into()
        }
    );
    // The same account id in another tenant is another person's.
    assert_eq!(claim("t2", "b", "e2", lease).await, AccountClaim::Acquired);
    // `a` stalls past a lease of zero; `b` takes over.
    assert!(
        store
            .renew_account_claim("t1", "ann", "a", Duration::ZERO)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(claim("t1", "b", "e2", lease).await, AccountClaim::Acquired);
    assert!(
        !store.renew_account_claim("t1", "ann", "a", lease).await.unwrap(),
        "a lost it"
    );
    store.release_account("t1", "ann", "a").await.unwrap();
    assert_eq!(
        claim("t1", "c", "e3", lease).await,
        AccountClaim::Busy {
            event_id: "e2".into()
        },
        "a former holder letting go does not free the account"
    );
    store.release_account("t1", "ann", "b").await.unwrap();
    assert_eq!(claim("t1", "c", "e3", lease).await, AccountClaim::Acquired);
    store.release_account("t1", "ann", "c").await.unwrap();
    store.release_account("t2", "ann", "b").await.unwrap();
    assert_eq!(store.purge_abandoned_account_claims().await.unwrap(), 0);
}

/// A broker-parked message's id derives from its content: replayed and parked again, it must
/// be listed again (with its new reason), while recording it twice stays one row.
async fn dead_letter_comes_back_after_a_replay(store: &Store) {
    let mut letter = DeadLetterRow {
        id: "broker-0123".into(),
        event_id: "01JABCDEFGHJKMNPQRSTVWXYZ0".into(),
        event_type: "user.deactivated".into(),
        subject: Some("acct-1".into()),
        routing_key: "admin.user.deactivated".into(),
        message_id: "key-1".into(),
        body: "{}".into(),
        reason: "delivery limit exceeded".into(),
        attempts: 0,
        first_failure_at: None,
        last_failure_at: None,
        history: Vec::new(),
        dead_at: chrono::Utc::now(),
    };
    let listed = || async { store.dead_letters(&DeadLetterFilter::default()).await.unwrap() };
    assert!(store.insert_dead_letter(&letter).await.unwrap());
    assert!(!store.insert_dead_letter(&letter).await.unwrap(), "recorded once");
    assert_eq!(listed().await.len(), 1);
    assert!(store.mark_dead_letter_replayed(&letter.id).await.unwrap());
    assert!(listed().await.is_empty());
    letter.reason = "delivery limit exceeded again".into();
    assert!(store.insert_dead_letter(&letter).await.unwrap());
    let again = listed().await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].reason, "delivery limit exceeded again");
    assert!(store.purge_dead_letter(&letter.id).await.unwrap());
    assert!(
        store.insert_dead_letter(&letter).await.unwrap(),
        "purged, then parked again"
    );
    assert!(store.purge_dead_letter(&letter.id).await.unwrap());

    // A worker-parked letter has a fresh id per parking: a stale redelivery of its old copy
    // (the recorder's ack was lost) does not revive it once replayed.
    letter.id = "01JABCDEFGHJKMNPQRSTVWXYZ1".into();
    assert!(store.insert_dead_letter(&letter).await.unwrap());
    assert!(store.mark_dead_letter_replayed(&letter.id).await.unwrap());
    assert!(!store.insert_dead_letter(&letter).await.unwrap());
    assert!(listed().await.is_empty());
}

#[tokio::test]
async fn sqlite_store_migrates_and_round_trips() {
    let dir = TempDir::new();
    // A nested folder that does not exist yet is created.
    round_trips(format!("sqlite://{}/nested/store.db", dir.0.display())).await;
}

/// A full disk makes SQLite end a transaction by itself (SQLITE_FULL rolls it back), after which
/// the ROLLBACK sqlx sends on drop fails and the connection still counts itself inside a
/// transaction: every later `begin` on it failed, and the pool handed it out forever (found by
/// the fault suite's full-disk scenario). The store must close such a connection and go on.
#[tokio::test]
async fn a_connection_a_full_disk_left_inside_a_transaction_is_not_reused() {
    let dir = TempDir::new();
    let store = Store::connect(&StoreSettings {
        url: SensitiveUrl::new(format!("sqlite://{}/store.db", dir.0.display())),
        max_connections: 1,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await
    .unwrap();
    {
        let mut conn = store.pool().acquire().await.unwrap();
        sqlx::query("CREATE TABLE filler (b BLOB)")
            .execute(&mut *conn)
            .await
            .unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        // The one connection's database may not grow: a full disk, as SQLite sees it.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + 1
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let mut tx = store.begin_write().await.unwrap();
    let full = sqlx::query("INSERT INTO filler VALUES (zeroblob(1000000))")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(full.to_string().contains("full"), "{full}");
    drop(tx);
    // The disk has room again (a new connection has no cap): the store writes at once.
    let mut tx = store.begin_write().await.expect("a usable connection");
    sqlx::query("INSERT INTO filler VALUES (x'00')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_dead_letters().await.unwrap(), 0);
    store.close().await;
}

#[tokio::test]
async fn postgres_store_migrates_and_round_trips() {
    let db = PgDatabase::create().await;
    round_trips(db.url.clone()).await;
    db.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_store_is_a_clear_error() {
    let settings = StoreSettings {
        url: SensitiveUrl::new("postgres://nobody@127.0.0.1:1/none"),
        max_connections: 1,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    };
    let error = Store::connect(&settings).await.unwrap_err().to_string();
    assert!(
        error.contains("cannot open store postgres://nobody@127.0.0.1:1/none"),
        "{error}"
    );
}

#[tokio::test]
async fn stored_credentials_are_sealed_at_rest_with_a_key() {
    use base64::Engine;
    let dir = TempDir::new();
    let url = format!("sqlite://{}/sealed.db", dir.0.display());
    let key = Secret::new(base64::engine::general_purpose::STANDARD.encode([42u8; 32]));
    let settings = StoreSettings {
        url: SensitiveUrl::new(url.clone()),
        max_connections: 2,
        encryption_key: Some(key),
        retired_encryption_keys: Vec::new(),
    };
    let store = Store::connect(&settings).await.unwrap();
    let secret = "connect-shared-secret-5f0e2a91c7";
    store
        .upsert_installation(&Installation {
            client_key: "site-1".into(),
            shared_secret: Secret::new(secret),
            base_url: "https://a.atlassian.net/wiki".into(),
            cloud_id: None,
            installed_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .installation("site-1")
            .await
            .unwrap()
            .unwrap()
            .shared_secret
            .expose(),
        secret
    );
    store.close().await;
    // Nothing in the database file (or its write-ahead log) holds the secret in clear.
    for file in std::fs::read_dir(&dir.0).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret found in clear"
        );
    }
    // Without the key, the sealed value is refused, not mistaken for the secret.
    let keyless = Store::connect(&StoreSettings {
        url: SensitiveUrl::new(url),
        max_connections: 2,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await
    .unwrap();
    let error = keyless.installation("site-1").await.unwrap_err().to_string();
    assert!(
        error.contains("store.encryption_key is not configured"),
        "{error}"
    );
}

#[tokio::test]
async fn a_test_database_is_dropped_even_when_its_test_never_reaches_drop_now() {
    let database = PgDatabase::create().await;
    let name = database.name.clone();
    let exists = |name: String| async move {
        let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            == 1
    };
    assert!(exists(name.clone()).await);
    // As a failing test's unwinding would.
    drop(database);
    assert!(!exists(name).await);
}
