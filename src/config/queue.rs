//! `[queue]`: which queue carries envelopes, how to reach it, and its retry ladder, with its
//! checks.

use serde::{Deserialize, Serialize};

use super::SensitiveUrl;
use super::checks::is_name;

/// Which queue carries envelopes, and how to reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub backend: QueueBackend,
    /// AMQP URL of the RabbitMQ cluster (backend `rabbitmq`). Shown with its password hidden.
    pub url: SensitiveUrl,
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
            url: SensitiveUrl::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "gatehouse".to_owned(),
            publish_timeout_ms: 5_000,
            publish_channels: 2,
            connect_timeout_ms: 5_000,
            reconnect_max_delay_ms: 5_000,
            prefetch: 32,
            delivery_limit: 20,
            retry_delays_seconds: vec![5.0, 30.0, 120.0, 600.0, 3_600.0],
            max_attempts: None,
            embedded_poll_ms: 200,
            visibility_timeout_seconds: 300,
        }
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
    if !(queue.url.expose().starts_with("amqp://") || queue.url.expose().starts_with("amqps://")) {
        error("queue.url".into(), "must be an amqp:// or amqps:// URL".into());
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
