//! gatehouse scaled out on a RabbitMQ cluster: two ingress and three worker processes on a
//! three-node cluster (quorum queues on every node) under steady signed load, round robin over
//! the ingresses as a load balancer would. The node leading the work queue (where every process
//! connected first) is killed -9, then started again. The ingresses must keep answering (503
//! only while the queue elects a new leader, seconds), the workers resume from the new leader,
//! and every acknowledged webhook is acted on once: nothing lost, nothing repeated beyond what
//! was in flight.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::bed::{Backing, Bed, Run, ScenarioOutcome};
use super::ledger::Check;
use super::load::Sending;
use super::services::OwnCluster;

/// A short publish timeout, so that a run shows what the ingress answers during the election.
const PUBLISH_TIMEOUT_MS: u64 = 2_000;

/// How long 503s may go on after the kill: the broker's detection of the dead node and the
/// election, the ingresses' reconnection, and the publish timeout of requests caught in it.
/// Shorter than the node stays down (15 s in the full run), so publishes refused until the node
/// is back fail the check: RabbitMQ 3.10 leaves a channel opened during the election bound to
/// the dead leader, refusing everything (17 s of 503s before gatehouse replaced such links).
const ELECTION_BOUND: Duration = Duration::from_secs(10);

pub const INGRESSES: usize = 2;
pub const WORKERS: usize = 3;

pub async fn leader_killed(run: &Run, cluster: &mut OwnCluster) -> anyhow::Result<ScenarioOutcome> {
    let total = run.secs(16.0, 60.0);
    let backing = Backing {
        backend: "rabbitmq",
        amqp_url: cluster.amqp_urls(),
        store_url: None,
        quorum_initial_group_size: u16::try_from(cluster.nodes.len()).ok(),
    };
    let mut bed = Bed::new(run, &backing, total, PUBLISH_TIMEOUT_MS).await?;
    for _ in 0..INGRESSES {
        bed.fleet.start("ingress").await?;
    }
    for _ in 0..WORKERS {
        bed.fleet.start("worker").await?;
    }
    let load = bed.load(run, total, Sending::Once);
    tokio::time::sleep(total / 3).await;
    let work = format!("{}.work", bed.fleet.prefix);
    let leader = cluster.leader_of(&work).await?;
    cluster.nodes[leader].kill9().await?;
    let killed = Instant::now();
    tokio::time::sleep(run.secs(4.0, 15.0)).await;
    let new_leader = cluster.leader_of(&work).await.ok();
    cluster.nodes[leader].restart().await?;
    let down_for = killed.elapsed();
    let tally = load.drain(total * 2).await;

    let mut notes = BTreeSet::new();
    notes.insert(format!(
        "{INGRESSES} ingress + {WORKERS} worker processes on {} nodes; node {} (leading {work}) killed -9, back after {:.1} s; new leader: {}",
        cluster.nodes.len(),
        leader + 1,
        down_for.as_secs_f64(),
        new_leader.map_or("none seen".to_owned(), |n| format!("node {}", n + 1)),
    ));
    let (window, within) = match tally.unavailable_between {
        None => ("no 5xx or unanswered request".to_owned(), true),
        Some((first, last)) => (
            format!(
                "5xx or unanswered from {:+.1} s to {:+.1} s after the kill",
                signed_seconds(first, killed),
                signed_seconds(last, killed)
            ),
            // Nothing refused before the kill, and nothing long after it.
            first + Duration::from_millis(500) >= killed && last <= killed + ELECTION_BOUND,
        ),
    };
    let checks = vec![
        Check::new(
            "503 only around the election",
            within,
            format!("{window} (bound {} s)", ELECTION_BOUND.as_secs()),
        ),
        Check::new(
            "a new leader took over",
            new_leader.is_some_and(|n| n != leader),
            notes.iter().next().cloned().unwrap_or_default(),
        ),
    ];
    bed.finish(
        "cluster: the quorum leader's node killed -9",
        &tally,
        checks,
        notes,
    )
    .await
}

/// `at` relative to `reference`, in seconds (negative before it).
fn signed_seconds(at: Instant, reference: Instant) -> f64 {
    if at >= reference {
        (at - reference).as_secs_f64()
    } else {
        -(reference - at).as_secs_f64()
    }
}
