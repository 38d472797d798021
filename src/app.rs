//! Wiring: [`Application::build`] turns settings into running parts (store, queue, HTTP
//! listener, worker); [`Application::run`] serves until a shutdown token is cancelled, then stops
//! in order: stop accepting requests and consuming, let in-flight requests and events finish
//! (bounded by the grace periods), close the queue, close the store.
//!
//! One binary, two roles: the ingress (webhooks in, envelopes onto the queue) and the worker
//! (envelopes off the queue, reactions out). `gatehouse serve` runs both; `gatehouse ingress` and
//! `gatehouse worker` run one each, so they scale separately against one RabbitMQ cluster. Every
//! role serves `/healthz`, `/readyz` and `/metrics`.
//!
//! Tests build the same application on port 0 (see `tests/it/helpers`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::atlassian::{AtlassianClients, ClientDeps};
use crate::audit::{AuditLog, AuditRelay};
use crate::config::{QueueBackend, Settings};
use crate::ingress::{self, IngressState};
use crate::poll::org_events::OrgEventsPoller;
use crate::poll::reconcile::Reconciler;
use crate::poll::run_singleton;
use crate::queue::Queue;
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::rabbitmq::RabbitQueue;
use crate::reactions::live::LivePerformer;
use crate::reactions::tenants::TenantReactors;
use crate::reactions::{Executor, Planner, Reactor};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::worker::{self, Process};

pub use crate::tls::install_crypto_provider;

/// Which parts of gatehouse a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub ingress: bool,
    pub worker: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        ingress: true,
        worker: true,
    };
    pub const INGRESS: Roles = Roles {
        ingress: true,
        worker: false,
    };
    pub const WORKER: Roles = Roles {
        ingress: false,
        worker: true,
    };
}

/// The queue backend in use, kept concrete where a role needs backend-specific parts.
#[derive(Debug, Clone)]
enum RunningQueue {
    Embedded(Arc<EmbeddedQueue>),
    Rabbitmq(Arc<RabbitQueue>),
}

impl RunningQueue {
    fn queue(&self) -> Arc<dyn Queue> {
        match self {
            RunningQueue::Embedded(queue) => queue.clone(),
            RunningQueue::Rabbitmq(queue) => queue.clone(),
        }
    }
}

/// Opens the queue backend the settings name (RabbitMQ connects in the background).
fn open_backend(
    settings: &Settings,
    store: &Store,
    audit: &AuditLog,
    metrics: &Arc<Metrics>,
) -> RunningQueue {
    match settings.queue.backend {
        QueueBackend::Embedded => RunningQueue::Embedded(Arc::new(EmbeddedQueue::new(
            store.clone(),
            settings.queue.clone(),
            audit.clone(),
        ))),
        QueueBackend::Rabbitmq => RunningQueue::Rabbitmq(Arc::new(RabbitQueue::start(
            settings.queue.clone(),
            metrics.publish_confirm_seconds.clone(),
        ))),
    }
}

/// Opens (and migrates) the store `settings` name.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.store).await.context("opening the store")
}

/// Opens the queue for a one-off command (`dlq replay`, `approvals approve`): no listener, no
/// worker; fails when RabbitMQ cannot be reached soon.
pub async fn open_queue(settings: &Settings, store: &Store) -> anyhow::Result<Arc<dyn Queue>> {
    let metrics = Arc::new(Metrics::new());
    let audit = AuditLog::from_settings(store.clone(), settings);
    let backend = open_backend(settings, store, &audit, &metrics);
    if let RunningQueue::Rabbitmq(rabbit) = &backend
        && !rabbit
            .wait_ready(Duration::from_millis(
                settings.queue.connect_timeout_ms.max(1_000) * 2,
            ))
            .await
    {
        rabbit.close().await;
        anyhow::bail!("cannot reach RabbitMQ at {}", settings.queue.url);
    }
    Ok(backend.queue())
}

/// Every tenant's Atlassian clients, by tenant name (a tenant configured without any has none).
pub type TenantClients = BTreeMap<String, Arc<AtlassianClients>>;

/// The Atlassian clients of every configured tenant; their calls stop waiting to retry once
/// `stopping` is cancelled.
fn atlassian_clients(
    settings: &Settings,
    store: &Store,
    metrics: &Metrics,
    stopping: &CancellationToken,
) -> anyhow::Result<TenantClients> {
    settings
        .tenant_configs()
        .into_iter()
        .map(|(key, tenant)| {
            let clients = AtlassianClients::build(
                tenant,
                ClientDeps::new(Some(store.clone()), metrics.atlassian.clone())
                    .stopping_with(stopping.clone()),
            )
            .with_context(|| format!("setting up the Atlassian clients of {key}"))?;
            Ok((tenant.tenant_name(), Arc::new(clients)))
        })
        .collect()
}

