//! What only the embedded backend does itself: count how often a message was handed out without
//! being settled, and park it (with its audit record) past the delivery limit, as RabbitMQ does.

use std::time::Duration;

use gatehouse::app::Roles;

use super::{Backend, audit_kinds, dead_letters, publish, settings};
use crate::helpers::{TempDir, TestApp};

#[tokio::test]
async fn a_message_redelivered_past_its_limit_is_parked_with_its_audit_record() {
    let dir = TempDir::new();
    let mut settings = settings(Backend::Embedded, &dir);
    settings.queue.delivery_limit = 2;
    settings.queue.visibility_timeout_seconds = 1;
    // An ingress-only process: nobody consumes but the crashing consumer below.
    let app = TestApp::start_roles(settings, None, Roles::INGRESS).await;
    let event_id = publish(&app, "poison", "fact-poison").await;

    // Every delivery is dropped unsettled, as if its worker died: it comes back after the
    // visibility timeout.
    let mut consumer = app.queue.consume(1).await.unwrap();
    let mut handed_out = 0;
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(3), consumer.deliveries.recv()).await
    {
        assert_eq!(delivery.redelivered, handed_out > 0);
        drop(delivery);
        handed_out += 1;
    }
    assert_eq!(
        handed_out, 3,
        "delivered once plus the delivery limit of redeliveries"
    );
    assert!(consumer.stop().await.is_empty());

    let letters = dead_letters(&app).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, event_id);
    assert!(
        letters[0].reason.starts_with("delivery limit exceeded"),
        "{}",
        letters[0].reason
    );
    assert_eq!(audit_kinds(&app, &event_id).await, vec!["dead_lettered"]);
    app.shutdown().await;
}

/// An embedded queue on a fresh SQLite store with one connection (so a cap set on it holds).
async fn lone_queue(
    dir: &TempDir,
) -> (
    gatehouse::store::Store,
    std::sync::Arc<gatehouse::queue::embedded::EmbeddedQueue>,
) {
    use gatehouse::config::{SensitiveUrl, StoreSettings};
    let store = gatehouse::store::Store::connect(&StoreSettings {
        url: SensitiveUrl::new(format!("sqlite://{}/queue.db", dir.0.display())),
        max_connections: 1,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await
    .unwrap();
    let audit = gatehouse::audit::AuditLog::new(store.clone(), &Default::default());
    let queue = gatehouse::queue::embedded::EmbeddedQueue::new(store.clone(), Default::default(), audit);
    (store, std::sync::Arc::new(queue))
}

fn message(i: usize) -> gatehouse::queue::OutgoingMessage {
    gatehouse::queue::OutgoingMessage {
        routing_key: "confluence.user.deactivated".into(),
        message_id: format!("group-{i}"),
        event_id: format!("event-{i}"),
        event_type: "user.deactivated".into(),
        body: format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(2_000)).into_bytes(),
    }
}

async fn queued_rows(store: &gatehouse::store::Store) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM queue_messages")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Publishes arriving together share commits (group commit); each is answered only once its row
/// is durable, and every one is there, once.
#[tokio::test]
async fn concurrent_publishes_are_all_committed_once() {
    use gatehouse::queue::Queue;
    let dir = TempDir::new();
    let (store, queue) = lone_queue(&dir).await;
    let publishes = (0..300).map(|i| {
        let queue = queue.clone();
        tokio::spawn(async move { queue.publish(&message(i)).await })
    });
    for outcome in futures_util::future::join_all(publishes).await {
        outcome.unwrap().unwrap();
    }
    assert_eq!(queued_rows(&store).await, 300);
    let distinct: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT message_id) FROM queue_messages")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(distinct, 300);
    // Batches go in as multi-row statements: every row holds its own message's values.
    let matching: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM queue_messages
          WHERE event_id = 'event-' || substr(message_id, 7)
            AND body LIKE '{\"n\":' || substr(message_id, 7) || ',%'
            AND routing_key = 'confluence.user.deactivated' AND event_type = 'user.deactivated'
            AND visible_at = created_at AND deliveries = 0 AND history = '[]'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(matching, 300);
    // And a worker takes them.
    let mut consumer = queue.consume(1).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), consumer.deliveries.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first.body.starts_with(b"{\"n\":"));
    drop(first);
    consumer.stop().await;
    store.close().await;
}

