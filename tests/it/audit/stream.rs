//! The relay copies every record to the `{prefix}.audit` stream once, in order: a plain AMQP
//! consumer replays it from an offset or a timestamp and sees each seq once; a restarted relay
//! resumes after the last seq in the stream; two relays at once do not duplicate anything, and
//! the standby takes over when the active one dies.

use std::time::Duration;

use futures_util::StreamExt;
use gatehouse::audit::stream::{seq_of, stream_name};
use gatehouse::audit::{AuditLog, AuditRelay};
use gatehouse::config::{AuditSettings, SensitiveUrl, Settings};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use super::{open_store, sample, sqlite_url};
use crate::helpers::{TcpProxy, TempDir, amqp_url, broker_addr, unique};

fn settings(dir: &TempDir) -> Settings {
    let mut settings = Settings::default();
    settings.queue.url = gatehouse::config::BrokerUrls::new(amqp_url());
    settings.queue.prefix = unique("gh-audit");
    settings.queue.reconnect_max_delay_ms = 500;
    settings.store.url = SensitiveUrl::new(sqlite_url(dir));
    settings.audit.stream.poll_ms = 50;
    settings.audit.stream.batch_size = 7; // several batches per test
    settings
}

/// Reads the stream from `offset` with a plain consumer until `last` is seen and then `quiet`
/// passes without another message; returns the seqs in arrival order.
async fn consume(prefix: &str, offset: AMQPValue, last: u64, quiet: Duration) -> Vec<u64> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), offset);
    let mut consumer = channel
        .basic_consume(
            stream_name(prefix).as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await
        .unwrap();
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let wait = if seqs.last().is_some_and(|s| *s >= last) {
            quiet
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery.unwrap();
                let seq = seq_of(&delivery.properties, &delivery.data).expect("every message has a seq");
                let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
                assert_eq!(body["seq"], seq, "header and body agree");
                seqs.push(seq);
                delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            _ => break,
        }
    }
    let _ = connection.close(200, "bye".into()).await;
    seqs
}

/// The broker's clock, in unix seconds: a stream's chunks are stamped with the Erlang VM's
/// system time, which stays behind the machine's when the machine's clock was set forward after
/// the broker started (Erlang does not follow such a jump; 13 s here once), so a consumer from
/// "now" by our clock would start past every chunk written since. Asked of the local node with
/// `rabbitmqctl` when the tests use the local broker; ours otherwise, or when it cannot say
/// within seconds.
async fn broker_now() -> u64 {
    let ours = chrono::Utc::now().timestamp() as u64;
    let local = url::Url::parse(&amqp_url())
        .ok()
        .and_then(|url| {
            url.host_str()
                .map(|host| ["127.0.0.1", "localhost", "[::1]"].contains(&host))
        })
        .unwrap_or(false);
    if !local {
        return ours;
    }
    let asked = tokio::process::Command::new("rabbitmqctl")
        .args(["eval", "erlang:system_time(second)."])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(15), asked).await {
        Ok(Ok(output)) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(ours),
        _ => ours,
    }
}

/// Waits until the stream holds at least `count` messages (the broker's count for a stream is
/// its committed offset range). Consuming a stream that is still being created fails, so every
/// consumer here waits first.
async fn wait_for_messages(prefix: &str, count: u32) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while tokio::time::Instant::now() < deadline {
        // A passive declare of a missing queue closes the channel: a new one each time.
        let channel = connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                stream_name(prefix).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if let Ok(queue) = declared {
            seen = queue.message_count();
            let _ = channel.close(200, "bye".into()).await;
            if seen >= count {
                let _ = connection.close(200, "bye".into()).await;
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stream holds {seen} messages, not {count}");
}

/// Deletes a test's stream when the test fails before its own `delete_stream`: failing runs must
/// not pile streams up on the shared broker. On a thread of its own, as a drop cannot await and
/// the test's runtime may be unwinding.
struct DeleteStreamOnPanic(String);

impl Drop for DeleteStreamOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let prefix = self.0.clone();
            let cleanup = std::thread::spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    runtime.block_on(delete_stream(&prefix));
                }
            });
            let _ = cleanup.join();
        }
    }
}

async fn delete_stream(prefix: &str) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(stream_name(prefix).as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "bye".into()).await;
}