/// The clients of the tenant a command names (`--tenant`, or the only one), with its name.
pub fn clients_for(
    settings: &Settings,
    requested: Option<&str>,
    store: &Store,
    metrics: &Metrics,
) -> anyhow::Result<(String, Option<Arc<AtlassianClients>>)> {
    let tenant = settings.choose_tenant(requested).map_err(anyhow::Error::msg)?;
    let clients = match settings.tenant(&tenant) {
        Some(config) => Some(Arc::new(
            AtlassianClients::build(
                config,
                ClientDeps::new(Some(store.clone()), metrics.atlassian.clone()),
            )
            .with_context(|| format!("setting up the Atlassian clients of tenant `{tenant}`"))?,
        )),
        None => None,
    };
    Ok((tenant, clients))
}

/// The worker's processor: each tenant's policies, performing through its live clients.
fn reactor(
    settings: &Settings,
    store: &Store,
    audit: &AuditLog,
    queue: Arc<dyn Queue>,
    clients: &TenantClients,
) -> Arc<dyn Process> {
    let names = settings.tenant_names();
    let reactors = names
        .iter()
        .map(|tenant| {
            let clients = clients.get(tenant).cloned();
            let planner = Planner::from_settings(settings, tenant, clients.as_deref());
            let performer = Arc::new(LivePerformer::new(clients, queue.clone()));
            let executor = Executor::new(store.clone(), audit.clone(), performer, settings);
            let reactor = Reactor::new(tenant, planner, executor, store.clone());
            (tenant.clone(), Arc::new(reactor) as Arc<dyn Process>)
        })
        .collect();
    let limit = settings.worker.effective_tenant_concurrency(names.len());
    Arc::new(TenantReactors::new(reactors, limit))
}

/// A built, not yet running, gatehouse.
pub struct Application {
    settings: Arc<Settings>,
    roles: Roles,
    listener: TcpListener,
    state: Arc<IngressState>,
    backend: RunningQueue,
    store: Store,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    processor: Arc<dyn Process>,
    clients: TenantClients,
    /// Cancelled when shutdown begins: stops the background jobs and cuts the Atlassian calls'
    /// waits to retry short (an event waiting out a rate-limit pause is handed back at once
    /// instead of holding the shutdown for its grace period).
    stopping: CancellationToken,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("roles", &self.roles)
            .field("listen", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Builds every role, reacting to events with the configured policies.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_roles(settings, Roles::ALL).await
    }

    /// Builds `roles`, reacting to events with the configured policies.
    pub async fn build_roles(settings: Settings, roles: Roles) -> anyhow::Result<Application> {
        Application::assemble(settings, roles, None).await
    }

    /// Builds `roles`, with `processor` reacting to events instead (tests script their own).
    pub async fn build_with(
        settings: Settings,
        roles: Roles,
        processor: Arc<dyn Process>,
    ) -> anyhow::Result<Application> {
        Application::assemble(settings, roles, Some(processor)).await
    }

