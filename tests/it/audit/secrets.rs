//! No secret or raw token ever appears in a record: not in the rows, not in the database files,
//! not in the logs; emails and marked display names are stored only as their HMAC.

use gatehouse::audit::hashing::lookup;
use gatehouse::audit::query::{AuditQuery, query};
use gatehouse::audit::scrub::secrets_in;
use gatehouse::audit::{ActionRef, AuditKind, AuditLog, NewRecord, Outcome, pii, verify};
use gatehouse::config::{
    AuditSettings, LogFormat, LogSettings, PiiKind, Secret, SensitiveUrl, Settings, VerificationScheme,
};
use ulid::Ulid;

use super::{open_store, sqlite_url};
use crate::helpers::{TempDir, secret, source};
use crate::logging::Capture;

const HASH_KEY: &str = "audit-hmac-key-never-in-records-7f3a";
const API_TOKEN: &str = "audit-api-token-never-in-records-91c2";
const HUB_SECRET: &str = "hub-secret-value-for-audit-5e8d";
const URL_TOKEN: &str = "guard-url-token-value-0b7e";
const AMQP_PASSWORD: &str = "amqp-password-4c1d";
const BEARER: &str = "atlassian-api-token-value-88aa";
const QUERY_TOKEN: &str = "query-token-value-13f0";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJjbGllbnQta2V5In0.c2lnbmF0dXJlLXZhbHVl";
const EMAIL: &str = "Alice.Example@Example.com";
const NAME: &str = "Alice Example";

fn leaky_record() -> NewRecord {
    let mut record = NewRecord::new(Ulid::generate(), AuditKind::Failed);
    record.account_id = Some("557058:alice".into());
    record.action = Some(ActionRef {
        action_type: "confluence.remove_member".into(),
        target: format!("group:g1/email:{EMAIL}"),
        org_wide: false,
    });
    record.outcome = Outcome {
        status: "error".into(),
        http_status: Some(401),
        error: Some(format!(
            "POST https://bot:{AMQP_PASSWORD}@api.example.com/x?limit=1&access_token={QUERY_TOKEN} failed; \
             Authorization: Bearer {BEARER}"
        )),
    };
    record.warnings = vec![
        format!("delivery to /webhooks/guard/t/{URL_TOKEN}/user_created rejected"),
        format!("server echoed {HUB_SECRET}"),
        format!("token {JWT}"),
        format!("display name was {}", pii(NAME)),
    ];
    record
}

// A current-thread runtime keeps every task on this thread, under the capturing subscriber.
#[tokio::test(flavor = "current_thread")]
async fn records_hold_no_secret_and_only_hashed_personal_data() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(gatehouse::telemetry::subscriber(
        &LogSettings {
            format: LogFormat::Json,
            level: "trace".into(),
        },
        false,
        capture.clone(),
    ));
    let _interest = crate::helpers::interest_from_every_subscriber();
    let dir = TempDir::new();
    let mut settings = Settings::default();
    settings.store.url = SensitiveUrl::new(sqlite_url(&dir));
    settings.queue.url =
        gatehouse::config::BrokerUrls::new(format!("amqp://gatehouse:{AMQP_PASSWORD}@127.0.0.1:5672/%2f"));
    settings.audit.hash_key = Some(Secret::new(HASH_KEY));
    settings.audit.api_token = Some(Secret::new(API_TOKEN));
    settings.audit.hash_fields = vec![PiiKind::Email, PiiKind::DisplayName];
    settings.sources.push(source(
        "admin",
        VerificationScheme::HubSignature,
        vec![secret("hub-1", HUB_SECRET)],
    ));
    settings.validate(chrono::Utc::now()).unwrap();

    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::from_settings(store.clone(), &settings);
    assert!(secrets_in(&settings).len() >= 4);
    let written = log.append(leaky_record()).await.unwrap();
    log.append_all(vec![leaky_record(), leaky_record()])
        .await
        .unwrap();
    assert!(verify(&store, 1, |_| {}).await.unwrap().is_intact());

    let json = serde_json::to_string(&written).unwrap();
    let email_hash = lookup(&Secret::new(HASH_KEY), &EMAIL.to_lowercase());
    let name_hash = lookup(&Secret::new(HASH_KEY), NAME);
    assert!(json.contains(&email_hash), "{json}");
    assert!(json.contains(&name_hash), "{json}");
    assert!(json.contains("/webhooks/guard/t/***/user_created"), "{json}");

    store.close().await;
    // Every byte the store wrote: the database file and its write-ahead log.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let files = String::from_utf8_lossy(&bytes).to_lowercase();
    let logs = String::from_utf8(capture.0.lock().unwrap().clone())
        .unwrap()
        .to_lowercase();
    for needle in [
        HASH_KEY,
        API_TOKEN,
        HUB_SECRET,
        URL_TOKEN,
        AMQP_PASSWORD,
        BEARER,
        QUERY_TOKEN,
        JWT,
        EMAIL,
        NAME,
    ] {
        let needle = needle.to_lowercase();
        assert!(
            !json.to_lowercase().contains(&needle),
            "record holds {needle}: {json}"
        );
        assert!(!files.contains(&needle), "the database files hold {needle}");
        assert!(!logs.contains(&needle), "the logs hold {needle}");
    }
}

