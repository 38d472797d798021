//! Credentials written in clear before `store.encryption_key` was set, on both databases: with
//! the key they are refused (reads and the roles' start-up, naming `gatehouse store seal`), so a
//! value planted in clear is never taken as a credential; the command (the real binary) seals
//! them in place, bound to their rows, all or nothing, once. A rotated key: values the retired
//! key sealed still open until the command reseals them under the new one.

use std::process::Output;

use base64::Engine;
use chrono::{Duration, Utc};
use gatehouse::app::Application;
use gatehouse::config::{QueueBackend, Secret, SensitiveUrl, StoreSettings};
use gatehouse::store::{CredentialCensus, Installation, OAuthRotation, Store};

use crate::helpers::{TempDir, test_settings};
use crate::store::PgDatabase;

const SHARED_SECRET: &str = "connect-shared-secret-9d41c0";
const ROTATED_REFRESH: &str = "refresh-token-rotated-77a2";
const ACCESS: &str = "access-token-31f8";
const OTHER_REFRESH: &str = "refresh-token-other-0c5e";

fn store_settings(url: &str, key: Option<&Secret>) -> StoreSettings {
    StoreSettings {
        url: SensitiveUrl::new(url),
        max_connections: 4,
        encryption_key: key.cloned(),
        retired_encryption_keys: Vec::new(),
    }
}

fn installation(client_key: &str, secret: &str) -> Installation {
    Installation {
        client_key: client_key.into(),
        shared_secret: Secret::new(secret),
        base_url: "https://a.atlassian.net/wiki".into(),
        cloud_id: None,
        installed_at: Utc::now(),
    }
}

/// Runs `gatehouse --config config args…`.
fn gatehouse(config: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run gatehouse")
}

/// (stdout, stderr), checked to hold no credential.
fn text(output: &Output) -> (String, String) {
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    for secret in [SHARED_SECRET, ROTATED_REFRESH, ACCESS, OTHER_REFRESH, "rt-0"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "a credential was printed: {out}{err}"
        );
    }
    (out, err)
}

