//! The relay that copies every record, in `seq` order and once, to the RabbitMQ stream
//! `{prefix}.audit`, where any AMQP client can replay it from an offset or a timestamp.
//!
//! Why a relay rather than publishing from `append`: the store is the source of truth and the
//! append must not depend on the broker (a worker whose broker is down must still be able to
//! record that it stopped). The relay tails the store and publishes what is new; a record is in
//! the stream shortly after it is committed, and never before.
//!
//! Exactly once, across restarts and several processes:
//! - **One relay at a time.** Every process may start one (worker and serve roles); they elect a
//!   leader through the broker: the relay that declares the exclusive queue
//!   `{prefix}.audit.relay-lock` holds the lock for as long as its connection lives, and the others
//!   stand by and retry. The lock dies with the connection the leader publishes on, so a relay
//!   that lost its connection can no longer publish either.
//! - **Resume from the stream itself.** On taking the lock the relay reads the stream's last chunk
//!   (`x-stream-offset: "last"`) and takes the highest `seq` in it; it publishes from the next one.
//!   Nothing is remembered elsewhere that could disagree with what subscribers saw.
//! - **Confirms.** Each batch is published with publisher confirms; a batch whose confirm is
//!   missing or negative ends the connection, and the next leader resumes from the stream.
//!
//! Message format: the body is the record as JSON (the shape of `GET /audit`);
//! `message_id` = record id, `type` = kind, `timestamp` = record time (seconds), header
//! `gatehouse-audit-seq` = seq (a long), content type `application/json`, persistent.
//!
//! The stream is declared durable with `x-queue-type: stream` and the retention from
//! `[audit.stream]`: `x-max-age`, `x-max-length-bytes`, `x-stream-max-segment-size-bytes`. Those
//! arguments are fixed at creation: RabbitMQ refuses a later declaration that differs
//! (`PRECONDITION_FAILED`), so changing retention means deleting the stream (the relay then
//! republishes everything still in the store) or setting a policy.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::query::{AuditQuery, query};
use super::record::AuditRecord;
use crate::broker::connect_first;
use crate::config::{AuditStreamSettings, Settings};
use crate::pacing::{OutageBackoff, pause, sleep_unless};
use crate::store::Store;

/// The header carrying a record's `seq`.
pub const SEQ_HEADER: &str = "gatehouse-audit-seq";

/// The stream's name under `prefix`.
pub fn stream_name(prefix: &str) -> String {
    format!("{prefix}.audit")
}

/// The exclusive queue whose holder is the one active relay.
pub fn lock_queue_name(prefix: &str) -> String {
    format!("{prefix}.audit.relay-lock")
}

/// Declares the stream with its retention arguments (idempotent while they do not change).
pub async fn declare_stream(
    channel: &Channel,
    name: &str,
    settings: &AuditStreamSettings,
) -> Result<(), lapin::Error> {
    let mut arguments = FieldTable::default();
    // A stream: an append-only log that consumers read from any offset, without removing.
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
    // Retention: whole segments older than this are deleted…
    arguments.insert(
        "x-max-age".into(),
        AMQPValue::LongString(settings.max_age.as_str().into()),
    );
    // …and the oldest segments go once the stream is larger than this.
    arguments.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(settings.max_length_bytes).unwrap_or(i64::MAX)),
    );
    // Retention works segment by segment; smaller segments make it finer-grained.
    arguments.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(settings.max_segment_size_bytes).unwrap_or(i64::MAX)),
    );
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                // Streams must be durable; the audit copy survives broker restarts.
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

/// The highest `seq` in the stream (0 when it is empty), read from its last chunk.
pub async fn last_published_seq(connection: &Connection, stream: &str) -> Result<u64, RelayError> {
    let channel = connection.create_channel().await?;
    let result = read_last_seq(&channel, stream).await;
    let _ = channel.close(200, "read tail".into()).await;
    result
}

