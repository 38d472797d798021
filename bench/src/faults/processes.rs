//! gatehouse itself killed -9, again and again, in the middle of plans: every removal call is
//! slowed down so that a kill always lands with removals in flight. Each kill is followed by a
//! restart, as an orchestrator would; the worker's deliveries come back (redelivery on RabbitMQ,
//! the visibility timeout on the embedded queue) and its claims are taken over.
//!
//! Scaled out, a worker killed for good: its deliveries are taken over by the other workers,
//! with nobody restarting it.

use std::collections::BTreeSet;
use std::time::Duration;

use gatehouse_sim::Fault;

use super::bed::{Backing, Bed, Run, ScenarioOutcome};
use super::load::Sending;

/// Each removal call takes this long in the simulator, so plans are long enough to interrupt.
const REMOVAL_DELAY_MS: u64 = 60;

pub async fn kill_gatehouse(run: &Run, backing: &Backing) -> anyhow::Result<ScenarioOutcome> {
    let kills = if run.quick { 2 } else { 5 };
    let between = run.secs(3.0, 6.0);
    let total = between * (kills + 1);
    let mut bed = Bed::new(run, backing, total, 2_000).await?;
    slow_removals(&bed)?;
    let ingress = bed.fleet.start("ingress").await?;
    let worker = bed.fleet.start("worker").await?;
    let load = bed.load(run, total, Sending::Once);
    for kill in 0..kills {
        tokio::time::sleep(between).await;
        bed.fleet.kill9(worker).await?;
        // Every other round the ingress goes down too (its unanswered requests are not
        // acknowledged, so they are not owed).
        if kill % 2 == 1 {
            bed.fleet.kill9(ingress).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            bed.fleet.restart(ingress).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        bed.fleet.restart(worker).await?;
    }
    let tally = load.drain(total * 2).await;
    let mut notes = BTreeSet::new();
    notes.insert(format!(
        "worker killed -9 {kills}×, ingress {}×, removals slowed to {REMOVAL_DELAY_MS} ms",
        kills / 2
    ));
    bed.finish("gatehouse killed -9 mid-plan", &tally, vec![], notes)
        .await
}

/// Three workers share the queue; one is killed -9 a third of the way in and stays dead. The two
/// others take over what it held once the queue hands it out again (at once on RabbitMQ, after
/// the visibility timeout on the embedded queue) and its claims' leases run out.
pub async fn worker_taken_over(run: &Run, backing: &Backing) -> anyhow::Result<ScenarioOutcome> {
    let total = run.secs(9.0, 40.0);
    let mut bed = Bed::new(run, backing, total, 2_000).await?;
    slow_removals(&bed)?;
    bed.fleet.start("ingress").await?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(bed.fleet.start("worker").await?);
    }
    let load = bed.load(run, total, Sending::Once);
    tokio::time::sleep(total / 3).await;
    bed.fleet.kill9(workers[0]).await?;
    let tally = load.drain(total * 2).await;
    let mut notes = BTreeSet::new();
    notes.insert(format!(
        "1 ingress + 3 workers; one worker killed -9 and not restarted, removals slowed to {REMOVAL_DELAY_MS} ms"
    ));
    bed.finish("a worker of three killed -9 for good", &tally, vec![], notes)
        .await
}

/// Every removal call takes [`REMOVAL_DELAY_MS`] in the simulator, so a kill always lands with
/// removals in flight.
fn slow_removals(bed: &Bed) -> anyhow::Result<()> {
    bed.sim
        .tenant_at(0)
        .ok_or_else(|| anyhow::anyhow!("the simulator has no tenant"))?
        .add_fault(Fault {
            times: None,
            ..Fault::delay("/group/userByGroupId", REMOVAL_DELAY_MS, 0).method("DELETE")
        });
    Ok(())
}
