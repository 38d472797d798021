//! The RabbitMQ connection and its supervision: one background task owns the connection,
//! connects, declares the topology, opens the confirm-mode publishing channels, installs the
//! result as the current [`Link`], and watches it until it breaks (broker restart, network cut, a
//! channel error a publisher saw) or shutdown is asked for; after a break it reconnects with the
//! outage backoff.
//!
//! With several nodes in `queue.url` (a cluster), each connection goes to the first node that
//! answers, in order ([`connect_first`]); losing it, the next attempt starts over from the first,
//! so a dead node is skipped as soon as it refuses and a node that comes back is used again after
//! the next loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;

use super::BackendState;
use crate::broker::{Unreachable, connect_first};

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    #[error("setting up the connection: {0}")]
    Setup(#[from] lapin::Error),
}

/// How long every publish on a link may be refused before the link is replaced.
const REFUSED_FOR: Duration = Duration::from_secs(1);
/// ...and how many refusals in a row that takes at least (one stray nack after a quiet second
/// is not a stuck channel).
const REFUSED_AT_LEAST: u32 = 3;

/// A live connection with its publishing channels.
pub(super) struct Link {
    pub(super) connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// Cancelled by whoever notices this link is unusable; the supervisor then replaces it.
    pub(super) broken: CancellationToken,
    /// The node it is connected to (password hidden).
    node: String,
    /// Refusals since the last confirm, and when the first of them came (ms since `opened`).
    nacks_in_a_row: AtomicU32,
    first_nack_ms: AtomicU64,
    opened: std::time::Instant,
}

impl Link {
    /// Round-robin over the confirm channels, so many publishes are in flight at once.
    pub(super) fn channel(&self) -> &Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[i]
    }

    /// A confirm: the refusals in a row, if any, are over.
    pub(super) fn confirmed(&self) {
        if self.nacks_in_a_row.load(Ordering::Relaxed) != 0 {
            self.nacks_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// A refusal (nack). When every publish on this link has been refused for
    /// [`REFUSED_FOR`] (and at least [`REFUSED_AT_LEAST`] times), the link is given up: a
    /// channel opened while a quorum queue was electing a new leader can stay bound to the one
    /// that died and refuse everything from then on, while a new channel publishes at once
    /// (seen on RabbitMQ 3.10 with the leader's node killed under load; the fault suite's
    /// cluster scenario).
    pub(super) fn refused(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let in_a_row = self.nacks_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row == 1 {
            self.first_nack_ms.store(now, Ordering::Relaxed);
            return;
        }
        let since = Duration::from_millis(now.saturating_sub(self.first_nack_ms.load(Ordering::Relaxed)));
        if in_a_row >= REFUSED_AT_LEAST && since >= REFUSED_FOR && !self.broken.is_cancelled() {
            tracing::warn!(
                node = %self.node,
                refused = in_a_row,
                "every publish on this connection refused for a while; opening a new one"
            );
            self.broken.cancel();
        }
    }

    pub(super) fn healthy(&self) -> bool {
        !self.broken.is_cancelled()
            && self.connection.status().connected()
            && self.channels.iter().all(|c| c.status().connected())
    }
}

/// Keeps a healthy link installed until shutdown.
pub(super) async fn supervise(shared: Arc<BackendState>) {
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
        // Each node gets the connect timeout; setting up the channels on the one that answered
        // gets one more.
        let nodes = u32::try_from(shared.settings.url.len()).unwrap_or(u32::MAX);
        let connect_timeout =
            Duration::from_millis(shared.settings.connect_timeout_ms).saturating_mul(nodes.saturating_add(1));
        let opened = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            opened = tokio::time::timeout(connect_timeout, open_link(&shared)) => opened,
        };
        match opened {
            Ok(Ok(link)) => {
                let link = Arc::new(link);
                shared.set(Some(link.clone()));
                shared.connected.notify_waiters();
                tracing::info!(node = %link.node, attempt, "connected to RabbitMQ");
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

async fn open_link(shared: &BackendState) -> Result<Link, OpenError> {
    let (connection, node) = connect_first(
        &shared.settings.url,
        "gatehouse",
        Duration::from_millis(shared.settings.connect_timeout_ms),
    )
    .await?;
    match open_channels(shared, &connection).await {
        Ok(channels) => Ok(Link {
            connection,
            channels,
            next: AtomicUsize::new(0),
            broken: CancellationToken::new(),
            node,
            nacks_in_a_row: AtomicU32::new(0),
            first_nack_ms: AtomicU64::new(0),
            opened: std::time::Instant::now(),
        }),
        Err(error) => {
            // Dropping a connection does not close it: say goodbye so the broker frees it.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                connection.close(200, "setup failed".into()),
            )
            .await;
            Err(error.into())
        }
    }
}

async fn open_channels(shared: &BackendState, connection: &Connection) -> Result<Vec<Channel>, lapin::Error> {
    shared.topology.declare(connection).await?;
    let mut channels = Vec::with_capacity(shared.settings.publish_channels);
    for _ in 0..shared.settings.publish_channels {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Returns `None` on shutdown, or why the link broke.
async fn wait_until_broken(shared: &BackendState, link: &Link) -> Option<String> {
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
