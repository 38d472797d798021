//! The OAuth grant table on both databases: seeding, the refresh lease, the generation guard.

use chrono::{Duration, Utc};
use gatehouse::config::{Secret, SensitiveUrl, StoreSettings};
use gatehouse::store::{OAuthRotation, Store};

use crate::helpers::TempDir;
use crate::store::PgDatabase;

async fn grant_lifecycle(url: String) {
    let store = Store::connect(&StoreSettings {
        url: SensitiveUrl::new(url),
        max_connections: 4,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await
    .unwrap();
    let key = "client@cloud";
    assert!(store.oauth_grant(key).await.unwrap().is_none());
    let seeded = store
        .seed_oauth_grant(key, &Secret::new("rt-0"), "fp-0")
        .await
        .unwrap();
    assert_eq!(seeded.refresh_token.expose(), "rt-0");
    assert_eq!(seeded.generation, 0);
    assert!(seeded.access_token.is_none());
    // Seeding again with the same configured token changes nothing.
    let again = store
        .seed_oauth_grant(key, &Secret::new("rt-0"), "fp-0")
        .await
        .unwrap();
    assert_eq!(again.generation, 0);

    let now = Utc::now();
    assert!(
        store
            .claim_oauth_refresh(key, 0, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    // Someone else cannot claim while the lease runs, nor claim a stale generation.
    assert!(
        !store
            .claim_oauth_refresh(key, 0, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    let (refresh, access) = (Secret::new("rt-1"), Secret::new("at-1"));
    let rotation = OAuthRotation {
        refresh_token: &refresh,
        access_token: &access,
        access_expires_at: now + Duration::hours(1),
    };
    assert!(store.save_oauth_rotation(key, 0, &rotation).await.unwrap());
    // A late writer of the same generation is refused.
    assert!(!store.save_oauth_rotation(key, 0, &rotation).await.unwrap());
    let rotated = store.oauth_grant(key).await.unwrap().unwrap();
    assert_eq!(rotated.refresh_token.expose(), "rt-1");
    assert_eq!(rotated.access_token.unwrap().expose(), "at-1");
    assert_eq!(rotated.generation, 1);
    assert!(rotated.lease_until.is_none());
    assert_eq!(
        rotated.access_expires_at.unwrap().timestamp_millis(),
        (now + Duration::hours(1)).timestamp_millis()
    );

    // An expired lease can be taken over; a released one at once.
    assert!(
        store
            .claim_oauth_refresh(key, 1, now, now - Duration::seconds(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_oauth_refresh(key, 1, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    store.release_oauth_refresh(key, 1).await.unwrap();
    assert!(
        store
            .claim_oauth_refresh(key, 1, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );

    // A new token in config (another fingerprint) replaces the row.
    let reseeded = store
        .seed_oauth_grant(key, &Secret::new("rt-new"), "fp-new")
        .await
        .unwrap();
    assert_eq!(reseeded.refresh_token.expose(), "rt-new");
    assert_eq!(reseeded.generation, 2);
    assert!(reseeded.access_token.is_none() && reseeded.lease_until.is_none());

    // Processes starting together all seed a fresh grant: one row, and none of them fails.
    let seeds = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .seed_oauth_grant("fresh@cloud", &Secret::new("rt-f"), "fp-f")
                .await
        })
    });
    for seeded in futures_util::future::join_all(seeds).await {
        let seeded = seeded.unwrap().unwrap();
        assert_eq!((seeded.generation, seeded.refresh_token.expose()), (0, "rt-f"));
    }
    // A new token in every process's config at once: the row is replaced once.
    store
        .seed_oauth_grant("fresh@cloud", &Secret::new("rt-g"), "fp-g")
        .await
        .unwrap();
    let seeds = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .seed_oauth_grant("fresh@cloud", &Secret::new("rt-h"), "fp-h")
                .await
        })
    });
    for seeded in futures_util::future::join_all(seeds).await {
        seeded.unwrap().unwrap();
    }
    let settled = store.oauth_grant("fresh@cloud").await.unwrap().unwrap();
    assert_eq!((settled.generation, settled.refresh_token.expose()), (2, "rt-h"));
    store.close().await;
}

#[tokio::test]
async fn sqlite_keeps_oauth_grants() {
    let dir = TempDir::new();
    grant_lifecycle(format!("sqlite://{}/store.db", dir.0.display())).await;
}

#[tokio::test]
async fn postgres_keeps_oauth_grants() {
    let db = PgDatabase::create().await;
    grant_lifecycle(db.url.clone()).await;
    db.drop_now().await;
}