#[tokio::test]
async fn without_a_key_personal_data_is_kept_and_markers_removed() {
    let dir = TempDir::new();
    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::new(store.clone(), &Default::default());
    let mut record = NewRecord::new(Ulid::generate(), AuditKind::Executed);
    record.warnings = vec![format!("renamed {}", pii(NAME)), format!("mail {EMAIL}")];
    let written = log.append(record).await.unwrap();
    assert_eq!(
        written.record.warnings,
        [format!("renamed {NAME}"), format!("mail {EMAIL}")]
    );
    store.close().await;
}

/// Free text where a secret-named field or a scheme is followed by multi-byte characters: the
/// scrubber used to slice inside `é` looking for `bearer ` after `key: ` and panic in the append.
/// What the rules redact is unchanged; everything else reads back byte for byte.
#[tokio::test]
async fn multi_byte_text_after_secret_names_is_appended_and_verifies() {
    let dir = TempDir::new();
    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::new(
        store.clone(),
        &AuditSettings {
            hash_key: Some(Secret::new(HASH_KEY)),
            api_token: Some(Secret::new(API_TOKEN)),
            hash_fields: vec![PiiKind::Email, PiiKind::DisplayName],
            ..AuditSettings::default()
        },
    );
    let mut record = NewRecord::new(Ulid::generate(), AuditKind::Failed);
    record.account_id = Some("557058:é".into());
    record.handler = Some("key: éééé".into());
    record.action = Some(ActionRef {
        action_type: "confluence.remove_member".into(),
        target: "group:ĝ/secret: ü".into(),
        org_wide: false,
    });
    record.outcome = Outcome {
        status: "error".into(),
        http_status: Some(401),
        error: Some(format!(
            "Authorization: ééé; Authorization: Bearer {BEARER} (réessayé) for é alice@example.com"
        )),
    };
    record.request_id = Some("token=é…".into());
    record.warnings = vec![
        "key: Basic é€x".into(),
        format!("écrit par {}", pii("Zoë")),
        "signature=😀 password: ñ key:ü".into(),
        format!("token={API_TOKEN}é"),
    ];

    let written = log.append(record).await.unwrap();
    assert!(verify(&store, 1, |_| {}).await.unwrap().is_intact());

    let email_hash = lookup(&Secret::new(HASH_KEY), "alice@example.com");
    let name_hash = lookup(&Secret::new(HASH_KEY), "Zoë");
    let mut expected = NewRecord::new(written.record.event_id, AuditKind::Failed);
    expected.account_id = Some("557058:é".into());
    expected.handler = Some("key: éééé".into());
    expected.action = Some(ActionRef {
        action_type: "confluence.remove_member".into(),
        target: "group:ĝ/secret: ü".into(),
        org_wide: false,
    });
    expected.outcome = Outcome {
        status: "error".into(),
        http_status: Some(401),
        error: Some(format!(
            "Authorization: ééé; Authorization: Bearer *** (réessayé) for é {email_hash}"
        )),
    };
    expected.request_id = Some("token=é…".into());
    expected.warnings = vec![
        "key: Basic é€x".into(),
        format!("écrit par {name_hash}"),
        "signature=😀 password: ñ key:ü".into(),
        "token=***é".into(),
    ];
    assert_eq!(written.record, expected);

    let stored = query(&store, &AuditQuery::default()).await.unwrap();
    assert_eq!(stored, [written]);
    store.close().await;
}
