//! One delivery, from receipt to settlement.
//!
//! 1. Parse the envelope; a body that is not one can never succeed: dead-letter it.
//! 2. Claim the dedupe key. Already completed: a duplicate, ack without acting. Held by a live
//!    worker: someone is on it, come back after the first rung. The store unreachable: wait for
//!    it (holding the delivery, so consumption stalls instead of failing events), never act
//!    unrecorded.
//! 3. Process, renewing the claim's lease meanwhile.
//! 4. Success: mark the claim completed (durable) and only then ack. Transient failure: release
//!    the claim and retry on the ladder, or dead-letter once attempts are exhausted. Permanent
//!    failure: release and dead-letter with the reason.

use std::time::{Duration, Instant};

use handlers::Envelope;
use handlers::ports::ErrorKind;
use tracing::Instrument;

use super::{Context, Processed};
use crate::queue::Delivery;
use crate::store::{Claim, StoreError};

pub(super) async fn handle(context: &Context, delivery: Delivery) {
    let started = Instant::now();
    let metrics = &context.metrics.worker;
    let envelope: Envelope = match serde_json::from_slice(&delivery.body) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::error!(%error, message_id = %delivery.message_id, "not an envelope; dead-lettering");
            let reason = format!("malformed envelope: {error}");
            settle(delivery.dead_letter(&reason, Some(&reason)).await);
            metrics.outcome("dead_lettered");
            return;
        }
    };
    let span = tracing::info_span!(
        "event",
        event_id = %envelope.id,
        event_type = %envelope.event_type,
        dedupe_key = %envelope.dedupe_key,
        attempt = delivery.attempt,
    );
    let outcome = handle_envelope(context, delivery, &envelope)
        .instrument(span)
        .await;
    metrics.outcome(outcome);
    metrics
        .processing_seconds
        .observe(started.elapsed().as_secs_f64());
    let age = (chrono::Utc::now() - envelope.received_at)
        .num_milliseconds()
        .max(0) as f64
        / 1000.0;
    metrics.oldest_message_age_seconds.set(age);
}

/// Returns the outcome label.
async fn handle_envelope(context: &Context, delivery: Delivery, envelope: &Envelope) -> &'static str {
    let worker = &context.settings.worker;
    let lease = Duration::from_secs(worker.claim_lease_seconds);
    let retention = Duration::from_secs(worker.dedupe_retention_days * 86_400);
    let key = envelope.dedupe_key.as_str();
    let event_id = envelope.id.to_string();

    let claim = store_call(context, "claim the event", || {
        context
            .store
            .claim(key, &event_id, &context.owner, lease, retention)
    })
    .await;
    let claim = match claim {
        Some(claim) => claim,
        None => {
            // Shutting down while the store is away: give the message back untouched.
            settle(delivery.release().await);
            return "released";
        }
    };
    match claim {
        Claim::Completed { event_id: first } => {
            tracing::info!(first_event_id = %first, "duplicate of an event already handled; not acting again");
            settle(delivery.ack().await);
            return "duplicate";
        }
        Claim::Busy { owner } => {
            tracing::info!(%owner, "another worker is handling this event now; checking back later");
            settle(delivery.retry(0, &format!("being handled by {owner}")).await);
            return "busy";
        }
        Claim::Acquired => {}
    }

    // Renew the lease while processing. Polled in this task (not spawned), so a worker that is
    // killed stops renewing at once and its claim can be taken over after the lease.
    let renew = async {
        let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
        tick.tick().await;
        loop {
            tick.tick().await;
            match context.store.renew_claim(key, &context.owner, lease).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!("lost the claim on this event (lease expired and taken over)"),
                Err(error) => tracing::warn!(%error, "cannot renew the claim on this event"),
            }
        }
    };
    let result = tokio::select! {
        result = context.processor.process(envelope, delivery.attempt) => result,
        never = renew => never,
    };

    match result {
        Ok(processed) => {
            let done = store_call(context, "record completion", || {
                context.store.complete_claim(key, &context.owner, retention)
            })
            .await;
            if done.is_none() {
                // Shutting down before completion was recorded: leave the message to come back;
                // the work is idempotent.
                settle(delivery.release().await);
                return "released";
            }
            settle(delivery.ack().await);
            match processed {
                Processed::Done => "ok",
                Processed::Skipped(why) => {
                    tracing::info!(%why, "skipped");
                    "skipped"
                }
            }
        }
        Err(error) => {
            let _ = store_call(context, "release the claim", || {
                context.store.release_claim(key, &context.owner)
            })
            .await;
            let max_attempts = context.settings.queue.max_attempts();
            match error.kind {
                ErrorKind::Permanent => {
                    tracing::error!(error = %error.message, "permanent failure; dead-lettering");
                    settle(
                        delivery
                            .dead_letter(
                                &format!("permanent failure: {}", error.message),
                                Some(&error.message),
                            )
                            .await,
                    );
                    "dead_lettered"
                }
                ErrorKind::Transient if delivery.attempt >= max_attempts => {
                    tracing::error!(error = %error.message, attempts = delivery.attempt, "attempts exhausted; dead-lettering");
                    let reason = format!(
                        "gave up after {} attempts; last error: {}",
                        delivery.attempt, error.message
                    );
                    settle(delivery.dead_letter(&reason, Some(&error.message)).await);
                    "dead_lettered"
                }
                ErrorKind::Transient => {
                    let rung = usize::try_from(delivery.attempt.saturating_sub(1)).unwrap_or(usize::MAX);
                    let delay = context.settings.queue.retry_delay(rung);
                    tracing::warn!(error = %error.message, retry_in_ms = delay.as_millis() as u64, "transient failure; will retry");
                    settle(delivery.retry(rung, &error.message).await);
                    "retried"
                }
            }
        }
    }
}

/// Runs a store operation until it succeeds, backing off while the store is unreachable: a
/// worker that cannot record must not act, and must not fail events for our own outage either.
/// `None` when shutdown began first.
async fn store_call<T, F, Fut>(context: &Context, what: &str, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match call().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::error!(%error, retry_in_ms = delay.as_millis() as u64, "store unavailable: cannot {what}; waiting");
                tokio::select! {
                    _ = context.stopping.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn settle(result: Result<(), crate::queue::QueueError>) {
    if let Err(error) = result {
        // The queue hands the message out again; the claim makes the copy harmless.
        tracing::warn!(%error, "could not settle the delivery");
    }
}
