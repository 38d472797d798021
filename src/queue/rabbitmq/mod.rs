//! RabbitMQ behind the [`Queue`] trait: a supervised connection that heals itself, publishes
//! with confirms, and consumers that resubscribe after every reconnect.
//!
//! One background task (the supervisor, `connection`) owns the connection and replaces it when
//! it breaks. While there is no healthy connection, publishes
//! fail at once with [`PublishError::Unavailable`] (so the ingress answers 503 fast) and
//! readiness is red. Nothing here restarts the process.

mod connection;
mod consumer;
mod dead_letter_recorder;
pub mod headers;
pub mod topology;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation};
use prometheus_client::metrics::histogram::Histogram;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use connection::{Link, supervise};

use super::{Consumer, OutgoingMessage, PublishError, Queue, QueueDepths, QueueError};
use crate::config::QueueSettings;

pub use topology::Topology;

/// AMQP `delivery_mode` 2: the broker writes the message to disk (with quorum queues, to a
/// majority of nodes) before confirming it.
const PERSISTENT: u8 = 2;

/// What the queue's handle, its supervisor and its consumers share.
struct BackendState {
    settings: QueueSettings,
    topology: Topology,
    /// Time from publish to the broker's confirm (`gatehouse_publish_confirm_seconds`).
    publish_confirm_seconds: Histogram,
    link: RwLock<Option<Arc<Link>>>,
    /// Signalled every time a new link is installed (tests and CLI commands wait on it).
    connected: tokio::sync::Notify,
    shutdown: CancellationToken,
}

impl BackendState {
    fn current(&self) -> Option<Arc<Link>> {
        self.link.read().ok().and_then(|guard| guard.clone())
    }

    /// The current link if it is healthy.
    fn healthy(&self) -> Option<Arc<Link>> {
        self.current().filter(|link| link.healthy())
    }

