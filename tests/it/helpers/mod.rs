//! Shared test helpers: spawning gatehouse on port 0 with a private queue prefix and store,
//! signing deliveries the way each sender does, observing what reached the exchange, and a TCP
//! proxy that can cut or stall the broker connection.

pub mod observer;
pub mod proxy;
pub mod signing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse::app::Application;
use gatehouse::config::{
    QueueBackend, Secret, SensitiveUrl, Settings, SourceSecret, SourceSettings, VerificationScheme,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use observer::Observer;
pub use proxy::TcpProxy;

pub fn amqp_url() -> String {
    std::env::var("GATEHOUSE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub fn pg_admin_url() -> String {
    std::env::var("GATEHOUSE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A unique lowercase id for names (queue prefixes, databases, temp folders).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::generate().to_string().to_lowercase())
}

/// A temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique("gh-it"));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn secret(id: &str, value: &str) -> SourceSecret {
    SourceSecret {
        id: id.to_owned(),
        value: Secret::new(value),
        not_after: None,
    }
}

pub fn source(name: &str, scheme: VerificationScheme, secrets: Vec<SourceSecret>) -> SourceSettings {
    SourceSettings {
        name: name.to_owned(),
        scheme,
        kind: None,
        secrets,
        tolerance_seconds: 300,
        token_header: "x-gatehouse-token".to_owned(),
    }
}

/// Settings for a test: port 0, a unique queue prefix, a SQLite store in `dir`.
pub fn test_settings(dir: &TempDir) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_seconds = 5;
    settings.queue.backend = QueueBackend::Rabbitmq;
    settings.queue.url = SensitiveUrl::new(amqp_url());
    settings.queue.prefix = unique("gh-test");
    settings.queue.publish_timeout_ms = 5_000;
    settings.queue.reconnect_max_delay_ms = 500;
    settings.store.url = SensitiveUrl::new(format!("sqlite://{}/gatehouse.db", dir.0.display()));
    settings
}

/// A running gatehouse.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub settings: Settings,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<TempDir>,
}

impl TestApp {
    /// Builds and starts gatehouse with `settings` (validated like a config file would be).
    pub async fn start(settings: Settings, dir: Option<TempDir>) -> TestApp {
        settings
            .validate(chrono::Utc::now())
            .expect("test settings must be valid");
        let app = Application::build(settings.clone()).await.expect("build app");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        let test_app = TestApp {
            addr,
            http: reqwest::Client::new(),
            settings,
            shutdown,
            handle: Some(handle),
            _dir: dir,
        };
        test_app.wait_ready(Duration::from_secs(20)).await;
        test_app
    }

    /// Spawns gatehouse with test defaults plus `configure`.
    pub async fn spawn(configure: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = TempDir::new();
        let mut settings = test_settings(&dir);
        configure(&mut settings);
        TestApp::start(settings, Some(dir)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn prefix(&self) -> &str {
        &self.settings.queue.prefix
    }

    pub async fn ready(&self) -> bool {
        matches!(self.http.get(self.url("/readyz")).send().await, Ok(r) if r.status() == 200)
    }

    /// Waits until `/readyz` is green (panics after `timeout`).
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.ready().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gatehouse did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs `body` as JSON with extra headers.
    pub async fn post(&self, path: &str, body: &[u8], headers: &[(&str, String)]) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Shuts down gracefully and waits for the run to end.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
