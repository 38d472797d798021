//! Liveness, readiness and metrics endpoints.
//!
//! `/readyz` is red while the broker or the store is unreachable, so a load balancer stops
//! sending deliveries that would only get 503s.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::IngressState;

pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, Json(json!({"status": "alive"})))
}

pub async fn readyz(State(state): State<Arc<IngressState>>) -> impl IntoResponse {
    let queue_up = state.queue.is_ready();
    let store_up = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await,
        Ok(Ok(()))
    );
    let ready = queue_up && store_up;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unready" },
            "queue": word(queue_up),
            "store": word(store_up),
        })),
    )
}

pub async fn metrics(State(state): State<Arc<IngressState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
