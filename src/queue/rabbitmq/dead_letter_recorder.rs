//! The dead-letter recorder: moves every message that reaches `.dead` into the store's dead
//! letters, where `gatehouse dlq` lists, shows, replays and purges them with their history.
//!
//! Messages arrive here two ways: a worker parked them (with `x-gatehouse-dead-reason` and a
//! dead id), or the broker did, after the work queue's delivery limit (`x-first-death-reason`).
//! A message is acked only once its row is stored; the store being down leaves it in `.dead`.
//! Messages the broker parked are also recorded in the audit trail here (the worker records the
//! ones it parks itself).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use ring::digest;
use tokio::task::JoinHandle;

use super::{BackendState, consumer, headers};
use crate::audit::AuditLog;
use crate::queue::QueueError;
use crate::queue::dead_letter_records::{self, subject_of};
use crate::store::{DeadLetterRow, Store};

/// How long a dead letter the store refuses is retried before it is handed back to `.dead`.
const IN_PLACE_RETRIES: Duration = Duration::from_secs(60);

pub(super) fn start(shared: Arc<BackendState>, store: Store, audit: AuditLog) -> JoinHandle<()> {
    let queue = shared.topology.dead_queue().to_owned();
    let (mut deliveries, stop, task) = consumer::subscribe(shared.clone(), queue, 16, |raw| raw);
    tokio::spawn(async move {
        loop {
            let raw = tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                raw = deliveries.recv() => match raw {
                    Some(raw) => raw,
                    None => break,
                },
            };
            let row = dead_letter_row(&raw);
            let parked_by_broker = raw
                .properties
                .headers()
                .as_ref()
                .and_then(|t| headers::text(t, headers::DEAD_REASON))
                .is_none();
            let record = || async {
                let mut tx = store.begin_write().await?;
                dead_letter_records::record_in(&mut tx, &audit, &row, parked_by_broker).await?;
                tx.commit().await?;
                Ok(())
            };
            // Kept unacked and retried here for a while (a store restarting), not handed back at
            // once: every redelivery counts against a quorum queue's delivery limit (20 by
            // default on RabbitMQ 4), past which the broker drops a message from `.dead`, which
            // has no dead-letter exchange of its own. Handed back after about a minute, so a
            // letter the store can never take does not hold back every letter after it.
            let mut delay = Duration::from_secs(1);
            let give_back_at = tokio::time::Instant::now() + IN_PLACE_RETRIES;
            let recorded = loop {
                match audit.bounded(record(), |e| QueueError(e.to_string())).await {
                    Ok(()) => break true,
                    Err(error) => {
                        tracing::error!(%error, retry_in_s = delay.as_secs(), "cannot record a dead letter yet; it stays in the dead queue");
                        if tokio::time::Instant::now() + delay > give_back_at {
                            break false;
                        }
                        tokio::select! {
                            _ = shared.shutdown.cancelled() => break false,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            };
            if recorded {
                tracing::warn!(
                    dead_letter = %row.id,
                    event_id = %row.event_id,
                    event_type = %row.event_type,
                    reason = %row.reason,
                    attempts = row.attempts,
                    "event dead-lettered"
                );
                let _ = raw.acker.ack(BasicAckOptions::default()).await;
            } else {
                // Back to `.dead`: for the next recorder when shutting down, or for a later try.
                let _ = raw
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await;
                if shared.shutdown.is_cancelled() {
                    break;
                }
            }
        }
        stop.cancel();
        let _ = task.await;
    })
}

fn dead_letter_row(raw: &lapin::message::Delivery) -> DeadLetterRow {
    let table = raw.properties.headers().as_ref();
    let text = |name| table.and_then(|t| headers::text(t, name));
    // PostgreSQL's text refuses NUL, which anyone who may publish could put in a message.
    let body = String::from_utf8_lossy(&raw.data).replace('\0', "\u{fffd}");
    let envelope: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let history = headers::history(table);
    let reason = text(headers::DEAD_REASON).unwrap_or_else(|| match headers::broker_death_reason(table) {
        Some(reason) if reason == "delivery_limit" => {
            "delivery limit exceeded: redelivered too often without being settled (a worker kept dying on it)"
                .to_owned()
        }
        Some(reason) => format!("dead-lettered by the broker: {reason}"),
        None => "dead-lettered by the broker".to_owned(),
    });
    // A broker-parked message has no dead id: derive one from its content, so recording it again
    // after a crash is still one row.
    let id = text(headers::DEAD_ID).unwrap_or_else(|| {
        let digest = digest::digest(&digest::SHA256, &raw.data);
        format!("broker-{}", &hex::encode(digest)[..32])
    });
    let attempts = table
        .and_then(|t| match t.inner().get(headers::ATTEMPTS) {
            Some(lapin::types::AMQPValue::LongUInt(n)) => Some(*n),
            _ => None,
        })
        .unwrap_or_else(|| history.last().map_or(0, |f| f.attempt));
    DeadLetterRow {
        id,
        event_id: envelope["id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| text(headers::EVENT_ID))
            .unwrap_or_default(),
        event_type: envelope["type"].as_str().unwrap_or("unknown").to_owned(),
        subject: subject_of(&body),
        routing_key: text(headers::ROUTING_KEY)
            .or_else(|| headers::original_routing_key(table))
            .unwrap_or_else(|| raw.routing_key.as_str().to_owned()),
        message_id: raw
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
        body,
        reason,
        attempts,
        first_failure_at: history.first().map(|f| f.at),
        last_failure_at: history.last().map(|f| f.at),
        history,
        dead_at: Utc::now(),
    }
}