/// The value as stored, sealed or not.
async fn raw(store: &Store, sql: &'static str, key: &str) -> String {
    sqlx::query_scalar::<_, String>(sql)
        .bind(key)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

const RAW_SECRET: &str = "SELECT shared_secret FROM connect_installations WHERE client_key = $1";
const RAW_REFRESH: &str = "SELECT refresh_token FROM oauth_tokens WHERE grant_key = $1";
const RAW_ACCESS: &str = "SELECT access_token FROM oauth_tokens WHERE grant_key = $1";

async fn refused_until_sealed(url: String) {
    let dir = TempDir::new();
    let key = Secret::new(base64::engine::general_purpose::STANDARD.encode([9u8; 32]));
    let key_file = dir.0.join("store.key");
    std::fs::write(&key_file, format!("{}\n", key.expose())).unwrap();
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[queue]\nbackend = \"embedded\"\n[store]\nurl = \"{url}\"\nencryption_key = \"file:{}\"\n",
            key_file.display()
        ),
    )
    .unwrap();

    // Before a key was configured: one installation, one rotated grant (refresh and access
    // token), one seeded grant (no access token yet), all in clear.
    let keyless = Store::connect(&store_settings(&url, None)).await.unwrap();
    keyless
        .upsert_installation(&installation("site-1", SHARED_SECRET))
        .await
        .unwrap();
    keyless
        .seed_oauth_grant("client@cloud", &Secret::new("rt-0"), "fp-0")
        .await
        .unwrap();
    let now = Utc::now();
    assert!(
        keyless
            .claim_oauth_refresh("client@cloud", 0, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    let (refresh, access) = (Secret::new(ROTATED_REFRESH), Secret::new(ACCESS));
    let rotation = OAuthRotation {
        refresh_token: &refresh,
        access_token: &access,
        access_expires_at: now + Duration::hours(1),
    };
    assert!(
        keyless
            .save_oauth_rotation("client@cloud", 0, &rotation)
            .await
            .unwrap()
    );
    keyless
        .seed_oauth_grant("other@cloud", &Secret::new(OTHER_REFRESH), "fp-o")
        .await
        .unwrap();
    keyless.close().await;

    // With the key: a second installation is written sealed; the clear values are refused.
    let store = Store::connect(&store_settings(&url, Some(&key))).await.unwrap();
    store
        .upsert_installation(&installation("site-2", "second-site-secret"))
        .await
        .unwrap();
    let error = store.installation("site-1").await.unwrap_err().to_string();
    assert!(
        error.contains("connect_installations.shared_secret:site-1")
            && error.contains("gatehouse store seal")
            && !error.contains(SHARED_SECRET),
        "{error}"
    );
    let error = store.oauth_grant("client@cloud").await.unwrap_err().to_string();
    assert!(
        error.contains("oauth_tokens.refresh_token:client@cloud") && error.contains("gatehouse store seal"),
        "{error}"
    );
    assert_eq!(store.count_unsealed().await.unwrap(), 4);

    // The roles refuse to start on them.
    let mut settings = test_settings(&dir);
    settings.queue.backend = QueueBackend::Embedded;
    settings.store = store_settings(&url, Some(&key));
    let error = format!("{:#}", Application::build(settings.clone()).await.unwrap_err());
    assert!(
        error.contains("4 credential(s)") && error.contains("gatehouse store seal"),
        "{error}"
    );

    // A dry run reports and changes nothing.
    let dry = gatehouse(&config, &["store", "seal", "--dry-run"]);
    let (out, err) = text(&dry);
    assert!(dry.status.success(), "{out}{err}");
    for line in [
        "would seal 1 value(s) in connect_installations.shared_secret (1 already sealed)",
        "would seal 2 value(s) in oauth_tokens.refresh_token (0 already sealed)",
        "would seal 1 value(s) in oauth_tokens.access_token (0 already sealed)",
    ] {
        assert!(out.contains(line), "{out}");
    }
    assert!(err.contains("dry run: nothing changed"), "{err}");
    assert_eq!(raw(&store, RAW_SECRET, "site-1").await, SHARED_SECRET);
    assert_eq!(store.count_unsealed().await.unwrap(), 4);

    // Sealing seals every clear value, bound to its row as the write path binds it.
    let sealed = gatehouse(&config, &["store", "seal"]);
    let (out, err) = text(&sealed);
    assert!(sealed.status.success(), "{out}{err}");
    for line in [
        "sealed 1 value(s) in connect_installations.shared_secret (1 already sealed)",
        "sealed 2 value(s) in oauth_tokens.refresh_token (0 already sealed)",
        "sealed 1 value(s) in oauth_tokens.access_token (0 already sealed)",
    ] {
        assert!(out.contains(line), "{out}");
    }
    for (sql, row) in [
        (RAW_SECRET, "site-1"),
        (RAW_REFRESH, "client@cloud"),
        (RAW_ACCESS, "client@cloud"),
        (RAW_REFRESH, "other@cloud"),
    ] {
        let value = raw(&store, sql, row).await;
        assert!(value.starts_with("sealed:v1:"), "{sql} {row}: not sealed");
    }
    assert_eq!(
        store
            .installation("site-1")
            .await
            .unwrap()
            .unwrap()
            .shared_secret
            .expose(),
        SHARED_SECRET
    );
    let grant = store.oauth_grant("client@cloud").await.unwrap().unwrap();
    assert_eq!(grant.refresh_token.expose(), ROTATED_REFRESH);
    assert_eq!(grant.access_token.unwrap().expose(), ACCESS);
    assert_eq!(grant.generation, 1, "sealing is not a rotation");
    let other = store.oauth_grant("other@cloud").await.unwrap().unwrap();
    assert_eq!(other.refresh_token.expose(), OTHER_REFRESH);
    assert!(other.access_token.is_none());
    assert_eq!(store.count_unsealed().await.unwrap(), 0);
    drop(Application::build(settings).await.expect("starts once sealed"));

    // Idempotent.
    let again = gatehouse(&config, &["store", "seal"]);
    let (out, err) = text(&again);
    assert!(again.status.success(), "{out}{err}");
    assert!(
        out.contains("sealed 0 value(s) in connect_installations.shared_secret (2 already sealed)"),
        "{out}"
    );
    assert!(
        out.contains("sealed 0 value(s) in oauth_tokens.refresh_token (2 already sealed)"),
        "{out}"
    );

    // A value planted in clear (a forged installation) is refused, not trusted; and a sealed
    // value that does not open (copied from another row) stops the command before it changes
    // anything.
    sqlx::query(
        "INSERT INTO connect_installations
            (client_key, shared_secret, base_url, installed_at, updated_at)
         VALUES ('forged', 'attacker-chosen', 'https://evil.example', 0, 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let error = store.installation("forged").await.unwrap_err().to_string();
    assert!(error.contains("gatehouse store seal"), "{error}");
    let site_2 = raw(&store, RAW_SECRET, "site-2").await;
    sqlx::query("UPDATE connect_installations SET shared_secret = $1 WHERE client_key = 'site-1'")
        .bind(&site_2)
        .execute(store.pool())
        .await
        .unwrap();
    let refused = gatehouse(&config, &["store", "seal"]);
    let (out, err) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("do not open with store.encryption_key")
            && err.contains("connect_installations.shared_secret:site-1")
            && err.contains("nothing was sealed"),
        "{err}"
    );
    assert_eq!(raw(&store, RAW_SECRET, "forged").await, "attacker-chosen");
    store.close().await;

    // Without a key there is nothing to seal with.
    std::fs::write(
        &config,
        format!("[queue]\nbackend = \"embedded\"\n[store]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let keyless = gatehouse(&config, &["store", "seal"]);
    let (out, err) = text(&keyless);
    assert_eq!(keyless.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("store.encryption_key is not configured"), "{err}");
}

/// A key as config holds it, and a file holding it.
fn key_file(dir: &TempDir, name: &str, byte: u8) -> (Secret, std::path::PathBuf) {
    let key = Secret::new(base64::engine::general_purpose::STANDARD.encode([byte; 32]));
    let path = dir.0.join(name);
    std::fs::write(&path, format!("{}\n", key.expose())).unwrap();
    (key, path)
}

fn rotated_settings(url: &str, key: &Secret, retired: &[&Secret]) -> StoreSettings {
    StoreSettings {
        retired_encryption_keys: retired.iter().map(|k| (*k).clone()).collect(),
        ..store_settings(url, Some(key))
    }
}

async fn rotated_key_reseals(url: String) {
    let dir = TempDir::new();
    let (old, old_file) = key_file(&dir, "old.key", 3);
    let (new, new_file) = key_file(&dir, "new.key", 4);
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[queue]\nbackend = \"embedded\"\n[store]\nurl = \"{url}\"\nencryption_key = \"file:{}\"\n\
             retired_encryption_keys = [\"file:{}\"]\n",
            new_file.display(),
            old_file.display()
        ),
    )
    .unwrap();
    let no_key_printed = |output: &Output| {
        let (out, err) = text(output);
        for key in [&old, &new] {
            assert!(
                !out.contains(key.expose()) && !err.contains(key.expose()),
                "a key was printed"
            );
        }
        (out, err)
    };

    // Sealed under the old key: one installation, one grant.
    let before = Store::connect(&store_settings(&url, Some(&old))).await.unwrap();
    before
        .upsert_installation(&installation("site-1", SHARED_SECRET))
        .await
        .unwrap();
    before
        .seed_oauth_grant("other@cloud", &Secret::new(OTHER_REFRESH), "fp-o")
        .await
        .unwrap();
    before.close().await;
    let sealed_by_old = raw_after_close(&url, RAW_SECRET, "site-1").await;

    // The new key alone opens none of them, and says where the old one goes.
    let new_only = Store::connect(&store_settings(&url, Some(&new))).await.unwrap();
    let error = new_only.installation("site-1").await.unwrap_err().to_string();
    assert!(
        error.contains("connect_installations.shared_secret:site-1")
            && error.contains("store.retired_encryption_keys"),
        "{error}"
    );
    assert_eq!(
        new_only.credential_census().await.unwrap(),
        CredentialCensus {
            in_clear: 0,
            under_retired_key: 0,
            unopenable: 2
        }
    );
    new_only.close().await;

    // With the old key retired: everything opens, new values are the new key's, the roles start.
    let rotated = Store::connect(&rotated_settings(&url, &new, &[&old]))
        .await
        .unwrap();
    let opened = rotated.installation("site-1").await.unwrap().unwrap();
    assert_eq!(opened.shared_secret.expose(), SHARED_SECRET);
    let grant = rotated.oauth_grant("other@cloud").await.unwrap().unwrap();
    assert_eq!(grant.refresh_token.expose(), OTHER_REFRESH);
    rotated
        .upsert_installation(&installation("site-2", "second-site-secret"))
        .await
        .unwrap();
    assert_eq!(
        rotated.credential_census().await.unwrap(),
        CredentialCensus {
            in_clear: 0,
            under_retired_key: 2,
            unopenable: 0
        }
    );
    let old_only = Store::connect(&store_settings(&url, Some(&old))).await.unwrap();
    assert!(
        old_only.installation("site-2").await.is_err(),
        "a new value is sealed with the new key, not the retired one"
    );
    old_only.close().await;
    // The roles start, and say what waits for `store seal`; with the new key alone they would
    // start too, and say what no key opens.
    let mut settings = test_settings(&dir);
    settings.queue.backend = QueueBackend::Embedded;
    settings.store = rotated_settings(&url, &new, &[&old]);
    let logged = starts_logging(settings.clone()).await;
    assert!(
        logged.contains("sealed under a retired key") && logged.contains(r#""credentials":2"#),
        "{logged}"
    );
    settings.store = store_settings(&url, Some(&new));
    let logged = starts_logging(settings.clone()).await;
    assert!(
        logged.contains("open with no configured key") && logged.contains(r#""credentials":2"#),
        "{logged}"
    );

    // A dry run reports and changes nothing.
    let dry = gatehouse(&config, &["store", "seal", "--dry-run"]);
    let (out, err) = no_key_printed(&dry);
    assert!(dry.status.success(), "{out}{err}");
    for line in [
        "would seal 0 value(s) in connect_installations.shared_secret (1 already sealed)",
        "would reseal 1 value(s) in connect_installations.shared_secret from a retired key to store.encryption_key",
        "would reseal 1 value(s) in oauth_tokens.refresh_token from a retired key to store.encryption_key",
    ] {
        assert!(out.contains(line), "{out}");
    }
    assert!(!out.contains("access_token from"), "{out}");
    assert_eq!(raw(&rotated, RAW_SECRET, "site-1").await, sealed_by_old);

    // Resealing moves every value to the new key, bound to its row as before.
    let resealed = gatehouse(&config, &["store", "seal"]);
    let (out, err) = no_key_printed(&resealed);
    assert!(resealed.status.success(), "{out}{err}");
    for line in [
        "sealed 0 value(s) in connect_installations.shared_secret (1 already sealed)",
        "resealed 1 value(s) in connect_installations.shared_secret from a retired key to store.encryption_key",
        "resealed 1 value(s) in oauth_tokens.refresh_token from a retired key to store.encryption_key",
    ] {
        assert!(out.contains(line), "{out}");
    }
    assert!(err.contains("store.retired_encryption_keys can go"), "{err}");
    let now_sealed = raw(&rotated, RAW_SECRET, "site-1").await;
    assert!(now_sealed.starts_with("sealed:v1:") && now_sealed != sealed_by_old);
    rotated.close().await;

    // The old key can go: the new one alone opens everything.
    let after = Store::connect(&store_settings(&url, Some(&new))).await.unwrap();
    assert_eq!(
        after.credential_census().await.unwrap(),
        CredentialCensus::default()
    );
    let opened = after.installation("site-1").await.unwrap().unwrap();
    assert_eq!(opened.shared_secret.expose(), SHARED_SECRET);
    let grant = after.oauth_grant("other@cloud").await.unwrap().unwrap();
    assert_eq!(grant.refresh_token.expose(), OTHER_REFRESH);
    assert_eq!(grant.generation, 0, "resealing is not a rotation of the grant");
    after.close().await;

    // Idempotent: nothing left to reseal.
    let again = gatehouse(&config, &["store", "seal"]);
    let (out, err) = no_key_printed(&again);
    assert!(again.status.success(), "{out}{err}");
    assert!(!out.contains("resealed"), "{out}");
    assert!(
        out.contains("sealed 0 value(s) in connect_installations.shared_secret (2 already sealed)"),
        "{out}"
    );
}

/// What building gatehouse with `settings` logs at `warn` and above (it must build).
async fn starts_logging(settings: gatehouse::config::Settings) -> String {
    let (capture, _guard, _interest) = crate::logging::capture_warnings();
    drop(Application::build(settings).await.expect("starts"));
    capture.text()
}

/// The value as stored, read through a store opened (and closed) for it.
async fn raw_after_close(url: &str, sql: &'static str, key: &str) -> String {
    let store = Store::connect(&store_settings(url, None)).await.unwrap();
    let value = raw(&store, sql, key).await;
    store.close().await;
    value
}

#[tokio::test]
async fn sqlite_a_rotated_key_reads_the_retired_ones_values_until_resealed() {
    let dir = TempDir::new();
    rotated_key_reseals(format!("sqlite://{}/store.db", dir.0.display())).await;
}

#[tokio::test]
async fn postgres_a_rotated_key_reads_the_retired_ones_values_until_resealed() {
    let db = PgDatabase::create().await;
    rotated_key_reseals(db.url.clone()).await;
    db.drop_now().await;
}

#[tokio::test]
async fn sqlite_clear_credentials_are_refused_until_sealed() {
    let dir = TempDir::new();
    refused_until_sealed(format!("sqlite://{}/store.db", dir.0.display())).await;
}

#[tokio::test]
async fn postgres_clear_credentials_are_refused_until_sealed() {
    let db = PgDatabase::create().await;
    refused_until_sealed(db.url.clone()).await;
    db.drop_now().await;
}