    /// Waits for a healthy link; `None` when `stop` is cancelled first.
    async fn wait_for_link(&self, stop: &CancellationToken) -> Option<Arc<Link>> {
        loop {
            let notified = self.connected.notified();
            if let Some(link) = self.healthy() {
                return Some(link);
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = self.shutdown.cancelled() => return None,
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Publishes with a confirm (and `mandatory`, so an unroutable message is an error), within
    /// the publish timeout.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let link = self.healthy().ok_or(PublishError::Unavailable)?;
        let exchange = ShortString::try_new(exchange)
            .map_err(|e| PublishError::Broker(format!("exchange name: {e}")))?;
        let key = ShortString::try_new(routing_key)
            .map_err(|e| PublishError::Broker(format!("routing key too long: {e}")))?;
        let options = BasicPublishOptions {
            // An unroutable publish comes back as an error instead of vanishing.
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let timeout = Duration::from_millis(self.settings.publish_timeout_ms);
        let started = Instant::now();
        let publish = async {
            link.channel()
                .basic_publish(exchange, key, options, body, properties)
                .await?
                .await
        };
        let confirmation = match tokio::time::timeout(timeout, publish).await {
            Err(_) => return Err(PublishError::Timeout(timeout)),
            Ok(Err(error)) => {
                // A channel or connection error: this link is done for, let the supervisor
                // build a new one.
                link.broken.cancel();
                return Err(PublishError::Broker(error.to_string()));
            }
            Ok(Ok(confirmation)) => confirmation,
        };
        match confirmation {
            Confirmation::Ack(None) => {
                link.confirmed();
                self.publish_confirm_seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable(routing_key.to_owned())),
            Confirmation::Nack(_) => {
                link.refused();
                Err(PublishError::Nacked)
            }
            Confirmation::NotRequested => {
                link.broken.cancel();
                Err(PublishError::Broker("channel is not in confirm mode".to_owned()))
            }
        }
    }

    fn set(&self, link: Option<Arc<Link>>) {
        if let Ok(mut guard) = self.link.write() {
            *guard = link;
        }
    }
}

/// The RabbitMQ queue backend.
pub struct RabbitQueue {
    shared: Arc<BackendState>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("url", &self.shared.settings.url)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl RabbitQueue {
    /// Starts the supervisor; returns at once, connected or not (readiness tells).
    pub fn start(settings: QueueSettings, publish_confirm_seconds: Histogram) -> Self {
        let shared = Arc::new(BackendState {
            topology: Topology::new(&settings),
            settings,
            publish_confirm_seconds,
            link: RwLock::new(None),
            connected: tokio::sync::Notify::new(),
            shutdown: CancellationToken::new(),
        });
        let supervisor = tokio::spawn(supervise(shared.clone()));
        RabbitQueue {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        }
    }

    /// Waits until a healthy connection is up, or `timeout` passes; true when connected.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let never = CancellationToken::new();
        tokio::time::timeout(timeout, self.shared.wait_for_link(&never))
            .await
            .is_ok_and(|link| link.is_some())
    }

    /// Starts moving `.dead` into the store's dead letters (see [`crate::store::dead_letters`]). Runs until
    /// the queue is closed.
    pub fn start_dead_letter_recorder(
        &self,
        store: crate::store::Store,
        audit: crate::audit::AuditLog,
    ) -> JoinHandle<()> {
        dead_letter_recorder::start(self.shared.clone(), store, audit)
    }
}

/// Ready messages in `queue` (a passive declare on a throwaway channel: a missing queue closes
/// the channel it is asked on).
async fn queue_length(link: &Link, queue: &str) -> Result<u64, QueueError> {
    let channel = link
        .connection
        .create_channel()
        .await
        .map_err(|e| QueueError(e.to_string()))?;
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| QueueError(format!("{queue}: {e}")));
    let _ = channel.close(200, "depth sampled".into()).await;
    Ok(u64::from(declared?.message_count()))
}

/// The properties of a message gatehouse publishes.
fn properties(message: &OutgoingMessage, headers: FieldTable) -> Result<BasicProperties, PublishError> {
    let message_id = ShortString::try_new(message.message_id.as_str())
        .map_err(|e| PublishError::Broker(format!("message id too long: {e}")))?;
    Ok(BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(message_id)
        .with_type(ShortString::try_new(message.event_type.as_str()).unwrap_or_else(|_| "other".into()))
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
        .with_app_id("gatehouse".into())
        .with_headers(headers))
}

#[async_trait]
impl Queue for RabbitQueue {
    async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        let mut table = FieldTable::default();
        headers::set_text(&mut table, headers::EVENT_ID, &message.event_id);
        let properties = properties(message, table)?;
        let exchange = self.shared.topology.events_exchange();
        self.shared
            .publish(exchange, &message.routing_key, &message.body, properties)
            .await
    }

    async fn requeue(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        let mut table = FieldTable::default();
        headers::set_text(&mut table, headers::EVENT_ID, &message.event_id);
        // The work queue is reached through the default exchange, which loses the original
        // routing key: carry it.
        headers::set_text(&mut table, headers::ROUTING_KEY, &message.routing_key);
        let properties = properties(message, table)?;
        let work = self.shared.topology.work_queue();
        self.shared.publish("", work, &message.body, properties).await
    }

    async fn consume(&self, prefetch: u16) -> Result<Consumer, QueueError> {
        let queue = self.shared.topology.work_queue().to_owned();
        let shared = self.shared.clone();
        let (deliveries, stop, task) =
            consumer::subscribe(self.shared.clone(), queue, prefetch, move |delivery| {
                consumer::to_delivery(shared.clone(), delivery)
            });
        Ok(Consumer::new(deliveries, stop, task))
    }

    async fn depths(&self) -> Result<QueueDepths, QueueError> {
        let link = self
            .shared
            .healthy()
            .ok_or_else(|| QueueError("not connected to RabbitMQ".to_owned()))?;
        let topology = &self.shared.topology;
        let work = queue_length(&link, topology.work_queue()).await?;
        let mut retry = 0;
        for name in topology.retry_queues() {
            retry += queue_length(&link, name).await?;
        }
        Ok(QueueDepths {
            work,
            retry,
            oldest_age_seconds: None,
        })
    }

    fn is_ready(&self) -> bool {
        self.shared.healthy().is_some()
    }

    async fn close(&self) {
        self.shared.shutdown.cancel();
        let handle = self.supervisor.lock().ok().and_then(|mut guard| guard.take());
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}
