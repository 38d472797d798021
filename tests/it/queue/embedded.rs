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