/// A commit that fails fails every publish waiting on it: a publish is answered as queued
/// exactly when its row is there.
#[tokio::test]
async fn a_failed_group_commit_fails_every_publish_in_it() {
    use gatehouse::queue::Queue;
    let dir = TempDir::new();
    let (store, queue) = lone_queue(&dir).await;
    // One row the store refuses, as a full disk or a lost connection would refuse its batch.
    sqlx::query(
        "CREATE TRIGGER refuse_one BEFORE INSERT ON queue_messages
         WHEN NEW.message_id = 'group-7'
         BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let publishes = (0..200).map(|i| {
        let queue = queue.clone();
        tokio::spawn(async move { (i, queue.publish(&message(i)).await) })
    });
    let mut answered_queued = Vec::new();
    let mut failed_with_it = Vec::new();
    for outcome in futures_util::future::join_all(publishes).await {
        match outcome.unwrap() {
            (i, Ok(())) => answered_queued.push(format!("group-{i}")),
            (i, Err(error)) => {
                assert!(error.to_string().contains("refused for the test"), "{i}: {error}");
                failed_with_it.push(i);
            }
        }
    }
    // The refused row's publish failed, and so did every publish that shared its group's
    // commit (none of those rows is there): each failed publish failed with that reason.
    assert!(failed_with_it.contains(&7), "{failed_with_it:?}");
    assert!(!answered_queued.contains(&"group-7".to_owned()));
    let mut stored: Vec<String> = sqlx::query_scalar("SELECT message_id FROM queue_messages")
        .fetch_all(store.pool())
        .await
        .unwrap();
    answered_queued.sort();
    stored.sort();
    assert_eq!(stored, answered_queued);
    store.close().await;
}

/// A message whose stored failure history cannot be read is still handed out (without it),
/// not locked and refused for ever.
#[tokio::test]
async fn a_message_with_an_unreadable_history_is_still_delivered() {
    let dir = TempDir::new();
    let (store, queue) = lone_queue(&dir).await;
    use gatehouse::queue::Queue;
    queue.publish(&message(7)).await.unwrap();
    sqlx::query("UPDATE queue_messages SET history = 'not json'")
        .execute(store.pool())
        .await
        .unwrap();
    let mut consumer = queue.consume(1).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.deliveries.recv())
        .await
        .expect("the message was handed out")
        .unwrap();
    assert_eq!(delivery.message_id, "group-7");
    assert!(delivery.history.is_empty());
    delivery.ack().await.unwrap();
    assert!(consumer.stop().await.is_empty());
    store.close().await;
}

/// A message whose handler was still running when the worker stopped (its grace period over,
/// the handler dropped with the message locked) is handed back when the queue closes: the next
/// process takes it at once, not after the visibility timeout (five minutes by default, during
/// which a leaver kept their groups).
#[tokio::test]
async fn a_message_left_unsettled_at_shutdown_is_handed_back_at_once() {
    use gatehouse::queue::Queue;
    let dir = TempDir::new();
    let (store, queue) = lone_queue(&dir).await;
    queue.publish(&message(1)).await.unwrap();
    queue.publish(&message(2)).await.unwrap();
    let mut consumer = queue.consume(1).await.unwrap();
    let running = tokio::time::timeout(Duration::from_secs(5), consumer.deliveries.recv())
        .await
        .unwrap()
        .unwrap();
    // The worker stops: what it had not started is given back, the running one is dropped.
    for unstarted in consumer.stop().await {
        unstarted.release().await.unwrap();
    }
    drop(running);
    queue.close().await;

    let audit = gatehouse::audit::AuditLog::new(store.clone(), &Default::default());
    let next = gatehouse::queue::embedded::EmbeddedQueue::new(store.clone(), Default::default(), audit);
    let mut consumer = next.consume(2).await.unwrap();
    let mut again = Vec::new();
    while again.len() < 2 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.deliveries.recv())
            .await
            .expect("handed out again well before the visibility timeout")
            .unwrap();
        again.push((delivery.message_id.clone(), delivery.redelivered));
        delivery.ack().await.unwrap();
    }
    again.sort();
    assert_eq!(
        again,
        [("group-1".to_owned(), true), ("group-2".to_owned(), false)],
        "the dropped one counts as handed out; the given-back one does not"
    );
    consumer.stop().await;
    next.close().await;
    assert_eq!(queued_rows(&store).await, 0);
}