async fn read_last_seq(channel: &Channel, stream: &str) -> Result<u64, RelayError> {
    let declared = channel
        .queue_declare(
            stream.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    if declared.message_count() == 0 {
        return Ok(0);
    }
    // Stream consumers must ack and set a prefetch; a chunk arrives as one burst.
    channel.basic_qos(1_000, BasicQosOptions::default()).await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), AMQPValue::LongString("last".into()));
    let mut consumer = channel
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await?;
    let mut highest: Option<u64> = None;
    // The first delivery may take a moment (the chunk is read from disk); after it, a short quiet
    // spell means the chunk is done.
    let mut wait = Duration::from_secs(10);
    loop {
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery?;
                let seq = seq_of(&delivery.properties, &delivery.data);
                delivery.ack(lapin::options::BasicAckOptions::default()).await?;
                match seq {
                    Some(seq) => highest = Some(highest.map_or(seq, |h| h.max(seq))),
                    None => tracing::warn!(stream, "a message without a seq in the audit stream; ignored"),
                }
                wait = Duration::from_millis(300);
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    match highest {
        Some(seq) => Ok(seq),
        // The broker says there are messages but none arrived: do not guess (a wrong 0 would
        // publish everything again).
        None => Err(RelayError::TailUnreadable),
    }
}

/// A message's `seq`: the header, or the body's `seq` field.
pub fn seq_of(properties: &BasicProperties, body: &[u8]) -> Option<u64> {
    let from_header = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(SEQ_HEADER))
        .and_then(|value| match value {
            AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
            AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
            AMQPValue::LongUInt(v) => Some(u64::from(*v)),
            AMQPValue::Timestamp(v) => Some(*v),
            _ => None,
        });
    from_header.or_else(|| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
    })
}

/// Why the relay stopped its current connection (it reconnects after a pause).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("store: {0}")]
    Store(#[from] super::AuditError),
    #[error("the broker refused a record (nack) at seq {0}")]
    Nacked(u64),
    #[error("the broker returned a record as unroutable at seq {0} (was the stream deleted?)")]
    Unroutable(u64),
    #[error("no confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the stream has messages but its last chunk could not be read")]
    TailUnreadable,
    #[error("record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("connection or channel closed")]
    Disconnected,
    #[error("another relay holds the lock")]
    Standby,
}

/// The relay task.
#[derive(Debug)]
pub struct AuditRelay;

impl AuditRelay {
    /// Spawns the relay; it runs until `shutdown` is cancelled, reconnecting by itself. It needs
    /// the store (records to publish), `queue.url` / `queue.prefix` (where) and `[audit.stream]`
    /// (retention, batching). When `audit.stream.enabled` is false the task ends at once.
    pub fn start(store: Store, settings: &Settings, shutdown: CancellationToken) -> JoinHandle<()> {
        let relay = Relay {
            store,
            url: settings.queue.url.clone(),
            prefix: settings.queue.prefix.clone(),
            connect_timeout: Duration::from_millis(settings.queue.connect_timeout_ms),
            confirm_timeout: Duration::from_millis(settings.queue.publish_timeout_ms.max(1_000) * 2),
            max_delay: Duration::from_millis(settings.queue.reconnect_max_delay_ms.max(100)),
            stream: settings.audit.stream.clone(),
            shutdown,
        };
        tokio::spawn(async move {
            if relay.stream.enabled {
                relay.supervise().await;
            }
        })
    }
}

struct Relay {
    store: Store,
    url: crate::config::BrokerUrls,
    prefix: String,
    connect_timeout: Duration,
    confirm_timeout: Duration,
    max_delay: Duration,
    stream: AuditStreamSettings,
    shutdown: CancellationToken,
}

