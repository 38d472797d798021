//! Consuming from RabbitMQ: a subscription that follows the supervised connection (resubscribing
//! after each reconnect), with manual acks and a prefetch, and the settling of its deliveries.
//!
//! Retrying republishes the message to the rung's retry queue and acks the original only once
//! the broker confirmed the copy; dead-lettering does the same towards `.dead`. If that publish
//! fails, the original is given back (`nack` with requeue) after a pause rather than at once, and
//! the queue's delivery limit stops a message that can never be settled.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{BackendState, headers};
use crate::queue::{DeadLetter, Delivery, QueueError, Retry, Settle};

/// Subscribes to `queue`, converting each raw delivery with `convert`; runs until `stop` or
/// shutdown.
pub(super) fn subscribe<T: Send + 'static>(
    shared: Arc<BackendState>,
    queue: String,
    prefetch: u16,
    convert: impl Fn(lapin::message::Delivery) -> T + Send + 'static,
) -> (mpsc::Receiver<T>, CancellationToken, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(shared, queue, prefetch, convert, tx, stop.clone()));
    (rx, stop, task)
}

async fn run<T>(
    shared: Arc<BackendState>,
    queue: String,
    prefetch: u16,
    convert: impl Fn(lapin::message::Delivery) -> T,
    tx: mpsc::Sender<T>,
    stop: CancellationToken,
) {
    let tag = format!("gatehouse-{}", ulid::Ulid::generate().to_string().to_lowercase());
    loop {
        let Some(link) = shared.wait_for_link(&stop).await else {
            return;
        };
        let subscribed = async {
            let channel = link.connection.create_channel().await?;
            // At most `prefetch` unacked messages on this channel: the broker's backpressure.
            channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    // Manual acks: a message is settled only after its work is durable.
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        }
        .await;
        let (channel, mut consumer) = match subscribed {
            Ok(subscribed) => subscribed,
            Err(error) => {
                tracing::warn!(%error, queue = %queue, "cannot subscribe; retrying");
                if !crate::pacing::sleep_unless(Duration::from_millis(500), &stop).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(queue = %queue, prefetch, "consuming");
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Stop receiving, but keep the channel open: deliveries already handed out
                    // are settled on it while in-flight work finishes. It closes with the
                    // connection (queue shutdown), which returns anything left unsettled.
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    let shared = shared.clone();
                    let link = link.clone();
                    tokio::spawn(async move {
                        let _open = channel;
                        tokio::select! {
                            _ = shared.shutdown.cancelled() => {}
                            _ = link.broken.cancelled() => {}
                        }
                    });
                    return;
                }
                _ = link.broken.cancelled() => break,
                item = consumer.next() => match item {
                    Some(Ok(delivery)) => {
                        let converted = convert(delivery);
                        tokio::select! {
                            // Dropped unsettled: the broker redelivers it when the channel closes.
                            _ = stop.cancelled() => return,
                            sent = tx.send(converted) => if sent.is_err() { return },
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, queue = %queue, "consumer failed; resubscribing");
                        break;
                    }
                    None => {
                        tracing::warn!(queue = %queue, "consumer ended (channel or connection closed); resubscribing");
                        break;
                    }
                },
            }
        }
        if !crate::pacing::sleep_unless(Duration::from_millis(200), &stop).await {
            return;
        }
    }
}

/// Wraps a raw work-queue delivery.
pub(super) fn to_delivery(shared: Arc<BackendState>, raw: lapin::message::Delivery) -> Delivery {
    let table = raw.properties.headers().as_ref();
    let routing_key = table
        .and_then(|t| headers::text(t, headers::ROUTING_KEY))
        .unwrap_or_else(|| raw.routing_key.as_str().to_owned());
    let message_id = raw
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let history = headers::history(table);
    let redelivered = raw.redelivered;
    let body = raw.data.clone();
    let settle = RabbitSettle {
        shared,
        raw,
        routing_key: routing_key.clone(),
    };
    Delivery::new(
        body,
        routing_key,
        message_id,
        history,
        redelivered,
        Box::new(settle),
    )
}

struct RabbitSettle {
    shared: Arc<BackendState>,
    raw: lapin::message::Delivery,
    routing_key: String,
}

/// lapin answers `Ok(false)` when the channel closed under the delivery (the broker requeues it
/// and the ack or nack went nowhere): that is a failure too, not a settlement.
fn settled(result: lapin::Result<bool>, what: &str) -> Result<(), QueueError> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(QueueError(format!(
            "{what} not sent: the channel closed (the broker will redeliver)"
        ))),
        Err(error) => Err(QueueError(format!(
            "{what} failed (the broker will redeliver): {error}"
        ))),
    }
}

impl RabbitSettle {
    async fn ack(&self) -> Result<(), QueueError> {
        settled(self.raw.acker.ack(BasicAckOptions::default()).await, "ack")
    }

    /// Gives the message back after a pause, so a failing republish cannot spin.
    async fn give_back(&self, why: &str) -> QueueError {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = self
            .raw
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await;
        QueueError(why.to_owned())
    }

    /// Republishes the message to `queue` (through the default exchange) with `table`, then acks.
    async fn move_to(&self, queue: &str, table: FieldTable) -> Result<(), QueueError> {
        // The channel is gone: the broker already hands the message out again, so a copy here
        // would be a second one. (This narrows the window, it does not close it: a channel lost
        // between the publish and the ack still leaves two copies, which the dedupe claim makes
        // harmless to process.)
        if !self.raw.acker.usable() {
            return Err(QueueError(format!(
                "not moved to {queue}: the channel closed (the broker will redeliver)"
            )));
        }
        let properties = self.raw.properties.clone().with_headers(table);
        match self.shared.publish("", queue, &self.raw.data, properties).await {
            Ok(()) => self.ack().await,
            Err(error) => Err(self
                .give_back(&format!("cannot move the message to {queue}: {error}"))
                .await),
        }
    }

    fn headers(&self) -> FieldTable {
        self.raw.properties.headers().clone().unwrap_or_default()
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        RabbitSettle::ack(&self).await
    }

    async fn retry(self: Box<Self>, retry: Retry) -> Result<(), QueueError> {
        let mut table = self.headers();
        headers::record_failures(&mut table, retry.attempts, &retry.history, &self.routing_key);
        let queue = self.shared.topology.retry_queue(retry.rung);
        self.move_to(queue, table).await
    }

    async fn dead_letter(self: Box<Self>, letter: DeadLetter) -> Result<(), QueueError> {
        let mut table = self.headers();
        headers::record_failures(&mut table, letter.attempts, &letter.history, &self.routing_key);
        headers::set_text(&mut table, headers::DEAD_REASON, &letter.reason);
        headers::set_text(&mut table, headers::DEAD_ID, &ulid::Ulid::generate().to_string());
        let queue = self.shared.topology.dead_queue();
        self.move_to(queue, table).await
    }

    async fn release(self: Box<Self>) -> Result<(), QueueError> {
        let nack = self.raw.acker.nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        });
        settled(nack.await, "release")
    }
}
