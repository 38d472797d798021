//! gatehouse itself killed -9, again and again, in the middle of plans: every removal call is
//! slowed down so that a kill always lands with removals in flight. Each kill is followed by a
//! restart, as an orchestrator would; the worker's deliveries come back (redelivery on RabbitMQ,
//! the visibility timeout on the embedded queue) and its claims are taken over.

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
    bed.sim
        .tenant_at(0)
        .ok_or_else(|| anyhow::anyhow!("the simulator has no tenant"))?
        .add_fault(Fault {
            times: None,
            ..Fault::delay("/group/userByGroupId", REMOVAL_DELAY_MS, 0).method("DELETE")
        });
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
