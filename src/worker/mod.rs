//! The worker: consume the work queue, claim each event's dedupe key, process it, and settle the
//! delivery only once what it must record is durable.
//!
//! Concurrency is bounded (`worker.concurrency`) under the queue's prefetch. Shutdown is
//! explicit ([`WorkerHandle::shutdown`]): stop taking messages, give back those received but not
//! started, let in-flight events finish within the grace period, and leave anything still running
//! after it unsettled, so the queue hands it out again (RabbitMQ when the channel closes, the
//! embedded queue when it closes). Nothing is acked that was not done.

mod handling;
mod housekeeping;
pub mod processor;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::outbound::Outbox;
use crate::queue::{Queue, QueueError};
use crate::store::Store;
use crate::telemetry::Metrics;

pub use processor::{Admission, Process, ProcessError, Processed};

/// What one event's processing needs.
struct Context {
    settings: Arc<Settings>,
    store: Store,
    audit: AuditLog,
    processor: Arc<dyn Process>,
    metrics: Arc<Metrics>,
    /// The outbound deliveries an event makes, written with its claim.
    outbox: Outbox,
    /// Identifies this worker's claims.
    owner: String,
    /// Cancelled when shutdown begins (claim retries stop waiting).
    stopping: CancellationToken,
}

/// A running worker. Dropping it kills the worker at once (in-flight events are abandoned
/// unsettled, as if the process died); [`WorkerHandle::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct WorkerHandle {
    stopping: CancellationToken,
    task: Option<JoinHandle<()>>,
    housekeeping: JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops consuming, gives back what was not started, waits up to the grace period for
    /// in-flight events, and returns once the worker is gone.
    pub async fn shutdown(mut self) {
        self.stopping.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.housekeeping.abort();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts consuming. Fails only if the subscription cannot be set up at all. The worker begins
/// to stop when `stopping` is cancelled (the process's shutdown: at the same moment the
/// Atlassian clients stop waiting to retry, so an event they give up on is handed back) or at
/// [`WorkerHandle::shutdown`].
pub async fn start(
    settings: Arc<Settings>,
    (queue, store, audit): (Arc<dyn Queue>, Store, AuditLog),
    processor: Arc<dyn Process>,
    metrics: Arc<Metrics>,
    stopping: &CancellationToken,
) -> Result<WorkerHandle, QueueError> {
    let consumer = queue.consume(settings.queue.prefetch).await?;
    let stopping = stopping.child_token();
    let context = Arc::new(Context {
        settings: settings.clone(),
        store: store.clone(),
        audit,
        processor,
        metrics: metrics.clone(),
        outbox: Outbox::from_settings(&settings),
        owner: format!("worker-{}", ulid::Ulid::generate()),
        stopping: stopping.clone(),
    });
    let housekeeping = tokio::spawn(housekeeping::run(settings.clone(), queue, store, metrics));
    let task = tokio::spawn(run(context, consumer, stopping.clone()));
    Ok(WorkerHandle {
        stopping,
        task: Some(task),
        housekeeping,
    })
}

async fn run(context: Arc<Context>, mut consumer: crate::queue::Consumer, stopping: CancellationToken) {
    let settings = context.settings.clone();
    let slots = Arc::new(Semaphore::new(settings.worker.concurrency));
    let mut in_flight = JoinSet::new();
    tracing::info!(concurrency = settings.worker.concurrency, owner = %context.owner, "worker started");
    loop {
        while in_flight.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = stopping.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let delivery = tokio::select! {
            _ = stopping.cancelled() => break,
            delivery = consumer.deliveries.recv() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        let context = context.clone();
        in_flight.spawn(async move {
            handling::handle(&context, delivery).await;
            drop(slot);
        });
    }

    // Shutdown: nothing new, give back what was received but not started...
    let unstarted = consumer.stop().await;
    let given_back = unstarted.len();
    for delivery in unstarted {
        if let Err(error) = delivery.release().await {
            tracing::warn!(%error, "cannot give a delivery back; the queue will hand it out again later");
        }
    }
    // ...and let in-flight events finish within the grace period.
    let grace = Duration::from_secs(settings.worker.shutdown_grace_seconds);
    let running = in_flight.len();
    tracing::info!(
        running,
        given_back,
        grace_seconds = grace.as_secs(),
        "worker stopping"
    );
    let drained = tokio::time::timeout(grace, async { while in_flight.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            unfinished = in_flight.len(),
            "grace period over: unfinished events are left unsettled and will be handed out again"
        );
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
    }
    tracing::info!("worker stopped");
}
