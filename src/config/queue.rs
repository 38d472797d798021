//! `[queue]`: which queue carries envelopes, how to reach it, and its retry ladder, with its
//! checks.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::SensitiveUrl;
use super::checks::is_name;

/// Which queue carries envelopes, and how to reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub backend: QueueBackend,
    /// AMQP URL of the RabbitMQ node, or a list of the cluster's nodes (backend `rabbitmq`):
    /// gatehouse connects to the first that answers, in order, and to the next one when it loses
    /// it. Shown with passwords hidden.
    pub url: BrokerUrls,
    /// Every exchange and queue name starts with this, so several deployments (or tests) can
    /// share one broker.
    pub prefix: String,
    /// How long a publish may wait for the broker's confirm before the request answers 503.
    pub publish_timeout_ms: u64,
    /// Publishes are spread over this many confirm-mode channels.
    pub publish_channels: usize,
    /// Giving up on one connection attempt after this long.
    pub connect_timeout_ms: u64,
    /// Reconnect backoff doubles from 100 ms up to this.
    pub reconnect_max_delay_ms: u64,
    /// Messages handed to one worker process at once (AMQP prefetch; embedded: rows locked).
    pub prefetch: u16,
    /// Redeliveries after which the broker parks a message it keeps getting back (a worker
    /// crashing on it): RabbitMQ's `x-delivery-limit`; the embedded backend counts the same way.
    /// On RabbitMQ every return counts, also a message given back at shutdown or when a channel
    /// closes under it, so leave room for restarts and broker blips (RabbitMQ 4's own default
    /// is 20).
    pub delivery_limit: u32,
    /// The retry ladder: a failed attempt n waits `retry_delays_seconds[n-1]` (the last rung
    /// repeats). Each rung is a RabbitMQ queue whose TTL sends messages back to the work queue.
    pub retry_delays_seconds: Vec<f64>,
    /// Attempts before a transiently failing message is dead-lettered. Default: one more than
    /// the rungs of the ladder.
    pub max_attempts: Option<u32>,
    /// Quorum queues are created with this many replicas (`x-quorum-initial-group-size`):
    /// set it to the cluster's size (3 or 5) so that every node holds a copy. Unset: RabbitMQ's
    /// default. Only applied when a queue is created; changing it later needs
    /// `rabbitmq-queues grow`/`shrink`, not a new declaration.
    pub quorum_initial_group_size: Option<u16>,
    /// Embedded backend: how often an idle worker looks for new messages.
    pub embedded_poll_ms: u64,
    /// Embedded backend: a delivery not settled within this long (the worker died) is handed out
    /// again. Workers extend it while they process.
    pub visibility_timeout_seconds: u64,
}

impl QueueSettings {
    /// The effective attempt limit.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
            .unwrap_or(self.retry_delays_seconds.len() as u32 + 1)
    }

    /// The first rung of the ladder waiting at least `wait` (the last one when none does).
    pub fn rung_for(&self, wait: std::time::Duration) -> usize {
        let rungs = self.retry_delays_seconds.len().max(1);
        (0..rungs)
            .find(|&rung| self.retry_delay(rung) >= wait)
            .unwrap_or(rungs - 1)
    }

    /// The delay of rung `rung` (the last rung repeats).
    pub fn retry_delay(&self, rung: usize) -> std::time::Duration {
        let seconds = self
            .retry_delays_seconds
            .get(rung)
            .or(self.retry_delays_seconds.last())
            .copied()
            .unwrap_or(5.0);
        std::time::Duration::from_secs_f64(seconds.max(0.0))
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            backend: QueueBackend::Embedded,
            url: BrokerUrls::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "gatehouse".to_owned(),
            publish_timeout_ms: 5_000,
            publish_channels: 2,
            connect_timeout_ms: 5_000,
            reconnect_max_delay_ms: 5_000,
            prefetch: 32,
            delivery_limit: 20,
            retry_delays_seconds: vec![5.0, 30.0, 120.0, 600.0, 3_600.0],
            max_attempts: None,
            quorum_initial_group_size: None,
            embedded_poll_ms: 200,
            visibility_timeout_seconds: 300,
        }
    }
}

/// The AMQP URLs of one RabbitMQ cluster's nodes, in the order they are tried (at least one).
///
/// In a file: one string or a list. From the environment (`GATEHOUSE__QUEUE__URL`), a single
/// value may name several nodes separated by commas, as long as every part is an `amqp://` or
/// `amqps://` URL (so a comma inside a password never splits one URL in two).
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrls(Vec<SensitiveUrl>);