    async fn assemble(
        settings: Settings,
        roles: Roles,
        processor: Option<Arc<dyn Process>>,
    ) -> anyhow::Result<Application> {
        install_crypto_provider();
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new());
        for (_, tenant) in settings.tenant_configs() {
            metrics.atlassian.observe_token_expiry(tenant);
        }
        let store = open_store(&settings).await?;
        let census = store
            .credential_census()
            .await
            .context("checking stored credentials")?;
        anyhow::ensure!(
            census.in_clear == 0,
            "{} credential(s) in the store are in clear although store.encryption_key is set: \
             seal them with `gatehouse store seal`",
            census.in_clear
        );
        if census.under_retired_key > 0 {
            tracing::warn!(
                credentials = census.under_retired_key,
                "stored credentials are sealed under a retired key: reseal them with \
                 `gatehouse store seal`, then drop the key from store.retired_encryption_keys"
            );
        }
        if census.unopenable > 0 {
            tracing::error!(
                credentials = census.unopenable,
                "stored credentials open with no configured key (store.encryption_key, \
                 store.retired_encryption_keys): the Connect sites and OAuth grants they belong to \
                 fail until the key that sealed them is listed again"
            );
        }
        let audit = AuditLog::from_settings(store.clone(), &settings);
        let backend = open_backend(&settings, &store, &audit, &metrics);
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("binding {}", settings.server.listen))?;
        let state = Arc::new(IngressState::new(
            settings.clone(),
            backend.queue(),
            store.clone(),
            metrics.clone(),
            roles.ingress,
        ));
        let stopping = CancellationToken::new();
        let clients = atlassian_clients(&settings, &store, &metrics, &stopping)?;
        let processor = match processor {
            Some(processor) => processor,
            None => reactor(&settings, &store, &audit, backend.queue(), &clients),
        };
        Ok(Application {
            settings,
            roles,
            listener,
            state,
            backend,
            store,
            audit,
            metrics,
            processor,
            clients,
            stopping,
        })
    }

    /// Where the HTTP listener is (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.server.listen)
    }

    pub fn queue(&self) -> Arc<dyn Queue> {
        self.backend.queue()
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn audit(&self) -> AuditLog {
        self.audit.clone()
    }

    /// The events-stream poller and the periodic reconciler of each tenant, where configured.
    fn start_pollers(
        &self,
        queue: Arc<dyn Queue>,
        stop: CancellationToken,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let mut tasks = Vec::new();
        let settings = &self.settings;
        let singleton_lease = Duration::from_secs(settings.worker.singleton_lease_seconds);
        for (tenant, clients) in &self.clients {
            let Some(config) = settings.tenant(tenant) else {
                continue;
            };
            if settings.poll.org_events && config.polls_org_events() {
                let poller = OrgEventsPoller::new(
                    tenant,
                    clients.admin()?.clone(),
                    config.org_id.clone(),
                    queue.clone(),
                    self.store.clone(),
                    settings.poll.clone(),
                    self.metrics.poll.clone(),
                );
                tasks.push(tokio::spawn(poller.run(singleton_lease, stop.clone())));
            }
            if settings.reconcile.enabled && config.auth.is_some() {
                let reconciler = Reconciler::new(
                    tenant,
                    settings,
                    clients.confluence()?.clone(),
                    clients.scim().ok().cloned(),
                    self.store.clone(),
                    Some(queue.clone()),
                    self.metrics.poll.clone(),
                );
                let interval = Duration::from_secs(settings.reconcile.interval_seconds);
                let (store, stop, tenant) = (self.store.clone(), stop.clone(), tenant.clone());
                let retry = Duration::from_secs(settings.reconcile.retry_after_failure_seconds);
                tasks.push(tokio::spawn(async move {
                    let lease = format!("reconciler@{tenant}");
                    // Failed rounds in a row: a failed round is tried again after `retry`,
                    // doubling, rather than a whole interval later (a broker still connecting at
                    // start must not cost the first reconciliation 15 minutes).
                    let failures = std::sync::atomic::AtomicU32::new(0);
                    run_singleton(store, &lease, interval, singleton_lease, stop.clone(), || async {
                        if !reconciler.run_recorded().await {
                            failures.store(0, std::sync::atomic::Ordering::Relaxed);
                            return false;
                        }
                        let failed = failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        let wait = crate::pacing::doubling(retry, interval, failed);
                        // Waiting as long as the interval is just the next round.
                        wait < interval && crate::pacing::sleep_unless(wait, &stop).await
                    })
                    .await;
                }));
            }
        }
        Ok(tasks)
    }

    /// Once a minute, in one process at a time (the lease `approvals-sweep`): expires plans that
    /// waited for approval longer than `reactions.approval_ttl`, and queues approved plans whose
    /// queuing after the decision did not complete (each once: several sweepers would queue one
    /// plan several times, with a record each).
    fn sweep_approvals(&self, queue: Arc<dyn Queue>, stop: CancellationToken) -> JoinHandle<()> {
        use crate::reactions::approvals::{Deciders, expire_overdue, queue_unqueued};
        let audit = self.audit.clone();
        let store = self.store.clone();
        let outbox = crate::outbound::Outbox::from_settings(&self.settings);
        let ttl = self.settings.reactions.approval_ttl;
        let lease = Duration::from_secs(self.settings.worker.singleton_lease_seconds);
        tokio::spawn(async move {
            run_singleton(store, "approvals-sweep", Duration::from_secs(60), lease, stop, || async {
                let deciders = Deciders::new(&audit, &outbox);
                match expire_overdue(deciders, ttl).await {
                    Ok(0) => {}
                    Ok(expired) => tracing::info!(expired, "expired plans that waited too long for approval"),
                    Err(error) => {
                        tracing::warn!(%error, "cannot expire overdue approvals; trying again in a minute")
                    }
                }
                // A minute after the decision: the decider's own publish has long ended by then.
                let decided_before = chrono::Utc::now() - chrono::Duration::minutes(1);
                if let Err(error) = queue_unqueued(deciders, queue.as_ref(), ttl, decided_before).await {
                    tracing::warn!(%error, "cannot queue approved plans left unqueued; trying again in a minute");
                }
                false
            })
            .await;
        })
    }

    /// Serves until `shutdown` is cancelled, then shuts down gracefully. Dropped before that
    /// (its task aborted), it ends its background jobs with it, as a crash would.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let queue = self.backend.queue();
        let mut background = Background(Vec::new());
        let stopping = self.stopping.clone();
        let worker = if self.roles.worker {
            if let RunningQueue::Rabbitmq(rabbit) = &self.backend {
                background
                    .0
                    .push(rabbit.start_dead_letter_recorder(self.store.clone(), self.audit.clone()));
                // Subscribers replay the trail from the `.audit` stream; with the embedded
                // backend they read it from the store (`audit tail`, `GET /audit`).
                background.0.push(AuditRelay::start(
                    self.store.clone(),
                    &self.settings,
                    stopping.clone(),
                ));
            }
            background
                .0
                .extend(self.start_pollers(queue.clone(), stopping.clone())?);
            for clients in self.clients.values() {
                // This process's share of each tenant's rate budget, among every worker's.
                let (clients, store, stop) = (clients.clone(), self.store.clone(), stopping.clone());
                background
                    .0
                    .push(tokio::spawn(async move { clients.keep_share(store, stop).await }));
            }
            background
                .0
                .push(self.sweep_approvals(queue.clone(), stopping.clone()));
            let sender = crate::outbound::sender::Sender::from_settings(
                &self.settings,
                self.store.clone(),
                self.metrics.outbound.clone(),
            )
            .context("setting up outbound deliveries")?;
            if sender.is_empty() {
                // Nothing to send to; deliveries left for endpoints removed are still said.
                background
                    .0
                    .push(tokio::spawn(async move { sender.warn_of_orphans().await }));
            } else {
                background.0.push(tokio::spawn(sender.run(stopping.clone())));
            }
            let handle = worker::start(
                self.settings.clone(),
                (queue.clone(), self.store.clone(), self.audit.clone()),
                self.processor.clone(),
                self.metrics.clone(),
                &stopping,
            )
            .await
            .context("starting the worker")?;
            Some(handle)
        } else {
            None
        };

        let grace = Duration::from_secs(self.settings.server.shutdown_grace_seconds);
        let addr = self.local_addr();
        let mut router = ingress::router(self.state.clone(), self.roles.ingress);
        if self.roles.ingress {
            router = router.merge(crate::slack_actions::router(
                self.settings.clone(),
                (self.store.clone(), self.audit.clone()),
                queue.clone(),
                self.metrics.clone(),
            ));
        }
        // Every answer in the one error shape, also for a method a route does not take and for
        // what no route serves. Set before the console is merged: the console answers its own
        // paths, with its security headers.
        let router = router
            .method_not_allowed_fallback(crate::http_error::method_not_allowed)
            .merge(crate::console::router(
                self.settings.clone(),
                self.store.clone(),
                self.audit.clone(),
                queue.clone(),
            ))
            .fallback(crate::http_error::no_such_route);
        let mut limits = crate::listener::ConnectionLimits::from(&self.settings.server);
        // The console believes a proxy's user header only from configured proxy addresses.
        limits.peer_addresses = self.settings.console.enabled;
        let server = crate::listener::serve(
            self.listener,
            router,
            limits,
            self.metrics.connections.clone(),
            shutdown.clone(),
        );
        tracing::info!(%addr, ingress = self.roles.ingress, worker = self.roles.worker, "gatehouse listening");
        // In a block of its own: when the grace period is over, the server (and with it every
        // connection still being served) is dropped here, before the queue and the store close,
        // instead of running on through them and holding a store connection `close` waits for.
        {
            let mut server = std::pin::pin!(server);
            // The server ends only once shutdown began; waiting on shutdown first makes sure the
            // worker is always stopped gracefully too.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    tracing::info!(grace_seconds = grace.as_secs(), "shutting down: finishing in-flight requests and events");
                    // Pollers stop taking new work now (they resume from the store); the recorder and
                    // the relay end with the queue below. Events waiting to retry an Atlassian call
                    // stop waiting and are handed back; the others finish within the grace period.
                    stopping.cancel();
                    let requests = async {
                        if tokio::time::timeout(grace, &mut server).await.is_err() {
                            tracing::warn!("shutdown grace period over; dropping unfinished requests (their connections are closed)");
                        }
                    };
                    let events = async {
                        if let Some(worker) = worker {
                            worker.shutdown().await;
                        }
                    };
                    tokio::join!(requests, events);
                }
                // Serving meanwhile; it ends only after shutdown began (handled above).
                () = &mut server => {}
            }
        }
        queue.close().await;
        stopping.cancel();
        for task in background.0.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.store.close().await;
        tracing::info!("gatehouse stopped");
        Ok(())
    }
}

/// The background jobs of a running process (pollers, relays, sweeps): awaited on a graceful
/// shutdown, aborted when [`Application::run`] is dropped, so nothing of a process that was
/// ended at once (a test's kill) goes on holding leases in the background.
struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
