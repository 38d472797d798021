//! The same scenarios, the same assertions, on both queue backends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::scripted::{Scripted, Step};
use super::{Backend, audit_kinds, dead_letters, eventually, metric, publish, settings, worker};
use crate::helpers::{TcpProxy, TempDir};

const LONG: Duration = Duration::from_secs(20);

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod rabbitmq_backend {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Rabbitmq).await })*
        }
        mod embedded_backend {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Embedded).await })*
        }
    };
}

on_both_backends!(
    a_transient_failure_twice_completes_on_the_third_attempt_after_the_ladder,
    a_permanent_failure_is_dead_lettered_after_one_attempt_with_its_reason,
    a_poison_message_stops_at_the_attempt_limit,
    copies_of_one_fact_are_acted_on_once,
    a_copy_arriving_while_its_fact_is_in_progress_waits_without_using_up_attempts,
    a_killed_workers_message_is_redelivered_and_processed_once,
    replay_brings_a_dead_letter_back_and_it_completes,
    shutdown_during_processing_loses_nothing,
    a_message_that_is_no_envelope_is_parked_and_recorded,
    a_panic_in_processing_fails_the_attempt_and_the_next_one_completes,
);

/// A bug that panics while an event is processed fails that attempt, on the trail, instead of
/// leaving the message unsettled and its claims held: the next rung's attempt completes.
async fn a_panic_in_processing_fails_the_attempt_and_the_next_one_completes(backend: Backend) {
    let dir = TempDir::new();
    let processor = Scripted::new();
    processor.script("pam", vec![Step::Panic]);
    let app = worker(settings(backend, &dir), processor.clone()).await;
    let event_id = publish(&app, "pam", "fact-pam").await;
    eventually(LONG, "pam completed on the second attempt", || async {
        processor.completions("pam") == 1
    })
    .await;
    let calls = processor.calls("pam");
    assert_eq!(calls.iter().map(|c| c.attempt).collect::<Vec<_>>(), [1, 2]);
    eventually(LONG, "pam settled", || async {
        audit_kinds(&app, &event_id).await == ["received", "failed"]
    })
    .await;
    let failed = gatehouse::audit::query::query(
        &app.store,
        &gatehouse::audit::AuditQuery {
            event_id: Some(event_id.parse().unwrap()),
            kinds: vec![gatehouse::audit::AuditKind::Failed],
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let said = failed[0].record.outcome.error.as_deref().unwrap_or_default();
    assert!(
        said.contains("processing panicked: simulated bug for pam"),
        "{said}"
    );
    app.stop().await;
}

/// Something that is not an envelope on the work queue (a bug, or someone who may publish to
/// the broker) is parked at once with its reason, and the trail says so, about no event.
async fn a_message_that_is_no_envelope_is_parked_and_recorded(backend: Backend) {
    let dir = TempDir::new();
    let processor = Scripted::new();
    let app = worker(settings(backend, &dir), processor.clone()).await;
    app.queue
        .publish(&gatehouse::queue::OutgoingMessage {
            routing_key: "test.user.deactivated".to_owned(),
            message_id: "not-an-envelope\u{7}".to_owned(),
            event_id: ulid::Ulid::nil().to_string(),
            event_type: "user.deactivated".to_owned(),
            body: b"{\"not\": \"an envelope\"}".to_vec(),
        })
        .await
        .unwrap();
    eventually(LONG, "the message parked", || async {
        dead_letters(&app).await.len() == 1
    })
    .await;
    let letter = dead_letters(&app).await.remove(0);
    assert!(
        letter.reason.starts_with("malformed envelope"),
        "{}",
        letter.reason
    );
    let records = gatehouse::audit::query::query(
        &app.store,
        &gatehouse::audit::AuditQuery {
            kinds: vec![gatehouse::audit::AuditKind::DeadLettered],
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let said = records[0].record.outcome.error.as_deref().unwrap_or_default();
    assert!(said.starts_with("malformed envelope"), "{said}");
    assert!(
        said.contains("(message not-an-envelope)"),
        "no control characters: {said}"
    );
    assert!(processor.calls("bob").is_empty());
    app.stop().await;
}

async fn a_transient_failure_twice_completes_on_the_third_attempt_after_the_ladder(backend: Backend) {
    let dir = TempDir::new();
    let processor = Scripted::new();
    processor.script("ann", vec![Step::Transient, Step::Transient]);
    let app = worker(settings(backend, &dir), processor.clone()).await;
    let event_id = publish(&app, "ann", "fact-ann").await;

    eventually(LONG, "ann completed", || async {
        processor.completions("ann") == 1
    })
    .await;
    let calls = processor.calls("ann");
    assert_eq!(calls.iter().map(|c| c.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    // Each retry waited (at least) its rung of the ladder: 0.3 s, then 0.6 s.
    assert!(
        calls[1].at - calls[0].at >= Duration::from_millis(280),
        "{:?}",
        calls[1].at - calls[0].at
    );
    assert!(
        calls[2].at - calls[1].at >= Duration::from_millis(570),
        "{:?}",
        calls[2].at - calls[1].at
    );
    assert!(dead_letters(&app).await.is_empty());
    assert_eq!(
        audit_kinds(&app, &event_id).await,
        ["received", "failed", "failed"]
    );
    assert_eq!(
        metric(
            &app,
            r#"gatehouse_worker_attempts_total{tenant="default",outcome="retried"}"#
        ),
        2.0
    );
    eventually(LONG, "ok counted", || async {
        metric(
            &app,
            r#"gatehouse_worker_attempts_total{tenant="default",outcome="ok"}"#,
        ) == 1.0
    })
    .await;
    app.stop().await;
}

async fn a_permanent_failure_is_dead_lettered_after_one_attempt_with_its_reason(backend: Backend) {
    let dir = TempDir::new();
    let processor = Scripted::new();
    processor.script("bob", vec![Step::Permanent]);
    let app = worker(settings(backend, &dir), processor.clone()).await;
    let event_id = publish(&app, "bob", "fact-bob").await;

    eventually(LONG, "bob dead-lettered", || async {
        dead_letters(&app).await.len() == 1
    })
    .await;
    let letter = dead_letters(&app).await.remove(0);
    assert_eq!(processor.calls("bob").len(), 1);
    assert_eq!(letter.event_id, event_id);
    assert_eq!(letter.event_type, "user.deactivated");
    assert_eq!(letter.subject.as_deref(), Some("bob"));
    assert_eq!(letter.routing_key, "test.user.deactivated");
    assert_eq!(letter.message_id, "fact-bob");
    assert_eq!(letter.attempts, 1);
    assert!(
        letter.reason.contains("permanent failure: simulated 400 for bob"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.history.len(), 1);
    assert_eq!(letter.first_failure_at, letter.last_failure_at);
    assert!(letter.first_failure_at.is_some());
    assert_eq!(audit_kinds(&app, &event_id).await, ["received", "dead_lettered"]);
    eventually(LONG, "dead depth sampled", || async {
        metric(&app, r#"gatehouse_queue_depth{queue="dead"}"#) == 1.0
    })
    .await;
    app.stop().await;
}

async fn a_poison_message_stops_at_the_attempt_limit(backend: Backend) {
    let dir = TempDir::new();
    let processor = Scripted::new();
    processor.always("carol", Step::Transient, 100);
    let mut settings = settings(backend, &dir);
    settings.queue.retry_delays_seconds = vec![0.1, 0.2];
    settings.queue.max_attempts = Some(4);
    let app = worker(settings, processor.clone()).await;
    publish(&app, "carol", "fact-carol").await;

    eventually(LONG, "carol dead-lettered", || async {
        dead_letters(&app).await.len() == 1
    })
    .await;
    let letter = dead_letters(&app).await.remove(0);
    assert_eq!(processor.calls("carol").len(), 4);
    assert_eq!(letter.attempts, 4);
    assert!(
        letter.reason.starts_with("gave up after 4 attempts"),
        "{}",
        letter.reason
    );
    assert_eq!(
        letter.history.iter().map(|f| f.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(letter.first_failure_at < letter.last_failure_at);
    // And it stays parked: no further attempts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(processor.calls("carol").len(), 4);
    app.stop().await;
}

async fn copies_of_one_fact_are_acted_on_once(backend: Backend) {
    let dir = TempDir::new();
    let processor = Scripted::new();
    let app = worker(settings(backend, &dir), processor.clone()).await;
    let first = publish(&app, "dave", "fact-dave").await;
    eventually(LONG, "dave handled", || async {
        processor.completions("dave") == 1
    })
    .await;
    // The same fact again (another delivery of it, e.g. a webhook and a poll).
    let copy = publish(&app, "dave", "fact-dave").await;
    eventually(LONG, "duplicate recorded", || async {
        metric(
            &app,
            r#"gatehouse_worker_attempts_total{tenant="default",outcome="duplicate"}"#,
        ) == 1.0
    })
    .await;
    assert_eq!(processor.calls("dave").len(), 1);
    assert_eq!(audit_kinds(&app, &first).await, ["received"]);
    assert_eq!(audit_kinds(&app, &copy).await, ["duplicate"]);
    app.stop().await;
}

async fn a_copy_arriving_while_its_fact_is_in_progress_waits_without_using_up_attempts(backend: Backend) {
    let dir = TempDir::new();
    // Three attempts at most (two rungs): the copy comes back far more often than that.
    let settings = settings(backend, &dir);
    assert_eq!(settings.queue.max_attempts(), 3);
    let processor = Scripted::new();
    let gate = Arc::new(Semaphore::new(0));
    processor.script("frank", vec![Step::Gate(gate.clone())]);
    let app = worker(settings, processor.clone()).await;
    let first = publish(&app, "frank", "fact-frank").await;
    eventually(LONG, "frank in progress", || async {
        processor.calls("frank").len() == 1
    })
    .await;
    // A copy of the same fact, consumed by the same process while the first is held.
    let copy = publish(&app, "frank", "fact-frank").await;
    // It finds frank's account held (a copy is about the same person): it waits for it a
    // little, then goes back the same way a held fact does, more often than it has attempts.
    eventually(LONG, "the copy found the account busy several times", || async {
        metric(
            &app,
            r#"gatehouse_worker_attempts_total{tenant="default",outcome="account_busy"}"#,
        ) >= 4.0
    })
    .await;
    assert_eq!(processor.calls("frank").len(), 1, "the copy did not act");
    gate.add_permits(1);
    eventually(LONG, "the copy recorded as a duplicate", || async {
        audit_kinds(&app, &copy).await == ["duplicate"]
    })
    .await;
    assert_eq!(processor.calls("frank").len(), 1);
    assert_eq!(processor.completions("frank"), 1);
    assert_eq!(audit_kinds(&app, &first).await, ["received"]);
    assert!(dead_letters(&app).await.is_empty());
    app.stop().await;
}

async fn a_killed_workers_message_is_redelivered_and_processed_once(backend: Backend) {
    let dir = TempDir::new();
    let mut shared = settings(backend, &dir);
    // A dead worker's claim and lock run out quickly.
    shared.worker.claim_lease_seconds = 1;
    shared.queue.visibility_timeout_seconds = 1;

    // Worker A reaches RabbitMQ through a proxy, so "killing" it also drops its connection.
    let proxy = TcpProxy::start(crate::helpers::broker_addr()).await;
    let mut settings_a = shared.clone();
    if backend == Backend::Rabbitmq {
        settings_a.queue.url = gatehouse::config::BrokerUrls::new(proxy.amqp_url());
    }
    let stuck = Scripted::new();
    stuck.script("erin", vec![Step::Gate(Arc::new(Semaphore::new(0)))]);
    let a = worker(settings_a, stuck.clone()).await;
    let event_id = publish(&a, "erin", "fact-erin").await;
    eventually(LONG, "A started on erin", || async {
        stuck.calls("erin").len() == 1
    })
    .await;

    let _ = a.kill(); // started without a folder of its own
    proxy.cut();

    let healthy = Scripted::new();
    let b = worker(shared, healthy.clone()).await;
    eventually(LONG, "B completed erin", || async {
        healthy.completions("erin") == 1
    })
    .await;
    assert_eq!(stuck.completions("erin"), 0);
    assert_eq!(healthy.calls("erin")[0].event_id, event_id);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(healthy.calls("erin").iter().filter(|c| c.finished).count(), 1);
    assert!(dead_letters(&b).await.is_empty());
    b.stop().await;
}

async fn replay_brings_a_dead_letter_back_and_it_completes(backend: Backend) {
    let dir = TempDir::new();
    let processor = Scripted::new();
    processor.script("fred", vec![Step::Permanent]);
    let app = worker(settings(backend, &dir), processor.clone()).await;
    let event_id = publish(&app, "fred", "fact-fred").await;
    eventually(LONG, "fred dead-lettered", || async {
        dead_letters(&app).await.len() == 1
    })
    .await;
    let letter = dead_letters(&app).await.remove(0);

    // The cause is fixed (the script has no more failures); replay.
    gatehouse::queue::replay::replay(&app.audit, app.queue.as_ref(), &letter, "ops-lead")
        .await
        .unwrap();
    eventually(LONG, "fred completed after replay", || async {
        processor.completions("fred") == 1
    })
    .await;
    let calls = processor.calls("fred");
    assert_eq!(calls.len(), 2);
    // Attempts start over after a replay.
    assert_eq!(calls[1].attempt, 1);
    assert!(dead_letters(&app).await.is_empty());
    let (_, still_dead) = app.store.dead_letter(&letter.id).await.unwrap().unwrap();
    assert!(!still_dead);
    assert_eq!(
        audit_kinds(&app, &event_id).await,
        ["received", "dead_lettered", "replayed", "received"]
    );
    app.stop().await;
}

async fn shutdown_during_processing_loses_nothing(backend: Backend) {
    let dir = TempDir::new();
    let mut settings = settings(backend, &dir);
    settings.worker.concurrency = 1;
    settings.queue.prefetch = 3;
    let accounts = ["g1", "g2", "g3", "g4", "g5"];
    let first = Scripted::new();
    for account in accounts {
        first.script(account, vec![Step::Sleep(Duration::from_millis(400))]);
    }
    let a = worker(settings.clone(), first.clone()).await;
    for account in accounts {
        publish(&a, account, &format!("fact-{account}")).await;
    }
    eventually(LONG, "A started", || async {
        accounts.iter().any(|acc| !first.calls(acc).is_empty())
    })
    .await;
    a.shutdown().await;
    // Whatever A started, it finished: nothing half done.
    for account in accounts {
        let calls = first.calls(account);
        assert!(calls.iter().all(|c| c.finished), "{account} was left half done");
    }
    let started_by_a = accounts.iter().filter(|acc| first.completions(acc) == 1).count();
    assert!(
        started_by_a >= 1 && started_by_a < accounts.len(),
        "A handled {started_by_a}"
    );

    let second = Scripted::new();
    let b = worker(settings, second.clone()).await;
    let summary = || {
        accounts
            .map(|acc| {
                format!(
                    "{acc}: A {} B {}",
                    first.completions(acc),
                    second.completions(acc)
                )
            })
            .join(", ")
    };
    eventually(LONG, "everything handled exactly once", || async {
        let done = accounts
            .iter()
            .all(|acc| first.completions(acc) + second.completions(acc) == 1);
        if !done {
            eprintln!("{}", summary());
        }
        done
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for account in accounts {
        assert_eq!(
            first.completions(account) + second.completions(account),
            1,
            "{account}"
        );
    }
    assert!(dead_letters(&b).await.is_empty());
    b.stop().await;
}
