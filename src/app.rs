//! Wiring: [`Application::build`] turns settings into running parts (store, queue, HTTP
//! listener); [`Application::run`] serves until a shutdown token is cancelled, then stops in
//! order: stop accepting, let in-flight requests finish (bounded by
//! `server.shutdown_grace_seconds`), close the broker connection, close the store.
//!
//! Tests build the same application on port 0 (see `tests/it/helpers.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{QueueBackend, Settings};
use crate::ingress::{self, IngressState};
use crate::queue::Queue;
use crate::queue::rabbitmq::RabbitQueue;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Installs ring as rustls's process-wide crypto provider (reqwest and lapin both use rustls).
/// Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A built, not yet running, gatehouse.
pub struct Application {
    settings: Arc<Settings>,
    listener: TcpListener,
    state: Arc<IngressState>,
    queue: Arc<dyn Queue>,
    store: Store,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("listen", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the store (migrating it), starts the queue connection, binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        install_crypto_provider();
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new());
        if let Some(atlassian) = &settings.atlassian {
            metrics.atlassian.observe_token_expiry(atlassian);
        }
        let store = Store::connect(&settings.store)
            .await
            .context("opening the store")?;
        let queue: Arc<dyn Queue> = match settings.queue.backend {
            QueueBackend::Rabbitmq => Arc::new(RabbitQueue::start(settings.queue.clone(), metrics.clone())),
        };
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("binding {}", settings.server.listen))?;
        let state = Arc::new(IngressState::new(
            settings.clone(),
            queue.clone(),
            store.clone(),
            metrics,
        ));
        Ok(Application {
            settings,
            listener,
            state,
            queue,
            store,
        })
    }

    /// Where the ingress listens (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.server.listen)
    }

    pub fn queue(&self) -> Arc<dyn Queue> {
        self.queue.clone()
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Serves until `shutdown` is cancelled, then shuts down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.settings.server.shutdown_grace_seconds);
        let addr = self.local_addr();
        let router = ingress::router(self.state.clone());
        let server =
            axum::serve(self.listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        tracing::info!(%addr, "gatehouse ingress listening");
        let mut server = std::pin::pin!(server.into_future());
        let served = tokio::select! {
            result = &mut server => result,
            _ = shutdown.cancelled() => {
                tracing::info!(grace_seconds = grace.as_secs(), "shutting down: finishing in-flight requests");
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("shutdown grace period over; dropping unfinished requests");
                        Ok(())
                    }
                }
            }
        };
        self.queue.close().await;
        self.store.close().await;
        tracing::info!("gatehouse stopped");
        served.context("HTTP server failed")
    }
}
