//! No token ever reaches a log line, an error message or a `Debug` rendering, even when
//! Atlassian's answer (here a misbehaving simulator) echoes the request's `Authorization` header
//! back, and even at trace level.

use base64::Engine;
use gatehouse::atlassian::{ApiError, no_progress};
use gatehouse::config::{AuthSettings, LogFormat, LogSettings, Secret, SensitiveUrl, StoreSettings};
use gatehouse::store::Store;
use gatehouse_sim::{Behaviour, Fault, Seed, SeedApiToken, SeedCredentials, SeedOAuthClient, Simulator};
use handlers::ports::PortError;

use super::{SimWorld, accounts, settings_for};
use crate::helpers::TempDir;
use crate::logging::Capture;

const API_TOKEN: &str = "tok-ALPHA-0b7c2e-secret";
const SCIM_TOKEN: &str = "scim-BRAVO-91d3aa-secret";
const ADMIN_KEY: &str = "admin-CHARLIE-5e60f1-secret";
const CLIENT_SECRET: &str = "client-DELTA-77a01c-secret";
const REFRESH_TOKEN: &str = "refresh-ECHO-c3f9d2-secret";

fn seed() -> Seed {
    Seed {
        users: accounts("acc", 3),
        credentials: SeedCredentials {
            api_tokens: vec![SeedApiToken {
                email: "bot@example.com".into(),
                token: API_TOKEN.into(),
                scoped: false,
            }],
            scim_token: SCIM_TOKEN.into(),
            admin_api_key: ADMIN_KEY.into(),
            oauth_clients: vec![SeedOAuthClient {
                client_id: "sim-client".into(),
                client_secret: CLIENT_SECRET.into(),
                refresh_token: REFRESH_TOKEN.into(),
            }],
        },
        ..Seed::default()
    }
}

fn echo(path: &str, status: u16, times: u32) -> Fault {
    Fault {
        echo_authorization: true,
        ..Fault::status(path, status, times)
    }
}

fn describe(error: &ApiError) -> String {
    let port: PortError = error.clone().into();
    format!("{error}\n{error:?}\n{port}\n{port:?}")
}

// A current-thread runtime keeps the clients' (and the simulator's) tasks on this thread, under
// the capturing subscriber.
#[tokio::test(flavor = "current_thread")]
async fn tokens_never_appear_in_logs_or_errors() {
    let capture = Capture::default();
    let log_settings = LogSettings {
        format: LogFormat::Json,
        level: "trace".into(),
    };
    let _guard = tracing::subscriber::set_default(gatehouse::telemetry::subscriber(
        &log_settings,
        false,
        capture.clone(),
    ));
    let _interest = crate::helpers::interest_from_every_subscriber();
    let sim = Simulator::start(seed(), Behaviour::default()).await.unwrap();
    let mut settings = settings_for(&sim);
    settings.auth = Some(AuthSettings::Basic {
        email: "bot@example.com".into(),
        token: Secret::new(API_TOKEN),
        cloud_id: None,
        token_expires_at: None,
    });
    settings.scim_token = Some(Secret::new(SCIM_TOKEN));
    settings.admin_api_key = Some(Secret::new(ADMIN_KEY));
    settings.retry.max_attempts = 2;
    let world = SimWorld::with_settings(sim, settings.clone(), None).await;
    let mut texts = vec![format!("{:?}", world.clients), format!("{settings:?}")];

    // Answers that echo the Authorization header, on every API, retried and not.
    world.fault(echo("/rest/api/user", 400, 1)).await;
    world.fault(echo("/scim/directory/", 503, 5)).await;
    world.fault(echo("/events-stream", 403, 1)).await;
    world.fault(echo("/lifecycle/disable", 500, 5)).await;
    let errors = [
        world.confluence().user("acc-0000").await.unwrap_err(),
        world.scim().user_by_user_name("a@b.c").await.unwrap_err(),
        world
            .admin()
            .events_page(None, &Default::default())
            .await
            .unwrap_err(),
        world
            .admin()
            .lifecycle_disable("acc-0001", None)
            .await
            .unwrap_err(),
    ];
    for error in &errors {
        assert!(
            error.message().contains("***"),
            "the echo was not scrubbed: {error}"
        );
        texts.push(describe(error));
    }

    // OAuth: a successful rotation, an echo through the gateway, then a refused refresh.
    let dir = TempDir::new();
    let store = Store::connect(&StoreSettings {
        url: SensitiveUrl::new(format!("sqlite://{}/gatehouse.db", dir.0.display())),
        max_connections: 2,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await
    .unwrap();
    let mut oauth = settings.clone();
    oauth.confluence_base_url = None;
    oauth.auth = Some(AuthSettings::Oauth {
        client_id: "sim-client".into(),
        client_secret: Secret::new(CLIENT_SECRET),
        refresh_token: Secret::new(REFRESH_TOKEN),
        token_url: world.sim.token_url(),
        cloud_id: world.sim.cloud_id(),
    });
    let oauth_clients = gatehouse::atlassian::AtlassianClients::build(
        &oauth,
        gatehouse::atlassian::ClientDeps::new(
            Some(store.clone()),
            gatehouse::atlassian::AtlassianMetrics::detached(),
        ),
    )
    .unwrap();
    let confluence = oauth_clients.confluence().unwrap();
    confluence.group_members("nope", &no_progress).await.unwrap_err();
    world.fault(echo("/ex/confluence/", 400, 1)).await;
    let echoed = confluence.user("acc-0000").await.unwrap_err();
    assert!(echoed.message().contains("Bearer ***"), "{echoed}");
    texts.push(describe(&echoed));
    texts.push(format!("{oauth_clients:?}"));
    texts.push(format!(
        "{:?}",
        store.oauth_grant("sim-client@sim-cloud").await.unwrap()
    ));

    let mut refused = oauth.clone();
    if let Some(AuthSettings::Oauth { refresh_token, .. }) = &mut refused.auth {
        // A refresh token Atlassian does not know (pasted wrong): refused.
        *refresh_token = Secret::new(format!("{REFRESH_TOKEN}-other"));
    }
    let refused_clients = gatehouse::atlassian::AtlassianClients::build(
        &refused,
        gatehouse::atlassian::ClientDeps::new(
            Some(store),
            gatehouse::atlassian::AtlassianMetrics::detached(),
        ),
    )
    .unwrap();
    let error = refused_clients
        .confluence()
        .unwrap()
        .user("acc-0000")
        .await
        .unwrap_err();
    texts.push(describe(&error));

    let state = world.state().await;
    let issued: Vec<String> = state.oauth.latest_refresh_tokens.values().cloned().collect();
    drop(world);
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying Atlassian call"),
        "the test saw no retries"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bot@example.com:{API_TOKEN}"));
    let mut secrets = vec![
        API_TOKEN.to_owned(),
        SCIM_TOKEN.to_owned(),
        ADMIN_KEY.to_owned(),
        CLIENT_SECRET.to_owned(),
        REFRESH_TOKEN.to_owned(),
        basic,
        // Every access and refresh token the simulator issued starts so.
        "sim-at-".to_owned(),
        "sim-rt-".to_owned(),
    ];
    secrets.extend(issued);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "{secret} leaked into the logs");
        for text in &texts {
            assert!(!text.contains(secret.as_str()), "{secret} leaked into: {text}");
        }
    }
}
