//! Periodic chores of a worker process: sampling queue depths for metrics, and forgetting
//! dedupe claims past their retention, account claims nobody will let go, and outbound
//! deliveries delivered long ago.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::Settings;
use crate::queue::Queue;
use crate::store::Store;
use crate::telemetry::Metrics;

use crate::telemetry::worker_metrics::QueueLabel;

pub(super) async fn run(settings: Arc<Settings>, queue: Arc<dyn Queue>, store: Store, metrics: Arc<Metrics>) {
    let mut sample = tokio::time::interval(Duration::from_secs(settings.worker.depth_sample_seconds));
    let mut purge = tokio::time::interval(Duration::from_secs(3_600));
    loop {
        tokio::select! {
            _ = sample.tick() => sample_depths(queue.as_ref(), &store, &metrics).await,
            _ = purge.tick() => purge_claims(&store).await,
        }
    }
}

/// How long a delivered outbound delivery (and its attempts) is kept for `gatehouse outbound`;
/// dead ones are kept until replayed.
const DELIVERED_OUTBOUND_DAYS: i64 = 7;

/// Forgets dedupe claims past their retention and account claims of workers that died holding
/// them.
async fn purge_claims(store: &Store) {
    match store.purge_expired_claims().await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "forgot dedupe claims past their retention"),
        Err(error) => tracing::warn!(%error, "cannot purge expired dedupe claims"),
    }
    let before = chrono::Utc::now() - chrono::Duration::days(DELIVERED_OUTBOUND_DAYS);
    match store.forget_delivered_outbound(before).await {
        Ok(0) => {}
        Ok(forgotten) => tracing::info!(forgotten, "forgot outbound deliveries delivered over a week ago"),
        Err(error) => tracing::warn!(%error, "cannot forget old outbound deliveries"),
    }
    match store.purge_abandoned_account_claims().await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "forgot account claims of workers that died holding them"),
        Err(error) => tracing::warn!(%error, "cannot purge abandoned account claims"),
    }
}

async fn sample_depths(queue: &dyn Queue, store: &Store, metrics: &Metrics) {
    let worker = &metrics.worker;
    match queue.depths().await {
        Ok(depths) => {
            worker
                .queue_depth
                .get_or_create(&QueueLabel { queue: "work" })
                .set(depths.work as i64);
            worker
                .queue_depth
                .get_or_create(&QueueLabel { queue: "retry" })
                .set(depths.retry as i64);
            match depths.oldest_age_seconds {
                Some(age) => {
                    worker.oldest_age_sampled.store(true, Ordering::Relaxed);
                    worker.oldest_message_age_seconds.set(age);
                }
                None if depths.work == 0 => {
                    worker.oldest_message_age_seconds.set(0.0);
                }
                None => {}
            }
        }
        Err(error) => tracing::debug!(%error, "cannot sample queue depths"),
    }
    match store.count_dead_letters().await {
        Ok(dead) => {
            worker
                .queue_depth
                .get_or_create(&QueueLabel { queue: "dead" })
                .set(dead as i64);
        }
        Err(error) => tracing::debug!(%error, "cannot count dead letters"),
    }
}
