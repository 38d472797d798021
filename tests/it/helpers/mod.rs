//! Shared test helpers: spawning gatehouse on port 0 with a private queue prefix and store,
//! signing deliveries the way each sender does, observing what reached the exchange, and a TCP
//! proxy that can cut or stall the broker connection.

pub mod observer;
pub mod proxy;
pub mod receiver;
pub mod signing;
pub mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse::app::{Application, Roles};
use gatehouse::config::{
    QueueBackend, Secret, SensitiveUrl, Settings, SourceSecret, SourceSettings, VerificationScheme,
};
use gatehouse::queue::Queue;
use gatehouse::store::Store;
use gatehouse::telemetry::Metrics;
use gatehouse::worker::Process;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use observer::Observer;
pub use proxy::TcpProxy;

/// An HTTP client for tests. reqwest is built without a default TLS provider (gatehouse installs
/// ring's at start-up); a test may make requests before any gatehouse started, so install it here.
pub fn http() -> reqwest::Client {
    gatehouse::app::install_crypto_provider();
    reqwest::Client::new()
}

pub fn amqp_url() -> String {
    std::env::var("GATEHOUSE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The broker's address (for proxies in front of it).
pub fn broker_addr() -> SocketAddr {
    let url = url::Url::parse(&amqp_url()).unwrap();
    let host = url.host_str().unwrap().to_owned();
    format!("{host}:{}", url.port().unwrap_or(5672)).parse().unwrap()
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
    SourceSettings::new(name, scheme, secrets)
}

/// Settings for a test: port 0, a unique queue prefix, a SQLite store in `dir`.
pub fn test_settings(dir: &TempDir) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_seconds = 5;
    settings.queue.backend = QueueBackend::Rabbitmq;
    settings.queue.url = gatehouse::config::BrokerUrls::new(amqp_url());
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
    pub queue: Arc<dyn Queue>,
    pub store: Store,
    pub audit: gatehouse::audit::AuditLog,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<TempDir>,
}

impl TestApp {
    /// Builds and starts gatehouse with `settings` (validated like a config file would be).
    pub async fn start(settings: Settings, dir: Option<TempDir>) -> TestApp {
        TestApp::launch(settings, dir, Roles::ALL, None).await
    }

    /// Like [`TestApp::start`], with chosen roles (and the configured policies).
    pub async fn start_roles(settings: Settings, dir: Option<TempDir>, roles: Roles) -> TestApp {
        TestApp::launch(settings, dir, roles, None).await
    }

    /// Like [`TestApp::start`], with chosen roles and a scripted processor.
    pub async fn start_with(
        settings: Settings,
        dir: Option<TempDir>,
        roles: Roles,
        processor: Arc<dyn Process>,
    ) -> TestApp {
        TestApp::launch(settings, dir, roles, Some(processor)).await
    }

    async fn launch(
        settings: Settings,
        dir: Option<TempDir>,
        roles: Roles,
        processor: Option<Arc<dyn Process>>,
    ) -> TestApp {
        // RUST_LOG=gatehouse=debug shows the app's logs for a failing test. Only then: a global
        // subscriber filtering out warnings would make tracing cache "not interested" for
        // callsites that the log-capturing tests need to see.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        settings
            .validate(chrono::Utc::now())
            .expect("test settings must be valid");
        let app = match processor {
            Some(processor) => Application::build_with(settings.clone(), roles, processor).await,
            None => Application::build_roles(settings.clone(), roles).await,
        }
        .expect("build app");
        let addr = app.local_addr();
        let queue = app.queue();
        let store = app.store();
        let audit = app.audit();
        let metrics = app.metrics();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        let test_app = TestApp {
            addr,
            http: crate::helpers::http(),
            settings,
            queue,
            store,
            audit,
            metrics,
            shutdown,
            handle: Some(handle),
            _dir: dir,
        };
        test_app.wait_ready(Duration::from_secs(20)).await;
        test_app
    }

    /// Kills the process's work at once, as a crash would: nothing is settled or closed. Its
    /// data folder, if it owns one, is handed back: other processes may still be using the
    /// store in it (dropping it would delete their database under them).
    #[must_use = "dropping the folder deletes the store other processes may share"]
    pub fn kill(mut self) -> Option<TempDir> {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
        self._dir.take()
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
    /// Shuts down gracefully, then deletes the prefix's queues (the test is over).
    pub async fn stop(mut self) {
        self.shutdown_in_place().await;
        if self.settings.queue.backend == QueueBackend::Rabbitmq {
            delete_topology(&self.settings).await;
        }
    }

    /// Shuts down gracefully and keeps the queues, for a test that starts another process on
    /// the same prefix.
    pub async fn shutdown(mut self) {
        self.shutdown_in_place().await;
    }

    async fn shutdown_in_place(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }
}

/// Deletes a test prefix's exchange and queues, so test runs do not pile up quorum queues on the
/// broker.
pub async fn delete_topology(settings: &Settings) {
    let topology = gatehouse::queue::rabbitmq::Topology::new(&settings.queue);
    // A busy broker may refuse a connection now and then: try a few times, and say so if the
    // queues stay behind.
    let mut connection = None;
    for _ in 0..5 {
        match lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await {
            Ok(opened) => {
                connection = Some(opened);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let Some(connection) = connection else {
        eprintln!(
            "could not delete the queues of {}: broker unreachable",
            settings.queue.prefix
        );
        return;
    };
    let stream = gatehouse::audit::stream::stream_name(&settings.queue.prefix);
    topology.delete(&connection, &[&stream]).await;
    let _ = connection.close(200, "cleaned up".into()).await;
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // A test that fails never reaches `stop`: delete its queues all the same, or failing
        // runs pile quorum queues up on the shared broker. On a thread of its own, as a drop
        // cannot await and the test's runtime may be unwinding.
        if std::thread::panicking() && self.settings.queue.backend == QueueBackend::Rabbitmq {
            let settings = self.settings.clone();
            let cleanup = std::thread::spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    runtime.block_on(delete_topology(&settings));
                }
            });
            let _ = cleanup.join();
        }
    }
}

/// Runs the `gatehouse` binary with `args` (awaited asynchronously, so an in-process simulator
/// keeps serving meanwhile): whether it succeeded, its stdout and its stderr.
pub async fn run_gatehouse(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Keeps a second dispatcher registered while a test captures logs with a scoped subscriber.
///
/// With exactly one dispatcher registered, tracing decides a callsite's interest from whichever
/// thread reaches it first: a parallel test (no subscriber) reaching the ingress's `debug!` lines
/// first marks them "never", and the capturing test then sees nothing. With two, every callsite is
/// asked of every live dispatcher, so the capturing thread's lines are always offered to it.
pub fn interest_from_every_subscriber() -> tracing::Dispatch {
    let second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();
    second
}
