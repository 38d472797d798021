//! What only the RabbitMQ backend has: a broker connection that can break under a consuming
//! worker, and poison messages the broker itself parks after its delivery limit.

use std::time::Duration;

use futures_util::StreamExt;
use gatehouse::app::Roles;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::scripted::Scripted;
use super::{Backend, dead_letters, eventually, publish, settings, worker};
use crate::helpers::{TcpProxy, TempDir, TestApp, amqp_url, broker_addr};

const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_consumer_resubscribes_after_the_broker_connection_is_lost() {
    let dir = TempDir::new();
    let proxy = TcpProxy::start(broker_addr()).await;
    let mut settings = settings(Backend::Rabbitmq, &dir);
    settings.queue.url = gatehouse::config::BrokerUrls::new(proxy.amqp_url());
    let processor = Scripted::new();
    let app = worker(settings, processor.clone()).await;
    publish(&app, "before", "fact-before").await;
    eventually(LONG, "handled before the cut", || async {
        processor.completions("before") == 1
    })
    .await;

    proxy.cut();
    eventually(LONG, "readiness red", || async { !app.ready().await }).await;
    proxy.restore();
    app.wait_ready(LONG).await;

    publish(&app, "after", "fact-after").await;
    eventually(LONG, "handled after the reconnect", || async {
        processor.completions("after") == 1
    })
    .await;
    assert_eq!(processor.calls("before").len(), 1);
    app.stop().await;
}

/// `queue.url` naming two nodes (two proxies to the one broker): the first is used while it
/// answers; cut for good, gatehouse goes on through the second without anyone restoring it.
#[tokio::test]
async fn with_several_nodes_the_connection_fails_over_to_the_next_one() {
    let dir = TempDir::new();
    let first = TcpProxy::start(broker_addr()).await;
    let second = TcpProxy::start(broker_addr()).await;
    let mut settings = settings(Backend::Rabbitmq, &dir);
    settings.queue.url = gatehouse::config::BrokerUrls::list([first.amqp_url(), second.amqp_url()]);
    let processor = Scripted::new();
    let app = worker(settings, processor.clone()).await;
    publish(&app, "before", "fact-before").await;
    eventually(LONG, "handled before the cut", || async {
        processor.completions("before") == 1
    })
    .await;

    first.cut();
    // Back through the second node: publishing and consuming both resume.
    eventually(LONG, "published through the second node", || async {
        let (message, _) = super::message("after", "fact-after");
        app.queue.publish(&message).await.is_ok()
    })
    .await;
    eventually(LONG, "handled after the failover", || async {
        processor.completions("after") == 1
    })
    .await;
    assert!(app.ready().await);
    assert_eq!(processor.calls("before").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_broker_parks_a_message_redelivered_past_its_limit_and_the_recorder_keeps_why() {
    let dir = TempDir::new();
    let mut settings = settings(Backend::Rabbitmq, &dir);
    settings.queue.delivery_limit = 2;
    // An ingress-only process publishes (and declares the topology); nobody consumes yet.
    let ingress = TestApp::start_roles(settings.clone(), None, Roles::INGRESS).await;
    let event_id = publish(&ingress, "poison", "fact-poison").await;

    // A consumer that keeps dying on the message: every delivery is handed back.
    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let work = format!("{}.work", settings.queue.prefix);
    let mut consumer = channel
        .basic_consume(
            work.as_str().into(),
            "crasher".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut handed_back = 0;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .unwrap();
        handed_back += 1;
    }
    assert_eq!(
        handed_back, 3,
        "delivered once plus the delivery limit of redeliveries"
    );
    let _ = connection.close(200, "done".into()).await;

    // A worker's recorder moves it from `.dead` into the store, with the broker's reason.
    let processor = Scripted::new();
    let recorder = worker(settings, processor.clone()).await;
    eventually(LONG, "recorded", || async {
        dead_letters(&recorder).await.len() == 1
    })
    .await;
    let letter = dead_letters(&recorder).await.remove(0);
    assert_eq!(letter.event_id, event_id);
    assert_eq!(letter.routing_key, "test.user.deactivated");
    assert!(
        letter.reason.starts_with("delivery limit exceeded"),
        "{}",
        letter.reason
    );
    assert!(letter.id.starts_with("broker-"));
    assert!(processor.calls("poison").is_empty());
    ingress.shutdown().await;
    recorder.stop().await;
}