impl Relay {
    async fn supervise(&self) {
        let mut backoff = OutageBackoff::new(Duration::from_millis(200), self.max_delay);
        while !self.shutdown.is_cancelled() {
            let connected = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                c = connect_first(&self.url, "gatehouse-audit-relay", self.connect_timeout) => c,
            };
            let waited = match connected {
                Ok((connection, node)) => {
                    tracing::debug!(%node, "audit relay connected to RabbitMQ");
                    let result = self.lead(&connection).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "bye".into()))
                        .await;
                    match result {
                        Ok(()) => break,
                        Err(RelayError::Standby) => {
                            tracing::debug!("another audit relay is active; standing by");
                            backoff.reset();
                            pause(self.max_delay.max(Duration::from_secs(1)), &self.shutdown).await
                        }
                        Err(error) => {
                            tracing::warn!(%error, "audit relay stopped; reconnecting");
                            backoff.wait(&self.shutdown).await
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "audit relay cannot connect to RabbitMQ");
                    backoff.wait(&self.shutdown).await
                }
            };
            if !waited {
                break;
            }
        }
    }

    /// Takes the lock, resumes from the stream, and publishes until shutdown (`Ok`) or an error.
    async fn lead(&self, connection: &Connection) -> Result<(), RelayError> {
        let stream = stream_name(&self.prefix);
        let setup = connection.create_channel().await?;
        declare_stream(&setup, &stream, &self.stream).await?;
        let lock = connection.create_channel().await?;
        let locked = lock
            .queue_declare(
                lock_queue_name(&self.prefix).as_str().into(),
                QueueDeclareOptions {
                    // Only this connection may use it, and it disappears with the connection:
                    // a broker-side mutex with the connection's lifetime.
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match locked {
            Ok(_) => {}
            Err(error) if error.is_amqp_soft_error() => return Err(RelayError::Standby),
            Err(error) => return Err(error.into()),
        }
        let _ = setup.close(200, "declared".into()).await;
        let mut published = last_published_seq(connection, &stream).await?;
        tracing::info!(stream, resume_after_seq = published, "audit relay active");
        let (head, _) = super::log::head(&self.store).await?;
        if head < published {
            // A store restored from an older backup, or a stream shared by two deployments.
            tracing::error!(
                stream,
                stream_seq = published,
                store_seq = head,
                "the audit stream is ahead of the store; records up to the stream's seq are not relayed"
            );
        }
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let poll = Duration::from_millis(self.stream.poll_ms);
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            if !connection.status().connected() || !channel.status().connected() {
                return Err(RelayError::Disconnected);
            }
            let batch = query(
                &self.store,
                &AuditQuery {
                    after_seq: Some(published),
                    limit: self.stream.batch_size,
                    ..AuditQuery::default()
                },
            )
            .await?;
            if batch.is_empty() {
                if !sleep_unless(poll, &self.shutdown).await {
                    return Ok(());
                }
                continue;
            }
            if let Some(first) = batch.first()
                && first.seq != published + 1
            {
                tracing::error!(
                    expected = published + 1,
                    found = first.seq,
                    "audit trail has a gap; run `gatehouse audit verify`"
                );
            }
            published = self.publish_batch(&channel, &stream, &batch).await?;
        }
    }

    /// Publishes `batch` and waits for every confirm; returns the last `seq` confirmed.
    async fn publish_batch(
        &self,
        channel: &Channel,
        stream: &str,
        batch: &[AuditRecord],
    ) -> Result<u64, RelayError> {
        let mut pending = Vec::with_capacity(batch.len());
        for record in batch {
            let body = serde_json::to_vec(record)?;
            let confirm = channel
                .basic_publish(
                    // The default exchange routes by queue name, straight into the stream.
                    "".into(),
                    stream.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    properties(record),
                )
                .await?;
            pending.push((record.seq, confirm));
        }
        let mut last = 0;
        for (seq, confirm) in pending {
            let confirmation = tokio::time::timeout(self.confirm_timeout, confirm)
                .await
                .map_err(|_| RelayError::ConfirmTimeout(self.confirm_timeout))??;
            match confirmation {
                Confirmation::Ack(None) => last = seq,
                Confirmation::Ack(Some(_)) => return Err(RelayError::Unroutable(seq)),
                Confirmation::Nack(_) | Confirmation::NotRequested => return Err(RelayError::Nacked(seq)),
            }
        }
        Ok(last)
    }
}

fn properties(record: &AuditRecord) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        SEQ_HEADER.into(),
        AMQPValue::LongLongInt(i64::try_from(record.seq).unwrap_or(i64::MAX)),
    );
    headers.insert(
        "gatehouse-event-id".into(),
        AMQPValue::LongString(LongString::from(record.record.event_id.to_string())),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(record.id.to_string()))
        .with_type(ShortString::from(record.record.kind.as_str()))
        .with_timestamp(u64::try_from(record.time.timestamp()).unwrap_or(0))
        .with_app_id("gatehouse".into())
        .with_headers(headers)
}