impl BrokerUrls {
    /// One node.
    pub fn new(url: impl Into<String>) -> Self {
        BrokerUrls::parse_one(url.into())
    }

    /// The cluster's nodes, in the order they are tried.
    pub fn list(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        BrokerUrls(urls.into_iter().map(|url| SensitiveUrl::new(url)).collect())
    }

    fn parse_one(value: String) -> Self {
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        let several = parts.len() > 1
            && parts
                .iter()
                .all(|part| part.starts_with("amqp://") || part.starts_with("amqps://"));
        if several {
            BrokerUrls::list(parts)
        } else {
            BrokerUrls(vec![SensitiveUrl::new(value)])
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &SensitiveUrl> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, url) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            fmt::Display::fmt(url, f)?;
        }
        Ok(())
    }
}

impl Serialize for BrokerUrls {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for BrokerUrls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum UrlOrUrls {
            One(String),
            Many(Vec<String>),
        }
        Ok(match UrlOrUrls::deserialize(deserializer)? {
            UrlOrUrls::One(url) => BrokerUrls::parse_one(url),
            UrlOrUrls::Many(urls) => BrokerUrls::list(urls),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// A durable queue in the store: no external service needed.
    Embedded,
    Rabbitmq,
}

/// Checks `[queue]` (its publish timeout against the server's request timeout too).
pub(super) fn validate(settings: &super::Settings, error: &mut impl FnMut(String, String)) {
    let server = &settings.server;
    let queue = &settings.queue;
    if !is_name(&queue.prefix, &['.', '-', '_']) {
        error(
            "queue.prefix".into(),
            "must be non-empty and use only letters, digits, `.`, `-` and `_`".into(),
        );
    }
    if queue.publish_timeout_ms == 0 {
        error("queue.publish_timeout_ms".into(), "must be greater than 0".into());
    }
    if queue.connect_timeout_ms == 0 {
        // Not "no timeout": every connection attempt would time out at once, for ever.
        error("queue.connect_timeout_ms".into(), "must be greater than 0".into());
    }
    if queue.publish_timeout_ms >= server.request_timeout_seconds.saturating_mul(1000) {
        // Otherwise a slow broker would answer 408 (the sender's fault) instead of 503 (ours).
        error(
            "queue.publish_timeout_ms".into(),
            "must be shorter than server.request_timeout_seconds".into(),
        );
    }
    if queue.publish_channels == 0 {
        error("queue.publish_channels".into(), "must be at least 1".into());
    }
    if queue.url.is_empty() {
        error(
            "queue.url".into(),
            "needs at least one amqp:// or amqps:// URL".into(),
        );
    }
    for (i, url) in queue.url.iter().enumerate() {
        if !(url.expose().starts_with("amqp://") || url.expose().starts_with("amqps://")) {
            let key = if queue.url.len() == 1 {
                "queue.url".to_owned()
            } else {
                format!("queue.url[{i}]")
            };
            error(key, "must be an amqp:// or amqps:// URL".into());
        }
    }
    if let Some(size) = queue.quorum_initial_group_size
        && !(1..=9).contains(&size)
    {
        error(
            "queue.quorum_initial_group_size".into(),
            "must be between 1 and 9 (the nodes holding a copy of each quorum queue)".into(),
        );
    }
    if queue.prefetch == 0 {
        error("queue.prefetch".into(), "must be at least 1".into());
    }
    if queue.delivery_limit == 0 {
        error("queue.delivery_limit".into(), "must be at least 1".into());
    }
    if queue.retry_delays_seconds.is_empty() {
        error(
            "queue.retry_delays_seconds".into(),
            "needs at least one rung".into(),
        );
    }
    for (i, delay) in queue.retry_delays_seconds.iter().enumerate() {
        if !(delay.is_finite() && *delay >= 0.001 && *delay <= 86_400.0 * 7.0) {
            error(
                format!("queue.retry_delays_seconds[{i}]"),
                "must be between 0.001 and 604800 seconds".into(),
            );
        }
    }
    if queue.max_attempts == Some(0) {
        error("queue.max_attempts".into(), "must be at least 1".into());
    }
    if queue.embedded_poll_ms == 0 {
        error("queue.embedded_poll_ms".into(), "must be greater than 0".into());
    }
    if queue.visibility_timeout_seconds == 0 {
        error(
            "queue.visibility_timeout_seconds".into(),
            "must be greater than 0".into(),
        );
    }
}
