//! The exchanges and queues gatehouse declares on RabbitMQ, and why each argument is set.
//!
//! ```text
//!  publishers ──▶ {p}.events (topic) ──#──▶ {p}.work (quorum) ──▶ workers
//!                        │                    ▲   │ x-delivery-limit exceeded
//!                        └─ subscribers' own  │   ▼
//!                           queues            │  {p}.dead (quorum) ──▶ dead-letter recorder ──▶ store
//!                                             │
//!              {p}.retry.<delay> (quorum, TTL = delay) ── expired: dead-lettered back to {p}.work
//! ```
//!
//! Declarations are idempotent: every process declares the whole topology each time it
//! (re)connects, so a fresh broker, a restarted one, or one where someone deleted a queue all end
//! up the same. A declaration that clashes with an existing object (different arguments, e.g. a
//! changed `delivery_limit`) fails with `PRECONDITION_FAILED`, which is reported (readiness stays
//! red) instead of silently running on the old shape; change such arguments with a RabbitMQ policy
//! or a new prefix. Retry queues are named by their delay, so changing the ladder adds queues
//! rather than clashing with the old ones (which drain into `.work` and can then be deleted).
//!
//! One argument is let through: `x-quorum-initial-group-size` only matters when a queue is
//! created, yet RabbitMQ checks it like the others. A queue created with another replica count
//! (or before `queue.quorum_initial_group_size` was set) is declared again with the count it has,
//! so every other argument is still checked, and a warning says to grow or shrink it with
//! `rabbitmq-queues` if the count should change.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::QueueSettings;

/// The names of gatehouse's objects under a prefix (default `gatehouse`), worked out once: they
/// are named on every publish and settlement.
#[derive(Debug, Clone)]
pub struct Topology {
    events_exchange: String,
    work_queue: String,
    dead_queue: String,
    /// The retry queue of each rung of the ladder, in ladder order.
    retry_by_rung: Vec<String>,
    /// Each distinct delay once, with its queue.
    retry_queues: Vec<(u64, String)>,
    delivery_limit: u32,
    /// Replicas of each quorum queue at creation (`None`: RabbitMQ's default).
    quorum_initial_group_size: Option<u16>,
}

/// The argument giving a quorum queue's replica count at creation.
const GROUP_SIZE: &str = "x-quorum-initial-group-size";