async fn append(log: &AuditLog, range: std::ops::Range<usize>) {
    for i in range {
        log.append(sample(i)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_replay_from_an_offset_and_relays_resume_without_duplicates() {
    let dir = TempDir::new();
    let settings = settings(&dir);
    let prefix = settings.queue.prefix.clone();
    let _cleanup = DeleteStreamOnPanic(prefix.clone());
    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    append(&log, 0..20).await;

    // First relay: everything so far arrives, in order, once.
    let shutdown = CancellationToken::new();
    let relay = AuditRelay::start(store.clone(), &settings, shutdown.clone());
    wait_for_messages(&prefix, 20).await;
    let all = consume(
        &prefix,
        AMQPValue::LongString("first".into()),
        20,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(all, (1..=20).collect::<Vec<_>>());

    // A consumer from numeric offset 12 (offsets count from 0) sees seq 13.. once each.
    let from_offset = consume(
        &prefix,
        AMQPValue::LongLongInt(12),
        20,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(from_offset, (13..=20).collect::<Vec<_>>());

    // Records appended while the relay runs follow.
    append(&log, 20..25).await;
    let all = consume(
        &prefix,
        AMQPValue::LongString("first".into()),
        25,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(all, (1..=25).collect::<Vec<_>>());

    // Stop the relay, append more, restart: it resumes after seq 25.
    shutdown.cancel();
    relay.await.unwrap();
    let before_restart = broker_now().await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    append(&log, 25..40).await;
    let shutdown = CancellationToken::new();
    let relay = AuditRelay::start(store.clone(), &settings, shutdown.clone());
    // And a second relay at the same time (another process): it must stand by.
    let other = AuditRelay::start(open_store(&sqlite_url(&dir)).await, &settings, shutdown.clone());
    let all = consume(
        &prefix,
        AMQPValue::LongString("first".into()),
        40,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(all, (1..=40).collect::<Vec<_>>(), "each seq exactly once");

    // From a timestamp: at least every record since then (a stream starts at the chunk holding
    // that instant, so a consumer may also see a few earlier ones and filters by record time).
    let since = consume(
        &prefix,
        AMQPValue::Timestamp(before_restart),
        40,
        Duration::from_millis(300),
    )
    .await;
    assert!(since.ends_with(&(26..=40).collect::<Vec<_>>()), "{since:?}");
    let distinct: std::collections::BTreeSet<u64> = since.iter().copied().collect();
    assert_eq!(distinct.len(), since.len(), "no duplicates: {since:?}");

    shutdown.cancel();
    relay.await.unwrap();
    other.await.unwrap();
    store.close().await;
    delete_stream(&prefix).await;
}

/// Two relays (two processes); the one holding the lock loses its broker connection for good
/// (its process killed, or its node). The other takes over and resumes after the last seq in
/// the stream: every record relayed, none twice.
#[tokio::test]
async fn when_the_active_relay_dies_the_standby_takes_over_without_duplicates() {
    let dir = TempDir::new();
    let settings = settings(&dir);
    let prefix = settings.queue.prefix.clone();
    let _cleanup = DeleteStreamOnPanic(prefix.clone());
    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    append(&log, 0..20).await;

    // The first relay reaches RabbitMQ through a proxy and takes the lock before the other
    // starts.
    let proxy = TcpProxy::start(broker_addr()).await;
    let mut through_proxy = settings.clone();
    through_proxy.queue.url = gatehouse::config::BrokerUrls::new(proxy.amqp_url());
    let shutdown = CancellationToken::new();
    let first = AuditRelay::start(store.clone(), &through_proxy, shutdown.clone());
    wait_for_messages(&prefix, 20).await;
    let standby = AuditRelay::start(open_store(&sqlite_url(&dir)).await, &settings, shutdown.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    proxy.cut();
    append(&log, 20..45).await;
    let all = consume(
        &prefix,
        AMQPValue::LongString("first".into()),
        45,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(all, (1..=45).collect::<Vec<_>>(), "each seq exactly once");

    shutdown.cancel();
    first.await.unwrap();
    standby.await.unwrap();
    store.close().await;
    delete_stream(&prefix).await;
}

#[tokio::test]
async fn a_disabled_stream_relays_nothing() {
    let dir = TempDir::new();
    let mut settings = settings(&dir);
    settings.audit.stream.enabled = false;
    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    append(&log, 0..3).await;
    let handle = AuditRelay::start(store.clone(), &settings, CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .unwrap()
        .unwrap();
    // Records were there to relay, and no stream was made for them.
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            stream_name(&settings.queue.prefix).as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(declared.is_err(), "the stream exists");
    let _ = connection.close(200, "bye".into()).await;
    store.close().await;
}
