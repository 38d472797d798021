//! Watches what reaches gatehouse's events exchange: a private queue bound to it, read with
//! `basic.get`.

use std::time::Duration;

use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// One message seen on the exchange.
#[derive(Debug, Clone)]
pub struct Seen {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub persistent: bool,
    pub body: serde_json::Value,
}

pub struct Observer {
    _connection: Connection,
    channel: Channel,
    queue: String,
}

impl Observer {
    /// Binds a private queue to `{prefix}.events` with `pattern` (e.g. `#`).
    pub async fn new(prefix: &str, pattern: &str) -> Observer {
        let connection = Connection::connect(&super::amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let exchange = format!("{prefix}.events");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = queue.name().as_str().to_owned();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Observer {
            _connection: connection,
            channel,
            queue,
        }
    }

    /// The next message, waiting up to `timeout`.
    pub async fn next(&self, timeout: Duration) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            if let Some(message) = got {
                let delivery = message.delivery;
                return Some(Seen {
                    routing_key: delivery.routing_key.as_str().to_owned(),
                    message_id: delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|m| m.as_str().to_owned()),
                    persistent: *delivery.properties.delivery_mode() == Some(2),
                    body: serde_json::from_slice(&delivery.data).unwrap(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every message that arrives within `window` (used to prove "exactly once": the expected
    /// one, then nothing more).
    pub async fn all(&self, window: Duration) -> Vec<Seen> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(message) => seen.push(message),
                None => return seen,
            }
        }
    }
}
