//! RabbitMQ behind the [`Queue`] trait: a supervised connection that heals itself, publishes
//! with confirms, and consumers that resubscribe after every reconnect.
//!
//! One background task (the supervisor) owns the connection. It connects, declares the topology,
//! opens confirm-mode channels, and then waits until the connection breaks (broker restart,
//! network cut, a channel error seen by a publisher) or shutdown is asked for; after a break it
//! reconnects with capped exponential backoff. While there is no healthy connection, publishes
//! fail at once with [`PublishError::Unavailable`] (so the ingress answers 503 fast) and
//! readiness is red. Nothing here restarts the process.

mod consumer;
mod dead_letter_recorder;
pub mod headers;
pub mod topology;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use prometheus_client::metrics::histogram::Histogram;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Consumer, OutgoingMessage, PublishError, Queue, QueueDepths, QueueError};
use crate::config::QueueSettings;

pub use topology::Topology;

/// AMQP `delivery_mode` 2: the broker writes the message to disk (with quorum queues, to a
/// majority of nodes) before confirming it.
const PERSISTENT: u8 = 2;

/// A live connection with its publishing channels.
struct Link {
    connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// Cancelled by whoever notices this link is unusable; the supervisor then replaces it.
    broken: CancellationToken,
}

impl Link {
    /// Round-robin over the confirm channels, so many publishes are in flight at once.
    fn channel(&self) -> &Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[i]
    }

    fn healthy(&self) -> bool {
        !self.broken.is_cancelled()
            && self.connection.status().connected()
            && self.channels.iter().all(|c| c.status().connected())
    }
}

struct Shared {
    settings: QueueSettings,
    topology: Topology,
    /// Time from publish to the broker's confirm (`gatehouse_publish_confirm_seconds`).
    publish_confirm_seconds: Histogram,
    link: RwLock<Option<Arc<Link>>>,
    /// Signalled every time a new link is installed (tests and CLI commands wait on it).
    connected: tokio::sync::Notify,
    shutdown: CancellationToken,
}

impl Shared {
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
                self.publish_confirm_seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable(routing_key.to_owned())),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
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
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
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

    /// Starts moving `.dead` into the store's dead letters (see [`dead_letters`]). Runs until
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

/// Keeps a healthy link installed until shutdown.
async fn supervise(shared: Arc<Shared>) {
    let mut backoff = crate::pacing::OutageBackoff::new(
        Duration::from_millis(100),
        Duration::from_millis(shared.settings.reconnect_max_delay_ms),
    );
    let mut attempt: u32 = 0;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        attempt += 1;
        let connect_timeout = Duration::from_millis(shared.settings.connect_timeout_ms);
        let opened = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            opened = tokio::time::timeout(connect_timeout, open_link(&shared)) => opened,
        };
        match opened {
            Ok(Ok(link)) => {
                let link = Arc::new(link);
                shared.set(Some(link.clone()));
                shared.connected.notify_waiters();
                tracing::info!(url = %shared.settings.url, attempt, "connected to RabbitMQ");
                attempt = 0;
                backoff.reset();
                let reason = wait_until_broken(&shared, &link).await;
                shared.set(None);
                close_link(&link).await;
                match reason {
                    None => break,
                    Some(reason) => tracing::warn!(%reason, "lost RabbitMQ connection; reconnecting"),
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, attempt, retry_in_ms = backoff.delay().as_millis() as u64, "cannot connect to RabbitMQ");
            }
            Err(_) => {
                tracing::warn!(
                    attempt,
                    retry_in_ms = backoff.delay().as_millis() as u64,
                    "connecting to RabbitMQ timed out"
                );
            }
        }
        if !backoff.wait(&shared.shutdown).await {
            break;
        }
    }
    if let Some(link) = shared.current() {
        shared.set(None);
        close_link(&link).await;
    }
}

async fn open_link(shared: &Shared) -> Result<Link, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name("gatehouse".into());
    let connection = Connection::connect(shared.settings.url.expose(), properties).await?;
    match open_channels(shared, &connection).await {
        Ok(channels) => Ok(Link {
            connection,
            channels,
            next: AtomicUsize::new(0),
            broken: CancellationToken::new(),
        }),
        Err(error) => {
            // Dropping a connection does not close it: say goodbye so the broker frees it.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                connection.close(200, "setup failed".into()),
            )
            .await;
            Err(error)
        }
    }
}

async fn open_channels(shared: &Shared, connection: &Connection) -> Result<Vec<Channel>, lapin::Error> {
    let declare = connection.create_channel().await?;
    shared.topology.declare(&declare).await?;
    let _ = declare.close(200, "topology declared".into()).await;
    let mut channels = Vec::with_capacity(shared.settings.publish_channels);
    for _ in 0..shared.settings.publish_channels {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Returns `None` on shutdown, or why the link broke.
async fn wait_until_broken(shared: &Shared, link: &Link) -> Option<String> {
    let mut events = link.connection.events_listener();
    // Events report most failures at once; the poll catches a channel closed by the broker,
    // which raises no connection event.
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return None,
            _ = link.broken.cancelled() => return Some("a publish failed on this connection".to_owned()),
            event = events.next() => match event {
                Some(lapin::Event::Error(error)) => return Some(error.to_string()),
                Some(lapin::Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(%reason, "RabbitMQ blocked publishing (resource alarm)");
                }
                Some(lapin::Event::ConnectionUnblocked) => tracing::info!("RabbitMQ unblocked publishing"),
                Some(_) => {}
                None => return Some("connection event stream ended".to_owned()),
            },
            _ = poll.tick() => {
                if !link.healthy() {
                    return Some("connection or channel closed".to_owned());
                }
            }
        }
    }
}

async fn close_link(link: &Link) {
    // Best effort, bounded: a dead connection cannot say goodbye.
    let close = async {
        for channel in &link.channels {
            if channel.status().connected() {
                let _ = channel.wait_for_confirms().await;
                let _ = channel.close(200, "bye".into()).await;
            }
        }
        if link.connection.status().connected() {
            let _ = link.connection.close(200, "bye".into()).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
}
