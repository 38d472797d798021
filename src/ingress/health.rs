//! Liveness, readiness and metrics endpoints.
//!
//! `/readyz` is red while the broker or the store is unreachable, so a load balancer stops
//! sending deliveries that would only get 503s. The store is probed at most once a second, by
//! one request at a time ([`ReadinessProbe`]): a flood of `/readyz` costs no store connection
//! each and cannot exhaust the pool that deliveries need.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::IngressState;
use crate::store::Store;

/// How long a store probe's answer is reused.
const PROBE_FRESH: Duration = Duration::from_secs(1);
/// A probe slower than this counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The store's last known reachability, refreshed by at most one probe at a time.
#[derive(Debug)]
pub struct ReadinessProbe {
    last: Mutex<Option<(Instant, bool)>>,
    probing: tokio::sync::Mutex<()>,
}

impl Default for ReadinessProbe {
    fn default() -> Self {
        ReadinessProbe {
            last: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }
}

impl ReadinessProbe {
    fn last(&self) -> Option<(Instant, bool)> {
        *crate::locking::lock(&self.last)
    }

    /// Whether the store answered its latest probe. Probes when the answer is older than a
    /// second and no probe is running; otherwise answers from memory at once.
    pub async fn store_up(&self, store: &Store) -> bool {
        if let Some((at, up)) = self.last()
            && at.elapsed() < PROBE_FRESH
        {
            return up;
        }
        let Ok(_probing) = self.probing.try_lock() else {
            // Someone is probing right now: their answer will do; until then, the last one.
            return self.last().is_some_and(|(_, up)| up);
        };
        let up = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await,
            Ok(Ok(()))
        );
        *crate::locking::lock(&self.last) = Some((Instant::now(), up));
        up
    }
}

pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, Json(json!({"status": "alive"})))
}

pub async fn readyz(State(state): State<Arc<IngressState>>) -> impl IntoResponse {
    let queue_up = state.queue.is_ready();
    let store_up = state.readiness.store_up(&state.store).await;
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
    let held = i64::try_from(state.recent.len()).unwrap_or(i64::MAX);
    state.metrics.dedupe_window_keys.set(held);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
