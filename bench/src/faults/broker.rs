//! RabbitMQ misbehaving under steady load: killed -9 and restarted, frozen (SIGSTOP) and thawed,
//! and out of memory (a resource alarm blocks every publisher). The ingress must answer 503
//! within its publish timeout while it cannot get a confirm, and lose nothing it acknowledged.

use std::collections::BTreeSet;
use std::time::Duration;

use super::bed::{Backing, Bed, Run, ScenarioOutcome};
use super::ledger::Check;
use super::load::Sending;
use super::services::OwnBroker;

/// The publish timeout of broker scenarios: short, so a run shows many timeouts.
const PUBLISH_TIMEOUT_MS: u64 = 1_000;

/// What may pass beyond the publish timeout before an answer counts as hanging: the answer's
/// own way back, on a busy 2-core machine.
const ANSWER_SLACK_MS: u128 = 1_500;

fn backing(broker: &OwnBroker) -> Backing {
    Backing {
        backend: "rabbitmq",
        amqp_url: broker.amqp_url(),
        store_url: None,
        quorum_initial_group_size: None,
    }
}

async fn fleet_of_two(run: &Run, broker: &OwnBroker, seconds: Duration) -> anyhow::Result<Bed> {
    let mut bed = Bed::new(run, &backing(broker), seconds, PUBLISH_TIMEOUT_MS).await?;
    bed.fleet.start("ingress").await?;
    bed.fleet.start("worker").await?;
    Ok(bed)
}

fn no_hang(slowest_5xx_ms: u128) -> Check {
    Check::new(
        "5xx within publish timeout",
        slowest_5xx_ms <= u128::from(PUBLISH_TIMEOUT_MS) + ANSWER_SLACK_MS,
        format!("slowest 5xx {slowest_5xx_ms} ms, publish_timeout_ms {PUBLISH_TIMEOUT_MS}"),
    )
}

/// Killed -9 a third of the way in, started again at once.
pub async fn kill(run: &Run, broker: &mut OwnBroker) -> anyhow::Result<ScenarioOutcome> {
    let total = run.secs(12.0, 60.0);
    let mut bed = fleet_of_two(run, broker, total).await?;
    let load = bed.load(run, total, Sending::Once);
    tokio::time::sleep(total / 3).await;
    broker.kill9().await?;
    let killed = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart().await?;
    let mut notes = BTreeSet::new();
    notes.insert(format!(
        "broker down {:.1} s (killed -9, restarted)",
        killed.elapsed().as_secs_f64()
    ));
    let tally = load.drain(total * 2).await;
    bed.finish("broker killed -9, restarted", &tally, vec![], notes)
        .await
}

/// SIGSTOP for 20 s (5 s quick) under load, then SIGCONT.
pub async fn freeze(run: &Run, broker: &mut OwnBroker) -> anyhow::Result<ScenarioOutcome> {
    let frozen_for = run.secs(5.0, 20.0);
    let total = frozen_for + run.secs(6.0, 20.0);
    let mut bed = fleet_of_two(run, broker, total).await?;
    let load = bed.load(run, total, Sending::Once);
    tokio::time::sleep(run.secs(2.0, 5.0)).await;
    broker.freeze()?;
    tokio::time::sleep(frozen_for).await;
    broker.thaw()?;
    let tally = load.drain(total * 2).await;
    let mut notes = BTreeSet::new();
    notes.insert(format!("frozen {} s", frozen_for.as_secs()));
    let checks = vec![no_hang(tally.slowest_unavailable.as_millis())];
    bed.finish("broker frozen (SIGSTOP)", &tally, checks, notes).await
}

/// A memory alarm (`vm_memory_high_watermark` far below what the node uses): the broker blocks
/// publishers (`connection.blocked`) until the watermark is raised again.
pub async fn memory_alarm(run: &Run, broker: &mut OwnBroker) -> anyhow::Result<ScenarioOutcome> {
    let alarm_for = run.secs(4.0, 20.0);
    let total = alarm_for + run.secs(6.0, 20.0);
    let mut bed = fleet_of_two(run, broker, total).await?;
    let load = bed.load(run, total, Sending::Once);
    tokio::time::sleep(run.secs(2.0, 5.0)).await;
    broker
        .ctl(&["set_vm_memory_high_watermark", "absolute", "1MB"])
        .await?;
    tokio::time::sleep(alarm_for).await;
    broker.ctl(&["set_vm_memory_high_watermark", "0.4"]).await?;
    let tally = load.drain(total * 2).await;
    let mut notes = BTreeSet::new();
    notes.insert(format!("alarm {} s", alarm_for.as_secs()));
    let checks = vec![
        no_hang(tally.slowest_unavailable.as_millis()),
        Check::new(
            "publishes refused while blocked",
            tally.unavailable > 0,
            format!("{} answered 503", tally.unavailable),
        ),
    ];
    bed.finish("broker memory alarm (blocked)", &tally, checks, notes)
        .await
}
