//! Reaching a RabbitMQ cluster: `queue.url` may name several nodes, and every connection
//! gatehouse opens (the queue's, the audit stream relay's) goes to the first node that answers,
//! in the order given. Shared by the queue backend and the audit relay, which know nothing of
//! each other.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::config::BrokerUrls;

/// Why no node of the cluster could be reached.
#[derive(Debug, thiserror::Error)]
#[error("no RabbitMQ node answered: {0}")]
pub struct Unreachable(String);

/// Connects to the first of `urls` that answers within `timeout`, in order; returns the
/// connection and the node's URL (password hidden, for logs). The error names every node tried
/// and why it failed.
pub async fn connect_first(
    urls: &BrokerUrls,
    name: &str,
    timeout: Duration,
) -> Result<(Connection, String), Unreachable> {
    let mut failures = Vec::with_capacity(urls.len());
    for url in urls.iter() {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        match tokio::time::timeout(timeout, Connection::connect(url.expose(), properties)).await {
            Ok(Ok(connection)) => return Ok((connection, url.to_string())),
            Ok(Err(error)) => failures.push(format!("{url}: {error}")),
            Err(_) => failures.push(format!("{url}: no answer within {} ms", timeout.as_millis())),
        }
    }
    Err(Unreachable(failures.join("; ")))
}
