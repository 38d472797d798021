//! The least a webhook relay can do, as the baseline `ingest` holds gatehouse against: an axum
//! handler that checks the `X-Hub-Signature` HMAC, publishes the body persistent and mandatory to
//! the same exchange with a publisher confirm (lapin, two confirm channels taken in turn) and
//! answers 202 — nothing else: no envelope, no dedupe, no metrics, no tracing, no routing table,
//! one scheme. Written with the crates gatehouse uses and none of its code, so the ratio says what
//! gatehouse's own work costs. It runs as a child process (`gatehouse-bench relay`, hidden) so
//! its CPU and memory are its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Args;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long)]
    pub amqp_url: String,
    /// The topic exchange to publish to (declared by the caller).
    #[arg(long)]
    pub exchange: String,
    /// The routing key of every message.
    #[arg(long)]
    pub routing_key: String,
    /// The hub signature's shared secret.
    #[arg(long)]
    pub secret: String,
}

struct MinimalRelay {
    key: ring::hmac::Key,
    channels: Vec<Channel>,
    next: AtomicUsize,
    exchange: String,
    routing_key: String,
}

pub async fn serve(args: RelayArgs) -> anyhow::Result<()> {
    let connection =
        lapin::Connection::connect(&args.amqp_url, lapin::ConnectionProperties::default()).await?;
    let mut channels = Vec::new();
    for _ in 0..2 {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    let relay = Arc::new(MinimalRelay {
        key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, args.secret.as_bytes()),
        channels,
        next: AtomicUsize::new(0),
        exchange: args.exchange,
        routing_key: args.routing_key,
    });
    let app = Router::new()
        .route("/webhooks/{*path}", post(relay_one))
        .route("/readyz", axum::routing::get(|| async { StatusCode::OK }))
        .with_state(relay);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn relay_one(State(relay): State<Arc<MinimalRelay>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signed = headers
        .get("x-hub-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex| hex::decode(hex).ok())
        .is_some_and(|tag| ring::hmac::verify(&relay.key, &body, &tag).is_ok());
    if !signed {
        return StatusCode::UNAUTHORIZED;
    }
    let channel = &relay.channels[relay.next.fetch_add(1, Ordering::Relaxed) % relay.channels.len()];
    let published = channel
        .basic_publish(
            relay.exchange.as_str().into(),
            relay.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &body,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into()),
        )
        .await;
    match published {
        Ok(confirm) => match confirm.await {
            Ok(Confirmation::Ack(None)) => StatusCode::ACCEPTED,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