/// When `error` is RabbitMQ refusing a declaration only for its replica count, the count the
/// queue has (`None`: created without one). RabbitMQ words it `inequivalent arg
/// 'x-quorum-initial-group-size' for queue …: received '2' but current is '3'`, or `… received
/// none but current is the value '3' of type 'unsignedint'`, or `… current is none`.
fn existing_group_size(error: &str) -> Option<Option<u32>> {
    if !error.contains(&format!("inequivalent arg '{GROUP_SIZE}'")) {
        return None;
    }
    let current = error.split("but current is ").nth(1)?;
    if current.starts_with("none") {
        return Some(None);
    }
    let quoted = current.strip_prefix("the value ").unwrap_or(current);
    let value = quoted.strip_prefix('\'')?.split('\'').next()?;
    value.parse().ok().map(Some)
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

impl Topology {
    pub fn new(settings: &QueueSettings) -> Self {
        let prefix = &settings.prefix;
        let mut delays_ms: Vec<u64> = settings
            .retry_delays_seconds
            .iter()
            .map(|s| (s * 1000.0).round().max(1.0) as u64)
            .collect();
        if delays_ms.is_empty() {
            delays_ms.push(5_000);
        }
        let retry_queue = |delay_ms: u64| format!("{prefix}.retry.{delay_ms}ms");
        let retry_by_rung = delays_ms.iter().map(|&d| retry_queue(d)).collect();
        delays_ms.sort_unstable();
        delays_ms.dedup();
        Topology {
            events_exchange: format!("{prefix}.events"),
            work_queue: format!("{prefix}.work"),
            dead_queue: format!("{prefix}.dead"),
            retry_by_rung,
            retry_queues: delays_ms.into_iter().map(|d| (d, retry_queue(d))).collect(),
            delivery_limit: settings.delivery_limit,
            quorum_initial_group_size: settings.quorum_initial_group_size,
        }
    }

    /// The topic exchange every envelope is published to (routing key `{kind}.{type}`).
    pub fn events_exchange(&self) -> &str {
        &self.events_exchange
    }

    /// The queue workers consume.
    pub fn work_queue(&self) -> &str {
        &self.work_queue
    }

    /// Where messages that cannot be processed are parked.
    pub fn dead_queue(&self) -> &str {
        &self.dead_queue
    }

    /// The retry queue of rung `rung` (the last rung repeats).
    pub fn retry_queue(&self, rung: usize) -> &str {
        self.retry_by_rung
            .get(rung)
            .or(self.retry_by_rung.last())
            .map_or("", String::as_str)
    }

    /// Every retry queue, one per distinct delay.
    pub fn retry_queues(&self) -> impl Iterator<Item = &str> {
        self.retry_queues.iter().map(|(_, queue)| queue.as_str())
    }

    /// Deletes the exchange, the queues, and `also` (e.g. the audit stream): for tests and
    /// benchmarks that leave nothing behind. Best effort; a queue that is not there is skipped.
    #[cfg(any(test, feature = "testing"))]
    pub async fn delete(&self, connection: &lapin::Connection, also: &[&str]) {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let queues = [self.work_queue(), self.dead_queue()]
            .into_iter()
            .chain(self.retry_queues())
            .chain(also.iter().copied());
        for queue in queues {
            // A missing queue closes the channel it is asked on: one channel per deletion.
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .queue_delete(queue.into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(self.events_exchange().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }

    /// The arguments every queue of gatehouse starts from: a quorum queue (replicated, durable,
    /// fsynced on a majority before the confirm), on as many nodes as configured.
    fn quorum(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), text("quorum"));
        if let Some(size) = self.quorum_initial_group_size {
            // How many nodes hold a copy; a majority of them must confirm each publish.
            arguments.insert(GROUP_SIZE.into(), AMQPValue::LongUInt(u32::from(size)));
        }
        arguments
    }

    /// Declares everything on `connection` (on channels of its own, closed afterwards).
    pub async fn declare(&self, connection: &Connection) -> Result<(), lapin::Error> {
        let mut channel = connection.create_channel().await?;
        let declared = self.declare_on(connection, &mut channel).await;
        if channel.status().connected() {
            let _ = channel.close(200, "topology declared".into()).await;
        }
        declared
    }

    /// Declares `queue` with `arguments`; one created with another replica count is declared
    /// again with its own (see the module's documentation).
    async fn declare_queue(
        &self,
        connection: &Connection,
        channel: &mut Channel,
        queue: &str,
        arguments: FieldTable,
    ) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            // Survives a broker restart (quorum queues are always durable; stated for clarity).
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let error = match channel
            .queue_declare(queue.into(), durable, arguments.clone())
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let Some(existing) = existing_group_size(&error.to_string()) else {
            return Err(error);
        };
        tracing::warn!(
            queue,
            configured = ?self.quorum_initial_group_size,
            existing = ?existing,
            "the queue was created with another replica count; queue.quorum_initial_group_size applies to new queues only (change this one with `rabbitmq-queues grow` or `shrink`)"
        );
        // The failed declaration closed the channel.
        *channel = connection.create_channel().await?;
        let mut again: std::collections::BTreeMap<_, _> = arguments
            .inner()
            .iter()
            .filter(|(key, _)| key.as_str() != GROUP_SIZE)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if let Some(size) = existing {
            again.insert(GROUP_SIZE.into(), AMQPValue::LongUInt(size));
        }
        channel
            .queue_declare(queue.into(), durable, FieldTable::from(again))
            .await
            .map(|_| ())
    }

    async fn declare_on(&self, connection: &Connection, channel: &mut Channel) -> Result<(), lapin::Error> {
        channel
            .exchange_declare(
                self.events_exchange().into(),
                // Topic: the work queue takes everything (`#`), subscribers bind their own queues
                // with patterns such as `*.user.deactivated` or `confluence.#`.
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    // Survives a broker restart; the bindings of durable queues go with it.
                    durable: true,
                    // Never deleted when the last queue unbinds: publishers depend on it.
                    auto_delete: false,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;

        // Replicated and fsynced on a majority: a parked event must survive losing a node.
        self.declare_queue(connection, channel, self.dead_queue(), self.quorum())
            .await?;

        // Replicated, durable, and it counts redeliveries (needed for x-delivery-limit).
        let mut work = self.quorum();
        // A message handed back this many times without an ack (a worker crashing on it, a
        // channel dying mid-handler) is a poison message: stop redelivering it...
        work.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongUInt(self.delivery_limit),
        );
        // ...and park it in `.dead` (via the default exchange, routing key = queue name) instead of
        // dropping it.
        work.insert("x-dead-letter-exchange".into(), text(""));
        work.insert("x-dead-letter-routing-key".into(), text(self.dead_queue()));
        // Dead-letter at least once: the broker keeps the message until `.dead` confirmed it
        // (requires reject-publish overflow).
        work.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        work.insert("x-overflow".into(), text("reject-publish"));
        self.declare_queue(connection, channel, self.work_queue(), work)
            .await?;
        channel
            .queue_bind(
                self.work_queue().into(),
                self.events_exchange().into(),
                // Every routing key: no publish is ever unroutable; events no policy handles are
                // recorded as skipped and acked.
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        for (delay, queue) in &self.retry_queues {
            // Durable and replicated like the work queue: a message waiting for its retry is
            // still an accepted event.
            let mut retry = self.quorum();
            // The rung's delay: every message waits exactly this long (one TTL per queue keeps
            // FIFO expiry correct)...
            retry.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(*delay).unwrap_or(i64::MAX)),
            );
            // ...then goes straight back to `.work` (not through the exchange: subscribers saw
            // the event once already).
            retry.insert("x-dead-letter-exchange".into(), text(""));
            retry.insert("x-dead-letter-routing-key".into(), text(self.work_queue()));
            retry.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            retry.insert("x-overflow".into(), text("reject-publish"));
            self.declare_queue(connection, channel, queue, retry).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::existing_group_size;

    #[test]
    fn the_replica_count_a_queue_has_is_read_from_rabbitmqs_refusal() {
        let refused = |current: &str| {
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue 'gh.dead' in vhost '/': received none but current is {current}"
            )
        };
        assert_eq!(
            existing_group_size(&refused("the value '3' of type 'unsignedint'")),
            Some(Some(3))
        );
        assert_eq!(existing_group_size(&refused("none")), Some(None));
        assert_eq!(
            existing_group_size(
                "PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue 'gh.dead' in vhost '/': received '2' but current is '3'"
            ),
            Some(Some(3))
        );
        // Any other refusal stands.
        assert_eq!(
            existing_group_size(
                "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'gh.work': received the value '5' but current is the value '20'"
            ),
            None
        );
        assert_eq!(existing_group_size(&refused("something new")), None);
    }
}
